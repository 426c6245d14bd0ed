#!/bin/bash
# launch/scale end to end at the smallest scale: throughput sweeps on 1 and 2 ranks with the
# planner's predicted step times, an
# IsoFLOP sweep of 6 runs, the fit, the report and its plots (real PNG files); and
# launch/plot on a run's metrics, with bad input refused.
. "$(dirname "$0")/common.sh"
command -v gnuplot >/dev/null || skip "gnuplot missing (apt-get install gnuplot-nox)"
out=$WORK/study
SHARDLM=$SHARDLM "$SLM_SRCDIR/launch/scale" --out "$out" --data synthetic --ranks "1 2" --steps 6 --batch 4 \
    --budgets "2e10 6e10" --sizes "1x16 1x32 2x48" --isoflop-threads 1 --lrs "3e-3 1e-2" >"$WORK/scale.out" 2>&1 \
    || { cat "$WORK/scale.out"; fail "launch/scale"; }
cat "$WORK/scale.out"
"$PYTHON3" - "$out" <<'PY' || fail "launch/scale's outputs"
import csv, json, os, sys
out = sys.argv[1]
tp = list(csv.DictReader(open(out + "/throughput.csv")))
assert [(r["kind"], r["ranks"], r["global_batch"]) for r in tp] == \
    [("strong", "1", "4"), ("strong", "2", "4"), ("weak", "1", "4"), ("weak", "2", "8")], tp
assert all(float(r["tokens_per_s"]) > 0 for r in tp) and float(tp[1]["comm_mb_per_step"]) > 0, tp
cal = json.load(open(out + "/calibration.json"))
assert cal["ranks"] == 2 and cal["gflops_per_rank"] > 0, cal
# the planner's prediction of each run: compute only on 1 rank, compute + reduction on 2
for r in tp:
    p, h = float(r["predicted_step_ms"]), float(r["predicted_hidden_ms"])
    assert p >= h > 0 and (r["ranks"] != "1" or p == h), r
iso = list(csv.DictReader(open(out + "/isoflop.csv")))
assert len(iso) == 6, iso
# every point at both learning rates; the table keeps the lower loss, read from the run's own metrics
every = list(csv.DictReader(open(out + "/isoflop-all.csv")))
assert len(every) == 12, every
for r in iso:
    name = "iso-%s-%sx%s" % (r["budget"], r["n_layer"], r["d_model"])
    val = {lr: [json.loads(l) for l in open("%s/runs/%s-lr%s.jsonl" % (out, name, lr))][-1]["val_loss"]
           for lr in ("3e-3", "1e-2")}
    assert abs(float(r["val_loss"]) - min(val.values())) < 1e-5 and val[r["lr"]] == min(val.values()), (r, val)
for r in iso:  # each run trained its budget's tokens: 6 N D within one step of C
    n, d, c = float(r["params"]), float(r["tokens"]), float(r["budget"])
    assert abs(6 * n * d - c) <= 6 * n * 32 * 64, r
    assert 0 < float(r["val_loss"]) < 6, r
law = json.load(open(out + "/law.json"))
assert law["runs"] == 6 and all(k in law for k in ("E", "A", "B", "alpha", "beta")), law
report = open(out + "/report.md").read()
for img in ("throughput.png", "comm.png", "isoflop.png", "frontier.png"):
    assert "(%s)" % img in report, img
    assert open(os.path.join(out, img), "rb").read(8) == b"\x89PNG\r\n\x1a\n", img
for part in ("## Throughput against ranks", "measured / predicted", "## IsoFLOP sweep", "## Fitted law",
             "best at this budget", "best lr", "peak learning rate of 0.003, 0.01"):
    assert part in report, part
print("report: %d throughput rows, %d IsoFLOP runs, law alpha %.3f beta %.3f" % (len(tp), len(iso), law["alpha"], law["beta"]))
PY
# launch/plot on one run's metrics
"$SLM_SRCDIR/launch/plot" "$out/runs/iso-6e10-1x32-lr3e-3.jsonl" --out "$WORK/plot" >"$WORK/plot.out" || fail "launch/plot"
for f in loss throughput; do
    [ "$(head -c 4 "$WORK/plot/$f.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "launch/plot: $f.png is not a PNG"
done
[ "$(($(wc -l <"$WORK/plot/curves.csv") - 1))" = "$(wc -l <"$out/runs/iso-6e10-1x32-lr3e-3.jsonl")" ] || fail "launch/plot: curves.csv rows"
expect_error 1 "cannot read $WORK/none.jsonl" -- "$SLM_SRCDIR/launch/plot" "$WORK/none.jsonl"
echo '{"hello": 1}' >"$WORK/bad.jsonl"
expect_error 1 "bad.jsonl:1: not a shardlm metrics record" -- "$SLM_SRCDIR/launch/plot" "$WORK/bad.jsonl"
expect_error 2 "size '3x20'" -- "$SLM_SRCDIR/launch/scale" --sizes 3x20
expect_error 2 "--lrs: 'fast'" -- "$SLM_SRCDIR/launch/scale" --lrs "1e-3 fast"
