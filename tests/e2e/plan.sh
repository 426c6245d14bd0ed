#!/bin/bash
# shardlm plan: the memory it predicts per rank equals what `shardlm train` allocates (its
# `memory` line), and its count of gradient buckets the train's `layout` line, on 1-4 ranks, at every ZeRO stage, in fp32 and bf16, with tensor and
# pipeline parallelism and with recompute, for GPT-2 and Llama; the compute-optimal answers and the JSON fields;
# bad input refused with a message naming the option.
. "$(dirname "$0")/common.sh"
S=$SHARDLM
model=(model.n_layer=4 model.n_head=4 model.d_model=192 model.vocab_size=2003 model.seq_len=40
       train.micro_batch=2 train.global_batch=8 train.threads=1)

# plan_vs_train NP [key=value ...]: the plan's bytes by kind against the train log's MiB
plan_vs_train() {
    local np=$1; shift
    "$S" plan "${model[@]}" "$@" --ranks "$np" --json >"$WORK/plan.json" || fail "plan $np $*"
    timeout 300 "$MPIEXEC" -n "$np" "$S" train "${model[@]}" "$@" train.steps=1 sample.tokens=0 \
        log.peak_gflops=1 >"$WORK/train.out" 2>&1 || { cat "$WORK/train.out"; fail "train $np $*"; }
    "$PYTHON3" - "$WORK/plan.json" "$WORK/train.out" "$np $*" <<'EOF' || fail "plan and train differ: $np $*"
import json, re, sys
full = json.load(open(sys.argv[1]))
plan = full["memory"]
line = next(l for l in open(sys.argv[2]) if l.startswith("memory"))
buckets = int(re.search(r"(\d+) buckets", next(l for l in open(sys.argv[2]) if l.startswith("layout"))).group(1))
pat = (r"params ([\d.]+) \+ grads ([\d.]+) \+ [a-z]+ ([\d.]+) = .*gathered units ([\d.]+) MiB, "
       r"gradient buffers ([\d.]+) MiB, activations ([\d.]+) MiB")
got = [float(x) for x in re.search(pat, line).groups()]
keys = ["params", "grads", "optimizer", "gathered", "grad_buffers", "activations"]
want = [plan[k + "_bytes"] / 2**20 for k in keys]
# the log prints 0.1 MiB; the plan counts each unit's shard rounded up (a few floats)
bad = [(k, g, w) for k, g, w in zip(keys, got, want) if abs(g - w) > 0.051 + 1e-4 * w]
print("%-40s %d buckets, plan %s" % (sys.argv[3], buckets, " ".join("%s %.2f/%.1f" % (k, w, g) for k, g, w in zip(keys, got, want))))
if buckets != full["layout"]["buckets"]:
    print("buckets: train %d, plan %d" % (buckets, full["layout"]["buckets"]))
    bad.append("buckets")
sys.exit(1 if bad else 0)
EOF
}
plan_vs_train 1
plan_vs_train 1 train.recompute=true
plan_vs_train 2 parallel.zero_stage=2 parallel.bucket_mb=2   # blocks of 1.7 MiB fused two by two
plan_vs_train 2 parallel.zero_stage=3 parallel.bucket_mb=2
for z in 0 1 2 3; do plan_vs_train 2 parallel.zero_stage=$z; done
plan_vs_train 2 parallel.zero_stage=3 train.precision=bf16
plan_vs_train 4 parallel.zero_stage=1 train.precision=bf16
plan_vs_train 2 parallel.tp=2
plan_vs_train 4 parallel.pp=2 parallel.zero_stage=1 parallel.microbatches=2
plan_vs_train 4 parallel.tp=2 parallel.pp=2 parallel.microbatches=4 train.recompute=true
# a Llama (grouped-query attention, SwiGLU, an untied head that lives on the last stage)
llama=(model.arch=llama model.n_kv_head=2 model.ffn_hidden=520 model.tie_embeddings=false)
plan_vs_train 2 "${llama[@]}" parallel.zero_stage=3
plan_vs_train 4 "${llama[@]}" parallel.tp=2 parallel.pp=2 parallel.microbatches=4 train.recompute=true
# each optimizer's state: Adafactor's factored moments by the matrices' shapes, LAMB's two
# moments, SGD's momentum
plan_vs_train 2 train.optimizer=adafactor parallel.zero_stage=3
plan_vs_train 4 "${llama[@]}" train.optimizer=adafactor adafactor.beta1=0.9 parallel.tp=2 parallel.pp=2 \
    parallel.microbatches=4
