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
    # bf16 (fp32 master weights and optimizer state): within the bf16 tolerance of tests/mpi/bf16.sh
    run_layout 2 "$WORK/b.h5" "${o[@]}" parallel.zero_stage=3 train.precision=bf16
    printf '%s: bf16 np 2 stage 3 against fp32: ' "${o[0]}"
    compare "$WORK/b.h5" --require-difference --rtol-losses 5e-3 --rtol-grads 1.5e-2 --rtol-norms 0.15 \
        --rtol-final 6e-2 || fail "$opt bf16 beyond its tolerance"
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
# Checkpoints (Llama): for each optimizer, 10 steps and a resume to 20 are bit-exact against
# the uninterrupted run in the same layout (np 2, ZeRO 1), and a checkpoint of np 4 = tp 2 x
# pp 2 resumes on np 3 at ZeRO 3 within the layouts' tolerance: the state groups reshard.
for opt in "${optimizers[@]}"; do
    read -ra o <<<"$opt"
    "$SHARDLM" train "${args[@]}" "${o[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "$opt: one-rank reference"
    run_layout 2 "$WORK/whole.h5" "${o[@]}" parallel.zero_stage=1
    rm -rf "$WORK/ck"
    run_layout 2 "$WORK/first.h5" "${o[@]}" parallel.zero_stage=1 train.stop_after=10 "ckpt.dir=$WORK/ck"
    run_layout 2 "$WORK/second.h5" "${o[@]}" parallel.zero_stage=1 "ckpt.dir=$WORK/ck"
    grep -q "^resume .*step 10" "$WORK/out" || { cat "$WORK/out"; fail "${o[0]}: did not resume at step 10"; }
    printf '%s: resumed at step 10, same layout: ' "${o[0]}"
    "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/whole.h5" "$WORK/second.h5" --from-step 10 --rtol 0 \
        || fail "${o[0]}: the resumed run is not bit-exact"
    rm -rf "$WORK/ck"
    run_layout 4 "$WORK/first.h5" "${o[@]}" parallel.tp=2 parallel.pp=2 parallel.microbatches=12 train.stop_after=10 \
        "ckpt.dir=$WORK/ck"
    run_layout 3 "$WORK/second.h5" "${o[@]}" parallel.zero_stage=3 "ckpt.dir=$WORK/ck"
    "$PYTHON3" - "$WORK/ck" "${o[0]#train.optimizer=}" <<'PY' || fail "${o[0]}: the checkpoint does not hold its state"
import glob, sys, h5py
f = h5py.File(sorted(glob.glob(sys.argv[1] + "/step_*.h5"))[-1], "r")
name = f.attrs["optimizer"].decode() if isinstance(f.attrs["optimizer"], bytes) else f.attrs["optimizer"]
groups = sorted(k for k in f if k != "params")
want = {"adafactor": ["adafactor_col", "adafactor_m", "adafactor_row", "adafactor_v"], "lamb": ["lamb_m", "lamb_v"],
        "sgd": ["sgd_momentum"]}[sys.argv[2]]
print(f"checkpoint: optimizer {name}, step {int(f.attrs['optimizer_step'])}, groups {groups}")
sys.exit(0 if name == sys.argv[2] and groups == want and int(f.attrs["optimizer_step"]) == 20 else 1)
PY
    # an HDF5 reader alone recomputes its digest over those groups
    "$PYTHON3" "$SLM_SRCDIR/tests/reference/ckpt_h5py.py" --digest "$(ls "$WORK"/ck/step_*.h5 | tail -n 1)" \
        || fail "${o[0]}: h5py does not verify the checkpoint"
    printf '%s: np 4 tp 2 pp 2 -> np 3 stage 3: ' "${o[0]}"
    compare "$WORK/second.h5" --from-step 10 || fail "${o[0]}: resumed across layouts differs"
done
# Another optimizer: refused, naming both, unless ckpt.reset_optimizer = true; then the
# parameters, step and data cursor come from the checkpoint (the first loss is the one the
# AdamW run had at step 10) and the optimizer starts afresh (its step count is 10 at the end)
rm -rf "$WORK/ck"
run_layout 2 "$WORK/whole.h5" parallel.zero_stage=1
run_layout 2 "$WORK/first.h5" parallel.zero_stage=1 train.stop_after=10 "ckpt.dir=$WORK/ck"
expect_error 1 "train.optimizer = adamw, this run has lamb" "ckpt.reset_optimizer = true" -- \
    "$MPIEXEC" -n 2 "$SHARDLM" train "${args[@]}" train.optimizer=lamb "ckpt.dir=$WORK/ck"
run_layout 3 "$WORK/second.h5" parallel.zero_stage=3 train.optimizer=lamb ckpt.reset_optimizer=true "ckpt.dir=$WORK/ck"
grep -q "^resume .*optimizer state reset" "$WORK/out" || { cat "$WORK/out"; fail "the reset was not reported"; }
"$PYTHON3" - "$WORK/whole.h5" "$WORK/second.h5" "$WORK/ck" <<'PY' || fail "ckpt.reset_optimizer: wrong state"
import glob, sys, h5py
whole, second = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
a, b = float(whole["losses"][10]), float(second["losses"][10])
f = h5py.File(sorted(glob.glob(sys.argv[3] + "/step_*.h5"))[-1], "r")
print(f"step 11 loss: adamw run {a!r}, reset to lamb {b!r}; final checkpoint: optimizer_step {int(f.attrs['optimizer_step'])}, "
      f"groups {sorted(k for k in f if k != 'params')}")
ok = abs(a - b) <= 1e-6 * abs(a) and int(f.attrs["optimizer_step"]) == 10 and "lamb_m" in f and "adam_m" not in f
sys.exit(0 if ok else 1)
PY
# The same optimizer with settings that keep other state (a first moment) is refused too
rm -rf "$WORK/ck"
"$SHARDLM" train "${args[@]}" train.optimizer=adafactor adafactor.relative_step=true train.stop_after=4 \
    "ckpt.dir=$WORK/ck" >/dev/null || fail "adafactor without a first moment"
expect_error 1 "no group /adafactor_m" "ckpt.reset_optimizer = true" -- \
    "$SHARDLM" train "${args[@]}" train.optimizer=adafactor adafactor.relative_step=true adafactor.beta1=0.9 \
    "ckpt.dir=$WORK/ck"
