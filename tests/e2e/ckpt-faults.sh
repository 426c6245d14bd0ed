#!/bin/bash
# Checkpoints survive what goes wrong: h5py and h5dump read them without shardlm; a
# flipped byte or a truncated file is caught by `ckpt verify` and skipped on resume in
# favour of the newest good one; an unfinished write (left by a crash) is ignored and
# cleaned up; kill -9 of a rank while checkpoints are written leaves a valid `latest`;
# a full disk gives a clear error and leaves the previous checkpoint intact.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
S=$SHARDLM
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)

# independent readers
"$MPIEXEC" -n 2 "$S" train "${args[@]}" parallel.zero_stage=3 train.stop_after=10 "ckpt.dir=$WORK/ck" \
    ckpt.every=5 "log.dump=$WORK/d.h5" >/dev/null || fail "first run"
"$PYTHON3" "$SLM_SRCDIR/tests/reference/ckpt_h5py.py" "$WORK/ck/step_000000010.h5" "$WORK/d.h5" 10 \
    "dp=2 tp=1 pp=1 zero_stage=3 precision=fp32" || fail "h5py reader"
"$H5DUMP" -A "$WORK/ck/step_000000010.h5" | grep -q 'ATTRIBUTE "step"' || fail "h5dump -A"
"$S" ckpt verify "$WORK/ck/step_000000010.h5" | grep -q '^ok: ' || fail "verify of a good checkpoint"
"$S" ckpt list "$WORK/ck" | grep -q 'step_000000010.h5 .* <- latest' || fail "ckpt list"
"$S" ckpt export "$WORK/ck/step_000000010.h5" "$WORK/m.safetensors" >/dev/null || fail "ckpt export"
"$PYTHON3" "$SLM_SRCDIR/tests/reference/safetensors_read.py" "$WORK/m.safetensors" "$WORK/ck/step_000000010.h5" \
    || fail "the safetensors export does not hold the checkpoint's parameters"
cp -r "$WORK/ck" "$WORK/pristine"

# a flipped byte (all bits inverted) inside a chunk of step 10
"$PYTHON3" -c '
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    off = f["params/blocks.0.mlp.fc.weight"].id.get_chunk_info(0).byte_offset + 100
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))' "$WORK/ck/step_000000010.h5"
expect_error 1 "/params/blocks.0.mlp.fc.weight fails its checksum" -- "$S" ckpt verify "$WORK/ck/step_000000010.h5"
"$H5DUMP" -d /params/blocks.0.mlp.fc.weight "$WORK/ck/step_000000010.h5" >/dev/null 2>&1 && fail "h5dump read the corrupt tensor"
"$S" train "${args[@]}" train.stop_after=12 "ckpt.dir=$WORK/ck" >"$WORK/out" 2>"$WORK/err" || fail "resume past a corrupt checkpoint"
grep -q 'skipping checkpoint: .*step_000000010.h5: /params/blocks.0.mlp.fc.weight fails its checksum' "$WORK/err" \
    || { cat "$WORK/err"; fail "the corrupt checkpoint was not reported"; }
grep -q '^resume .*step_000000005.h5: step 5' "$WORK/out" || fail "did not fall back to step 5"
expect_error 1 "fails its checksum" -- "$S" train "${args[@]}" "ckpt.resume=$WORK/ck/step_000000010.h5"
echo "ok: flipped byte detected by verify, h5dump and resume; fell back to step 5"

# a truncated file
rm -rf "$WORK/ck" && cp -r "$WORK/pristine" "$WORK/ck"
truncate -s 100000 "$WORK/ck/step_000000010.h5"
expect_error 1 "step_000000010.h5" -- "$S" ckpt verify "$WORK/ck/step_000000010.h5"
"$S" train "${args[@]}" train.stop_after=12 "ckpt.dir=$WORK/ck" >"$WORK/out" 2>"$WORK/err" || fail "resume past a truncated checkpoint"
grep -q '^resume .*step_000000005.h5: step 5' "$WORK/out" || { cat "$WORK/err"; fail "did not fall back past the truncated file"; }
echo "ok: truncated checkpoint detected and skipped"

