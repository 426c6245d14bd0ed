#!/bin/bash
# Mixture of experts in every layout: a Llama and a GPT-2 model whose every block is an MoE
# block (6 experts, top 2, experts 14 wide) give the one-rank run's losses, auxiliary and
# z losses, gradient norms, step-0 gradients and final parameters (fp32, relative 1e-5) on
# ZeRO 1-3 over 2-4 ranks, tensor parallel (experts split like the dense MLP), pipeline
# parallel, tp x pp, expert parallel (ep 2 and 3, with every ZeRO stage, tp and pp), and
# bitwise with activation recompute. With capacity (tokens dropped) and the selection-bias
# balance, the biases each step routed with are equal in every layout; a checkpoint of
# tp 2 x pp 2 resumes on 3 ranks at ZeRO 3 with them, and one of ep 2 at ep 3 and ep 1;
# resumed in its own layout, an ep 2 run is bitwise the run that was not stopped.
own_settings=(model.arch=llama model.n_head=4 model.n_kv_head=2 model.ffn_hidden=26 model.tie_embeddings=false
              model.n_experts=6 model.expert_top_k=2 model.expert_hidden=14 train.moe_aux_loss=0.1
              train.moe_z_loss=0.01 train.matmul=openblas)
. "$(dirname "$0")/layouts.sh"
check_layouts() { # label, then the layouts as "np tp pp zero_stage [ep]"
    local label=$1
    shift
    for layout in "$@"; do
        set -- $layout
        local ep=${5:-1}
        run_layout "$1" "$WORK/l.h5" parallel.tp=$2 parallel.pp=$3 parallel.zero_stage=$4 parallel.ep=$ep \
            parallel.microbatches=$(( 24 / (2 * $1 / ($2 * $3)) )) ${extra[@]+"${extra[@]}"}
        printf '%s: np %d tp %d pp %d stage %d ep %d: ' "$label" "$1" "$2" "$3" "$4" "$ep"
        compare "$WORK/l.h5" || fail "$label np $1 tp $2 pp $3 stage $4 ep $ep differs from one rank"
    done
}
grep -q moe_aux_loss <(h5ls "$WORK/ref.h5") || fail "the dump has no /moe_aux_loss"
extra=()
check_layouts llama "2 1 1 1" "3 1 1 3" "4 1 1 2" "2 2 1 0" "2 1 2 0" "4 2 2 1"
# expert parallelism: the experts split over 2 or 3 of the data-parallel ranks, every ZeRO
# stage sharding them over the ranks that hold the same experts, with tp and with pp
check_layouts llama-ep "2 1 1 0 2" "4 1 1 1 2" "4 1 1 2 2" "3 1 1 3 3" "4 2 1 3 2" "4 1 2 1 2"
run_layout 2 "$WORK/r.h5" parallel.ep=2 train.recompute=true
printf 'llama: ep 2 with recompute: '
compare "$WORK/r.h5" || fail "activation recompute under expert parallelism differs"
run_layout 1 "$WORK/r.h5" train.recompute=true
printf 'llama: recompute: '
compare "$WORK/r.h5" --rtol 0 || fail "activation recompute changes an MoE run"
# GPT-2, MoE every second block
gpt2=(model.arch=gpt2 model.n_kv_head=0 model.ffn_hidden=0 model.tie_embeddings=true model.moe_every=2
      model.n_layer=4)
"$SHARDLM" train "${args[@]}" "${gpt2[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "GPT-2 reference"
extra=("${gpt2[@]}")
check_layouts gpt2 "3 1 1 3" "2 2 1 0" "2 1 2 0" "4 1 1 3 2"
# capacity and the selection bias: drops happen, the biases move, every layout agrees.
# Which assignment an expert drops is decided by a comparison of probabilities, so a
# rounding difference between layouts can flip it once training has brought two close:
# 10 steps, before any has here.
cap=(train.moe_capacity=1.0 train.moe_balance=bias train.moe_bias_rate=0.01 train.steps=10 train.warmup_steps=2)
"$SHARDLM" train "${args[@]}" "${cap[@]}" "log.dump=$WORK/ref.h5" "log.metrics=$WORK/m.jsonl" >/dev/null \
    || fail "capacity reference"
