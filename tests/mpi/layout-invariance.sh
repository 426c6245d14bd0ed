#!/bin/bash
# Every ZeRO stage on 1-4 ranks (oversubscribed) gives the one-rank run: the same losses
# and gradient norms at every step, the same step-0 gradients and the same final
# parameters (fp32, relative 1e-5), with gradient accumulation and uneven shards.
. "$(dirname "$0")/layouts.sh"
for np in $NPS; do
    for stage in 0 1 2 3; do
        run_layout "$np" "$WORK/l.h5" parallel.zero_stage=$stage
        printf 'np %d stage %d: ' "$np" "$stage"
        compare "$WORK/l.h5" || fail "np $np stage $stage differs from one rank"
    done
done
# fused buckets change nothing either: a block here is 7224 floats (0.028 MiB), so 0.05 MiB
# buckets hold both blocks: embeddings, blocks 0-1, final norm = 3 buckets instead of 4
for stage in 0 3; do
    run_layout 3 "$WORK/l.h5" parallel.zero_stage=$stage parallel.bucket_mb=0.05
    grep -q ', 3 buckets,' "$WORK/out" || { grep layout "$WORK/out"; fail "blocks were not fused"; }
    printf 'np 3 stage %d buckets of 0.05 MiB: ' "$stage"
    compare "$WORK/l.h5" || fail "buckets differ"
done
# overlap off must give the same numbers as overlap on
run_layout 2 "$WORK/l.h5" parallel.zero_stage=2 parallel.overlap=false
printf 'np 2 stage 2 overlap off: '
compare "$WORK/l.h5" || fail "overlap off differs"