# what a crash in the middle of a write leaves: a temporary, never a committed name
rm -rf "$WORK/ck" && cp -r "$WORK/pristine" "$WORK/ck"
head -c 200000 "$WORK/ck/step_000000010.h5" >"$WORK/ck/.step_000000015.h5.tmp"
"$S" train "${args[@]}" train.stop_after=11 "ckpt.dir=$WORK/ck" >"$WORK/out" || fail "resume beside a temporary"
grep -q '^resume .*step_000000010.h5: step 10' "$WORK/out" || fail "did not resume from step 10"
[ -e "$WORK/ck/.step_000000015.h5.tmp" ] && fail "the stale temporary was not cleaned up"
echo "ok: unfinished write ignored and removed"

# kill -9 of one rank while checkpoints are written (every step, 38 MB each)
big=(model.n_layer=4 model.n_head=4 model.d_model=256 model.vocab_size=256 model.seq_len=16 train.steps=400
     train.micro_batch=1 train.global_batch=2 sample.tokens=0 log.peak_gflops=10 train.threads=1
     "ckpt.dir=$WORK/kill" ckpt.every=1 ckpt.keep=2)
descendants() { # PID: every process below it (ranks may be children of a launcher's helper)
    local c
    for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}
# a rank of the job under launcher $1: a process below it running `shardlm train`
find_rank() {
    local p
    for p in $(descendants "$1"); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'shardlm train' && { echo "$p"; return; }
    done
}
for attempt in 1 2 3; do
    "$MPIEXEC" -n 2 "$S" train "${big[@]}" >"$WORK/kill.out" 2>&1 &
    launcher=$!
    victim=
    for _ in $(seq 200); do # up to 20 s for the ranks to start
        victim=$(find_rank "$launcher")
        [ -n "$victim" ] && break
        sleep 0.1
    done
    [ -n "$victim" ] || { kill "$launcher"; wait "$launcher"; fail "attempt $attempt: no rank process under the launcher after 20 s"; }
    for _ in $(seq 300); do # up to 30 s for a first committed checkpoint (attempt 1)
        [ -s "$WORK/kill/latest" ] && break
        sleep 0.1
    done
    [ -s "$WORK/kill/latest" ] || { kill "$launcher"; wait "$launcher"; fail "no checkpoint committed within 30 s"; }
    sleep "$(( 1 + attempt ))" # into the run, while checkpoints are written every step
    kill -9 "$victim" || { wait "$launcher"; fail "attempt $attempt: kill -9 of rank process $victim failed"; }
    rc=0
    wait "$launcher" || rc=$?
    [ "$rc" != 0 ] || { cat "$WORK/kill.out"; fail "attempt $attempt: the launcher exited 0 after rank process $victim was killed"; }
    latest="$WORK/kill/$(cat "$WORK/kill/latest")"
    "$S" ckpt verify "$latest" >/dev/null || fail "after kill -9 (attempt $attempt), latest $latest does not verify"
    echo "attempt $attempt: rank process $victim killed, the launcher exited $rc; latest $(basename "$latest") verifies"
    ls -a "$WORK/kill" | grep -q '\.tmp$' && echo "attempt $attempt: the kill interrupted a write"
done
"$MPIEXEC" -n 2 "$S" train "${big[@]}" train.stop_after=$(( $(sed 's/step_0*//; s/\.h5//' "$WORK/kill/latest") + 1 )) \
    >"$WORK/out" || fail "restart after kill -9"
grep -q '^resume ' "$WORK/out" || fail "the restart did not resume"
echo "ok: kill -9 during checkpointing left a valid latest, and the restart resumed from it"

# a full disk: a tmpfs with room for one checkpoint of the small model, not two
if mkdir -p "$WORK/full" && mount -t tmpfs -o size=800k tmpfs "$WORK/full" 2>/dev/null; then
    trap 'umount "$WORK/full" 2>/dev/null; rm -rf "$WORK"' EXIT
    expect_error 1 "the previous checkpoint is untouched" -- \
        "$S" train "${args[@]}" train.stop_after=10 "ckpt.dir=$WORK/full/ck" ckpt.every=5
    "$S" ckpt verify "$WORK/full/ck/step_000000005.h5" >/dev/null || fail "the previous checkpoint was damaged"
    [ "$(cat "$WORK/full/ck/latest")" = step_000000005.h5 ] || fail "latest moved"
    ls -a "$WORK/full/ck" | grep -q '\.tmp$' && fail "a partial file was left behind"
    echo "ok: full disk reported, previous checkpoint intact"
else
    skip "cannot mount a tmpfs here (not root?): the full-disk case was not run"
fi
