#!/bin/bash
# The exchanges of expert parallelism (tests/mpi/ep_exchange.c): on 3 and 4 ranks, uneven
# row counts (none between some ranks) arrive whole and in their place, twice, with the
# counts exchange beside them; and when a rank never joins, the watchdog aborts the job
# with status 124, naming the MoE block and the world rank the others wait for.
. "$(dirname "$0")/../e2e/common.sh"
P=$SLM_BUILDDIR/tests/mpi/ep_exchange
for np in 3 4; do
    timeout 120 "$MPIEXEC" -n $np "$P" check || fail "the exchange on $np ranks"
done
rc=0
timeout 120 "$MPIEXEC" -n 2 "$P" stall >"$WORK/out" 2>&1 || rc=$?
[ "$rc" = 124 ] || { cat "$WORK/out"; fail "a missing rank: exit $rc, expected the watchdog's 124"; }
grep -q '\[rank 0\] shardlm: watchdog: .* in MoE block 5 forward: waiting for the row counts of world rank 1 (expert-parallel rank 1 of 2)' \
    "$WORK/out" || { cat "$WORK/out"; fail "the watchdog does not name the block and the rank"; }
grep 'watchdog:' "$WORK/out"
