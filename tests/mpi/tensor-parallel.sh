#!/bin/bash
# Tensor parallelism gives the one-rank run: tp2 and tp3 alone, and dp2 x tp2 at every ZeRO
# stage, with the same losses and gradient norms at every step, the same step-0 gradients
# and the same final parameters (fp32, relative 1e-5), compared as whole tensors (the dump
# puts every rank's rows and columns back in place). A tp2 checkpoint resumes on dp2 and
# a dp1 checkpoint on tp2, within the same tolerance.
# Six heads of width 4, so tp 2 and 3 both split them, and 4 layers.
own_settings=(model.n_layer=4 model.n_head=6)
. "$(dirname "$0")/layouts.sh"
for layout in "2 2 0" "3 3 0" "4 2 0" "4 2 1" "4 2 2" "4 2 3"; do
    set -- $layout
    run_layout "$1" "$WORK/l.h5" parallel.tp=$2 parallel.zero_stage=$3
    grep -q "= dp $(( $1 / $2 )) x tp $2 x pp 1," "$WORK/out" || { grep layout "$WORK/out"; fail "not a tp $2 layout"; }
    printf 'np %d tp %d stage %d: ' "$1" "$2" "$3"
    compare "$WORK/l.h5" || fail "np $1 tp $2 stage $3 differs from one rank"
done
for pair in "2 2 2 1" "1 1 2 2"; do # np tp -> np tp
    set -- $pair
    rm -rf "$WORK/ck"
    run_layout "$1" "$WORK/first.h5" parallel.tp=$2 train.stop_after=10 "ckpt.dir=$WORK/ck"
    run_layout "$3" "$WORK/second.h5" parallel.tp=$4 "ckpt.dir=$WORK/ck"
    grep -q "^resume .*written by dp=$(( $1 / $2 )) tp=$2 pp=1" "$WORK/out" \
        || { cat "$WORK/out"; fail "did not resume from the np $1 tp $2 checkpoint"; }
    printf 'np %s tp %s -> np %s tp %s: ' "$@"
    compare "$WORK/second.h5" --from-step 10 || fail "resumed np $3 tp $4 differs"
done
