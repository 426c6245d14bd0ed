#!/bin/bash
# train.recompute gives bitwise the run without it - on one rank, dp2 at ZeRO 3, tp2, and
# pp2 with 4 micro-batches (losses, gradient norms, step-0 gradients, final parameters) -
# while the activations it holds shrink as the model's accounting says: per block only
# its output, plus one shared set of inner activations.
own_settings=(model.n_layer=4 model.n_head=6)
. "$(dirname "$0")/layouts.sh"
same() { "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$1" "$2" --rtol 0; }
acts() { sed -n 's/^memory .* activations \([0-9.]*\) MiB.*/\1/p' "$1"; }
"$SHARDLM" train "${args[@]}" "log.dump=$WORK/rc.h5" train.recompute=true >"$WORK/rc.out" || fail "1 rank with recompute"
printf '1 rank, recompute against none: '
same "$WORK/ref.h5" "$WORK/rc.h5" || fail "recompute changed the one-rank run"
for layout in "2 1 1 2 3 0" "2 2 1 2 0 0" "2 1 2 6 0 4"; do # np tp pp micro_batch zero microbatches (0: derived)
    set -- $layout
    set_args=(parallel.tp=$2 parallel.pp=$3 train.micro_batch=$4 parallel.zero_stage=$5 parallel.microbatches=$6)
    run_layout "$1" "$WORK/plain.h5" "${set_args[@]}"
    cp "$WORK/out" "$WORK/plain.out"
    run_layout "$1" "$WORK/rc.h5" "${set_args[@]}" train.recompute=true
    printf 'np %s tp %s pp %s zero %s, recompute against none: ' "$1" "$2" "$3" "$5"
    same "$WORK/plain.h5" "$WORK/rc.h5" || fail "recompute changed np $1 tp $2 pp $3"
done
# Activation memory, from the start-up line, on a model where activations matter: 8 blocks
# of d_model 64 at seq_len 128 keep 8 outputs + 1 inner set instead of 8 full sets.
big=(model.n_layer=8 model.n_head=4 model.d_model=64 model.seq_len=128 model.vocab_size=64 train.steps=1
     train.micro_batch=4 train.global_batch=4 sample.tokens=0 log.peak_gflops=10)
"$SHARDLM" train "${big[@]}" >"$WORK/a0.out" || fail "8-block run"
"$SHARDLM" train "${big[@]}" train.recompute=true >"$WORK/a1.out" || fail "8-block run with recompute"
a0=$(acts "$WORK/a0.out") a1=$(acts "$WORK/a1.out")
echo "activations: $a0 MiB without recompute, $a1 MiB with"
"$PYTHON3" -c "import sys; a0, a1 = $a0, $a1; sys.exit(0 if a1 < 0.5 * a0 else 1)" ||
    fail "recompute did not halve the activations ($a0 -> $a1 MiB)"
