#!/usr/bin/python3
"""scale-report.py - the report of launch/scale: plots (gnuplot) and report.md from the
study directory's throughput.csv, isoflop.csv, law.json and plan.txt (each optional).

    scale-report.py DIR LAW_START SHARDLM
"""
import csv
import json
import os
import subprocess
import sys

out, law_start, shardlm = sys.argv[1], sys.argv[2], sys.argv[3]


def rows(name):
    path = os.path.join(out, name)
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def law_loss(law, n, d):
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def law_optimum(law, c):
    """docs/scaling.md's closed form (slm_law_optimum). Not asked of `shardlm plan`: it also
    fits a model shape to the answer and refuses budgets below the smallest GPT-2 of the
    vocabulary, where toy studies live."""
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    n = g * (c / 6) ** (b / (a + b))
    return n, c / 6 / n, law_loss(law, n, c / 6 / n)


data = open(os.path.join(out, "data.txt")).read().strip() if os.path.exists(os.path.join(out, "data.txt")) else "?"
corpus = {"brown-bytes": "the Brown corpus as bytes (vocabulary 256), 5% of its documents held out",
          "synthetic": "the built-in synthetic corpus (a small grammar: even the smallest models reach its entropy, "
                       "so model size hardly matters)",
          "config": "the data the configuration names"}.get(data, data)
net = os.path.join(out, "network.txt")
cal = os.path.join(out, "calibration.json")
nodes = json.load(open(cal))["nodes"] if os.path.exists(cal) else None
net = open(net).read().strip() if os.path.exists(net) else "ranks launched by `%s`%s" % (
    os.environ.get("SLM_MPIRUN", "mpirun"), ", on %d node(s) in the calibration" % nodes if nodes else "")
report = ["# Scaling study", "", "Made by `launch/scale` in `%s`, on %s." % (out, corpus), "",
          "Network: %s." % net, ""]

