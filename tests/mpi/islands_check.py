#!/usr/bin/python3
"""Check islands' dumps (log.dump of a run with islands.count = k writes one per island)
against a reference dump: the mean over the islands of each step's loss against the
reference's loss, and every island's final parameters against the reference's final
parameters (normwise relative tolerance). The islands' final parameters must also be
bitwise equal to each other: the run ends with an outer step, after which every island
holds the anchor."""
import argparse, sys
import h5py, numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("reference")
ap.add_argument("islands", nargs="+")
ap.add_argument("--rtol", type=float, default=1e-6)
a = ap.parse_args()
ref = h5py.File(a.reference, "r")
isl = [h5py.File(p, "r") for p in a.islands]
failures = []
for i, f in enumerate(isl):
    if int(f.attrs["island"]) != i or int(f.attrs["islands"]) != len(isl):
        failures.append(f"{a.islands[i]}: island {f.attrs['island']} of {f.attrs['islands']}, expected {i} of {len(isl)}")
mean = np.mean([np.asarray(f["losses"], dtype=np.float64) for f in isl], axis=0)
want = np.asarray(ref["losses"], dtype=np.float64)
err = np.max(np.abs(mean - want) / np.abs(want))
print(f"losses: mean over {len(isl)} islands vs reference, max relative difference {err:.2e}")
if not err <= a.rtol:
    failures.append(f"losses differ by {err:.2e} > {a.rtol:g}")
worst = 0.0
for name in ref["final"]:
    r = np.asarray(ref["final"][name], dtype=np.float64)
    scale = max(np.max(np.abs(r)), 1e-30)
    for i, f in enumerate(isl):
        c = np.asarray(f["final"][name])
        if i > 0 and not np.array_equal(c, np.asarray(isl[0]["final"][name])):
            failures.append(f"final/{name}: island {i} differs from island 0 after the last outer step")
        e = np.max(np.abs(c - r)) / scale
        worst = max(worst, e)
        if not e <= a.rtol:
            failures.append(f"final/{name}: island {i} differs from the reference by {e:.2e}")
print(f"final parameters: max normwise difference {worst:.2e}")
for m in failures[:20]:
    print("islands_check:", m, file=sys.stderr)
sys.exit(1 if failures else 0)
