#!/bin/bash
# model.init_from = a Hugging Face model directory, written here by tests/reference/hf_model.py
# from the format descriptions: shardlm takes the model from config.json, starts from the
# files' weights exactly (/init, bitwise, GPT-2's Conv1D weights transposed), and its step-0
# logits and loss equal a float64 forward of the directory as Hugging Face's causal LMs
# compute it (fp32 tolerance), on one rank and under tensor and pipeline parallelism.
# Llama: odd shapes (head size 6, MLP 26), grouped-query attention, llama3 rotary scaling,
# an untied head, BF16 in many files with an index; and the newer rope_parameters form,
# tied, F16, with a tied lm_head.weight present anyway. GPT-2: F16 with the
# "transformer." prefix and an lm_head.weight, and F32 without a prefix with n_inner set.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py, numpy' 2>/dev/null || skip "PyTorch, h5py or numpy missing for $PYTHON3"
H="$SLM_SRCDIR/tests/reference/hf_model.py"
run=(train.steps=1 train.micro_batch=2 train.global_batch=2 sample.tokens=0 log.peak_gflops=10 train.threads=1
     train.matmul=openblas)

# import DIR NP [--init-only] [settings...]: train one step from DIR and check the dump
# against DIR (with data parallelism the dump has no tokens or logits: --init-only)
import() {
    local dir=$1 np=$2 only=
    shift 2
    [ "${1:-}" = --init-only ] && { only=$1; shift; }
    rm -f "$WORK/d.h5"
    timeout 120 "$MPIEXEC" -n "$np" "$SHARDLM" train "${run[@]}" "model.init_from=$dir" "log.dump=$WORK/d.h5" "$@" \
        >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err"; fail "np $np $*: training from $dir"; }
    grep -q "^init      weights from $dir (Hugging Face" "$WORK/out" || { cat "$WORK/out"; fail "no import line"; }
    echo "np $np $*: $(grep '^init ' "$WORK/out" | head -1 | cut -c11-)"
    "$PYTHON3" "$H" check $only "$dir" "$WORK/d.h5" || fail "np $np $*: $dir"
}

"$PYTHON3" "$H" write "$WORK/llama" --arch llama --layers 3 --heads 4 --kv-heads 2 --d-model 24 --ffn 26 \
    --vocab 37 --max-pos 16 --theta 500 --llama3 4 1 2 8 --untied --dtype BF16 --shard-bytes 1500 || fail "writing"
import "$WORK/llama" 1 model.seq_len=9
grep -q "Hugging Face llama, BF16, [0-9]* files)" "$WORK/out" || fail "the import line does not say BF16 and the files"
grep -q "| model.rope_scaling  *| llama3 " "$WORK/out" || fail "the configuration table lacks config.json's rope scaling"
import "$WORK/llama" 2 model.seq_len=9 parallel.tp=2
import "$WORK/llama" 2 model.seq_len=9 parallel.pp=2
# ZeRO 3 cuts tensors anywhere: each rank reads a range that starts and ends inside rows
import "$WORK/llama" 2 --init-only model.seq_len=9 parallel.zero_stage=3 train.global_batch=4

"$PYTHON3" "$H" write "$WORK/llama-new" --arch llama --layers 2 --heads 2 --d-model 16 --ffn 24 --vocab 29 \
    --max-pos 8 --eps 1e-6 --theta 20000 --llama3 8 1 4 4 --rope-parameters --lm-head-too --dtype F16 || fail "writing"
import "$WORK/llama-new" 1
grep -q "| model.seq_len  *| 8 " "$WORK/out" || fail "the default seq_len (64) was not cut to the 8 positions"

"$PYTHON3" "$H" write "$WORK/gpt2" --arch gpt2 --layers 2 --heads 4 --d-model 24 --vocab 41 --max-pos 12 \
    --dtype F16 --prefix transformer. --lm-head-too || fail "writing"
import "$WORK/gpt2" 1
import "$WORK/gpt2" 2 parallel.tp=2
"$PYTHON3" "$H" write "$WORK/gpt2-plain" --arch gpt2 --layers 3 --heads 3 --d-model 24 --ffn 40 --vocab 41 \
    --max-pos 12 --shard-bytes 4000 || fail "writing"
import "$WORK/gpt2-plain" 2 parallel.pp=2 model.seq_len=11
exit 0
