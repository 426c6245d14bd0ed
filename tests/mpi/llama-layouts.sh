#!/bin/bash
# A Llama model gives the one-rank run in every kind of layout: data parallel at each ZeRO
# stage, tensor parallel (tp 2 splits the 4 query and 2 key/value heads), pipeline parallel
# over uneven stages (3 layers: 1 and 2), tp x pp, recompute, with an untied head and (pp 2)
# a tied one: the same losses and gradient norms at every step, step-0 gradients and final
# parameters (fp32, relative 1e-5); bf16 within its stated tolerance. A tp2 x pp2
# checkpoint resumes on dp3 at ZeRO 3. The shapes are odd: head size 6, grouped-query
# attention with 2 key/value heads for 4 query heads, an MLP 26 wide, llama3 frequency
# scaling.
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
# bf16 (as tests/mpi/bf16.sh states it): within the bf16 tolerance of the fp32 one-rank run
for layout in "2 parallel.zero_stage=3" "4 parallel.tp=2 parallel.pp=2 parallel.microbatches=12"; do
    set -- $layout
    np=$1
    shift
    run_layout "$np" "$WORK/b.h5" train.precision=bf16 "$@"
    printf 'bf16 np %d %s against fp32: ' "$np" "$*"
    compare "$WORK/b.h5" --require-difference --rtol-losses 5e-3 --rtol-grads 1.5e-2 \
        --rtol-norms 0.15 --rtol-final 6e-2 || fail "llama bf16 np $np $* outside the stated tolerance"
done
# a tied head under pipeline parallelism: the embedding lives on both ends and its
# gradient is summed over them
"$SHARDLM" train "${args[@]}" model.tie_embeddings=true "log.dump=$WORK/ref-tied.h5" >/dev/null || fail "tied one-rank run"
run_layout 2 "$WORK/l.h5" model.tie_embeddings=true parallel.pp=2 parallel.microbatches=12
printf 'tied np 2 pp 2: '
"$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref-tied.h5" "$WORK/l.h5" || fail "tied llama pp2 differs from one rank"
