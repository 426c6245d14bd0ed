#!/bin/bash
# Adafactor's factored state, measured on GPT-2 124M (2 steps, micro-batch 1 of 64 tokens):
# the optimizer memory the run's memory line reports is below 1% of AdamW's, and the
# process's peak RSS falls by about AdamW's state (its two fp32 moments, 949 MiB).
. "$(dirname "$0")/common.sh"
run() {
    "$SHARDLM" train model.n_layer=12 model.n_head=12 model.d_model=768 model.vocab_size=50257 model.seq_len=64 \
        model.max_pos=1024 train.micro_batch=1 train.global_batch=1 train.steps=2 train.warmup_steps=0 \
        sample.tokens=0 log.peak_gflops=10 train.threads=1 "train.optimizer=$1" "log.metrics=$WORK/$1.jsonl" \
        >"$WORK/$1.out" 2>&1 || { cat "$WORK/$1.out"; fail "$1 run"; }
}
run adamw
run adafactor
"$PYTHON3" - "$WORK" <<'PY' || fail "Adafactor's state is not what it should be"
import json, re, sys
w = sys.argv[1]
def measured(opt):
    line = next(l for l in open(f"{w}/{opt}.out") if l.startswith("memory"))
    state = float(re.search(r"\+ %s ([\d.]+) =" % opt, line).group(1))
    rss = max(json.loads(l)["peak_rss_mib"] for l in open(f"{w}/{opt}.jsonl"))
    return state, rss
(sa, ra), (sf, rf) = measured("adamw"), measured("adafactor")
moments = 2 * 4 * 124439808 / 2**20  # AdamW: two fp32 moments per parameter
print(f"optimizer state: adamw {sa:.1f} MiB, adafactor {sf:.1f} MiB ({100 * sf / sa:.2f}%); "
      f"peak RSS: adamw {ra:.1f} MiB, adafactor {rf:.1f} MiB (difference {ra - rf:.1f}, AdamW's moments {moments:.1f})")
ok = abs(sa - moments) < 0.2 and sf < 0.01 * sa and abs((ra - rf) - (sa - sf)) < 0.05 * sa
sys.exit(0 if ok else 1)
PY
