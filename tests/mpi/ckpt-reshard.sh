#!/bin/bash
# A checkpoint written by one layout resumes in another: dp2 -> dp1, dp1 -> dp3,
# ZeRO stage 3 -> 1, stage 1 (bf16) -> stage 2, and the continued run matches the
# uninterrupted one-rank run within the layout-invariance tolerance (relative 1e-5).
. "$(dirname "$0")/layouts.sh"
for pair in "2 0 fp32 1 0" "1 0 fp32 3 2" "3 3 fp32 2 1" "2 1 bf16 2 2"; do
    set -- $pair
    rm -rf "$WORK/ck"
    run_layout "$1" "$WORK/first.h5" parallel.zero_stage=$2 train.precision=$3 train.stop_after=10 "ckpt.dir=$WORK/ck"
    run_layout "$4" "$WORK/second.h5" parallel.zero_stage=$5 "ckpt.dir=$WORK/ck"
    grep -q "^resume .*written by dp=$1 tp=1 pp=1 zero_stage=$2 precision=$3" "$WORK/out" \
        || { cat "$WORK/out"; fail "did not resume from the dp=$1 stage $2 checkpoint"; }
    printf 'dp%s stage %s %s -> dp%s stage %s: ' "$1" "$2" "$3" "$4" "$5"
    # the resumed run records steps 10-19 only; bf16 halves are held to the bf16 tolerance
    if [ "$3" = bf16 ]; then tol=(--rtol-losses 5e-3 --rtol-norms 0.15 --rtol-final 6e-2); else tol=(); fi
    "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref.h5" "$WORK/second.h5" --from-step 10 "${tol[@]}" \
        || fail "resumed dp$4 stage $5 differs"
done
