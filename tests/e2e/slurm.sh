#!/bin/bash
# Slurm integration: a private one-node Slurm cluster (munged, slurmctld, slurmd; config,
# state, logs and munge socket under $WORK, everything on 127.0.0.1, ports of its own) runs
# slurm/train.sbatch twice on 2 ranks (srun --mpi=pmix):
#  1. preempted like a time-limit warning: `scancel --batch --signal=USR1` reaches the batch
#     shell, whose trap forwards it through srun to the ranks; they checkpoint the step they
#     are on and exit 75; the script requeues the job; the rerun (SLURM_RESTART_COUNT=1,
#     Restarts=1) resumes from exactly the checkpoint taken at the signal;
#  2. requeued by the operator: `scontrol requeue` (SIGTERM to the shell and the ranks); the
#     rerun resumes from the newest committed checkpoint.
#  3. `scancel --full --signal=USR1` (shell and ranks both signalled).
# All must end COMPLETED with final parameters bitwise identical to an uninterrupted run.
# Skips (77) unless run as root with slurm-wlm and munge installed (launch/setup).
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
T0=$(date +%s)
. "$(dirname "$0")/slurm-cluster.sh"

# ---- the runs: a small model, 300 steps, a checkpoint every 20 steps
model="model.n_layer=2 model.n_head=4 model.d_model=64 model.vocab_size=64 model.seq_len=32 \
train.steps=300 train.micro_batch=2 train.global_batch=8 train.threads=1 sample.tokens=0 \
log.peak_gflops=10 log.every=50 ckpt.every=20"
# shellcheck disable=SC2086
timeout 120 "$MPIEXEC" -n 2 "$SLM_SRCDIR/launch/run" "$SHARDLM" train $model "ckpt.dir=$WORK/ck-ref" \
    "log.dump=$WORK/ref.h5" >"$WORK/ref.out" 2>&1 || { cat "$WORK/ref.out"; fail "uninterrupted reference run"; }

