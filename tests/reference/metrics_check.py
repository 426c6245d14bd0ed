#!/usr/bin/python3
"""Check a JSON-lines metrics file: one well-formed record per step, and a falling loss."""
import argparse, json, math, sys

FIELDS = {"step": int, "steps": int, "tokens": int, "loss": float, "lr": float,
          "grad_norm": float, "tokens_per_s": float, "mfu": float, "step_ms": float,
          "exposed_comm_ms": float, "peak_rss_mib": float, "comm_bytes": float, "overlap": float}

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("--steps", type=int, required=True)
ap.add_argument("--max-final-loss", type=float, required=True)
ap.add_argument("--min-drop", type=float, required=True, help="first loss minus last loss")
a = ap.parse_args()
recs = [json.loads(line) for line in open(a.path)]
errors = []
if len(recs) != a.steps:
    errors.append(f"{len(recs)} records, expected {a.steps}")
for i, r in enumerate(recs):
    for k, t in FIELDS.items():
        if k not in r or not isinstance(r[k], (int, float)) or (t is int and not isinstance(r[k], int)):
            errors.append(f"record {i}: field {k} missing or not {t.__name__}: {r.get(k)!r}")
        elif not math.isfinite(r[k]):
            errors.append(f"record {i}: {k} not finite")
    if r.get("step") != i:
        errors.append(f"record {i} has step {r.get('step')}")
    if r.get("tokens_per_s", 0) <= 0 or not 0 < r.get("mfu", 0) < 1.5:
        errors.append(f"record {i}: implausible tokens_per_s/mfu {r.get('tokens_per_s')} {r.get('mfu')}")
if recs:
    first, last = recs[0]["loss"], recs[-1]["loss"]
    print(f"loss {first:.4f} -> {last:.4f} over {len(recs)} steps")
    if last > a.max_final_loss:
        errors.append(f"final loss {last} above {a.max_final_loss}")
    if first - last < a.min_drop:
        errors.append(f"loss fell by {first - last:.4f}, expected at least {a.min_drop}")
for e in errors:
    print("metrics:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
