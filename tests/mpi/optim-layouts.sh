#!/bin/bash
# Each optimizer besides AdamW (Adafactor with a first moment, LAMB, SGD with Nesterov
# momentum) gives the one-rank run in every kind of layout: ZeRO 1-3 on 2-4 ranks, tensor
# parallel, pipeline parallel over uneven stages, tp x pp: the same losses and gradient
# norms at every step, step-0 gradients and final parameters (fp32, relative 1e-5). The
# statistics Adafactor and LAMB take of whole tensors (row and column means, RMS, norms)
# are cut by every one of these layouts differently. A Llama model (no biases) is held to
# that everywhere; GPT-2's qkv.bias has an exactly-zero-gradient key part whose rounding
# noise enters those statistics, so it is held to the key bias's bound (compare_dumps.py).
# Resuming is bit-exact in the same layout and equal across layouts, and another
# optimizer is refused unless ckpt.reset_optimizer = true.
own_settings=(model.arch=llama model.n_layer=3 model.n_head=4 model.n_kv_head=2 model.ffn_hidden=26
              model.tie_embeddings=false train.matmul=openblas ${optimizer_settings[@]+"${optimizer_settings[@]}"})
optimizers=("train.optimizer=adafactor adafactor.beta1=0.9 adafactor.relative_step=false"
            "train.optimizer=lamb"
            "train.optimizer=sgd train.lr=0.1 sgd.momentum=0.9 sgd.nesterov=true")
. "$(dirname "$0")/layouts.sh"
for opt in "${optimizers[@]}"; do
    read -ra o <<<"$opt"
    "$SHARDLM" train "${args[@]}" "${o[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "$opt: one-rank reference"
    # np tp pp zero_stage
    for layout in "2 1 1 1" "3 1 1 3" "4 1 1 2" "2 2 1 0" "2 1 2 0" "4 2 2 1"; do
        set -- $layout
        np=$1 tp=$2 pp=$3 stage=$4
        m=$(( 24 / (2 * np / (tp * pp)) ))
        run_layout "$np" "$WORK/l.h5" "${o[@]}" parallel.tp=$tp parallel.pp=$pp parallel.zero_stage=$stage \
            parallel.microbatches=$m
        printf '%s: np %d tp %d pp %d stage %d: ' "${o[0]}" "$np" "$tp" "$pp" "$stage"
        compare "$WORK/l.h5" || fail "$opt np $np tp $tp pp $pp stage $stage differs from one rank"
    done
done
# GPT-2: ZeRO 3 over 3 ranks and 2 pipeline stages
gpt2=(model.arch=gpt2 model.n_kv_head=0 model.ffn_hidden=0 model.tie_embeddings=true)
for opt in "${optimizers[@]}"; do
    read -ra o <<<"$opt"
    "$SHARDLM" train "${args[@]}" "${gpt2[@]}" "${o[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "$opt: GPT-2 reference"
    for layout in "3 1 3" "2 2 0"; do
        set -- $layout
        run_layout "$1" "$WORK/l.h5" "${gpt2[@]}" "${o[@]}" parallel.pp=$2 parallel.zero_stage=$3 \
            parallel.microbatches=$(( 24 / (2 * $1 / $2) ))
        printf 'gpt2 %s: np %d pp %d stage %d: ' "${o[0]}" "$1" "$2" "$3"
        compare "$WORK/l.h5" --whole-tensor-statistics || fail "gpt2 $opt np $1 pp $2 stage $3 differs from one rank"
    done
done