plan_vs_train 2 train.optimizer=lamb parallel.zero_stage=1
plan_vs_train 1 train.optimizer=sgd sgd.momentum=0.9
# MoE: experts in every second block (a router and expert units beside dense blocks), and
# in every block of a Llama under tp x pp with recompute (the experts' activations shared)
moe=(model.n_experts=6 model.expert_hidden=200 model.moe_every=2)
plan_vs_train 2 "${moe[@]}" parallel.zero_stage=3
plan_vs_train 2 "${moe[@]}" parallel.zero_stage=2 parallel.bucket_mb=2
plan_vs_train 4 "${llama[@]}" model.n_experts=6 model.expert_hidden=200 parallel.tp=2 parallel.pp=2 \
    parallel.microbatches=4 train.recompute=true
# expert parallelism: the experts split over 2 ranks and sharded over the other 2
for z in 0 1 2 3; do plan_vs_train 4 "${moe[@]}" parallel.ep=2 parallel.zero_stage=$z; done
plan_vs_train 4 "${moe[@]}" parallel.ep=2 parallel.zero_stage=2 parallel.bucket_mb=2 train.precision=bf16
"$SHARDLM" plan "${moe[@]}" >"$WORK/moe" || fail "plan of an MoE model"
"$PYTHON3" - "$WORK/moe" <<'PY' || fail "plan's MoE line"
# 4 blocks of d_model 128, vocab 256, max_pos 64; blocks 1 and 3 hold a router (6 x 128)
# and 6 GELU experts of width 200 (2 x 128 x 200 + 200 + 128 each) instead of the dense MLP
# (2 x 128 x 512 + 512 + 128), 2 of which a token uses
import re, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("moe"))
C, F, Fe, E, k, L, V, P = 128, 512, 200, 6, 2, 4, 256, 64
dense_block = 4 * C * C + 2 * C * F + 9 * C + F
expert = 2 * C * Fe + Fe + C
moe_block = dense_block - (2 * C * F + F + C) + E * C + E * expert
total = V * C + P * C + 2 * dense_block + 2 * moe_block + 2 * C
active = total - 2 * (E - k) * expert
got = [float(x) for x in re.search(r"([\d.e+]+) parameters in all, ([\d.e+]+) active", line).groups()]
print(line.strip())
print("want", total, active)
sys.exit(0 if abs(got[0] - total) < 1e-3 * total and abs(got[1] - active) < 1e-3 * active else 1)
PY

# plan starts no MPI: it answers where MPI cannot start (a PML that does not exist makes
# MPI_Init fail, as `bench gemm` shows); under a launcher, the launcher's rank 0 alone
# answers, and alone reports a bad option
OMPI_MCA_pml=nonexistent "$S" plan --flops 1e20 >/dev/null || fail "plan needed MPI"
if OMPI_MCA_pml=nonexistent "$S" bench gemm --size 64 --seconds 0.1 >/dev/null 2>&1; then
    fail "MPI started with a PML that does not exist: the check above proves nothing"
fi
n=$(timeout 60 "$MPIEXEC" -n 2 "$S" plan --flops 1e20 | grep -c '^law') || true
[ "$n" = 1 ] || fail "plan under mpirun -n 2 printed its answer $n times"
n=$(timeout 60 "$MPIEXEC" -n 2 "$S" plan --bogus 1 2>&1 | grep -c "unknown option '--bogus'") || true
[ "$n" = 1 ] || fail "plan under mpirun -n 2 reported a bad option $n times"

