#!/bin/bash
# Islands (docs/islands.md) in one MPI job. The identity that must hold exactly: with inner
# SGD (no momentum, no clipping), an outer step after every step (sync_every 1), outer lr 1
# and no outer momentum, k islands of global batch B train as one job of global batch k B
# (island i reads the i-th of every k batches): the mean of the islands' losses and every
# island's final parameters equal the data-parallel run's (relative 1e-6), with islands of
# 1 rank, of 2 ranks at ZeRO 3, of tp 2 and of pp 2, and with 3 islands. A run stopped in
# the middle of a round (int8 pseudo-gradients with error feedback, AdamW inside) resumes
# bitwise; a checkpoint of 1-rank islands resumes on islands of 2 ranks at ZeRO 3. The
# outer steps fall every sync_every steps and at the last step, bf16 and int8 send 1/2
# and about 1/4 of the bytes, islands that would resume different steps are refused, and
# a signal to one island stops every island after the same step.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
M=(model.n_layer=2 model.n_head=2 model.d_model=24 model.vocab_size=37 model.seq_len=9 train.micro_batch=2
   train.steps=8 train.warmup_steps=2 sample.tokens=0 train.threads=1 log.every=100 log.peak_gflops=10
   train.matmul=openblas)
SGD=(train.optimizer=sgd train.lr=0.2 train.min_lr=0.02 train.grad_clip=0)
ID=(islands.sync_every=1 islands.outer_lr=1 islands.outer_momentum=0 islands.nesterov=false)
train() { # NP, then key=value ...; a hang fails after 300 s
    local np=$1
    shift
    timeout 300 "$MPIEXEC" -n "$np" "$SHARDLM" train "${M[@]}" "$@" >"$WORK/out" 2>&1 \
        || { cat "$WORK/out"; fail "np $np $* did not finish"; }
}
check() { "$PYTHON3" "$(dirname "$0")/islands_check.py" "$@"; }

# the identity: k islands with an outer step every step = one job of k global batches
train 1 "${SGD[@]}" train.global_batch=24 "log.dump=$WORK/ref2.h5"
for layout in "2 0 1 1" "4 3 1 1" "4 0 2 1" "4 1 1 2"; do # np zero_stage tp pp (2 islands)
    set -- $layout
    train "$1" "${SGD[@]}" "${ID[@]}" islands.count=2 train.global_batch=12 parallel.zero_stage=$2 \
        parallel.tp=$3 parallel.pp=$4 "log.dump=$WORK/i.h5"
    printf '2 islands of %d rank(s), zero %d tp %d pp %d: ' $(( $1 / 2 )) "$2" "$3" "$4"
    check "$WORK/ref2.h5" "$WORK/i.island0.h5" "$WORK/i.island1.h5" || fail "2 islands ($layout) are not one job"
done
train 1 "${SGD[@]}" train.global_batch=36 "log.dump=$WORK/ref3.h5"
train 3 "${SGD[@]}" "${ID[@]}" islands.count=3 train.global_batch=12 "log.dump=$WORK/i.h5"
printf '3 islands: '
check "$WORK/ref3.h5" "$WORK/i.island"{0,1,2}.h5 || fail "3 islands are not one job"
# the check can fail: islands that read the same batches are not one job of twice the batch
train 2 "${SGD[@]}" "${ID[@]}" islands.count=2 train.global_batch=12 islands.outer_lr=0.5 "log.dump=$WORK/i.h5"
check "$WORK/ref2.h5" "$WORK/i.island0.h5" "$WORK/i.island1.h5" >/dev/null 2>&1 \
    && fail "islands_check.py accepted an outer lr of 0.5 as the identity"

# outer steps every 3 steps and at the last (step 8); the bytes of each wire format
H3=(islands.count=2 islands.sync_every=3 train.global_batch=12)
for z in none bf16 int8; do
    train 2 "${H3[@]}" islands.compress=$z "log.metrics=$WORK/$z.jsonl"
done
"$PYTHON3" - "$WORK" <<'PY' || fail "outer steps or their bytes"
import json, sys
w = sys.argv[1]
recs = {z: [[json.loads(l) for l in open(f"{w}/{z}.island{i}.jsonl")] for i in (0, 1)] for z in ("none", "bf16", "int8")}
for z, islands in recs.items():
    for i, rs in enumerate(islands):
        outer = [r["step"] for r in rs if "outer_step" in r]
        assert outer == [2, 5, 7], (z, i, outer)
        assert [r["outer_step"] for r in rs if "outer_step" in r] == [1, 2, 3], (z, i)
        assert all(r["outer_islands"] == 2 and r["island"] == i for r in rs if "outer_step" in r), (z, i)
