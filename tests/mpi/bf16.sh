#!/bin/bash
# train.precision=bf16 (gradients and gathered parameters sent as bfloat16, computation
# with bf16-rounded parameters, fp32 masters and AdamW state) stays within the stated
# tolerance of the fp32 one-rank run, for every ZeRO stage on 1-4 ranks:
#   losses (per step) relative 5e-3, step-0 gradients (normwise) 1.5e-2,
#   gradient norms (per step) 0.15, final parameters (normwise) 6e-2 after 20 steps.
# (bf16 keeps 8 significant bits: a relative rounding error of up to 2^-9 = 2e-3.)
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
NPS=${SLM_TEST_NPS:-"1 2 3 4"}
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=24 train.lr=1e-2 train.warmup_steps=4
      train.min_lr=1e-3 train.grad_clip=1.0 sample.tokens=0 log.peak_gflops=10 train.threads=1 log.every=20)
"$SHARDLM" train "${args[@]}" "log.dump=$WORK/fp32.h5" >/dev/null || fail "fp32 reference run"
for np in $NPS; do
    for stage in 0 1 2 3; do
        timeout 300 "$MPIEXEC" -n "$np" "$SHARDLM" train "${args[@]}" parallel.zero_stage=$stage \
            train.precision=bf16 "log.dump=$WORK/b.h5" >"$WORK/out" 2>&1 || { cat "$WORK/out"; fail "np $np stage $stage bf16 run"; }
        printf 'bf16 np %d stage %d against fp32: ' "$np" "$stage"
        "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/fp32.h5" "$WORK/b.h5" --require-difference \
            --rtol-losses 5e-3 --rtol-grads 1.5e-2 --rtol-norms 0.15 --rtol-final 6e-2 \
            || fail "bf16 np $np stage $stage outside the stated tolerance"
    done
done
