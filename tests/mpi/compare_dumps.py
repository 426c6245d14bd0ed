#!/usr/bin/python3
"""Compare two shardlm dumps (log.dump) of the same run in different layouts: per-step
losses and gradient norms, step-0 gradients and final parameters must agree within a
normwise relative tolerance; the initial parameters must be bitwise equal.

One exception, by mathematics rather than by tolerance: the key bias (the middle third of
each attn.qkv.bias) has an exactly zero gradient, because adding a constant to every key
score of a query leaves its softmax unchanged. What a layout computes there is rounding
noise, and AdamW normalizes noise into steps of size about lr, so those entries are held
to |difference| <= 2 * sum(lr) instead (the oracle does the same). With an optimizer that
takes a statistic of a whole tensor (Adafactor's update RMS and parameter scale, LAMB's
trust ratio; --whole-tensor-statistics), that noise enters the step of the whole qkv.bias
tensor, so all of it is held to the same bound.

Dumps of MoE models (docs/moe.md) also hold each step's auxiliary and z losses, held to
the losses' tolerance, and with moe_balance = bias the selection biases each step routed
with, which move by whole steps of moe_bias_rate and so must be equal."""
import argparse, sys
import h5py, numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("reference")
ap.add_argument("candidate")
ap.add_argument("--rtol", type=float, default=1e-5, help="tolerance for everything not set below")
ap.add_argument("--rtol-losses", type=float)
ap.add_argument("--rtol-norms", type=float)
ap.add_argument("--rtol-grads", type=float)
ap.add_argument("--rtol-final", type=float)
ap.add_argument("--from-step", type=int, default=0,
                help="compare per-step records from this step on, and skip init and step-0 gradients "
                     "(a resumed run's dump starts elsewhere)")
ap.add_argument("--whole-tensor-statistics", action="store_true",
                help="hold all of attn.qkv.bias, not only its key rows, to 2*sum(lr) in final")
ap.add_argument("--require-difference", action="store_true",
                help="fail if the losses are bitwise equal (the candidate must not be the reference)")
a = ap.parse_args()
tol = {"losses": a.rtol_losses, "grad_norm": a.rtol_norms, "step0/grads": a.rtol_grads, "final": a.rtol_final}
tol = {k: (a.rtol if v is None else v) for k, v in tol.items()}
ref, cand = h5py.File(a.reference, "r"), h5py.File(a.candidate, "r")
failures, checks = [], 0


def rel(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def check(name, x, y, tol):
    global checks
    checks += 1
    e = rel(x, y)
    if not e <= tol:
        failures.append(f"{name}: relative error {e:.3e} > {tol:g}")
    return e


worst = {}
for name in ([] if a.from_step else ref["init"]):
    if not np.array_equal(ref["init"][name][()], cand["init"][name][()]):
        failures.append(f"init/{name} differs: initialization depends on the layout")
moe = [k for k in ("moe_aux_loss", "moe_z_loss") if k in ref]
for k in moe + (["moe_bias"] if "moe_bias" in ref else []):
    if k not in cand:
        failures.append(f"{k}: in the reference, not in the candidate")
moe = [k for k in moe if k in cand]
if "moe_bias" in ref and "moe_bias" in cand:
    checks += 1
    if not np.array_equal(ref["moe_bias"][()][a.from_step:], cand["moe_bias"][()][a.from_step:]):
        failures.append("moe_bias: the selection biases differ")
for key in ["losses", "grad_norm"] + moe:
    tol.setdefault(key, tol["losses"])
    for s, (x, y) in enumerate(zip(cand[key][()], ref[key][()])):
        if s < a.from_step:
            continue
        worst[key] = max(worst.get(key, 0), check(f"{key}[{s}]", [x], [y], tol[key]))
lr_sum = float(np.sum(ref["lr"][()]))
for group in ("final",) if a.from_step else ("step0/grads", "final"):
    for name in ref[group]:
        x, y = cand[group][name][()], ref[group][name][()]
        if name.endswith("attn.qkv.bias"):
            C = len(y) // 3
            if group == "final" and a.whole_tensor_statistics:
                checks += 1
                d = float(np.max(np.abs(x.astype(np.float64) - y)))
                if not d <= 2 * lr_sum:
                    failures.append(f"{group}/{name}: max difference {d:.3e} > 2*sum(lr) = {2 * lr_sum:.3e}")
                continue
            if group == "final":
                checks += 1
                dk = float(np.max(np.abs(x[C:2 * C].astype(np.float64) - y[C:2 * C])))
                if not dk <= 2 * lr_sum:
                    failures.append(f"{group}/{name} key rows: max difference {dk:.3e} > 2*sum(lr) = {2 * lr_sum:.3e}")
            else:
                check(f"{group}/{name} key rows (absolute)", [0.0], [1.0], 1.0) if np.max(np.abs(x[C:2 * C])) < 1e-5 \
                    else failures.append(f"{group}/{name}: key-bias gradient is not ~0")
            x, y = np.concatenate([x[:C], x[2 * C:]]), np.concatenate([y[:C], y[2 * C:]])
        worst[group] = max(worst.get(group, 0), check(f"{group}/{name}", x, y, tol[group]))
if a.require_difference and np.array_equal(ref["losses"][()][a.from_step:], cand["losses"][()][a.from_step:]):
    failures.append("the losses are bitwise equal to the reference's: the candidate setting had no effect")
print("  ".join(f"{k} {v:.2e}" for k, v in worst.items()))
for f in failures[:20]:
    print("mismatch:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