"$PYTHON3" - "$WORK/ref.h5" "$WORK/m.jsonl" <<'PY' || fail "no tokens dropped or the biases did not move"
import json, sys, h5py, numpy as np
b = h5py.File(sys.argv[1], "r")["moe_bias"][()]
dropped = max(l["dropped"] for r in map(json.loads, open(sys.argv[2])) for l in r["moe"])
print(f"capacity 1.0: up to {100 * dropped:.1f}% of assignments dropped; biases at the last step {b[-1].ravel()}")
sys.exit(0 if dropped > 0 and np.abs(b[-1]).max() > 0 and not np.abs(b[0]).any() else 1)
PY
extra=("${cap[@]}")
check_layouts capacity+bias "4 2 2 1" "3 1 1 3" "4 1 1 2 2"
# the routers' biases are all the state routing carries across steps: 10 steps at ep 2 and
# the same run stopped at step 5 and resumed end bitwise equal
run_layout 2 "$WORK/whole.h5" "${cap[@]}" parallel.ep=2
rm -rf "$WORK/ck"
run_layout 2 "$WORK/first.h5" "${cap[@]}" parallel.ep=2 train.stop_after=5 "ckpt.dir=$WORK/ck"
run_layout 2 "$WORK/second.h5" "${cap[@]}" parallel.ep=2 "ckpt.dir=$WORK/ck"
grep -q "^resume .*step 5" "$WORK/out" || { cat "$WORK/out"; fail "did not resume at step 5"; }
printf 'capacity+bias: ep 2 resumed at step 5, same layout: '
"$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/whole.h5" "$WORK/second.h5" --from-step 5 --rtol 0 \
    || fail "the resumed MoE run is not bit-exact"
# a checkpoint of tp 2 x pp 2 resumes on 3 ranks at ZeRO 3, the biases with it
rm -rf "$WORK/ck"
run_layout 4 "$WORK/first.h5" "${cap[@]}" parallel.tp=2 parallel.pp=2 parallel.microbatches=12 train.stop_after=5 \
    "ckpt.dir=$WORK/ck"
run_layout 3 "$WORK/second.h5" "${cap[@]}" parallel.zero_stage=3 "ckpt.dir=$WORK/ck"

"$PYTHON3" "$SLM_SRCDIR/tests/reference/ckpt_h5py.py" --digest "$(ls "$WORK"/ck/step_*.h5 | tail -n 1)" \
    || fail "h5py does not verify the MoE checkpoint"
"$SHARDLM" ckpt verify "$WORK/ck" >/dev/null || fail "ckpt verify refuses the MoE checkpoint"
# experts are stored under their global index: a checkpoint of ep 2 (dp 4, ZeRO 1) resumes
# at ep 3 (ZeRO 3) and without expert parallelism (dp 2)
rm -rf "$WORK/ck"
run_layout 4 "$WORK/first.h5" "${cap[@]}" parallel.ep=2 parallel.zero_stage=1 train.stop_after=5 "ckpt.dir=$WORK/ck"
for to in "3 parallel.ep=3 parallel.zero_stage=3" "2 parallel.ep=1 parallel.zero_stage=0"; do
    read -ra t <<<"$to"
    rm -rf "$WORK/ck2" && cp -r "$WORK/ck" "$WORK/ck2"
    run_layout "${t[0]}" "$WORK/second.h5" "${cap[@]}" "${t[@]:1}" "ckpt.dir=$WORK/ck2"
    grep -q "^resume .*step 5" "$WORK/out" || { cat "$WORK/out"; fail "did not resume at step 5"; }
    printf 'capacity+bias: ep 2 -> np %s %s at step 5: ' "${t[0]}" "${t[*]:1}"
    compare "$WORK/second.h5" --from-step 5 || fail "the ep 2 checkpoint resumed on ${t[*]} differs from one rank"
done
echo "ok"
