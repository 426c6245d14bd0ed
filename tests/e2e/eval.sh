#!/bin/bash
# Validation loss and early stopping:
#  - with the model frozen (lr 0) and data.val the training shard in file order, the
#    validation loss after step 1 is the loss of exactly the batch step 1 trained on;
#  - the validation loss of a training run is the same on 1 rank, dp 2 and pp 2
#    (relative 1e-5): the windows are split over data-parallel ranks and the pipeline
#    carries the forward;
#  - eval.patience stops a run whose validation loss no longer improves, with a line
#    saying so and a checkpoint of the step it stopped at;
#  - eval.every without data.val is refused.
. "$(dirname "$0")/common.sh"
S=$SHARDLM
"$PYTHON3" - "$WORK/tok.bin" <<'PY'
import sys, struct, random
random.seed(7)
toks = [random.randrange(50) for _ in range(4000)]
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253)))
    f.write(struct.pack("<%dH" % len(toks), *toks))
PY
model=(model.n_layer=2 model.n_head=2 model.d_model=16 model.vocab_size=50 model.seq_len=8 sample.tokens=0
       log.peak_gflops=10 train.threads=1 log.every=1000)
val_of() { sed -n "s/^eval      step $2 | val loss \([0-9.]*\) .*/\1/p" "$1"; }

# 1. eval = the training loss of the same batch, when nothing changes in between
"$S" train "${model[@]}" "data.train=$WORK/tok.bin" data.shuffle=false "data.val=$WORK/tok.bin" train.steps=1 \
    train.lr=0 train.min_lr=0 train.micro_batch=4 train.global_batch=8 eval.every=1 eval.batches=1 \
    "log.metrics=$WORK/m.jsonl" >"$WORK/f.out" || { cat "$WORK/f.out"; fail "frozen run"; }
"$PYTHON3" - "$WORK/m.jsonl" <<'PY' || fail "the validation loss is not the loss of the batch"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert r["val_loss"] is not None, r
e = abs(r["val_loss"] - r["loss"]) / r["loss"]
print(f"frozen model, same windows: training loss {r['loss']:.7f}, validation loss {r['val_loss']:.7f}, relative {e:.1e}")
assert e <= 1e-6, e
PY

# 2. the same validation losses on other layouts
run=(train.steps=12 train.micro_batch=2 train.global_batch=8 eval.every=4 eval.batches=2 data.val=synthetic)
"$S" train "${model[@]}" "${run[@]}" >"$WORK/one.out" || fail "one rank"
for layout in "parallel.zero_stage=1" "parallel.pp=2 parallel.microbatches=4"; do
    # shellcheck disable=SC2086
    "$MPIEXEC" -n 2 "$S" train "${model[@]}" "${run[@]}" $layout >"$WORK/two.out" 2>&1 \
        || { cat "$WORK/two.out"; fail "$layout"; }
    for s in 4 8 12; do
        a=$(val_of "$WORK/one.out" $s) b=$(val_of "$WORK/two.out" $s)
        [ -n "$a" ] && [ -n "$b" ] || { cat "$WORK/two.out"; fail "no val loss at step $s"; }
        "$PYTHON3" -c "import sys; a, b = float('$a'), float('$b'); sys.exit(abs(a - b) > 1e-5 * a)" \
            || fail "$layout: val loss $b at step $s, one rank $a"
    done
    echo "ok: 2 ranks with $layout give the one-rank validation losses"
done

# 3. early stopping: a frozen model never improves
"$S" train "${model[@]}" train.steps=50 train.lr=0 train.min_lr=0 train.micro_batch=2 train.global_batch=2 \
    eval.every=2 eval.patience=3 eval.batches=1 data.val=synthetic "ckpt.dir=$WORK/ck" >"$WORK/p.out" \
    || { cat "$WORK/p.out"; fail "patience run"; }
grep -q '^stop      at step 8: no better val loss in 3 evaluations (eval.patience)' "$WORK/p.out" \
    || { cat "$WORK/p.out"; fail "did not stop at step 8"; }
grep -q '^step' "$WORK/p.out" && [ "$(grep -c '^eval' "$WORK/p.out")" = 4 ] || fail "expected 4 evaluations"
[ -f "$WORK/ck/step_000000008.h5" ] || fail "no checkpoint at the step it stopped"
echo "ok: eval.patience=3 stops at step 8 with a checkpoint"

# 4. refused without validation data
expect_error 2 "eval.every = 5 needs data.val" -- "$S" train "${model[@]}" eval.every=5
