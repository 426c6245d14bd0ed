#!/bin/bash
# A bad Hugging Face model.init_from stops the job before training on every rank: on 2 ranks
# each case below ends both ranks within 30 s with the same exit status (2: the
# configuration; 1: the weights), one error message naming what is wrong, and no training
# step. The directories are written by tests/reference/hf_model.py and broken one way each:
# a missing tensor, a wrong shape (one row too many; a GPT-2 Conv1D weight stored (out, in)),
# an unknown model_type, a truncated file, a header whose offsets run past the end of the
# data; and run settings that contradict config.json.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import numpy' 2>/dev/null || skip "numpy missing for $PYTHON3"
H="$SLM_SRCDIR/tests/reference/hf_model.py"
run=(train.steps=2 train.micro_batch=1 train.global_batch=2 sample.tokens=0 log.peak_gflops=10 train.threads=1
     train.matmul=openblas)
"$PYTHON3" "$H" write "$WORK/llama" --arch llama --layers 2 --heads 2 --d-model 16 --ffn 24 --vocab 29 --max-pos 8 \
    >/dev/null || fail "writing"
"$PYTHON3" "$H" write "$WORK/gpt2" --arch gpt2 --layers 2 --heads 2 --d-model 16 --vocab 29 --max-pos 8 \
    >/dev/null || fail "writing"
for kind in missing shape model_type truncated offsets; do
    "$PYTHON3" "$H" break "$WORK/llama" "$WORK/llama-$kind" "$kind" >/dev/null || fail "breaking: $kind"
done
"$PYTHON3" "$H" break "$WORK/gpt2" "$WORK/gpt2-shape" shape >/dev/null || fail "breaking: gpt2 shape"

L=$WORK/llama
cases=(
    "2|model.init_from=$L|model.n_layer=4|model.n_layer = 4 (set on the command line) contradicts config.json's num_hidden_layers = 2 in $L"
    "2|model.init_from=$L|model.seq_len=9|model.seq_len = 9 (set on the command line) is longer than config.json's max_position_embeddings = 8 in $L"
    "2|model.init_from=$L-model_type|model.seq_len=8|model_type \"mistral\" is not one shardlm has an architecture for"
    "1|model.init_from=$L-missing|model.seq_len=8|tensor model.layers.0.mlp.up_proj.weight is missing"
    "1|model.init_from=$L-shape|model.seq_len=8|tensor model.layers.0.mlp.up_proj.weight has shape [25, 16]"
    "1|model.init_from=$WORK/gpt2-shape|model.seq_len=8|tensor h.0.mlp.c_fc.weight has shape [64, 16]"
    "1|model.init_from=$L-truncated|model.seq_len=8|run past the end of the data"
    "1|model.init_from=$L-offsets|model.seq_len=8|run past the end of the data"
)
for c in "${cases[@]}"; do
    IFS='|' read -r want from setting needle <<<"$c"
    rm -f "$WORK"/rc.* "$WORK"/err.* "$WORK"/out.*
    # each rank's exit status and streams of its own
    timeout 30 "$MPIEXEC" -n 2 sh -c '"$@" >"$0/out.$OMPI_COMM_WORLD_RANK" 2>"$0/err.$OMPI_COMM_WORLD_RANK"
                                      echo $? >"$0/rc.$OMPI_COMM_WORLD_RANK"' "$WORK" \
        "$SHARDLM" train "${run[@]}" "$from" "$setting" || true
    for r in 0 1; do
        [ -f "$WORK/rc.$r" ] || fail "$from $setting: rank $r did not finish within 30 s (a hang)"
        [ "$(cat "$WORK/rc.$r")" = "$want" ] || { cat "$WORK"/err.*; fail "$from $setting: rank $r exited $(cat "$WORK/rc.$r"), expected $want"; }
        grep -q '^step ' "$WORK/out.$r" && fail "$from $setting: a training step ran on rank $r"
    done
    grep -qF -- "$needle" "$WORK/err.0" || { cat "$WORK"/err.*; fail "$from $setting: the error does not say '$needle'"; }
    n=$(cat "$WORK"/err.* | grep -c 'shardlm: error')
    [ "$n" = 1 ] || { cat "$WORK"/err.*; fail "$from $setting: $n error messages, expected one"; }
    echo "ok: ${from#model.init_from=$WORK/} $setting -> both ranks exit $want: $(grep 'shardlm: error' "$WORK/err.0" | cut -c1-160)"
done
exit 0
