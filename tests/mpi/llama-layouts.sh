#!/bin/bash
# A Llama model gives the one-rank run in every kind of layout: data parallel at each ZeRO
# stage, tensor parallel (tp 2 splits the 4 query and 2 key/value heads), pipeline parallel
# over uneven stages (3 layers: 1 and 2), tp x pp, recompute, both with an untied head;
# the same losses and gradient norms at every step, step-0 gradients and final parameters
# (fp32, relative 1e-5). A tp2 x pp2 checkpoint resumes on dp3 at ZeRO 3. The shapes are
# odd: head size 6, grouped-query attention with 2 key/value heads for 4 query heads, an
# MLP 26 wide, llama3 frequency scaling.
own_settings=(model.arch=llama model.n_layer=3 model.n_head=4 model.n_kv_head=2 model.ffn_hidden=26
              model.tie_embeddings=false model.rope_theta=500 model.rope_scaling=llama3 model.rope_factor=4
              model.rope_original_max_pos=8 model.rope_low_freq_factor=1 model.rope_high_freq_factor=2)
. "$(dirname "$0")/layouts.sh"
# np tp pp micro_batch zero_stage [more settings]
for layout in "2 1 1 2 1" "3 1 1 2 3" "4 1 1 2 2" "2 2 1 2 0" "2 1 2 2 0" "4 2 2 2 1" "2 1 1 2 3 train.recompute=true"; do
    set -- $layout
    np=$1 tp=$2 pp=$3 micro=$4 stage=$5
    shift 5
    dp=$(( np / (tp * pp) )) m=$(( 24 / (micro * np / (tp * pp)) ))
    run_layout "$np" "$WORK/l.h5" parallel.tp=$tp parallel.pp=$pp train.micro_batch=$micro \
        parallel.zero_stage=$stage parallel.microbatches=$m "$@"
    grep -q "= dp $dp x tp $tp x pp $pp," "$WORK/out" || { grep layout "$WORK/out"; fail "not the layout asked for"; }
    printf 'np %d = dp %d x tp %d x pp %d, stage %d %s: ' "$np" "$dp" "$tp" "$pp" "$stage" "$*"
    compare "$WORK/l.h5" || fail "llama np $np tp $tp pp $pp stage $stage $* differs from one rank"
done
rm -rf "$WORK/ck"
run_layout 4 "$WORK/first.h5" parallel.tp=2 parallel.pp=2 parallel.microbatches=12 train.stop_after=10 \
    "ckpt.dir=$WORK/ck"
run_layout 3 "$WORK/second.h5" parallel.zero_stage=3 "ckpt.dir=$WORK/ck"
grep -q "^resume .*written by dp=1 tp=2 pp=2" "$WORK/out" || { cat "$WORK/out"; fail "did not resume the tp2 x pp2 checkpoint"; }
printf 'np 4 tp 2 pp 2 -> np 3 stage 3: '
compare "$WORK/second.h5" --from-step 10 || fail "resumed llama layout differs"
