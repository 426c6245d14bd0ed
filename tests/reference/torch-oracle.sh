#!/bin/bash
# PyTorch oracle: shardlm's logits, loss, gradients and 10 AdamW steps (clipping, warmup,
# cosine) against an independent float64 PyTorch model, on odd shapes; once more with the
# oneDNN backend when it is built in.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py' 2>/dev/null || skip "PyTorch or h5py missing for $PYTHON3 (apt-get install python3-torch python3-h5py)"
O="$SLM_SRCDIR/tests/reference/gpt2_oracle.py"
run() { echo "== $*"; "$PYTHON3" "$O" --shardlm "$SHARDLM" --workdir "$WORK" "$@" || fail "oracle $*"; }
run --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 1 --batch 3
run --n-layer 1 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 --accum 2
run --n-layer 3 --n-head 4 --d-model 32 --vocab 101 --seq-len 16 --batch 2
# the same math with every product through oneDNN's sgemm
if [ "$SLM_HAVE_DNNL" = yes ]; then
    run --n-layer 3 --n-head 4 --d-model 32 --vocab 101 --seq-len 16 --batch 2 --set train.matmul=dnnl
fi
