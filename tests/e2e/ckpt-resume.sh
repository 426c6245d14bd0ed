#!/bin/bash
# Bit-exact resume: a run stopped at step 10 and resumed in the same layout continues with
# bitwise the same losses and ends with bitwise the same parameters as the run that never
# stopped - on one rank, on two ranks at ZeRO stage 3 with bf16 communication, and on two
# ranks writing checkpoints in the background (ckpt.async) every 3 steps.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=8 train.lr=1e-2 train.warmup_steps=4
      sample.tokens=0 log.peak_gflops=10 train.threads=1)
check_same() { # reference.jsonl resumed.jsonl ref.h5 resumed.h5
    "$PYTHON3" - "$@" <<'PY' || fail "resumed run differs"
import json, sys, h5py, numpy as np
full = [json.loads(l) for l in open(sys.argv[1])]
tail = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in tail] == list(range(10, 20)), [r["step"] for r in tail]
for r in tail:
    ref = full[r["step"]]
    assert r["loss"] == ref["loss"] and r["grad_norm"] == ref["grad_norm"], (r, ref)
a, b = h5py.File(sys.argv[3], "r")["final"], h5py.File(sys.argv[4], "r")["final"]
bad = [n for n in a if not np.array_equal(a[n][()], b[n][()])]
assert not bad, "final parameters differ: %s" % bad
print("steps 10-19: losses and grad norms bitwise equal; %d final tensors bitwise equal" % len(a))
PY
}
launch() { local np=$1; shift; if [ "$np" = 1 ]; then "$SHARDLM" "$@"; else timeout 300 "$MPIEXEC" -n "$np" "$SHARDLM" "$@"; fi; }
for layout in "1 parallel.zero_stage=0" "2 parallel.zero_stage=3 train.precision=bf16" "2 parallel.zero_stage=1 ckpt.async=true ckpt.every=3"; do
    set -- $layout
    np=$1; shift
    rm -rf "$WORK/ck" "$WORK/ckfull"
    launch "$np" train "${args[@]}" "$@" "ckpt.dir=$WORK/ckfull" "log.metrics=$WORK/full.jsonl" "log.dump=$WORK/full.h5" >/dev/null \
        || fail "uninterrupted run ($layout)"
    launch "$np" train "${args[@]}" "$@" train.stop_after=10 "ckpt.dir=$WORK/ck" >/dev/null || fail "first half ($layout)"
    [ "$(cat "$WORK/ck/latest")" = step_000000010.h5 ] || fail "latest does not name step 10"
    launch "$np" train "${args[@]}" "$@" "ckpt.dir=$WORK/ck" "log.metrics=$WORK/tail.jsonl" "log.dump=$WORK/tail.h5" \
        >"$WORK/out" || fail "resumed run ($layout)"
    grep -q '^resume .*step_000000010.h5: step 10' "$WORK/out" || { cat "$WORK/out"; fail "did not resume from step 10"; }
    printf '%s: ' "$layout"
    check_same "$WORK/full.jsonl" "$WORK/tail.jsonl" "$WORK/full.h5" "$WORK/tail.h5"
done

# Checkpoints of the earlier formats, written by shardlm at step 4 of the run below:
# version 1 (the earliest HDF5 file format, no matmul, no digest) at commit 7edce5a,
# version 2 (GPT-2 described by five shape integers, no model_config) at commit 34804ca,
# version 3 (AdamW's groups only, its step count as adam_t) at commit 85fca7d.
# Each verifies, and resumes with the losses and gradient norms that version continued with
# (bitwise on the machine that wrote them; 1e-5 relative here), writing version-4
# checkpoints from then on.
old_args=(model.n_layer=1 model.n_head=2 model.d_model=8 model.vocab_size=11 model.seq_len=4 train.steps=8
          train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)
for v in 1 2 3; do
    gunzip -c "$SLM_SRCDIR/tests/data/ckpt-v$v-step4.h5.gz" >"$WORK/v$v.h5" || fail "unpacking the version-$v checkpoint"
    "$SHARDLM" ckpt verify "$WORK/v$v.h5" | grep -q "^ok: .*format version $v" || fail "the version-$v checkpoint does not verify"
    "$SHARDLM" train "${old_args[@]}" "ckpt.resume=$WORK/v$v.h5" "ckpt.dir=$WORK/v${v}ck" "log.metrics=$WORK/v$v.jsonl" \
        >"$WORK/out" || fail "resume from the version-$v checkpoint"
    grep -q "^resume .*v$v.h5: step 4" "$WORK/out" || { cat "$WORK/out"; fail "did not resume from the version-$v checkpoint"; }
    "$PYTHON3" - "$SLM_SRCDIR/tests/data/ckpt-v$v-continued.jsonl" "$WORK/v$v.jsonl" "$v" <<'PY' || fail "resumed from version $v, the run differs"
import json, sys
want = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in got] == [r["step"] for r in want] == [4, 5, 6, 7], [r["step"] for r in got]
worst = max(abs(g[k] - w[k]) / abs(w[k]) for g, w in zip(got, want) for k in ("loss", "grad_norm"))
assert worst <= 1e-5, "largest relative difference %g" % worst
print("version %s resumed: steps 4-7 losses and grad norms match its own (largest relative difference %g)" % (sys.argv[3], worst))
PY
    "$SHARDLM" ckpt verify "$WORK/v${v}ck/step_000000008.h5" | grep -q '^ok: .*format version 4' \
        || fail "the checkpoint written after resuming from version $v is not a good version-4 one"
done