# a budget: the closed-form optimum (values worked separately), a shape and the JSON fields
"$S" plan --flops 6e20 --json >"$WORK/b.json" || fail "plan --flops"
"$PYTHON3" - "$WORK/b.json" <<'EOF' || fail "plan --flops 6e20: $(cat "$WORK/b.json")"
import json, sys
r = json.load(open(sys.argv[1]))
o, m = r["optimum"], r["model"]
assert r["law"]["name"] == "hoffmann" and r["budget_flops"] == 6e20, r
assert abs(o["params"] / 1448394632.2367449 - 1) < 1e-9 and abs(o["tokens"] / 69041957056.66953 - 1) < 1e-9, o
assert abs(o["loss"] - 2.381012349799401) < 1e-9, o
assert abs(m["params"] / o["params"] - 1) <= 0.10 and m["d_model"] == 64 * m["n_head"], m
for k in ("optimal_tokens", "optimal_budget_flops", "tokens", "loss", "layout", "memory"):
    assert k in r, k
print("6e20 FLOPs -> N %.4g, D %.4g, shape L=%d C=%d (%.4g)" % (o["params"], o["tokens"], m["n_layer"], m["d_model"], m["params"]))
EOF
"$S" plan model.vocab_size=50257 model.seq_len=1024 --params 124439808 --law besiroglu >"$WORK/p.txt" || fail "plan --params"
grep -q "^model     gpt2 n_layer 12, n_head 12, d_model 768 " "$WORK/p.txt" || { cat "$WORK/p.txt"; fail "GPT-2 small's shape"; }
# a fitted law from a file, and the layouts that fit a node
printf '{"E": 2.0, "A": 300, "B": 500, "alpha": 0.3, "beta": 0.3, "note": "fit"}\n' >"$WORK/law.json"
"$S" plan "${model[@]}" --law "$WORK/law.json" --ranks 4 --ranks-per-node 2 --memory-per-node 0.1 >"$WORK/l.txt" \
    || fail "plan --law FILE --memory-per-node"
grep -q "^law       law.json: L(N, D) = 2 + 300 / N^0.3" "$WORK/l.txt" || { cat "$WORK/l.txt"; fail "law from a file"; }
grep -q "dp 4 x tp 1 x pp 1, zero stage 3" "$WORK/l.txt" || { cat "$WORK/l.txt"; fail "fitting layouts"; }

expect_error 2 "--flops '-1': expected a positive number" -- "$S" plan --flops -1
expect_error 2 "--flops, --node-hours or --params" -- "$S" plan --flops 1e20 --params 1e9
expect_error 2 "--tokens goes with --params" -- "$S" plan --tokens 1e9
expect_error 2 "unknown option '--bogus'" -- "$S" plan --bogus 1
expect_error 2 "$WORK/nosuch.json" -- "$S" plan --law "$WORK/nosuch.json"
printf '{"E": 2.0, "A": 300}\n' >"$WORK/half.json"
expect_error 2 "half.json: no number \"B\"" -- "$S" plan --law "$WORK/half.json"
expect_error 2 "less than the smallest gpt2" -- "$S" plan --params 1000
expect_error 2 "train.global_batch" -- "$S" plan "${model[@]}" --ranks 3

# plan fit: runs generated (in Python) from the Besiroglu law with 0.2% noise give back its
# constants, and the law it writes answers --law
"$PYTHON3" - >"$WORK/runs.csv" <<'EOF2'
import math, random
random.seed(7)
E, A, B, a, b = 1.8172, 482.01, 2085.43, 0.3478, 0.3658
print("run,params,tokens,loss,note")
for i in range(6):
    for j in range(6):
        N, D = 1e6 * 10 ** (i * 0.5), 1e7 * 10 ** (j * 0.7)
        print("r%d,%.9g,%.9g,%.9f,x" % (6 * i + j, N, D, (E + A / N ** a + B / D ** b) * math.exp(random.gauss(0, 0.002))))
EOF2
"$S" plan fit "$WORK/runs.csv" --out "$WORK/fit.json" >"$WORK/fit.txt" || fail "plan fit"
cat "$WORK/fit.txt"
"$PYTHON3" - "$WORK/fit.json" <<'EOF2' || fail "plan fit did not recover the law: $(cat "$WORK/fit.json")"
import json, sys
f = json.load(open(sys.argv[1]))
assert abs(f["alpha"] - 0.3478) < 0.02 and abs(f["beta"] - 0.3658) < 0.02, f
assert abs(f["E"] - 1.8172) < 0.05 and f["runs"] == 36, f
EOF2
"$S" plan --law "$WORK/fit.json" --flops 5.76e23 | grep -q "^budget .* (1[6-9]\.[0-9] tokens per parameter)" \
    || fail "the fitted law's optimum is not Besiroglu's ~18 tokens per parameter"
