#!/bin/bash
# Under mpirun -np 1 the run is the same as a plain process: identical losses.
. "$(dirname "$0")/common.sh"
args=(model.n_layer=1 model.d_model=32 model.n_head=2 model.seq_len=16 train.steps=5
      train.micro_batch=2 train.global_batch=4 sample.tokens=0 train.threads=1 log.peak_gflops=10)
"$SHARDLM" train "${args[@]}" "log.metrics=$WORK/plain.jsonl" >"$WORK/plain.out" || fail "plain run"
"$MPIEXEC" -n 1 "$SHARDLM" train "${args[@]}" "log.metrics=$WORK/mpi.jsonl" >"$WORK/mpi.out" \
    || fail "mpirun -n 1 run"
"$PYTHON3" - "$WORK/plain.jsonl" "$WORK/mpi.jsonl" <<'PY' || fail "losses differ"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == 5 and a == b, (a, b)
print("identical losses:", a)
PY
