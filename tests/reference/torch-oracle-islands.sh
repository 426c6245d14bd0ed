#!/bin/bash
# PyTorch oracle for islands (islands.count = k, DiLoCo): k float64 models, each with its own
# torch.optim.AdamW, and a torch.optim.SGD on the anchor every islands.sync_every steps and
# at the last (tests/reference/islands_oracle.py), against shardlm's per-island dumps and
# metrics on odd shapes: each island's losses and gradient norms every step, its tokens
# (its slice of a one-rank run's stream of k global batches per step), the outer steps'
# schedule and update norms, the final parameters, equal on every island, and the dumps'
# islands attributes; with the islands in one MPI job (islands.transport = mpi) and as
# separate jobs of different inner layouts meeting through files (islands.transport =
# files). First the oracle checks itself without shardlm (islands_oracle.py --self-test:
# identities, synthetic runs of a second implementation, and runs, replays and attributes
# with mistakes made on purpose).
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import torch, h5py' 2>/dev/null || skip "PyTorch or h5py missing for $PYTHON3 (apt-get install python3-torch python3-h5py)"
[ -n "${MPIEXEC:-}" ] || skip "no MPI launcher (MPIEXEC)"
R="$SLM_SRCDIR/tests/reference"
"$PYTHON3" "$R/islands_oracle.py" --self-test || fail "islands_oracle.py --self-test"
# one clear line when this shardlm has no islands, rather than nine failed runs
if ! "$SHARDLM" train --dry-run islands.sync_every=2 islands.outer_lr=0.7 islands.transport=mpi \
        islands.deadline_s=600 >"$WORK/probe.out" 2>"$WORK/probe.err"; then
    cat "$WORK/probe.err" >&2
    fail "shardlm lacks the islands.* settings of this test (islands.transport, islands.deadline_s, ...)"
fi
run() {
    echo "== islands_oracle.py $*"
    "$PYTHON3" "$R/islands_oracle.py" --shardlm "$SHARDLM" --workdir "$WORK" --mpiexec "$MPIEXEC" \
        --set train.matmul=openblas --set train.threads=1 "$@" || fail "oracle islands_oracle.py $*"
}
# 2 islands, H = 3 over 7 steps (the last round is a forced outer step after 1 step), on
# shardlm's outer defaults (lr 0.7, momentum 0.9, Nesterov), which the run does not set
run --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 5 --batch 3 --steps 7 \
    --islands 2 --sync-every 3 --defaults
# 3 islands, H = 2, momentum 0.5 without Nesterov, 2 micro-batches per step
run --n-layer 1 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 --accum 2 --steps 7 \
    --islands 3 --sync-every 2 --outer-lr 0.7 --outer-momentum 0.5 --nesterov false
# Llama, grouped-query with an untied head, at T = 1 (q and k inert: the zero-gradient bound
# through the outer steps); outer lr 0.5, momentum 0.8 Nesterov
run --arch llama --n-layer 2 --n-head 4 --n-kv-head 2 --d-model 24 --ffn-hidden 20 --vocab 29 --seq-len 1 \
    --batch 3 --untied --steps 5 --islands 2 --sync-every 2 --outer-lr 0.5 --outer-momentum 0.8
# islands that are meshes of 2 ranks: tensor parallel 2, and pipeline parallel 2
run --n-layer 2 --n-head 2 --d-model 16 --vocab 23 --seq-len 6 --batch 2 --steps 7 \
    --islands 2 --sync-every 3 --ranks-per-island 2 --set parallel.tp=2
run --n-layer 2 --n-head 2 --d-model 20 --vocab 19 --seq-len 3 --batch 1 --accum 2 --steps 5 \
    --islands 2 --sync-every 2 --ranks-per-island 2 --set parallel.pp=2
# islands of 2 data-parallel ranks at ZeRO 3 (their dumps hold no tokens: replayed from the stream)
run --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 5 --batch 1 --accum 2 --steps 5 \
    --islands 2 --sync-every 2 --ranks-per-island 2 --set parallel.zero_stage=3
# parameter averaging: outer lr 1 without momentum is theta = mean of the islands' every H steps
run --n-layer 2 --n-head 4 --d-model 32 --vocab 101 --seq-len 16 --batch 2 --steps 7 \
    --islands 2 --sync-every 2 --average
# islands as jobs of their own meeting through files (islands.transport = files), started
# together, each with its own inner layout: island 0 on 1 rank, island 1 on 2 ranks at tp 2
# (dp 1: both dump their tokens); GPT-2 on shardlm's outer defaults
run --n-layer 2 --n-head 2 --d-model 16 --vocab 23 --seq-len 6 --batch 2 --steps 7 \
    --islands 2 --sync-every 3 --defaults --transport files --island-layout 1:2:parallel.tp=2
# 3 jobs: 1 rank, pp 2, and dp 2 at ZeRO 3 (no tokens dumped: replayed from the stream); a
# grouped-query Llama, outer lr 0.6, momentum 0.8 Nesterov, 2 micro-batches
run --arch llama --n-layer 2 --n-head 4 --n-kv-head 2 --d-model 16 --ffn-hidden 20 --vocab 29 --seq-len 4 \
    --batch 1 --accum 2 --steps 5 --islands 3 --sync-every 2 --outer-lr 0.6 --outer-momentum 0.8 \
    --transport files --island-layout 1:2:parallel.pp=2 --island-layout 2:2:parallel.zero_stage=3
