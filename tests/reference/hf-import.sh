#!/bin/bash
# model.init_from = a Hugging Face model directory, written by tests/reference/hf_dir.py from
# the format descriptions: shardlm takes the model from config.json, starts from the files'
# weights exactly (/init, bitwise, GPT-2's Conv1D weights transposed), and its step-0 logits
# and loss equal hf_dir.py's float64 forward of the directory, the math of Hugging Face's
# causal LMs (fp32 tolerance, tests/reference/hf_compare.py), on one rank and under tensor
# and pipeline parallelism. Llama: odd shapes (head size 6, MLP 26), grouped-query
# attention, llama3 rotary scaling, an untied head, BF16 in many files with an index; and
# the newer rope_parameters form, tied, F16, with an lm_head.weight and old rotary
# inv_freq buffers in the file that must be ignored. GPT-2: F16 with the "transformer."
# prefix and old attention-mask buffers, and F32 in several files.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py or numpy missing for $PYTHON3"
D="$SLM_SRCDIR/tests/reference/hf_dir.py"
C="$SLM_SRCDIR/tests/reference/hf_compare.py"
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
    "$PYTHON3" "$C" check $only "$dir" "$WORK/d.h5" || fail "np $np $*: $dir"
}

"$PYTHON3" "$D" write-llama "$WORK/llama" --layers 3 --hidden 24 --heads 4 --kv-heads 2 --ffn 26 --vocab 37 \
    --max-pos 16 --rope-theta 500 --rope-scaling llama3 --rope-factor 4 --rope-high-freq-factor 2 \
    --rope-original-max-pos 8 --dtype BF16 --max-shard-size 1500 || fail "writing"
import "$WORK/llama" 1 model.seq_len=9
grep -q "Hugging Face llama, BF16, [0-9]* files)" "$WORK/out" || fail "the import line does not say BF16 and the files"
grep -q "| model.rope_scaling  *| llama3 " "$WORK/out" || fail "the configuration table lacks config.json's rope scaling"
import "$WORK/llama" 2 model.seq_len=9 parallel.tp=2
import "$WORK/llama" 2 model.seq_len=9 parallel.pp=2
# ZeRO 3 cuts tensors anywhere: each rank reads a range that starts and ends inside rows
import "$WORK/llama" 2 --init-only model.seq_len=9 parallel.zero_stage=3 train.global_batch=4

"$PYTHON3" "$D" write-llama "$WORK/llama-new" --layers 2 --hidden 16 --heads 2 --kv-heads 1 --ffn 24 --vocab 29 \
    --max-pos 8 --eps 1e-6 --rope-theta 20000 --rope-original-max-pos 4 --rope-form parameters --tied \
    --inv-freq-buffers --dtype F16 || fail "writing"
"$PYTHON3" "$C" add-head "$WORK/llama-new" || fail "adding a head"
import "$WORK/llama-new" 1
grep -q "| model.seq_len  *| 8 " "$WORK/out" || fail "the default seq_len (64) was not cut to the 8 positions"
grep -q "^init      2 tensors of the files the model does not use" "$WORK/out" || fail "the rotary buffers were not left alone"

"$PYTHON3" "$D" write-gpt2 "$WORK/gpt2" --layers 2 --hidden 24 --heads 4 --vocab 41 --max-pos 12 --dtype F16 \
    --prefix --mask-buffers || fail "writing"
import "$WORK/gpt2" 1
import "$WORK/gpt2" 2 parallel.tp=2
"$PYTHON3" "$D" write-gpt2 "$WORK/gpt2-plain" --layers 3 --hidden 24 --heads 3 --vocab 41 --max-pos 12 \
    --max-shard-size 4000 || fail "writing"
import "$WORK/gpt2-plain" 2 parallel.pp=2 model.seq_len=11
exit 0