printf 'params,loss\n1e6,3\n' >"$WORK/nocol.csv"
expect_error 2 "nocol.csv:1: no column \"tokens\"" -- "$S" plan fit "$WORK/nocol.csv"
printf 'params,tokens,loss\n1e6,1e7,3\n1e6,-5,3\n' >"$WORK/neg.csv"
expect_error 2 "neg.csv:3: params, tokens and loss must be positive" -- "$S" plan fit "$WORK/neg.csv"
head -n 4 "$WORK/runs.csv" >"$WORK/three.csv"
expect_error 2 "at least 5 runs, not 3" -- "$S" plan fit "$WORK/three.csv"

# bench calibrate on 2 ranks writes what plan --calibration reads, and plan predicts a time
small=(model.n_layer=2 model.n_head=4 model.d_model=64 model.vocab_size=256 model.seq_len=32 train.micro_batch=2
       train.global_batch=4 train.threads=1)
timeout 300 "$MPIEXEC" -n 2 "$S" bench calibrate "${small[@]}" --steps 3 --bytes 65536 --out "$WORK/cal.json" \
    >"$WORK/cal.out" 2>&1 || { cat "$WORK/cal.out"; fail "bench calibrate"; }
cat "$WORK/cal.out"
"$PYTHON3" - "$WORK/cal.json" <<'EOF2' || fail "calibration file: $(cat "$WORK/cal.json")"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["ranks"] == 2 and c["nodes"] == 1 and c["threads"] == 1 and c["message_bytes"] == 65536, c
assert 0 < c["gflops_per_rank"] <= 1.5 * c["gemm_gflops"] and abs(c["mfu"] - c["gflops_per_rank"] / c["gemm_gflops"]) < 1e-3, c
assert c["latency_s"] > 0 and c["bandwidth_bytes_per_s"] > 0 and c["allreduce_bus_bytes_per_s"] > 0, c
EOF2
"$S" plan "${small[@]}" train.steps=100 --ranks 2 --calibration "$WORK/cal.json" --json >"$WORK/t.json" \
    || fail "plan --calibration"
"$PYTHON3" - "$WORK/t.json" "$WORK/cal.json" <<'EOF2' || fail "plan --calibration: $(cat "$WORK/t.json")"
import json, sys
r, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t, fpt = r["time"], r["model"]["flops_per_token"]
# compute: the step's 4 sequences of 32 tokens over 2 ranks at the calibrated rate
assert abs(t["compute_s"] - fpt * 4 * 32 / 2 / (c["gflops_per_rank"] * 1e9)) < 1e-9 * t["compute_s"] + 1e-15, t
assert t["dp_comm_s"] > 0 and t["step_s"] >= t["overlapped_step_s"] >= t["compute_s"], t
assert t["steps"] == 100 and abs(t["wall_s"] - 100 * t["step_s"]) < 1e-9 * t["wall_s"], t
EOF2
# node-hours at the calibrated rate: 2 ranks on 1 node train at 2 x gflops_per_rank
"$S" plan "${small[@]}" --node-hours 0.5 --calibration "$WORK/cal.json" --json >"$WORK/nh.json" || fail "plan --node-hours --calibration"
"$PYTHON3" - "$WORK/nh.json" "$WORK/cal.json" <<'EOF2' || fail "plan --node-hours --calibration: $(cat "$WORK/nh.json")"
import json, sys
r, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert abs(r["node_gflops"] - 2 * c["gflops_per_rank"]) < 1e-9 * r["node_gflops"], r
assert abs(r["budget_flops"] - 0.5 * 3600 * 2 * c["gflops_per_rank"] * 1e9) < 1e-9 * r["budget_flops"], r
EOF2
expect_error 2 "--node-hours needs --node-gflops or a --calibration" -- "$S" plan --node-hours 3
expect_error 2 "--node-gflops goes with --node-hours" -- "$S" plan --node-gflops 300
printf '{"gflops_per_rank": 10}\n' >"$WORK/badcal.json"
expect_error 2 "badcal.json: no number \"gemm_gflops\"" -- "$S" plan --calibration "$WORK/badcal.json"
expect_error 2 "--out FILE is required" -- "$S" bench calibrate
