#!/bin/bash
# Spot-capacity drill: launch/drill kills a 2-rank training job 5 times at random moments
# (SIGKILL of one rank or of the whole job) and restarts it like a requeue; the job must
# survive all 5 interruptions and end with final parameters bitwise identical to an
# uninterrupted run. Pass DRILL_SEED to replay a particular sequence of kills.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
seed=${DRILL_SEED:-$(( $(date +%s) % 32768 ))}
rc=0
SHARDLM=$SHARDLM MPIEXEC=$MPIEXEC PYTHON3=$PYTHON3 timeout 300 \
    "$SLM_SRCDIR/launch/drill" -k 5 -n 2 --steps 400 --seed "$seed" --dir "$WORK/drill" >"$WORK/report" 2>&1 || rc=$?
cat "$WORK/report"
[ "$rc" = 0 ] || fail "launch/drill exited $rc (seed $seed)"
grep -q '^interruptions survived: 5 of 5 requested$' "$WORK/report" || fail "not 5 interruptions survived (seed $seed)"
grep -q '^restarts failed: 0$' "$WORK/report" || fail "a restart failed (seed $seed)"
grep -q '^final parameters bitwise identical to the reference: yes' "$WORK/report" || fail "final parameters differ (seed $seed)"
[ "$(grep -c '^  interruption [0-9]*: killed at step' "$WORK/report")" = 5 ] || fail "the report lists fewer than 5 resumes (seed $seed)"
