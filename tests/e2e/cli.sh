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
