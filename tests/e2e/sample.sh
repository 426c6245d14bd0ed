#!/bin/bash
# shardlm sample: text from a checkpoint.
#  - from the checkpoint a run ends with, the same seed and prompt give exactly the text the
#    run itself sampled at its end (1 rank, and 2 ranks at ZeRO stage 3, whose sharded
#    checkpoint loads into one whole model; a Llama trained with tp 2 x pp 2 likewise);
#  - --top-k 1 is greedy whatever the temperature;
#  - a missing checkpoint, a bad option and an unencodable prompt are clear errors.
. "$(dirname "$0")/common.sh"
S=$SHARDLM
model=(model.n_layer=2 model.n_head=4 model.d_model=64 model.vocab_size=64 model.seq_len=32 train.steps=150
       train.micro_batch=4 train.global_batch=8 sample.tokens=80 sample.prompt=the log.peak_gflops=10
       train.threads=1 log.every=1000)
llama=(model.arch=llama model.n_kv_head=2 model.tie_embeddings=false parallel.tp=2 parallel.pp=2
       parallel.microbatches=2)
for run in "1 parallel.zero_stage=3" "2 parallel.zero_stage=3" "4 ${llama[*]}"; do
    set -- $run
    np=$1
    shift
    rm -rf "$WORK/ck"
    "$MPIEXEC" -n $np "$S" train "${model[@]}" "$@" "ckpt.dir=$WORK/ck" >"$WORK/t.out" 2>&1 \
        || { cat "$WORK/t.out"; fail "training on $np rank(s) $*"; }
    sed -n '/^sample    (temperature/{n;p}' "$WORK/t.out" >"$WORK/want"
    [ -s "$WORK/want" ] || { cat "$WORK/t.out"; fail "the run printed no sample"; }
    "$S" sample "$WORK/ck" --tokens 80 --prompt the >"$WORK/got" 2>"$WORK/err" || { cat "$WORK/err"; fail "sample"; }
    diff "$WORK/want" "$WORK/got" || fail "$np rank(s) $*: the checkpoint's sample differs from the run's own"
    echo "ok: $np rank(s) $*: shardlm sample reproduces the run's final sample: $(cut -c1-60 "$WORK/got")..."
done
"$S" sample "$WORK/ck" --tokens 50 --temperature 0 >"$WORK/greedy" 2>/dev/null || fail "greedy"
"$S" sample "$WORK/ck" --tokens 50 --temperature 1.5 --top-k 1 >"$WORK/top1" 2>/dev/null || fail "top-k 1"
"$S" sample "$WORK/ck" --tokens 50 --temperature 1.5 >"$WORK/hot" 2>/dev/null || fail "temperature 1.5"
diff "$WORK/greedy" "$WORK/top1" >/dev/null || fail "--top-k 1 is not greedy"
diff "$WORK/greedy" "$WORK/hot" >/dev/null && fail "temperature 1.5 sampled the greedy text: the option is dead"
echo "ok: --top-k 1 at temperature 1.5 is the greedy text; without top-k it is not"
expect_error 1 "no checkpoint in $WORK/none" -- "$S" sample "$WORK/none"
expect_error 2 "sample: --tokens, --top-k and --temperature must not be negative" -- "$S" sample "$WORK/ck" --top-k -1
expect_error 1 "the prompt cannot be encoded" -- "$S" sample "$WORK/ck" --prompt "THE CAT"