submit() { # name: submit slurm/train.sbatch, prints the job id
    (cd "$WORK" && SLM_TOP=$SLM_SRCDIR SHARDLM=$SHARDLM CONFIG='' CKPT_DIR=$WORK/ck-$1 \
        EXTRA="$model log.metrics=$WORK/$1.jsonl log.dump=$WORK/$1.h5" \
        sbatch --parsable -t 10 -o "$WORK/$1.out" -J "slm-$1" "$SLM_SRCDIR/slurm/train.sbatch")
}
steps_done() { local l; l=$(tail -n 1 "$1" 2>/dev/null); case "$l" in *'"step":'*) l=${l#*\"step\":}; echo $(( ${l%%,*} + 1 )) ;; *) echo 0 ;; esac; }
wait_steps() { # metrics n job: until the job has trained n steps
    for _ in $(seq 600); do
        [ "$(steps_done "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    cat "$WORK"/*.out >&2; fail "job $3 did not reach step $2"
}
field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
wait_done() { # job: until it has finished (after its requeue)
    local s
    for _ in $(seq 900); do
        s=$(field "$1" JobState)
        case "$s" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$s"; return ;; esac
        sleep 0.2
    done
    echo "TIMEOUT-WAITING($s)"
}
same_as_ref() {
    "$PYTHON3" - "$WORK/ref.h5" "$1" <<'PY' || fail "$1: final parameters differ from the uninterrupted run"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r")["final"], h5py.File(sys.argv[2], "r")["final"]
bad = [n for n in a if n not in b or not np.array_equal(a[n][()], b[n][()])]
assert a and not bad and set(a) == set(b), bad
print("%d final tensors bitwise equal to the uninterrupted run" % len(a))
PY
}
check_job() { # name id
    local name=$1 id=$2 state restarts exitcode
    state=$(wait_done "$id")
    restarts=$(field "$id" Restarts); exitcode=$(field "$id" ExitCode)
    echo "$name: job $id $state, Restarts=$restarts, ExitCode=$exitcode"
    [ "$state" = COMPLETED ] && [ "$exitcode" = 0:0 ] || { cat "$WORK/$name.out"; fail "$name: job $id ended $state ($exitcode)"; }
    [ "$restarts" = 1 ] || { cat "$WORK/$name.out"; fail "$name: Restarts=$restarts, expected 1"; }
    grep -q 'restart=1 ' "$WORK/$name.out" || { cat "$WORK/$name.out"; fail "$name: the rerun did not see SLURM_RESTART_COUNT=1"; }
    resume_step=$(sed -n 's/^resume .*: step \([0-9]*\),.*/\1/p' "$WORK/$name.out" | head -n 1)
    [ -n "$resume_step" ] || { cat "$WORK/$name.out"; fail "$name: the rerun did not resume from a checkpoint"; }
    grep -q '^done ' "$WORK/$name.out" || { cat "$WORK/$name.out"; fail "$name: the rerun did not finish training"; }
    same_as_ref "$WORK/$name.h5"
}

# 1. USR1 to the batch shell (what --signal=B:USR1@120 does at the time limit)
j1=$(submit usr1) || fail "sbatch failed"
jobs_submitted+=("$j1")
wait_steps "$WORK/usr1.jsonl" 60 "$j1"
t=$(date +%s.%N)
scancel --batch --signal=USR1 "$j1" || fail "scancel --batch --signal=USR1 $j1"
check_job usr1 "$j1"
grep -q 'batch shell got SIGUSR1' "$WORK/usr1.out" || fail "usr1: the trap did not run"
grep -q 'requeueing job' "$WORK/usr1.out" || fail "usr1: the script did not requeue the job"
sig_step=$(sed -n 's/^preempted signal 10: checkpoint of step \([0-9]*\) committed.*/\1/p' "$WORK/usr1.out" | head -n 1)
[ -n "$sig_step" ] || { cat "$WORK/usr1.out"; fail "usr1: no 'preempted signal 10' line"; }
[ "$resume_step" = "$sig_step" ] || { cat "$WORK/usr1.out"; fail "usr1: resumed from step $resume_step, not from the step $sig_step checkpoint taken at the signal"; }
echo "usr1: signal checkpoint at step $sig_step, rerun resumed from step $resume_step; $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s from signal to completion"

# 2. the operator requeues the job (SIGTERM to the shell and the ranks)
j2=$(submit requeue) || fail "sbatch failed"
jobs_submitted+=("$j2")
wait_steps "$WORK/requeue.jsonl" 60 "$j2"
scontrol requeue "$j2" || fail "scontrol requeue $j2"
check_job requeue "$j2"
how=$(sed -n 's/^preempted signal \([0-9]*\): checkpoint of step \([0-9]*\).*/signal \1, checkpoint of step \2/p' "$WORK/requeue.out" | head -n 1)
grep -q 'second signal' "$WORK/requeue.out" && how="$how; a second signal ended it at once"
echo "requeue: first run stopped (${how:-no preemption line: killed}), rerun resumed from step $resume_step"
grep -q 'requeueing job' "$WORK/requeue.out" && fail "requeue: the script requeued a job Slurm was already requeueing"

# 3. `scancel --full --signal=USR1` reaches the shell and the ranks: the ranks may see USR1
#    twice (directly and forwarded by the trap through srun); a second signal exits at once
#    and the newest committed checkpoint stands. Either way the job requeues and ends exact.
j3=$(submit full) || fail "sbatch failed"
jobs_submitted+=("$j3")
wait_steps "$WORK/full.jsonl" 60 "$j3"
scancel --full --signal=USR1 "$j3" || fail "scancel --full --signal=USR1 $j3"
check_job full "$j3"
how=$(sed -n 's/^preempted signal \([0-9]*\): checkpoint of step \([0-9]*\).*/signal \1, checkpoint of step \2/p' "$WORK/full.out" | head -n 1)
grep -q 'second signal' "$WORK/full.out" && how="${how:+$how; }a second signal ended it at once"
echo "full: first run stopped (${how:-no preemption line}), rerun resumed from step $resume_step"

# 4. slurm/scale-study.sbatch: launch/scale's throughput sweeps as job steps (srun -n 1 and -n 2)
j4=$(cd "$WORK" && SLM_TOP=$SLM_SRCDIR SHARDLM=$SHARDLM OUT=$WORK/study ARGS="--data synthetic --no-isoflop --steps 4 --batch 4" \
    sbatch --parsable -t 10 -n 2 -o "$WORK/study.out" -J slm-study "$SLM_SRCDIR/slurm/scale-study.sbatch") \
    || fail "sbatch scale-study failed"
jobs_submitted+=("$j4")
state=$(wait_done "$j4")
[ "$state" = COMPLETED ] || { cat "$WORK/study.out"; fail "scale-study: job $j4 ended $state"; }
"$PYTHON3" - "$WORK/study" <<'PY' || { cat "$WORK/study.out"; fail "scale-study: its outputs"; }
import csv, json, sys
d = sys.argv[1]
tp = list(csv.DictReader(open(d + "/throughput.csv")))
assert [(r["kind"], r["ranks"]) for r in tp] == [("strong", "1"), ("strong", "2"), ("weak", "1"), ("weak", "2")], tp
assert all(float(r["tokens_per_s"]) > 0 and float(r["predicted_step_ms"]) > 0 for r in tp), tp
assert json.load(open(d + "/calibration.json"))["ranks"] == 2
assert "## Throughput against ranks" in open(d + "/report.md").read()
print("scale-study: %d throughput rows from job steps, report written" % len(tp))
PY
grep -q "srun --mpi=pmix" "$WORK/study/report.md" || fail "scale-study: the report does not name srun as the launcher"
echo "slurm test passed in $(( $(date +%s) - T0 )) s"