# --- throughput against ranks -------------------------------------------------------
tp = rows("throughput.csv")
if tp:
    for kind in ("strong", "weak"):
        runs = [r for r in tp if r["kind"] == kind]
        if not runs:
            continue
        base = runs[0]
        n0, t0 = int(base["ranks"]), float(base["tokens_per_s"])
        for r in runs:
            n, t = int(r["ranks"]), float(r["tokens_per_s"])
            r["efficiency"] = t / t0 / (n / n0)
        with open(os.path.join(out, "%s.dat" % kind), "w") as f:
            for r in runs:
                f.write("%s %s %.4f %s %s\n" % (r["ranks"], r["tokens_per_s"], r["efficiency"], r["exposed_comm_ms"],
                                               r["step_ms"]))
    kinds = [k for k in ("strong", "weak") if os.path.exists(os.path.join(out, k + ".dat"))]
    plot = ", ".join('"%s/%s.dat" using 1:2 with linespoints lw 2 pt 7 title "%s scaling: tokens/s", '
                     '"" using 1:3 axes x1y2 with linespoints dt 2 lw 2 pt 6 title "%s: efficiency"' % (out, k, k, k)
                     for k in kinds)
    gnuplot("""set terminal pngcairo size 900,500 font ",10" noenhanced
set output "%s/throughput.png"
set grid
set key top left
set xlabel "ranks"
set ylabel "tokens/s"
set y2label "parallel efficiency"
set ytics nomirror
set y2tics
set y2range [0:1.2]
set title "throughput against ranks"
plot %s
""" % (out, plot))
    plot = ", ".join('"%s/%s.dat" using 1:4 with linespoints lw 2 pt 7 title "%s: exposed communication", '
                     '"" using 1:5 with linespoints dt 2 lw 2 pt 6 title "%s: step"' % (out, k, k, k) for k in kinds)
    gnuplot("""set terminal pngcairo size 900,500 font ",10" noenhanced
set output "%s/comm.png"
set grid
set key top left
set xlabel "ranks"
set ylabel "ms per step"
set title "communication not hidden behind compute"
plot %s
""" % (out, plot))
    report += ["## Throughput against ranks", "",
               "Strong scaling keeps the global batch; weak scaling keeps the batch per rank. Efficiency is "
               "tokens/s over the first count's, divided by the ratio of rank counts. Ranks that share "
               "cores with each other (more ranks x threads than cores) say nothing about speed.", "",
               "| kind | ranks | global batch | tokens/s | efficiency | step ms | predicted ms (hidden) | "
               "measured / predicted | exposed comm ms | MB sent per step | MFU |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in tp:
        report.append("| %s | %s | %s | %s | %.2f | %s | %s (%s) | %.2f | %s | %s | %.1f%% |" % (
            r["kind"], r["ranks"], r["global_batch"], r["tokens_per_s"], r.get("efficiency", float("nan")),
            r["step_ms"], r["predicted_step_ms"], r["predicted_hidden_ms"],
            float(r["step_ms"]) / float(r["predicted_step_ms"]), r["exposed_comm_ms"], r["comm_mb_per_step"],
            100 * float(r["mfu"])))
    cal = os.path.join(out, "calibration.json")
    if os.path.exists(cal):
        c = json.load(open(cal))
        report += ["", "Predicted by `shardlm plan --calibration calibration.json` from `shardlm bench calibrate` on "
                   "%d rank(s): %.1f GFLOP/s per rank training (%.0f%% of the GEMM peak), all-reduce bus %.2f GB/s, "
                   "latency %.1f us. The prediction counts compute and communication; the optimizer step and "
                   "the rest are not in it." % (c["ranks"], c["gflops_per_rank"], 100 * c["mfu"],
                                                  c["allreduce_bus_bytes_per_s"] / 1e9, c["latency_s"] * 1e6)]
    report += ["", "![throughput](throughput.png)", "", "![communication](comm.png)", ""]

# --- IsoFLOP sweep and the fitted law --------------------------------------------------
iso = rows("isoflop.csv")
law = json.load(open(os.path.join(out, "law.json"))) if os.path.exists(os.path.join(out, "law.json")) else None
if iso:
    budgets = sorted({r["budget"] for r in iso}, key=float)
    best = {}
    for b in budgets:
        runs = sorted((r for r in iso if r["budget"] == b), key=lambda r: float(r["params"]))
        best[b] = min(runs, key=lambda r: float(r["val_loss"]))
        with open(os.path.join(out, "iso-%s.dat" % b), "w") as f:
            for r in runs:
                f.write("%s %s\n" % (r["params"], r["val_loss"]))
    plot = ", ".join('"%s/iso-%s.dat" using 1:2 with linespoints lw 2 pt 7 title "C = %s FLOPs"' % (out, b, b)
                     for b in budgets)
    gnuplot("""set terminal pngcairo size 900,500 font ",10" noenhanced
set output "%s/isoflop.png"
set grid
set logscale x
set key top right
set xlabel "parameters N"
set ylabel "validation loss"
set title "IsoFLOP: loss against model size at fixed compute"
plot %s
""" % (out, plot))
    with open(os.path.join(out, "runs.dat"), "w") as f:
        for r in iso:
            f.write("%s %s\n" % (r["flops"], r["val_loss"]))
    with open(os.path.join(out, "best.dat"), "w") as f:
        for b in budgets:
            f.write("%s %s\n" % (best[b]["flops"], best[b]["val_loss"]))
    extra = ""
    if law:
        cs = [float(budgets[0]) / 3 * (30 * float(budgets[-1]) / float(budgets[0])) ** (i / 60) for i in range(61)]
        with open(os.path.join(out, "frontier.dat"), "w") as f:
            for c in cs:
                f.write("%.6g %.6g\n" % (c, law_optimum(law, c)[2]))
        extra = ', "%s/frontier.dat" using 1:2 with lines lw 2 title "fitted law: compute-optimal loss"' % out
    gnuplot("""set terminal pngcairo size 900,500 font ",10" noenhanced
set output "%s/frontier.png"
set grid
set logscale x
set key top right
set xlabel "training FLOPs C = 6 N D"
set ylabel "validation loss"
set title "loss against compute"
plot "%s/runs.dat" using 1:2 with points pt 6 ps 1.2 title "runs", "%s/best.dat" using 1:2 with points pt 7 ps 1.6 title "best run of each budget"%s
""" % (out, out, out, extra))
    swept = any(r.get("lr", "-") != "-" for r in iso)
    lrs = sorted({float(r["lr"]) for r in rows("isoflop-all.csv") if r["lr"] != "-"})
    report += ["## IsoFLOP sweep", "",
               "At each budget C every size trains D = C / (6 N) tokens; the loss is the validation loss "
               "after the last step." + (" Every point trained at each peak learning rate of %s (min_lr a tenth "
                                         "of it); the table keeps the best (`isoflop-all.csv` has them all)."
                                         % ", ".join("%g" % x for x in lrs) if swept else ""), "",
               "| budget (FLOPs) | n_layer | d_model | parameters | tokens | steps | %svalidation loss | |" %
               ("best lr | " if swept else ""),
               "|---:|---:|---:|---:|---:|---:|%s---:|---|" % ("---:|" if swept else "")]
    for b in budgets:
        for r in sorted((r for r in iso if r["budget"] == b), key=lambda r: float(r["params"])):
            report.append("| %s | %s | %s | %s | %s | %s | %s%.4f | %s |" % (
                b, r["n_layer"], r["d_model"], r["params"], r["tokens"], r["steps"],
                r["lr"] + " | " if swept else "", float(r["val_loss"]), "best at this budget" if r is best[b] else ""))
    report += ["", "![IsoFLOP](isoflop.png)", ""]
    if law:
        report += ["## Fitted law", "",
                   "`shardlm plan fit runs.csv` (Huber loss in log space, BFGS from 768 starts):", "",
                   "    L(N, D) = %.4f + %.5g / N^%.4f + %.5g / D^%.4f" % (law["E"], law["A"], law["alpha"], law["B"],
                                                                       law["beta"]), "",
                   "from %d runs (objective %.3g). A toy sweep spans little of N and D: treat the constants "
                   "as a demonstration of the method, not as a law of this corpus." % (law["runs"], law["objective"]),
                   "", "| budget (FLOPs) | fitted optimum N | fitted optimum D | predicted loss | best run's N | its loss |",
                   "|---:|---:|---:|---:|---:|---:|"]
        for b in budgets:
            n, d, loss = law_optimum(law, float(b))
            report.append("| %s | %.3g | %.3g | %.4f | %s | %.4f |" % (b, n, d, loss, best[b]["params"],
                                                                    float(best[b]["val_loss"])))
        ref = subprocess.run([shardlm, "plan", "--law", law_start, "--flops", budgets[-1], "--json"],
                             capture_output=True, text=True)
        if ref.returncode == 0:
            o = json.loads(ref.stdout)["optimum"]
            report += ["", "For comparison, the `%s` law puts the optimum of %s FLOPs at N = %.3g, D = %.3g "
                       "(%.1f tokens per parameter); its losses are on another corpus." % (
                           law_start, budgets[-1], o["params"], o["tokens"], o["tokens"] / o["params"])]
        plan = os.path.join(out, "plan.txt")
        if os.path.exists(plan):
            report += ["", "The fitted law's plan for ten times the largest budget (`plan.txt`):", "", "```"] + \
                [l.rstrip() for l in open(plan)] + ["```"]
    report += ["", "![loss against compute](frontier.png)", ""]

open(os.path.join(out, "report.md"), "w").write("\n".join(report) + "\n")
