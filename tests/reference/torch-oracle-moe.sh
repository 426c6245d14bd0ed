#!/bin/bash
# PyTorch oracle for mixture-of-experts blocks (model.n_experts): shardlm's logits, loss,
# gradients of the whole objective (cross-entropy + aux + z losses), auxiliary and z losses
# per step, bias balancing and 10 AdamW steps against the float64 MoE layer of
# tests/reference/moe_ref.py inside the GPT-2 and Llama oracles, on odd shapes: 6 experts,
# top 2, expert widths 37 and 52, MoE in every block and in every second one, aux 0.1 and
# z 0.01, a capacity of 1.0 that drops assignments, bias balancing, 2 micro-batches, and a
# run on shardlm's MoE defaults. First the oracle checks itself without shardlm
# (moe_ref.py --self-test). Routing is discontinuous, so each run lets the oracle pick the
# first seed from 1234 on whose float64 run stays clear of routing ties (--seed-search).
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py' 2>/dev/null || skip "PyTorch or h5py missing for $PYTHON3 (apt-get install python3-torch python3-h5py)"
R="$SLM_SRCDIR/tests/reference"
"$PYTHON3" "$R/moe_ref.py" --self-test || fail "moe_ref.py --self-test"
# one clear line when this shardlm has no MoE, rather than six failed runs
if ! "$SHARDLM" train --dry-run model.n_experts=6 >"$WORK/probe.out" 2>"$WORK/probe.err"; then
    cat "$WORK/probe.err" >&2
    fail "shardlm refuses model.n_experts=6"
fi
run() { local o=$1; shift; echo "== $o $*"; "$PYTHON3" "$R/$o" --shardlm "$SHARDLM" --workdir "$WORK" --seed-search 10 "$@" || fail "oracle $o $*"; }
MOE="--n-experts 6 --expert-top-k 2 --moe-aux-loss 0.1 --moe-z-loss 0.01"
# GPT-2, every block MoE, experts 37 wide
run gpt2_oracle.py --n-layer 2 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 $MOE --expert-hidden 37
# GPT-2, every second block (block 1 of 3), expert_hidden 0 = 4 d_model = 80, capacity 1.0
# with drops, 2 micro-batches
run gpt2_oracle.py --n-layer 3 --n-head 2 --d-model 20 --vocab 53 --seq-len 12 --batch 1 --accum 2 $MOE \
    --moe-every 2 --moe-capacity 1.0 --moe-expect-drops
# Llama, grouped-query with an untied head, every second block, experts 52 wide, 2 micro-batches
run llama_oracle.py --n-layer 2 --n-head 6 --n-kv-head 2 --d-model 60 --ffn-hidden 52 --vocab 37 --seq-len 7 \
    --batch 2 --accum 2 --untied $MOE --moe-every 2 --expert-hidden 52
# Llama, bias balancing (rate 0.01, so that the bias moves the routing within 10 steps)
run llama_oracle.py --n-layer 2 --n-head 4 --n-kv-head 2 --d-model 40 --ffn-hidden 36 --vocab 53 --seq-len 6 \
    --batch 2 $MOE --expert-hidden 37 --moe-balance bias --moe-bias-rate 0.01
# Llama, capacity 1.0 with drops and bias balancing together, experts 52 wide. The capacity
# runs have one sequence per micro-batch: equal tokens at the same position of two sequences
# (and, in a Llama, a sequence opening with a repeated token) have equal probabilities, an
# exact tie at a capacity boundary that the seed search would have to step around
run llama_oracle.py --n-layer 2 --n-head 2 --n-kv-head 1 --d-model 24 --ffn-hidden 20 --vocab 101 --seq-len 12 \
    --batch 1 $MOE --expert-hidden 52 --moe-capacity 1.0 --moe-expect-drops --moe-balance bias --moe-bias-rate 0.01
# shardlm's MoE defaults (top 2, every block, expert_hidden = ffn_hidden, aux 0.01, z 0,
# dropless, loss balancing): the dump must echo them
run llama_oracle.py --n-layer 1 --n-head 2 --n-kv-head 2 --d-model 16 --ffn-hidden 44 --vocab 29 --seq-len 6 \
    --batch 2 --n-experts 6
