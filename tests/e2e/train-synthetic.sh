#!/bin/bash
# A short run on the built-in corpus: the loss falls toward the corpus's entropy floor,
# every step has a well-formed metrics record, and a sample is printed at the end.
. "$(dirname "$0")/common.sh"
"$SHARDLM" train model.n_layer=2 model.d_model=64 model.n_head=4 model.seq_len=32 \
    train.steps=150 train.warmup_steps=10 train.lr=3e-3 train.micro_batch=8 train.global_batch=16 \
    log.every=25 "log.metrics=$WORK/m.jsonl" sample.tokens=80 train.threads=1 >"$WORK/out" 2>"$WORK/err" \
    || { cat "$WORK/err"; fail "train exited $?"; }
cat "$WORK/out"
grep -q '^step 150/150 | loss' "$WORK/out" || fail "no final step line"
grep -q '^sample' "$WORK/out" || fail "no sample"
grep -q 'entropy rate (the floor)' "$WORK/out" || fail "no floor report"
"$PYTHON3" "$SLM_SRCDIR/tests/reference/metrics_check.py" "$WORK/m.jsonl" --steps 150 \
    --max-final-loss 2.2 --min-drop 2.5 || fail "metrics"
