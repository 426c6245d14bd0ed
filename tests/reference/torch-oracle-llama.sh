#!/bin/bash
# PyTorch oracle for model.arch=llama: shardlm's logits, loss, gradients and 10 AdamW steps
# against an independent float64 PyTorch Llama (tests/reference/llama_oracle.py), on odd
# shapes: multi-query attention at T = 1 (q and k inert), grouped-query with an untied head,
# plain RoPE and a large norm eps, llama3 frequency scaling with all three bands inside head
# sizes that are not powers of two, and multi-head attention over 3 layers; once more with
# the oneDNN backend when it is built in.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py' 2>/dev/null || skip "PyTorch or h5py missing for $PYTHON3 (apt-get install python3-torch python3-h5py)"
O="$SLM_SRCDIR/tests/reference/llama_oracle.py"
run() { echo "== $*"; "$PYTHON3" "$O" --shardlm "$SHARDLM" --workdir "$WORK" "$@" || fail "oracle $*"; }
# H=2 K=1 hs=6, tied, T=1
run --n-layer 2 --n-head 2 --n-kv-head 1 --d-model 12 --ffn-hidden 20 --vocab 11 --seq-len 1 --batch 3
# H=6 K=3 hs=10, untied, theta 1e4 without scaling, eps 1e-3, 2 micro-batches
run --n-layer 1 --n-head 6 --n-kv-head 3 --d-model 60 --ffn-hidden 52 --vocab 37 --seq-len 7 --batch 2 --accum 2 \
    --untied --norm-eps 1e-3
# H=6 K=2 hs=14, tied, llama3 bands 2 high / 2 medium / 3 low
L3="--rope-theta 500 --rope-scaling llama3 --rope-factor 8 --rope-low-freq-factor 1 --rope-high-freq-factor 4 --rope-original-max-pos 128"
run --n-layer 2 --n-head 6 --n-kv-head 2 --d-model 84 --ffn-hidden 52 --vocab 101 --seq-len 16 --batch 2 $L3
# H=K=4 hs=10, untied, llama3 with fractional factors: bands 1 high / 2 medium / 2 low
run --n-layer 3 --n-head 4 --n-kv-head 4 --d-model 40 --ffn-hidden 36 --vocab 53 --seq-len 12 --batch 2 --untied \
    --rope-theta 300 --rope-scaling llama3 --rope-factor 4 --rope-low-freq-factor 1.5 --rope-high-freq-factor 6 \
    --rope-original-max-pos 96
# the same math with every product through oneDNN's sgemm
if [ "$SLM_HAVE_DNNL" = yes ]; then
    run --n-layer 2 --n-head 6 --n-kv-head 2 --d-model 84 --ffn-hidden 52 --vocab 101 --seq-len 16 --batch 2 $L3 \
        --set train.matmul=dnnl
fi
