#!/bin/bash
# PyTorch oracle for train.optimizer = adafactor, lamb and sgd: shardlm's 10 steps against
# the float64 optimizers of tests/reference/optim_oracle.py on odd shapes (GPT-2, and one
# Llama). First the oracle checks itself without shardlm (optim_oracle.py --self-test).
# Adafactor runs at T > 1 set eps1 = 1e-16: the key bias's exactly-zero gradient carries
# float32 rounding of ~1e-11, which eps1 = 1e-30 would normalise into full-sized steps
# (as Adam's eps 1e-8 would; the oracles use --eps 1e-4 for the same reason).
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py' 2>/dev/null || skip "PyTorch or h5py missing for $PYTHON3 (apt-get install python3-torch python3-h5py)"
R="$SLM_SRCDIR/tests/reference"
"$PYTHON3" "$R/optim_oracle.py" --self-test || fail "optim_oracle.py --self-test"
# one clear line when this shardlm has no train.optimizer, rather than eight failed runs
if ! "$SHARDLM" train --dry-run train.optimizer=lamb >"$WORK/probe.out" 2>"$WORK/probe.err"; then
    cat "$WORK/probe.err" >&2
    fail "shardlm refuses train.optimizer=lamb"
fi
run() { local o=$1; shift; echo "== $o $*"; "$PYTHON3" "$R/$o" --shardlm "$SHARDLM" --workdir "$WORK" "$@" || fail "oracle $o $*"; }
AF="--set train.optimizer=adafactor"
# defaults: relative step, scaled by rms(p), no beta1; T = 1 (q and k rows of qkv inert)
run gpt2_oracle.py --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 1 --batch 3 $AF
# the schedule's lr, beta1, clip 0.5, weight decay; 2 micro-batches
run gpt2_oracle.py --n-layer 1 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 --accum 2 $AF \
    --set adafactor.relative_step=false --set adafactor.beta1=0.9 --set adafactor.clip_threshold=0.5 \
    --set adafactor.eps1=1e-16
# warmup_init without parameter scaling (steps of 1e-6 t), decay_rate -0.6
run gpt2_oracle.py --n-layer 2 --n-head 2 --d-model 12 --vocab 101 --seq-len 16 --batch 2 $AF \
    --set adafactor.warmup_init=true --set adafactor.scale_parameter=false --set adafactor.decay_rate=-0.6 \
    --set adafactor.eps1=1e-16
# LAMB with both clamps active: max 2 binds the layer-norm weights (trust ~1.5-2.5), min
# 0.01 the biases (~0.004)
run gpt2_oracle.py --n-layer 1 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 --accum 2 \
    --set train.optimizer=lamb --set lamb.min_trust=0.01 --set lamb.max_trust=2
# LAMB with the trust pinned to 1 is AdamW: the oracle replays it with torch.optim.AdamW
run gpt2_oracle.py --n-layer 3 --n-head 4 --d-model 32 --vocab 101 --seq-len 16 --batch 2 \
    --set train.optimizer=lamb --set lamb.min_trust=1 --set lamb.max_trust=1
# SGD: nesterov momentum at T = 1; momentum with dampening and stronger weight decay
run gpt2_oracle.py --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 1 --batch 3 --lr 0.1 \
    --set train.optimizer=sgd --set sgd.momentum=0.9 --set sgd.nesterov=true
run gpt2_oracle.py --n-layer 2 --n-head 2 --d-model 12 --vocab 101 --seq-len 16 --batch 2 --lr 0.1 \
    --weight-decay 0.3 --set train.optimizer=sgd --set sgd.momentum=0.8 --set sgd.dampening=0.3
# Llama, grouped-query with an untied head: Adafactor factoring every matrix shape
run llama_oracle.py --n-layer 1 --n-head 6 --n-kv-head 3 --d-model 60 --ffn-hidden 52 --vocab 37 --seq-len 7 \
    --batch 2 --accum 2 --untied --norm-eps 1e-3 $AF --set adafactor.relative_step=false --set adafactor.beta1=0.9
