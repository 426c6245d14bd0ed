#!/bin/bash
# train.precision=bf16 (gradients and gathered parameters sent as bfloat16, computation
# with bf16-rounded parameters, fp32 masters and AdamW state) stays within the stated
# tolerance of the fp32 one-rank run, for every ZeRO stage on 1-4 ranks:
#   losses (per step) relative 5e-3, step-0 gradients (normwise) 1.5e-2,
#   gradient norms (per step) 0.15, final parameters (normwise) 6e-2 after 20 steps.
# (bf16 keeps 8 significant bits: a relative rounding error of up to 2^-9 = 2e-3.)
. "$(dirname "$0")/layouts.sh"
for np in $NPS; do
    for stage in 0 1 2 3; do
        run_layout "$np" "$WORK/b.h5" parallel.zero_stage=$stage train.precision=bf16
        printf 'bf16 np %d stage %d against fp32: ' "$np" "$stage"
        compare "$WORK/b.h5" --require-difference --rtol-losses 5e-3 --rtol-grads 1.5e-2 \
            --rtol-norms 0.15 --rtol-final 6e-2 || fail "bf16 np $np stage $stage outside the stated tolerance"
    done
done
# With the oneDNN backend the linear layers also round their activations and gradients to
# bf16 (fp32 accumulation): the same tolerance holds. (oneDNN has bf16 products on some CPUs
# only; elsewhere tests/e2e/matmul-auto.sh checks that they are refused.)
if [ "$SLM_HAVE_DNNL" = yes ] && "$SHARDLM" bench blas | grep -q '^backend   onednn bf16 matmul *check ok'; then
    for np in $NPS; do
        run_layout "$np" "$WORK/b.h5" parallel.zero_stage=3 train.precision=bf16 train.matmul=dnnl
        printf 'bf16 oneDNN np %d stage 3 against fp32: ' "$np"
        compare "$WORK/b.h5" --require-difference --rtol-losses 5e-3 --rtol-grads 1.5e-2 \
            --rtol-norms 0.15 --rtol-final 6e-2 || fail "bf16 oneDNN np $np outside the stated tolerance"
    done
else
    echo "no oneDNN bf16 products on this build or CPU: the bf16 layouts above ran with fp32 products"
fi
