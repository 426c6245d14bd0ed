#!/bin/bash
# Islands as separate jobs that meet through files (islands.transport = files,
# docs/islands.md). Two jobs of one rank each give bitwise the losses of the same two
# islands cut from one MPI job; islands of different inner layouts (1 rank, and 2 ranks at
# ZeRO 3 or tp 2) give the one-job islands' losses within 1e-5 (inner SGD with momentum);
# launch/islands-drill kills an island in the middle of an outer step's write, the other
# goes on without it after the deadline and never reads the partial file, the requeued
# island catches up and takes part again, and both end with bitwise the same parameters.
# Pass DRILL_SEED to replay a particular kill.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
M=(model.n_layer=2 model.n_head=2 model.d_model=24 model.vocab_size=37 model.seq_len=9 train.micro_batch=2
   train.global_batch=12 train.steps=8 train.warmup_steps=2 sample.tokens=0 train.threads=1 log.every=100
   log.peak_gflops=10 train.matmul=openblas islands.count=2 islands.sync_every=3)
# two jobs, one per island, each on its own ranks: NP0 NP1, then key=value ... for both;
# island i's own settings in extra0 / extra1
files_run() {
    local np0=$1 np1=$2 name=$3
    shift 3
    local F=(islands.transport=files "islands.dir=$WORK/$name.x" "ckpt.dir=$WORK/$name.ck" "log.metrics=$WORK/$name.jsonl")
    timeout 300 "$MPIEXEC" -n "$np0" "$SHARDLM" train "${M[@]}" "${F[@]}" islands.index=0 "$@" ${extra0[@]+"${extra0[@]}"} \
        >"$WORK/$name.0.out" 2>&1 &
    local first=$!
    timeout 300 "$MPIEXEC" -n "$np1" "$SHARDLM" train "${M[@]}" "${F[@]}" islands.index=1 "$@" ${extra1[@]+"${extra1[@]}"} \
        >"$WORK/$name.1.out" 2>&1 || { cat "$WORK/$name.1.out"; fail "island 1 of $name"; }
    wait $first || { cat "$WORK/$name.0.out"; fail "island 0 of $name"; }
}
same_losses() { # A B RTOL: the islands' per-step losses of two runs
    "$PYTHON3" - "$WORK" "$1" "$2" "$3" <<'PY'
import json, sys
w, a, b, rtol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
worst = 0.0
for i in (0, 1):
    x = [json.loads(l)["loss"] for l in open(f"{w}/{a}.island{i}.jsonl")]
    y = [json.loads(l)["loss"] for l in open(f"{w}/{b}.island{i}.jsonl")]
    assert len(x) == len(y) == 8, (len(x), len(y))
    worst = max(worst, max(abs(p - q) / abs(p) for p, q in zip(x, y)))
print(f"{b} against {a}: losses within {worst:.1e}")
sys.exit(0 if worst <= rtol else 1)
PY
}
timeout 300 "$MPIEXEC" -n 2 "$SHARDLM" train "${M[@]}" "log.metrics=$WORK/mpi.jsonl" >"$WORK/mpi.out" 2>&1 \
    || { cat "$WORK/mpi.out"; fail "the islands in one MPI job"; }
extra0=() extra1=()
files_run 1 1 files
same_losses mpi files 0 || fail "islands through files differ from islands in one MPI job"
grep -q "outer     step 8 (outer step 3) | islands 2/2" "$WORK/files.1.out" || fail "island 1's last outer step"
ls "$WORK/files.x/decisions/step_000000003" "$WORK/files.x/island1/step_000000008.h5" >/dev/null \
    || fail "the exchange directory lacks a decision or a file"
# islands of different inner layouts (inner SGD with momentum: smooth enough for 1e-5)
MOM=(train.optimizer=sgd sgd.momentum=0.9 train.lr=0.05 train.min_lr=0.005)
timeout 300 "$MPIEXEC" -n 2 "$SHARDLM" train "${M[@]}" "${MOM[@]}" "log.metrics=$WORK/mpimom.jsonl" >"$WORK/mpi.out" 2>&1 \
    || { cat "$WORK/mpi.out"; fail "the islands in one MPI job (SGD)"; }
extra1=(parallel.zero_stage=3)
files_run 1 2 zero3 "${MOM[@]}"
same_losses mpimom zero3 1e-5 || fail "an island of 2 ranks at ZeRO 3 beside one of 1 rank"
extra0=(parallel.tp=2) extra1=()
files_run 2 1 tp2 "${MOM[@]}"
same_losses mpimom tp2 1e-5 || fail "an island of tp 2 beside one of 1 rank"
# an exchange directory of another run (another seed) is refused before any step
expect_error 1 "belongs to another run" "seed 1337" "seed 7" -- "$SHARDLM" train "${M[@]}" islands.transport=files \
    "islands.dir=$WORK/files.x" "ckpt.dir=$WORK/other.ck" islands.index=1 train.seed=7
# a preemption signal ends an island's wait for the others: it takes the step with the
# files there, commits its checkpoint and exits 75, long before the 600 s deadline
"$MPIEXEC" -n 1 "$SHARDLM" train "${M[@]}" train.steps=30 islands.transport=files "islands.dir=$WORK/alone.x" \
    "ckpt.dir=$WORK/alone.ck" islands.index=0 >"$WORK/alone.out" 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -e "$WORK/alone.x/island0/step_000000003.h5" ] && break; sleep 0.1; done
target=$(world_rank_pid $launcher 0) || { kill $launcher; fail "no rank under the launcher of the waiting island"; }
sleep 0.5
kill -USR1 "$target"
rc=0
timeout 60 tail --pid=$launcher -f /dev/null || { kill $launcher; fail "a signal did not end the wait"; }
wait $launcher || rc=$?
[ "$rc" = 75 ] || { cat "$WORK/alone.out"; fail "the waiting island exited $rc after a signal, expected 75"; }
[ "$(cat "$WORK/alone.x/decisions/step_000000003")" = "islands 0" ] || fail "the decision of step 3 is not island 0 alone"
grep -q "step_000000003.h5" "$WORK/alone.ck/island0/latest" || fail "no checkpoint of step 3 after the signal"
echo "a signal during the wait: island 0 took step 3 alone, committed it and exited 75"
# one island killed while it writes, requeued; the drill reports and checks
seed=${DRILL_SEED:-$(( $(date +%s) % 32768 ))}
SHARDLM=$SHARDLM MPIEXEC=$MPIEXEC PYTHON3=$PYTHON3 timeout 300 \
    "$SLM_SRCDIR/launch/islands-drill" -k 1 --steps 600 --seed "$seed" --dir "$WORK/drill" >"$WORK/drill.report" 2>&1 \
    || { cat "$WORK/drill.report"; fail "launch/islands-drill (seed $seed)"; }
grep -q "the others went on without it at steps \[[0-9]" "$WORK/drill.report" || fail "the drill's kill left no trace"
cat "$WORK/drill.report"
echo "islands-files: ok"