none, bf16, int8 = (recs[z][0][2]["outer_bytes"] for z in ("none", "bf16", "int8"))
print(f"bytes per outer step and rank: none {none:.0f}, bf16 {bf16:.0f} ({bf16 / none:.3f}), int8 {int8:.0f} ({int8 / none:.3f})")
assert bf16 / none == 0.5 and 0.25 < int8 / none < 0.27, (none, bf16, int8)
PY

# a run stopped in the middle of a round resumes bitwise (int8 keeps its error feedback)
train 2 "${H3[@]}" islands.compress=int8 "ckpt.dir=$WORK/ck" train.stop_after=4
train 2 "${H3[@]}" islands.compress=int8 "ckpt.dir=$WORK/ck" "log.metrics=$WORK/resumed.jsonl"
grep -q "resume .*step 4" "$WORK/out" || { cat "$WORK/out"; fail "the islands did not resume step 4"; }
"$SHARDLM" ckpt verify "$WORK/ck/island1" >/dev/null || fail "ckpt verify of island 1's checkpoint"
"$PYTHON3" - "$WORK" <<'PY' || fail "the resumed islands differ from the run that was not stopped"
import json, sys
w = sys.argv[1]
for i in (0, 1):
    full = [json.loads(l)["loss"] for l in open(f"{w}/int8.island{i}.jsonl")][4:]
    resumed = [json.loads(l)["loss"] for l in open(f"{w}/resumed.island{i}.jsonl")]
    assert full == resumed, (i, full, resumed)
print("int8 islands resumed at step 4: bitwise the run that was not stopped")
PY
# ... and on islands of another layout: 2 ranks each at ZeRO 3 (inner SGD with momentum)
MOM=(train.optimizer=sgd sgd.momentum=0.9 train.lr=0.05 train.min_lr=0.005)
train 2 "${H3[@]}" "${MOM[@]}" "log.metrics=$WORK/whole.jsonl"
train 2 "${H3[@]}" "${MOM[@]}" "ckpt.dir=$WORK/ck2" train.stop_after=4
train 4 "${H3[@]}" "${MOM[@]}" "ckpt.dir=$WORK/ck2" parallel.zero_stage=3 "log.metrics=$WORK/z3.jsonl"
"$PYTHON3" - "$WORK" <<'PY' || fail "the islands resumed at ZeRO 3 differ"
import json, sys
w = sys.argv[1]
worst = 0.0
for i in (0, 1):
    full = [json.loads(l)["loss"] for l in open(f"{w}/whole.island{i}.jsonl")][4:]
    resumed = [json.loads(l)["loss"] for l in open(f"{w}/z3.island{i}.jsonl")]
    assert len(full) == len(resumed) == 4
    worst = max(worst, max(abs(a - b) / a for a, b in zip(full, resumed)))
print(f"1-rank islands resumed as 2-rank ZeRO-3 islands: losses within {worst:.1e}")
assert worst < 1e-5
PY

# islands in one job resume together: one island behind the other is refused
newest=$(ls "$WORK/ck2/island1"/step_*.h5 | tail -1)
rm "$newest"
expect_error 1 "the islands resumed different steps" -- \
    "$MPIEXEC" -n 2 "$SHARDLM" train "${M[@]}" "${H3[@]}" "${MOM[@]}" "ckpt.dir=$WORK/ck2" train.steps=12
# a signal that reaches one island only stops both after the same step, with checkpoints
"$MPIEXEC" -n 2 "$SHARDLM" train "${M[@]}" islands.count=2 islands.sync_every=50 train.global_batch=12 \
    train.steps=100000 log.every=1 "ckpt.dir=$WORK/pre" "log.metrics=$WORK/pre.jsonl" >"$WORK/pre.out" 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -s "$WORK/pre.island1.jsonl" ] && break; sleep 0.1; done
target=$(world_rank_pid $launcher 1) || { kill $launcher; fail "no rank 1 process (island 1) under the launcher"; }
kill -USR1 "$target"
rc=0
timeout 120 tail --pid=$launcher -f /dev/null || { kill $launcher; fail "the islands did not stop after a signal"; }
wait $launcher || rc=$?
[ "$rc" = 75 ] || { cat "$WORK/pre.out"; fail "preempted islands exited $rc, expected 75"; }
s0=$(cat "$WORK/pre/island0/latest") s1=$(cat "$WORK/pre/island1/latest")
[ "$s0" = "$s1" ] || fail "the islands stopped at different checkpoints: $s0 and $s1"
echo "a signal to island 1 only: both islands committed $s0 and exited 75"
echo "islands: ok"
