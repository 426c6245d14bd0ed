#!/bin/bash
# The command-line surface: version, help, unknown commands, bench.
. "$(dirname "$0")/common.sh"
"$SHARDLM" --version | grep -qE '^shardlm [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"
"$SHARDLM" --help | grep -q 'train \[CONFIG.ini\]' || fail "--help"
"$SHARDLM" train --help | grep -q 'model.n_layer' || fail "train --help lists keys"
expect_error 2 "unknown command 'frobnicate'" -- "$SHARDLM" frobnicate
expect_error 2 "usage" -- "$SHARDLM"
expect_error 2 "unknown argument '--bogus'" -- "$SHARDLM" bench gemm --bogus
"$SHARDLM" bench gemm --size 256 --seconds 0.2 --threads 1 --json >"$WORK/b.json" || fail "bench gemm"
"$PYTHON3" -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["kernel"] == "sgemm" and r["size"] == 256 and r["threads"] == 1, r
assert r["gflops"] > 0.5, r
' "$WORK/b.json" || fail "bench gemm --json output: $(cat "$WORK/b.json")"
# bench step: training steps ending in the profile; the kinds' times add up to at most the step
"$SHARDLM" bench step train.steps=4 train.threads=1 >"$WORK/p.out" 2>&1 || { cat "$WORK/p.out"; fail "bench step"; }
grep -q '^ckpt\|^eval\|^sample' "$WORK/p.out" && fail "bench step wrote a checkpoint, evaluated or sampled"
"$PYTHON3" - "$WORK/p.out" <<'PY' || fail "bench step: no sound profile line: $(grep profile "$WORK/p.out")"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^profile   per step: (.*)$", text, re.M)
assert m, "no profile line"
parts = dict((k, float(v)) for k, v in re.findall(r"(matmul|attention|elementwise|optimizer|data|exposed comm|other) ([0-9.]+) ms", m.group(1)))
assert set(parts) == {"matmul", "attention", "elementwise", "optimizer", "data", "exposed comm", "other"}, parts
assert parts["matmul"] > 0 and parts["attention"] > 0 and parts["elementwise"] > 0 and parts["optimizer"] > 0, parts
assert parts["other"] >= -0.05, parts   # the kinds never add up to more than the step
PY
echo "ok: bench step ends with a profile whose parts fit in the step"
