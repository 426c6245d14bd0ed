#!/bin/bash
# Preemption and the watchdog on 2 ranks:
#  - SIGUSR1 to one rank only: both agree at the next step boundary, write a checkpoint
#    and exit with status 75; the restarted run resumes from it and ends with parameters
#    bitwise equal to an uninterrupted run;
#  - two SIGTERMs in a row: exit 75 at once, the newest committed checkpoint intact;
#  - a rank frozen with SIGSTOP: the other rank's watchdog names the collective it is stuck
#    in and aborts the job with status 124 instead of hanging.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
S=$SHARDLM
args=(model.n_layer=2 model.n_head=4 model.d_model=64 model.vocab_size=64 model.seq_len=32 train.steps=600
      train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1 log.every=100)
# start_job LOG ARGS...: 2 ranks in the background; JOB is the launcher's pid
start_job() { local log=$1; shift; timeout 300 "$MPIEXEC" -n 2 "$S" train "${args[@]}" "$@" >"$log" 2>&1 & JOB=$!; }
# wait_steps FILE N: until the metrics file has N records
wait_steps() { for _ in $(seq 600); do [ "$( { wc -l <"$1"; } 2>/dev/null || echo 0)" -ge "$2" ] && return 0; sleep 0.1; done; fail "no progress"; }
rank_pid() { world_rank_pid "$JOB" "$1"; }

"$MPIEXEC" -n 2 "$S" train "${args[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "uninterrupted run"

start_job "$WORK/p.out" "ckpt.dir=$WORK/ck" "log.metrics=$WORK/p.jsonl"
wait_steps "$WORK/p.jsonl" 50
kill -USR1 "$(rank_pid 1)"
rc=0; wait "$JOB" || rc=$?
[ "$rc" = 75 ] || { cat "$WORK/p.out"; fail "preempted job exited $rc, expected 75"; }
grep -q '^preempted signal 10: checkpoint of step [0-9]* committed' "$WORK/p.out" || { cat "$WORK/p.out"; fail "no preemption line"; }
step=$(sed -n 's/^preempted signal 10: checkpoint of step \([0-9]*\).*/\1/p' "$WORK/p.out")
"$S" ckpt verify "$WORK/ck/step_$(printf %09d "$step").h5" >/dev/null || fail "the preemption checkpoint does not verify"
"$MPIEXEC" -n 2 "$S" train "${args[@]}" "ckpt.dir=$WORK/ck" "log.dump=$WORK/resumed.h5" >"$WORK/r.out" || fail "resume"
grep -q "^resume .*step $step," "$WORK/r.out" || fail "did not resume from step $step"
"$PYTHON3" - "$WORK/ref.h5" "$WORK/resumed.h5" <<'PY' || fail "resumed parameters differ"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r")["final"], h5py.File(sys.argv[2], "r")["final"]
bad = [n for n in a if not np.array_equal(a[n][()], b[n][()])]
assert not bad, bad
print("final parameters after preemption at a signal and resume: bitwise equal to the uninterrupted run")
PY

rm -rf "$WORK/ck2"
start_job "$WORK/t.out" "ckpt.dir=$WORK/ck2" ckpt.every=20 "log.metrics=$WORK/t.jsonl"
wait_steps "$WORK/t.jsonl" 60
# Rank 1 is frozen so that the step boundary cannot be agreed on: the first SIGTERM leaves
# rank 0 waiting there, and the second must get it out at once. Two signals sent back to
# back could be merged by the kernel into one, so the second goes only after rank 0 has
# said it saw the first.
victim=$(rank_pid 0) peer=$(rank_pid 1)
kill -STOP "$peer"
kill -TERM "$victim"
for _ in $(seq 300); do grep -q '^\[rank 0\] shardlm: preemption signal received' "$WORK/t.out" && break; sleep 0.1; done
kill -TERM "$victim"
rc=0; wait "$JOB" || rc=$?
kill -CONT "$peer" 2>/dev/null
[ "$rc" = 75 ] || { cat "$WORK/t.out"; fail "double SIGTERM: exit $rc, expected 75"; }
grep -q '^\[rank 0\] shardlm: preemption signal received' "$WORK/t.out" || { cat "$WORK/t.out"; fail "the first signal was not acknowledged"; }
grep -q 'second signal: exiting now' "$WORK/t.out" || { cat "$WORK/t.out"; fail "no fast exit on the second signal"; }
grep -q '^preempted' "$WORK/t.out" && { cat "$WORK/t.out"; fail "a checkpoint was agreed on although rank 1 was frozen"; }
"$S" ckpt verify "$WORK/ck2" >/dev/null || fail "after a second signal the newest committed checkpoint is not good"
echo "ok: a second signal exits at once with 75, the committed checkpoint intact"

start_job "$WORK/w.out" train.watchdog_s=3 "log.metrics=$WORK/w.jsonl"
wait_steps "$WORK/w.jsonl" 30
frozen=$(rank_pid 1)
kill -STOP "$frozen"
rc=0; wait "$JOB" || rc=$?
kill -CONT "$frozen" 2>/dev/null
[ "$rc" = 124 ] || { cat "$WORK/w.out"; fail "watchdog: exit $rc, expected 124"; }
grep -q '\[rank 0\] shardlm: watchdog: no step completed for [0-9]* s (train.watchdog_s = 3): stuck at step [0-9]* in MPI_' \
    "$WORK/w.out" || { cat "$WORK/w.out"; fail "the watchdog did not say where rank 0 was stuck"; }
grep 'watchdog:' "$WORK/w.out"
