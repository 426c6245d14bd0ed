#!/bin/bash
# Every meaningful byte of a checkpoint is verified. 600 copies of a committed checkpoint,
# each with one bit flipped - half at a byte drawn from the whole file, half from the bytes
# outside the tensors' data chunks (superblock, object headers, links, attributes, chunk
# indexes) - are judged by h5py alone: did the flip change anything h5py reads (names,
# shapes, types, values of every group, dataset and attribute)? One `shardlm ckpt verify`
# over all copies must report every such copy bad. A resume skips a checkpoint damaged in
# its metadata for the newest good one. Edits that leave well-formed HDF5 behind (made with
# h5py, which writes valid HDF5 checksums) are caught by the metadata digest, and - with a
# digest that matches them - by the check of the tensor list against the model; the list
# is checked in a version-1 file (no digest) too, and the version-3 digest (adam_t where
# version 4 names the optimizer) recomputed by h5py matches.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
S=$SHARDLM
FLIPS=$SLM_SRCDIR/tests/reference/ckpt_bitflips.py
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)

"$MPIEXEC" -n 2 "$S" train "${args[@]}" parallel.zero_stage=3 train.stop_after=10 "ckpt.dir=$WORK/ck" ckpt.every=5 \
    >/dev/null || fail "training run"
good=$WORK/ck/step_000000010.h5
"$S" ckpt verify "$good" "$WORK/ck/step_000000005.h5" >/dev/null || fail "the checkpoints as written do not verify"

# 600 flipped copies (a fixed seed: the same flips every run), one verify over all of them
mkdir "$WORK/flips"
"$PYTHON3" "$FLIPS" make "$good" "$WORK/flips" 600 20240607 >"$WORK/flips.tsv" || fail "making the flipped copies"
rc=0
"$S" ckpt verify "$WORK"/flips/flip_*.h5 >"$WORK/verify.out" 2>&1 || rc=$?
verdicts=$(grep -c '^\(ok\|bad\): ' "$WORK/verify.out")
[ "$verdicts" = 600 ] || { tail -5 "$WORK/verify.out"; fail "ckpt verify gave $verdicts verdicts for 600 copies"; }
[ "$rc" = 1 ] || fail "ckpt verify over the copies exited $rc, expected 1 (some are bad)"
"$PYTHON3" "$FLIPS" judge "$good" "$WORK/flips.tsv" "$WORK/verify.out" "$WORK/resume.list" \
    || fail "ckpt verify passed copies whose contents h5py reads differently"

# a resume skips a checkpoint damaged in its metadata for the newest good one
n=0
while read -r flipped; do
    n=$((n + 1))
    d=$WORK/resume$n
    mkdir "$d"
    cp "$WORK/ck/step_000000005.h5" "$d/"
    cp "$flipped" "$d/step_000000010.h5"
    echo step_000000010.h5 >"$d/latest"
    "$S" train "${args[@]}" train.stop_after=6 "ckpt.dir=$d" >"$WORK/out" 2>"$WORK/err" \
        || { cat "$WORK/err"; fail "resume beside $flipped"; }
    grep -qF "skipping checkpoint: $d/step_000000010.h5" "$WORK/err" \
        || { cat "$WORK/err"; fail "the resume did not report skipping $flipped"; }
    grep -q '^resume .*step_000000005.h5: step 5' "$WORK/out" || { cat "$WORK/out"; fail "did not resume from step 5"; }
    echo "ok: $(basename "$flipped") as the newest checkpoint: $(grep -o 'skipping checkpoint: .*' "$WORK/err" | head -1); resumed from step 5"
done <"$WORK/resume.list"
[ "$n" = 3 ] || fail "expected 3 caught metadata flips to resume beside, got $n"

# edits with valid HDF5 checksums: what the digest and the tensor list are for
TAMPER=$SLM_SRCDIR/tests/reference/ckpt_tamper.py
gunzip -c "$SLM_SRCDIR/tests/data/ckpt-v1-step4.h5.gz" >"$WORK/v1.h5" || fail "unpacking the version-1 checkpoint"
gunzip -c "$SLM_SRCDIR/tests/data/ckpt-v3-step4.h5.gz" >"$WORK/v3.h5" || fail "unpacking the version-3 checkpoint"
digest="the metadata digest does not match"
cases=("$good|none redigest|ok"
       "$good|step|$digest"
       "$good|config|$digest"
       "$good|rename|$digest"
       "$good|extra|$digest"
       "$good|rename redigest|/adam_m/blocks.0.ln1.weight is missing, and /adam_m/blocks.0.ln1.weight\x01 is not a tensor of this model"
       "$good|extra redigest|/params/extra is not a tensor of this model"
       "$good|missing redigest|/adam_v/wte is missing"
       "$good|reshape redigest|/params/wpe has shape (9, 25), this model's is (9, 24)"
       "$good|dtype redigest|/params/lnf.bias is not stored as float32"
       "$good|dropgroup|$digest"
       "$good|dropgroup redigest|no group /adam_v: the optimizer state was written with other settings of train.optimizer = adamw"
       "$good|rootextra|a group /extra this run's optimizer does not keep"
       "$good|groupextra|$digest"
       "$good|groupextra redigest|a group /extra this run's optimizer does not keep"
       "$good|rootdata|unexpected object /extra at the root (only groups of tensors belong there)"
       "$WORK/v1.h5|none|ok"
       "$WORK/v1.h5|rename|/adam_m/blocks.0.ln1.weight is missing, and /adam_m/blocks.0.ln1.weight\x01 is not a tensor of this model"
       "$WORK/v1.h5|rootextra|unexpected object /extra at the root (only /params, /adam_m and /adam_v belong there)"
       "$WORK/v3.h5|none redigest|ok"
       "$WORK/v3.h5|missing redigest|/adam_v/wte is missing"
       "$WORK/v3.h5|rootextra|unexpected object /extra at the root (only /params, /adam_m and /adam_v belong there)")
files=()
for i in "${!cases[@]}"; do
    IFS='|' read -r src edit want <<<"${cases[$i]}"
    "$PYTHON3" "$TAMPER" "$src" "$WORK/tamper$i.h5" $edit || fail "editing a copy of $src ($edit)"
    files+=("$WORK/tamper$i.h5")
done
rc=0
"$S" ckpt verify "${files[@]}" >"$WORK/tamper.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$WORK/tamper.out"; fail "ckpt verify over the edited copies exited $rc, expected 1"; }
for i in "${!cases[@]}"; do
    IFS='|' read -r src edit want <<<"${cases[$i]}"
    if [ "$want" = ok ]; then line="ok: $WORK/tamper$i.h5 "; else line="bad: $WORK/tamper$i.h5: $want"; fi
    grep -qF -- "$line" "$WORK/tamper.out" \
        || { cat "$WORK/tamper.out"; fail "$(basename "$src") edited ($edit): expected a line '$line'"; }
done
echo "ok: ${#cases[@]} edited copies judged as expected:"
sed "s|$WORK/||" "$WORK/tamper.out"

# intact, with a matching digest, but not the run's tensors: a resume stops rather than
# skipping it (which could start the run afresh and let retention delete its checkpoints)
mkdir "$WORK/other"
cp "$WORK/ck/step_000000005.h5" "$WORK/other/"
"$PYTHON3" "$TAMPER" "$good" "$WORK/other/step_000000010.h5" rename redigest || fail "editing"
expect_error 1 "step_000000010.h5: /adam_m/blocks.0.ln1.weight is missing" -- \
    "$S" train "${args[@]}" train.stop_after=11 "ckpt.dir=$WORK/other"
