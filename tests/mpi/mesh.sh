#!/bin/bash
# The rank mesh and the binding:
#  - `train --dry-run` on 8 ranks with tp 2 x pp 2 prints every rank's coordinates, tp
#    innermost: rank = (pp_i * dp + dp_i) * tp + tp_i;
#  - a world that tp x pp does not divide, a tp that does not divide n_head, more stages than
#    layers, pp with ZeRO 2, and micro-batches that do not match the batch are refused;
#  - with the launcher's binding off, shardlm binds each rank to cores of its own, and the
#    kernel (/proc/PID/task/*/status) shows every thread of the rank - OpenBLAS's too -
#    confined to them; parallel.bind=none leaves them free; the launcher's binding is kept.
. "$(dirname "$0")/../e2e/common.sh"
small=(model.n_layer=1 model.n_head=2 model.d_model=16 model.vocab_size=32 model.seq_len=8
       train.micro_batch=1 sample.tokens=0 log.peak_gflops=10)
run() { timeout 120 "$MPIEXEC" "$@"; }

run -n 8 "$SHARDLM" train --dry-run "${small[@]}" model.n_layer=2 train.global_batch=2 parallel.tp=2 parallel.pp=2 \
    >"$WORK/dry" 2>"$WORK/dry.err" || { cat "$WORK/dry.err"; fail "dry run on 8 ranks"; }
grep -q '^mesh      8 ranks = pp 2 x dp 2 x tp 2' "$WORK/dry" || { cat "$WORK/dry"; fail "no mesh line"; }
for r in $(seq 0 7); do
    want="rank $r (pp $((r / 4)), dp $((r / 2 % 2)), tp $((r % 2))):"
    grep -q "^binding   $want" "$WORK/dry" || { cat "$WORK/dry"; fail "expected '$want'"; }
done
echo "ok: the 8-rank mesh puts tp innermost, then dp, then pp"
grep -q '^step' "$WORK/dry" && fail "a dry run trained"

expect_error 2 "8 ranks cannot be split into parallel.tp = 3 x parallel.pp = 1" -- \
    run -n 8 "$SHARDLM" train --dry-run "${small[@]}" train.global_batch=8 parallel.tp=3
[ "$(grep -c 'shardlm: error' "$WORK/err")" = 1 ] || { cat "$WORK/err"; fail "the error was not printed exactly once"; }
expect_error 2 "parallel.pp = 2 is more than model.n_layer = 1" -- \
    run -n 2 "$SHARDLM" train "${small[@]}" train.global_batch=1 parallel.pp=2
expect_error 2 "parallel.zero_stage = 2 with parallel.pp = 2" -- \
    run -n 2 "$SHARDLM" train "${small[@]}" model.n_layer=2 train.global_batch=1 parallel.pp=2 parallel.zero_stage=2
expect_error 2 "parallel.microbatches = 1" "= 4 micro-batches" "set parallel.microbatches = 4, or 0 to derive it" -- \
    run -n 2 "$SHARDLM" train "${small[@]}" model.n_layer=2 train.global_batch=4 parallel.pp=2 parallel.microbatches=1
expect_error 2 "parallel.microbatches = 3" "= 2 micro-batches" -- \
    run -n 2 "$SHARDLM" train "${small[@]}" train.global_batch=4 parallel.microbatches=3
# left at 0 (the default) it is derived: 4 micro-batches through the 2 stages
run -n 2 "$SHARDLM" train "${small[@]}" model.n_layer=2 train.global_batch=4 parallel.pp=2 >"$WORK/out" 2>&1 \
    || { cat "$WORK/out"; fail "a pipeline run without parallel.microbatches"; }
grep -q '4 micro-batches per step (1F1B)' "$WORK/out" || { cat "$WORK/out"; fail "the derived micro-batches are not 4"; }
expect_error 2 "parallel.tp = 2 does not divide model.n_head = 3" -- \
    run -n 2 "$SHARDLM" train "${small[@]}" model.n_head=3 model.d_model=15 train.global_batch=1 parallel.tp=2

# allowed_cpus PID: the distinct Cpus_allowed_list values of all the process's threads
allowed_cpus() { sed -n 's/^Cpus_allowed_list:\s*//p' /proc/"$1"/task/*/status 2>/dev/null | sort -u | paste -sd' '; }
# bound_run MPIRUN_ARGS... -- SHARDLM_ARGS...: a 2-rank run long enough to look at; prints
# "rank: cpus" for both ranks (and how many threads each had)
bound_run() {
    local margs=() job pids
    while [ "$1" != "--" ]; do margs+=("$1"); shift; done
    shift
    timeout 120 "$MPIEXEC" -n 2 "${margs[@]}" "$SHARDLM" train "${small[@]}" train.global_batch=2 train.steps=100000 \
        model.n_layer=2 model.d_model=64 model.n_head=4 model.seq_len=64 train.threads=2 log.every=1000 \
        "log.metrics=$WORK/m.jsonl" "$@" >"$WORK/b.out" 2>&1 &
    job=$!
    for _ in $(seq 300); do [ -s "$WORK/m.jsonl" ] && break; sleep 0.1; done
    [ -s "$WORK/m.jsonl" ] || { kill "$job"; cat "$WORK/b.out"; fail "the run did not start"; }
    pids=$(pgrep -P "$(pgrep -P "$job" | head -1)")   # timeout -> mpirun -> the ranks
    for p in $pids; do echo "$(allowed_cpus "$p") threads=$(ls /proc/"$p"/task | wc -l)"; done
    kill "$job"; wait "$job" 2>/dev/null
    rm -f "$WORK/m.jsonl"
}
ncpu=$(nproc)
[ "$ncpu" -ge 2 ] || skip "binding needs at least 2 CPUs (this machine has $ncpu)"

bound_run --bind-to none -- >"$WORK/own"
cat "$WORK/own"
[ "$(wc -l <"$WORK/own")" = 2 ] || fail "expected 2 ranks"
a=$(sed -n 1p "$WORK/own" | cut -d' ' -f1) b=$(sed -n 2p "$WORK/own" | cut -d' ' -f1)
# one set per rank, shared by all its threads, and the two sets apart
[ "$(sed -n 1p "$WORK/own" | wc -w)" = 2 ] && [ "$(sed -n 2p "$WORK/own" | wc -w)" = 2 ] || fail "threads of a rank are bound differently"
[ "$a" != "$b" ] || fail "both ranks are bound to CPUs $a"
[ "$a" != "0-$((ncpu - 1))" ] && [ "$b" != "0-$((ncpu - 1))" ] || fail "a rank was left unbound"
grep -q 'bound by shardlm' "$WORK/b.out" || { cat "$WORK/b.out"; fail "the log does not say shardlm bound the ranks"; }
echo "ok: with --bind-to none shardlm binds rank 0 to CPUs $a and rank 1 to CPUs $b, every thread"

bound_run --bind-to none -- parallel.bind=none >"$WORK/none"
cat "$WORK/none"
[ "$(cut -d' ' -f1 "$WORK/none" | sort -u)" = "0-$((ncpu - 1))" ] || fail "parallel.bind=none still bound the ranks"
echo "ok: parallel.bind=none leaves the ranks on all CPUs"

bound_run --bind-to core -- >"$WORK/launcher"
cat "$WORK/launcher"
grep -q 'bound by the launcher' "$WORK/b.out" || { cat "$WORK/b.out"; fail "the launcher's binding was not kept"; }
echo "ok: the launcher's binding is kept"
