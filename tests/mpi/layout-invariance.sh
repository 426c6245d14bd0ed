#!/bin/bash
# Every ZeRO stage on 1-4 ranks (oversubscribed) gives the one-rank run: the same losses
# and gradient norms at every step, the same step-0 gradients and the same final
# parameters (fp32, relative 1e-5), with gradient accumulation and uneven shards.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
NPS=${SLM_TEST_NPS:-"1 2 3 4"}
# d_model 24 and vocab 37 make every unit's size indivisible by 2, 3 and 4 ranks;
# global batch 24 of micro-batches 2 is 12, 6, 4 and 3 accumulation steps on 1-4 ranks.
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=24 train.lr=1e-2 train.warmup_steps=4
      train.min_lr=1e-3 train.grad_clip=1.0 sample.tokens=0 log.peak_gflops=10 train.threads=1 log.every=20)
"$SHARDLM" train "${args[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "reference run"
for np in $NPS; do
    for stage in 0 1 2 3; do
        timeout 300 "$MPIEXEC" -n "$np" "$SHARDLM" train "${args[@]}" parallel.zero_stage=$stage \
            "log.dump=$WORK/np$np-z$stage.h5" >"$WORK/out" 2>&1 || { cat "$WORK/out"; fail "np $np stage $stage run"; }
        printf 'np %d stage %d: ' "$np" "$stage"
        "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref.h5" "$WORK/np$np-z$stage.h5" \
            || fail "np $np stage $stage differs from one rank"
    done
done
# fused buckets change nothing either: a block here is 7224 floats (0.028 MiB), so 0.05 MiB
# buckets hold both blocks: embeddings, blocks 0-1, final norm = 3 buckets instead of 4
for stage in 0 3; do
    timeout 300 "$MPIEXEC" -n 3 "$SHARDLM" train "${args[@]}" parallel.zero_stage=$stage parallel.bucket_mb=0.05 \
        "log.dump=$WORK/bucket.h5" >"$WORK/out" || fail "bucket run"
    grep -q ', 3 buckets,' "$WORK/out" || { grep layout "$WORK/out"; fail "blocks were not fused"; }
    printf 'np 3 stage %d buckets of 0.05 MiB: ' "$stage"
    "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref.h5" "$WORK/bucket.h5" || fail "buckets differ"
done
# overlap off must give the same numbers as overlap on
timeout 300 "$MPIEXEC" -n 2 "$SHARDLM" train "${args[@]}" parallel.zero_stage=2 parallel.overlap=false \
    "log.dump=$WORK/nooverlap.h5" >/dev/null || fail "overlap off run"
printf 'np 2 stage 2 overlap off: '
"$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref.h5" "$WORK/nooverlap.h5" || fail "overlap off differs"
