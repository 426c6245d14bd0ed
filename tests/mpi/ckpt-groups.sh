#!/bin/bash
# Checkpoint groups that are not the model's tensor table (an optimizer's state of other
# shapes): written on 2 ranks - a group by one rank alone, a vector of several chunks split
# at an odd place, an empty vector, rows longer than a chunk - then read back on 3 ranks in
# other pieces, with what verify accepts and refuses (tests/mpi/ckpt_groups.c). h5py, alone,
# recomputes the version-4 meta_digest and finds every value where it belongs, and
# `shardlm ckpt inspect` lists every group.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
P=$SLM_BUILDDIR/tests/mpi/ckpt_groups
timeout 300 "$MPIEXEC" -n 2 "$P" save "$WORK/ck" || fail "writing the checkpoint on 2 ranks"
f=$WORK/ck/step_000000007.h5
[ "$(cat "$WORK/ck/latest")" = step_000000007.h5 ] || fail "latest does not name the checkpoint"
"$PYTHON3" "$SLM_SRCDIR/tests/reference/ckpt_h5py.py" --digest "$f" params opt_big opt_edge opt_row \
    || fail "h5py: the format or the meta_digest"
# the values, as ckpt_groups.c defines them: element i of group g (params, opt_row, opt_big,
# opt_edge) is g * 2^20 + i, i counted across the group's datasets in the order of its table
"$PYTHON3" - "$f" <<'PY' || fail "h5py: values"
import sys, h5py, numpy as np
tables = [("params", [("a", (4, 6)), ("b", (10,)), ("c", (3, 5))]),
          ("opt_row", [("a", (4,)), ("c", (3,))]),
          ("opt_big", [("v", (300001,))]),
          ("opt_edge", [("one", (1,)), ("zero", (0,)), ("wide", (2, 300000))])]
with h5py.File(sys.argv[1], "r") as ck:
    n = 0
    for g, (group, table) in enumerate(tables):
        assert sorted(ck[group]) == sorted(name for name, _ in table), (group, sorted(ck[group]))
        at = 0
        for name, shape in table:
            d = ck[group][name]
            size = int(np.prod(shape))
            want = (g * 2**20 + np.arange(at, at + size)).astype("<f4").reshape(shape)
            assert d.shape == shape and d.dtype == np.dtype("<f4"), (group, name, d.shape, d.dtype)
            assert np.array_equal(d[()], want), f"/{group}/{name}: values differ"
            at += size
            n += size
print(f"h5py: {n} values, each where it belongs")
PY
"$SHARDLM" ckpt inspect "$f" >"$WORK/inspect" || { cat "$WORK/inspect"; fail "ckpt inspect"; }
for line in "format   shardlm-checkpoint version 4" "step     7 (optimizer testopt, step 77)" \
            "/params   3 tensors, 49 values" "/opt_big  1 tensors, 300001 values" \
            "/opt_edge 3 tensors, 600001 values" "/opt_row  2 tensors, 7 values"; do
    grep -qF -- "$line" "$WORK/inspect" || { cat "$WORK/inspect"; fail "ckpt inspect lacks '$line'"; }
done
timeout 300 "$MPIEXEC" -n 3 "$P" load "$WORK/ck" || fail "reading it back on 3 ranks"
