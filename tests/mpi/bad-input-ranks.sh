#!/bin/bash
# A rank-local failure never hangs the other ranks: each bad input below, on 2 and 4 ranks,
# ends the job within 15 s with exit status 1 or 2, one clear message naming what is
# wrong (printed once), no HDF5 error stack, and no training step. Before these were
# agreed among ranks, `log.dump` on an unwritable path made rank 0 fail alone while rank 1
# waited in the next collective for the watchdog's 30 minutes.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import numpy' 2>/dev/null || skip "numpy missing (apt-get install python3-numpy)"
S=$SHARDLM
small=(model.n_layer=2 model.n_head=2 model.d_model=16 model.vocab_size=64 model.seq_len=8 train.steps=4
       train.micro_batch=1 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)

# inputs: token shards (llm.c format) that are good, truncated, or hold a token >= vocab_size
"$PYTHON3" - "$WORK" <<'PY'
import struct, sys
def shard(path, toks):
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253)))
        f.write(struct.pack("<%dH" % len(toks), *toks))
shard(sys.argv[1] + "/good.bin", [i * 7 % 64 for i in range(4000)])
shard(sys.argv[1] + "/big.bin", [i * 7 % 64 for i in range(2000)] + [64] + [1] * 100)
data = open(sys.argv[1] + "/good.bin", "rb").read()
open(sys.argv[1] + "/cut.bin", "wb").write(data[:1024 + 3000])  # the header says 4000 tokens
PY
# a checkpoint of another model shape (d_model 32), and an llm.c file of another shape (3 layers)
"$S" train "${small[@]}" model.d_model=32 "ckpt.dir=$WORK/other" >/dev/null || fail "the d_model 32 run"
"$PYTHON3" "$SLM_SRCDIR/tests/reference/llmc_file.py" write "$WORK/l3.bin" 3 2 16 64 64 8 || fail "llm.c file"

cases=(
    "ckpt.dir=/proc/nope/ck|ckpt.dir: cannot create the directory /proc/nope/ck"
    "log.dump=/nonexistent/d.h5|log.dump: cannot write /nonexistent/d.h5"
    "log.metrics=/nonexistent/m.jsonl|log.metrics: cannot write /nonexistent/m.jsonl"
    "data.train=$WORK/none*.bin|no token shard matches"
    "data.train=$WORK/cut.bin|cut.bin"
    "data.train=$WORK/big.bin|token 64 at byte offset"
    "ckpt.resume=$WORK/other/step_000000004.h5|model.d_model = 32, this run has 16"
    "ckpt.dir=$WORK/other|model.d_model = 32, this run has 16"
    "model.init_from=$WORK/l3.bin|l3.bin holds n_layer=3"
)
for np in 2 4; do
    for c in "${cases[@]}"; do
        setting=${c%%|*} needle=${c#*|}
        start=$(date +%s%N)
        rc=0
        timeout 15 "$MPIEXEC" -n "$np" "$S" train "${small[@]}" "$setting" >"$WORK/out" 2>"$WORK/err" || rc=$?
        took=$(( ($(date +%s%N) - start) / 1000000 ))
        [ "$rc" = 124 ] && { cat "$WORK/err"; fail "np $np $setting: still running after 15 s (a hang)"; }
        [ "$rc" = 1 ] || [ "$rc" = 2 ] || { cat "$WORK/err"; fail "np $np $setting: exit status $rc, expected 1 or 2"; }
        grep -qF -- "$needle" "$WORK/err" || { cat "$WORK/err"; fail "np $np $setting: the error does not say '$needle'"; }
        n=$(grep -c 'shardlm: error' "$WORK/err")
        [ "$n" = 1 ] || { cat "$WORK/err"; fail "np $np $setting: $n error messages, expected one"; }
        grep -q 'HDF5-DIAG\|H5[A-Z][a-z]*\.c line' "$WORK/err" && { cat "$WORK/err"; fail "np $np $setting: an HDF5 error stack"; }
        grep -q '^step ' "$WORK/out" && fail "np $np $setting: a training step ran"
        echo "ok: np $np $setting -> exit $rc in $took ms: $(grep 'shardlm: error' "$WORK/err" | cut -c1-150)"
    done
done
exit 0
