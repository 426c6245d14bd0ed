#!/bin/bash
# Pipeline parallelism (1F1B) gives the one-rank run, alone and composed with data and
# tensor parallelism: pp2 with 4 micro-batches, pp3 over 4 layers (1, 1 and 2), dp2 x pp2
# (ZeRO 0 and 1), tp2 x pp2, dp2 x tp2 x pp2 - the same losses and gradient norms at every
# step, the same step-0 gradients and final parameters as whole tensors (fp32, relative
# 1e-5). Checkpoints written by pp2 and by tp2 x pp2 resume on dp2 and on one rank.
# The same model as tensor-parallel.sh.
own_settings=(model.n_layer=4 model.n_head=6)
. "$(dirname "$0")/layouts.sh"
# np tp pp micro_batch zero_stage: global_batch 24 / (micro_batch x dp) micro-batches per step
for layout in "2 1 2 6 0" "3 1 3 2 0" "4 1 2 3 0" "4 1 2 3 1" "4 2 2 6 0" "8 2 2 3 1"; do
    set -- $layout
    dp=$(( $1 / ($2 * $3) )) m=$(( 24 / ($4 * $1 / ($2 * $3)) ))
    run_layout "$1" "$WORK/l.h5" parallel.tp=$2 parallel.pp=$3 train.micro_batch=$4 parallel.zero_stage=$5 \
        parallel.microbatches=$m
    grep -q "pipeline  stage 0 of $3: layers" "$WORK/out" || { cat "$WORK/out"; fail "no pipeline line"; }
    printf 'np %d = dp %d x tp %d x pp %d, %d micro-batches, stage %d: ' "$1" "$dp" "$2" "$3" "$m" "$5"
    compare "$WORK/l.h5" || fail "np $1 tp $2 pp $3 differs from one rank"
done
for pair in "2 1 2 6 2 1 1 6" "4 2 2 6 1 1 1 2"; do # np tp pp micro -> np tp pp micro
    set -- $pair
    rm -rf "$WORK/ck"
    run_layout "$1" "$WORK/first.h5" parallel.tp=$2 parallel.pp=$3 train.micro_batch=$4 \
        parallel.microbatches=$(( 24 / ($4 * $1 / ($2 * $3)) )) train.stop_after=10 "ckpt.dir=$WORK/ck"
    run_layout "$5" "$WORK/second.h5" parallel.tp=$6 parallel.pp=$7 train.micro_batch=$8 "ckpt.dir=$WORK/ck"
    grep -q "^resume .*written by dp=$(( $1 / ($2 * $3) )) tp=$2 pp=$3" "$WORK/out" \
        || { cat "$WORK/out"; fail "did not resume from the tp $2 pp $3 checkpoint"; }
    printf 'np %s tp %s pp %s -> np %s tp %s pp %s: ' "$1" "$2" "$3" "$5" "$6" "$7"
    compare "$WORK/second.h5" --from-step 10 || fail "resumed layout differs"
done
