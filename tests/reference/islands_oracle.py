#!/usr/bin/python3
"""Float64 PyTorch oracle for shardlm's islands (islands.count = k > 1): DiLoCo training.

The algorithm, as Douillard et al. 2023 ("DiLoCo: Distributed Low-Communication Training
of Language Models", Algorithm 1) state it, with shardlm's settings:

  k workers (islands) start from the same parameters θ^(0) (the anchor). For each outer
  round t = 1, 2, ...:
      every worker i sets θ_i = θ^(t-1) and takes H inner steps on its own data with its
      own inner optimizer (AdamW; its moments and step count are kept from round to round)
      Δ_i = θ^(t-1) - θ_i                                (the pseudo-gradient)
      Δ = (1/k) Σ_i Δ_i
      θ^(t) = OuterOpt(θ^(t-1), Δ)     SGD with lr = islands.outer_lr (0.7), momentum
                                      islands.outer_momentum (0.9), Nesterov when
                                      islands.nesterov (true), no dampening or decay
  H = islands.sync_every; a run of S steps whose S is not a multiple of H takes one more
  outer step after its last step (a short round), so every run ends on an anchor.

  The oracle runs k float64 models (GPT-2 or Llama: gpt2_oracle.GPT2, llama_oracle.Llama),
  each with its own inner optimizer from optim_oracle.make_optimizer (torch.optim.AdamW
  with weight decay on the matrices, the schedule's lr of each step, gradients clipped to
  train.grad_clip by torch.nn.utils.clip_grad_norm_), and a torch.optim.SGD over a float64
  copy of the anchor whose .grad is set to the mean Δ before each outer step.

  Parameter averaging (--average; outer_lr 1, momentum 0): the oracle replays it on its own
  path, without the SGD: every H steps and at the last, θ_i = (1/k) Σ_j θ_j. That the SGD
  path with lr 1 and no momentum gives the same is itself checked (`average` row).

Data: island i's step-s batch is samples s k B + i B .. s k B + i B + B - 1 of the one
stream (B = train.global_batch), i.e. the i-th of the k global batches a run without
islands and a k times larger global batch reads at step s. The oracle makes that run
itself (one rank, the same seed, train.global_batch = k B: the `stream` run) and requires
each island's /tokens to be its slice of the stream's; an island with dp > 1 dumps no
tokens, and is replayed from its slice (its dump's grad_accum is a rank's, grad_accum / dp,
and is checked as such).

Running shardlm, --transport mpi (the default): `MPIEXEC -n k*R shardlm train ...
islands.count=k ... log.dump=DIR/dump.h5 log.metrics=DIR/metrics.jsonl`, one job cut into k
islands of one layout, R = --ranks-per-island (default 1; give the inner layout with --set
parallel.tp=2 etc.). --transport files: k jobs started together, one per island, each
`MPIEXEC -n R_i shardlm train <the same settings> islands.transport=files
islands.dir=DIR/exchange islands.index=i ckpt.dir=DIR/ckpt islands.deadline_s=DEADLINE_S
<island i's own settings>`, where --island-layout I:R_I[:KEY=VALUE...] gives an island its
own rank count and inner layout (e.g. 1:2:parallel.tp=2; the files hold global tensors, so
the islands' layouts may differ); both directories are emptied first, the deadline is so
long that every island takes part in every outer step, and when a job fails the others
are stopped and its output printed. Either way shardlm writes DIR/dump.island<i>.h5 and
DIR/metrics.island<i>.jsonl, and the checks are the same.

Checks (one row each, the worst over the islands; normwise relative errors as in
gpt2_oracle.py; rtol default 1e-4, and the trajectory checks accept up to FLOOR_K = 10
times the error of a float32 replay of the same island run):

  files      the k dumps (and metrics files) exist, and no dump without the island suffix
  config     each dump's root attributes echo the request (dump_oracle.read_config)
  settings   each dump's islands attributes echo the replayed islands settings: islands = k,
             island = i on island i's dump, sync_every, outer_lr, outer_momentum,
             outer_nesterov, compress = none (the oracle replays an fp32 exchange)
  tokens     every island's /tokens is its slice of the stream run's (exactly)
  init       the islands' /init are bitwise equal, and equal to the stream run's
  lr         /lr of each island against the warmup + cosine schedule
  losses     /losses of each island, every step, against the oracle's island
  grad_norm  /grad_norm likewise
  outer      the metrics: outer steps at exactly the steps due (after steps H, 2H, ...
             and the last), numbered 1, 2, ..., with outer_islands = k, and outer_norm
             (the norm of the anchor's change) against the oracle's
  final      /final of each island against the oracle's (the anchor after the last outer
             step), without the rows whose exact gradient is zero (as gpt2_oracle.py)
  zero_grad  those rows, within ZERO_GRAD_TOL times a bound carried through the outer
             steps: per round the largest sum of an island's inner bounds
             (optim_oracle.Stepper.zbound), through the SGD's momentum recursion
  synced     the islands' final parameters are bitwise equal
  average    (--average) the SGD path with lr 1 and momentum 0 against plain averaging

When losses or final fail, the run is replayed with each of BUGS' mistakes and the ones
the dumps match are named.

Modes:
  /usr/bin/python3 tests/reference/islands_oracle.py --shardlm build/shardlm \\
      --arch gpt2 --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 4 --batch 3 \\
      --steps 7 --islands 2 --sync-every 3
      [--transport files --island-layout 1:2:parallel.tp=2]
  --dump FILE [--stream FILE] [--metrics FILE]
                              check existing dumps (FILE as given to log.dump; the islands'
                              are FILE.island<i>.h5; likewise the metrics) against the replay
                              of the flags' islands settings (configuration from the dumps)
  --self-test [--keep DIR]    without shardlm: identities (one island is plain training,
                              the SGD at lr 1 without momentum is averaging), synthetic
                              dumps of a second implementation (numpy float32 Llama,
                              optim_oracle.RefOptimizer, the outer SGD from its formulas)
                              that must pass, the same runs made with each of BUGS'
                              mistakes, which must fail, correct runs whose islands
                              attributes differ from the replayed settings, which must fail
                              `settings`, and the oracle's own replay with each mistake,
                              which must miss the correct dumps

The last line printed is `N passed, M failed`; the exit status is 1 when anything failed.
"""
import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import dump_oracle  # noqa: E402
import gpt2_oracle  # noqa: E402
import llama_oracle  # noqa: E402
import optim_oracle  # noqa: E402
from dump_oracle import DT, FLOOR_K, TINY, ZERO_GRAD_TOL, rel_err  # noqa: E402

ARCHS = {"gpt2": gpt2_oracle.GPT2, "llama": llama_oracle.Llama}

# --transport files: islands.deadline_s. Large: every island must take part in every outer
# step (the checks require outer_islands = k), however slowly an oversubscribed machine
# runs one of them; the jobs' own timeout (--timeout) bounds the wait.
DEADLINE_S = 86400

# Mistakes an islands implementation could make. The self-test builds synthetic runs
# that make each (they must fail the checks), and replays the oracle with each (it must
# then miss the correct runs); when a real run fails, the ones it matches are named.
BUGS = {
    "plain_momentum": "outer momentum without Nesterov although islands.nesterov",
    "sum": "the islands' pseudo-gradients summed, not averaged",
    "inner_reset": "the inner AdamW's moments and step count reset at every outer step",
    "no_last_outer": "no outer step after the last step when steps % sync_every != 0",
    "swap_data": "islands 0 and 1 read each other's batches",
    "delta_sign": "pseudo-gradient theta - anchor instead of anchor - theta",
    "momentum_reset": "the outer momentum buffer dropped at every outer step",
    "outer_late": "outer steps one inner step late (after steps H+1, 2H+1, ...)",
    "outer_lr_one": "islands.outer_lr ignored (1 used)",
    "no_broadcast": "islands keep their own parameters after the outer step (only the anchor moves)",
}


def bug_applies(bug, isl, steps):
    if isl.average and bug in ("plain_momentum", "momentum_reset", "delta_sign", "outer_lr_one"):
        return False   # averaging has no pseudo-gradient, learning rate or momentum
    if bug == "plain_momentum":
        return isl.nesterov and isl.momentum > 0
    if bug == "momentum_reset":
        return isl.momentum > 0 and n_outer(steps, isl.H) > 1
    if bug == "no_last_outer":
        return steps % isl.H != 0
    if bug == "swap_data":
        return isl.k >= 2
    if bug == "outer_lr_one":
        return isl.lr != 1.0
    if bug == "outer_late":
        return isl.H < steps
    return True


class Islands:
    """The islands' settings the oracle replays."""

    def __init__(self, k, H, lr=0.7, momentum=0.9, nesterov=True, average=False):
        self.k, self.H, self.lr, self.momentum = int(k), int(H), float(lr), float(momentum)
        self.nesterov, self.average = bool(nesterov), bool(average)

    def describe(self):
        if self.average:
            return "islands: k=%d, parameter averaging every %d steps and at the last" % (self.k, self.H)
        return "islands: k=%d, outer step every %d steps and at the last: SGD lr %g, momentum %g%s" % (
            self.k, self.H, self.lr, self.momentum, " (Nesterov)" if self.nesterov and self.momentum > 0 else "")

    def settings(self):
        return ["islands.count=%d" % self.k, "islands.sync_every=%d" % self.H,
                "islands.outer_lr=%r" % self.lr, "islands.outer_momentum=%r" % self.momentum,
                "islands.nesterov=%s" % ("true" if self.nesterov else "false")]

    def attrs(self, island):
        """The root attributes island `island`'s dump must carry (docs/islands.md); the
        oracle replays an fp32 exchange, so compress is none."""
        return {"islands": self.k, "island": int(island), "sync_every": self.H, "outer_lr": self.lr,
                "outer_momentum": self.momentum, "outer_nesterov": int(self.nesterov), "compress": "none"}


def outer_due(s, steps, H, bug=None):
    """After inner step s (0-based) of `steps`: is an outer step due?"""
    last = s == steps - 1 and bug != "no_last_outer"
    if bug == "outer_late":
        return (s % H == 0 and s > 0) or last
    return (s + 1) % H == 0 or last


def n_outer(steps, H):
    return sum(1 for s in range(steps) if outer_due(s, steps, H))


def island_path(path, i):
    """shardlm's name for island i's copy of a file: .island<i> before the extension."""
    d, b = os.path.split(path)
    stem, dot, ext = b.rpartition(".")
    if not dot or not stem:
        return os.path.join(d, b + ".island%d" % i)
    return os.path.join(d, "%s.island%d.%s" % (stem, i, ext))


# --------------------------------------------------------------------------- the replay

def replay(model, init, tokens, cfg, lrs, isl, dtype=DT, bug=None, average=None):
    """The islands' run. tokens: k tensors (S, A, B, T+1), island i's batches. average:
    parameter averaging instead of the SGD (default isl.average). Returns dict(losses,
    gnorms (k lists), final (k dicts name -> float64 array), outer ([(step, norm of the
    anchor's change)]), zbound (name -> the bound on a zero-gradient element's distance),
    zunit)."""
    average = isl.average if average is None else average
    names = model.param_names()
    k, S = isl.k, cfg["steps"]
    feed = list(range(k))
    if bug == "swap_data" and k >= 2:
        feed[0], feed[1] = 1, 0

    def worker():
        P = {n: torch.tensor(init[n], dtype=dtype).requires_grad_(True) for n in names}
        return P, optim_oracle.make_optimizer(model, P, names, cfg)

    W = [worker() for _ in range(k)]
    anchor = {n: torch.tensor(init[n], dtype=dtype).requires_grad_(True) for n in names}
    lr = 1.0 if bug == "outer_lr_one" else isl.lr
    nesterov = isl.nesterov and isl.momentum > 0 and bug != "plain_momentum"

    def outer_sgd():
        return torch.optim.SGD([anchor[n] for n in names], lr=lr, momentum=isl.momentum,
                               dampening=0.0, nesterov=nesterov, weight_decay=0.0)

    outer = outer_sgd()
    out = {"losses": [[] for _ in range(k)], "gnorms": [[] for _ in range(k)], "outer": []}
    # zero-gradient elements: each island's inner bound since the round began (zround),
    # the outer momentum's (zbuf) and the anchor's (zanchor)
    zround = [{n: 0.0 for n in names} for _ in range(k)]
    zbuf = {n: 0.0 for n in names}
    zanchor = {n: 0.0 for n in names}
    nouter = 0
    for s in range(S):
        for i, (P, opt) in enumerate(W):
            loss, _ = dump_oracle.step_loss_and_grads(model, P, names, tokens[feed[i]][s])
            allp = [P[n] for n in names]
            gn = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in allp))
            if cfg["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(allp, cfg["grad_clip"])
            before = dict(opt.zbound)
            opt.step(lrs[s], min(gn, cfg["grad_clip"]) if cfg["grad_clip"] > 0 else gn)
            for n in names:
                zround[i][n] += opt.zbound[n] - before[n]
            out["losses"][i].append(loss)
            out["gnorms"][i].append(gn)
        if not outer_due(s, S, isl.H, bug):
            continue
        nouter += 1
        with torch.no_grad():
            old = {n: anchor[n].detach().clone() for n in names}
            if average:
                # plain averaging: every island takes the mean of the islands' parameters
                for n in names:
                    total = sum(P[n] for P, _ in W)
                    anchor[n].copy_(total if bug == "sum" else total / k)
            else:
                if bug == "momentum_reset":
                    outer = outer_sgd()
                for n in names:
                    deltas = [anchor[n] - P[n] for P, _ in W]
                    if bug == "delta_sign":
                        deltas = [-d for d in deltas]
                    g = sum(deltas)
                    anchor[n].grad = g if bug == "sum" else g / k
                outer.step()
            out["outer"].append((s, math.sqrt(sum(float(((anchor[n] - old[n]).double() ** 2).sum())
                                                  for n in names))))
            if bug != "no_broadcast":
                for P, _ in W:
                    for n in names:
                        P[n].copy_(anchor[n])
        # the zero-gradient bound through the outer step: |Δ| of those elements is at most
        # the largest island's inner bound of the round; SGD's buffer and step as in torch
        m = 0.0 if average else isl.momentum
        olr = 1.0 if average else lr
        for n in names:
            r = max(zround[i][n] for i in range(k)) * (k if bug == "sum" else 1)
            zbuf[n] = r if nouter == 1 or m == 0 else m * zbuf[n] + r
            step = r + m * zbuf[n] if nesterov and not average else (zbuf[n] if m > 0 else r)
            zanchor[n] += olr * step
            for i in range(k):
                zround[i][n] = 0.0
        if bug == "inner_reset":
            W = [(P, optim_oracle.make_optimizer(model, P, names, cfg)) for P, _ in W]
    for n in names:   # inner steps after the last outer step (only with no_last_outer)
        zanchor[n] += max(zround[i][n] for i in range(k))
    out["final"] = [{n: P[n].detach().double().numpy().copy() for n in names} for P, _ in W]
    out["zbound"] = zanchor
    out["zunit"] = "the bound carried through the outer steps (inner: %s)" % W[0][1].zunit
    return out


# --------------------------------------------------------------------------- the checks

def read_stream(path, k, A):
    """The stream run's tokens cut into the k islands' slices, and its init."""
    with h5py.File(path, "r") as f:
        tk = f["tokens"][()]
        init = {n[len("init/"):]: f[n][()] for n in _datasets(f, "init")}
    if tk.shape[1] != k * A:
        raise ValueError("stream %s: /tokens has %d micro-batches per step, expected k x accum = %d"
                         % (path, tk.shape[1], k * A))
    return [tk[:, i * A:(i + 1) * A] for i in range(k)], init


def _datasets(f, group):
    out = []
    if group not in f:
        return out
    f[group].visit(lambda n: out.append(group + "/" + n) if isinstance(f[group + "/" + n], h5py.Dataset) else None)
    return out


def read_metrics(path):
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def check_islands(dumps, stream, model_cls, want, isl, rtol, verbose, metrics=None, bug=None,
                  diagnose=True):
    """Check the k islands' dumps (paths, island order) against the oracle's replay of isl.
    stream: the stream run's dump (None: the islands' own tokens are taken as they are);
    metrics: the islands' metrics files (None: not checked). want: the requested root
    attributes or None (configuration from the dumps). bug: replay with one of BUGS'
    mistakes (self-test). Prints the report; returns (failed count, Report)."""
    rep = dump_oracle.Report(rtol)
    k = isl.k
    missing = [p for p in dumps if not os.path.exists(p)]
    if metrics:
        missing += [p for p in metrics if not os.path.exists(p)]
    rep.add("files", float("inf") if missing else 0.0, "",
            "missing: " + ", ".join(missing) if missing else "%d dumps%s" % (
                k, " and metrics files" if metrics else ""), ok=not missing)
    if missing:
        return rep.print(), rep
    F = [h5py.File(p, "r") for p in dumps]
    try:
        return _check(F, stream, model_cls, want, isl, rtol, verbose, metrics, bug, diagnose, rep)
    finally:
        for f in F:
            f.close()


def _check(F, stream, model_cls, want, isl, rtol, verbose, metrics, bug, diagnose, rep):
    k = isl.k
    # ---- configuration: every island's dump echoes the request; the first one is replayed
    # An island with dp > 1 dumps its ranks' own accumulation (grad_accum / dp): the echo
    # is checked against that, and the replay accumulates the island's whole batch.
    cfgs, bad = [], []
    for i, f in enumerate(F):
        dp = dump_oracle.attr(f, "dp", int) if "dp" in f.attrs else 1
        w = want
        if want is not None and dp > 1:
            w = dict(want, grad_accum=want["grad_accum"] // dp)
        sub = dump_oracle.Report(rtol)
        c = dump_oracle.read_config(f, model_cls, w, sub)
        if c is not None and dp > 1:
            c["grad_accum"] *= dp
        cfgs.append(c)
        for r in sub.rows:
            if not r[1]:
                print("  island %d config: %s" % (i, r[4]))
        if c is None or sub.failed():
            bad.append(i)
    cfg = cfgs[0]
    differ = [i for i, c in enumerate(cfgs) if c is not None and cfg is not None and c != cfg]
    rep.add("config", 0.0 if not bad and not differ else float("inf"), "",
            "islands %s do not echo the request" % bad if bad else
            "islands %s differ from island 0" % differ if differ else
            "attributes echo the request", ok=not bad and not differ)
    check_settings(rep, F, isl)
    if cfg is None:
        return rep.print(), rep
    model = model_cls(cfg)
    names = model.param_names()
    shapes = model.param_shapes()
    S, A, B, T, V = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"], cfg["vocab_size"]
    print("config: L=%d C=%d V=%d T=%d B=%d accum=%d steps=%d warmup=%d lr=%g min_lr=%g wd=%g clip=%g "
          "betas=(%g,%g) eps=%g" % (cfg["n_layer"], cfg["d_model"], V, T, B, A, S, cfg["warmup_steps"],
                                    cfg["lr"], cfg["min_lr"], cfg["weight_decay"], cfg["grad_clip"],
                                    cfg["beta1"], cfg["beta2"], cfg["eps"]))
    if model.describe():
        print(model.describe())
    print(optim_oracle.describe(cfg))
    print(isl.describe() + ("   [replayed with the mistake: %s]" % BUGS[bug] if bug else ""))

    # ---- tokens: each island's slice of the stream
    want_shape = (S, A, B, T + 1)
    if stream is not None:
        slices, sinit = read_stream(stream, k, A)
    else:
        slices, sinit = None, None
    toks, notes, terr = [], [], 0.0
    for i, f in enumerate(F):
        tk = f["tokens"][()] if "tokens" in f else None
        if tk is None and slices is None:
            rep.add("tokens", float("inf"), "island %d" % i, "/tokens missing and no stream to replay from",
                    ok=False)
            return rep.print(), rep
        if tk is None:
            notes.append("island %d has no /tokens (dp > 1): its stream slice replayed" % i)
            tk = slices[i]
        elif tk.shape != want_shape:
            rep.add("tokens", float("inf"), "island %d" % i, "/tokens shape %s != %s" % (tk.shape, want_shape),
                    ok=False)
            return rep.print(), rep
        elif slices is not None and not np.array_equal(tk, slices[i]):
            other = [j for j in range(k) if np.array_equal(tk, slices[j])]
            notes.append("island %d's tokens are not its slice of the stream%s" % (
                i, " but island %d's" % other[0] if other else ""))
            terr = float("inf")
        if tk.min() < 0 or tk.max() >= V:
            notes.append("island %d: ids outside [0,%d)" % (i, V))
            terr = float("inf")
        toks.append(torch.tensor(tk.astype(np.int64)))
    rep.add("tokens", terr, "", "; ".join(notes) if notes else
            "shape %s; each island's batches are its slice of the stream run's" % (want_shape,)
            if slices is not None else "shape %s (no stream run: not compared with one)" % (want_shape,))

    # ---- init: the same on every island (and the stream run's)
    init, ierr, inote = None, 0.0, []
    for i, f in enumerate(F):
        P = {}
        for n in names:
            if "init/" + n not in f or f["init/" + n].shape != shapes[n]:
                rep.add("init", float("inf"), "island %d" % i, "/init/%s missing or misshapen" % n, ok=False)
                return rep.print(), rep
            P[n] = f["init/" + n][()]
        if init is None:
            init = P
        elif any(not np.array_equal(P[n], init[n]) for n in names):
            e = max(rel_err(P[n], init[n]) for n in names)
            inote.append("island %d's init differs from island 0's by %.1e" % (i, e))
            ierr = max(ierr, e if e > 0 else float("inf"))
    if sinit is not None:
        e = max(rel_err(sinit.get(n, np.zeros(0)), init[n]) for n in names)
        if e > 0:
            inote.append("the stream run's init differs by %.1e" % e)
            ierr = max(ierr, e)
    rep.add("init", ierr, "", "; ".join(inote) if inote else "bitwise equal on every island%s" % (
        " and in the stream run" if sinit is not None else ""), ok=ierr == 0.0)
    init = {n: v.astype(np.float64) for n, v in init.items()}

    # ---- the replays: float64, and float32 for the noise floor
    relative = cfg["optimizer"] == "adafactor" and cfg["adafactor_relative_step"]
    if relative:
        lrs = [optim_oracle.relative_step(s + 1, cfg["adafactor_warmup_init"]) for s in range(S)]
    else:
        lrs = [dump_oracle.lr_at(s, cfg["lr"], cfg["warmup_steps"], S, cfg["min_lr"]) for s in range(S)]
    ref = replay(model, init, toks, cfg, lrs, isl, bug=bug)
    r32 = replay(model, {n: v.astype(np.float32) for n, v in init.items()}, toks, cfg, lrs, isl,
                 dtype=torch.float32, bug=bug)

    # ---- lr
    worst = (0.0, "")
    for i, f in enumerate(F):
        flr = np.asarray(f["lr"][()], dtype=np.float64) if "lr" in f else None
        if flr is None or flr.shape != (S,):
            worst = (float("inf"), "island %d: /lr missing or misshapen" % i)
            break
        for s in range(S):
            e = abs(flr[s] - lrs[s]) / max(abs(lrs[s]), TINY)
            if e > worst[0]:
                worst = (e, "island %d step %d" % (i, s))
    rep.add("lr", worst[0], worst[1], "warmup %d of %d steps" % (cfg["warmup_steps"], S))

    # ---- losses and gradient norms, per island and step
    for key, label, rk in (("losses", "losses", "losses"), ("grad_norm", "grad_norm", "gnorms")):
        worst, where, bad_rows, floor_used = 0.0, "", [], False
        table = []
        for i, f in enumerate(F):
            v = np.asarray(f[key][()], dtype=np.float64) if key in f else None
            if v is None or v.shape != (S,):
                worst, where = float("inf"), "island %d: /%s missing or misshapen" % (i, key)
                bad_rows.append((i, -1))
                continue
            refv, v32 = ref[rk][i], r32[rk][i]
            for s in range(S):
                e = abs(v[s] - refv[s]) / max(abs(refv[s]), TINY) if np.isfinite(v[s]) else float("inf")
                fl = abs(v32[s] - refv[s]) / max(abs(refv[s]), TINY)
                tol = max(rtol, FLOOR_K * fl)
                if e > rtol and e <= tol:
                    floor_used = True
                if not e <= tol:
                    bad_rows.append((i, s))
                if e > worst or not where:
                    worst, where = e, "island %d step %d" % (i, s)
                table.append((i, s, v[s], refv[s], e, fl, not e <= tol))
        note = "%d islands x %d steps" % (k, S)
        if floor_used:
            note += "; above rtol only where the float32 replay is too"
        ok = rep.add(label, worst, where, note, ok=not bad_rows)
        if not ok or verbose:
            print("  %s per island and step (shardlm / oracle / rel.err / float32-replay rel.err):" % key)
            for i, s, a, b, e, fl, bad in table:
                print("    island %d step %2d%s: %.9g / %.9g / %.2e / %.2e%s" % (
                    i, s, "*" if outer_due(s, S, isl.H) else " ", a, b, e, fl, "   <-- FAIL" if bad else ""))
            print("    (* an outer step followed this step)")

    # ---- the outer steps in the metrics
    if metrics:
        check_outer_metrics(rep, metrics, isl, S, ref, r32, rtol, verbose)

    # ---- final parameters
    errs, zerrs = [], []
    for i, f in enumerate(F):
        for n in names:
            r = ref["final"][i][n]
            p = f["final/" + n][()].astype(np.float64) if "final/" + n in f else None
            if p is None or p.shape != r.shape:
                errs.append(("island %d %s" % (i, n), float("inf"), rtol, 0.0))
                continue
            zr = model.zero_grad_rows(n)
            keep = np.ones(r.shape[0], dtype=bool) if zr is None else ~zr
            fl = rel_err(r32["final"][i][n][keep], r[keep])
            errs.append(("island %d %s" % (i, n), rel_err(p[keep], r[keep]), max(rtol, FLOOR_K * fl), fl))
            if zr is not None:
                dev = np.abs(p[zr] - r[zr])
                zerrs.append(("island %d %s" % (i, n), float(dev.max()) / max(ref["zbound"][n], TINY)
                              if np.all(np.isfinite(dev)) else float("inf")))
    worst = max(errs, key=lambda t: t[1])
    bad = [t for t in errs if not t[1] <= t[2]]
    allowed = [t for t in errs if rtol < t[1] <= t[2]]
    note = "%d tensors on %d islands" % (len(names), k)
    if allowed:
        note += "; %d above rtol but within %gx the float32 replay" % (len(allowed), FLOOR_K)
    rep.add("final", worst[1], worst[0], note, ok=not bad)
    if bad or verbose:
        print("  final parameter errors (%s): rel.err / allowed / float32-replay rel.err"
              % ("all" if verbose else "failing"))
        for t in (errs if verbose else bad):
            print("    %-36s %.3e / %.3e / %.3e%s" % (t[0], t[1], t[2], t[3],
                                                    "" if t[1] <= t[2] else "   <-- FAIL"))
    if zerrs:
        zw = max(zerrs, key=lambda t: t[1])
        rep.add("zero_grad", zw[1], zw[0], "%s: exact grad is 0; max|final-oracle| / %s (pass <= %g)"
                % (model.zero_grad_what, ref["zunit"], ZERO_GRAD_TOL), ok=zw[1] <= ZERO_GRAD_TOL, soft=False)

    # ---- every island ends on the same parameters
    unsynced = []
    for i, f in enumerate(F[1:], 1):
        for n in names:
            key = "final/" + n
            if key in f and key in F[0] and not np.array_equal(f[key][()], F[0][key][()]):
                unsynced.append((i, n, rel_err(f[key][()], F[0][key][()])))
    rep.add("synced", max((u[2] for u in unsynced), default=0.0),
            "island %d %s" % unsynced[0][:2] if unsynced else "",
            "%d tensors differ from island 0's" % len(unsynced) if unsynced else
            "the islands' final parameters are bitwise equal", ok=not unsynced, soft=False)

    # ---- parameter averaging: the SGD at lr 1 without momentum is the same thing
    if isl.average and bug is None:
        sgd = replay(model, init, toks, cfg, lrs, isl, average=False)
        e = max(rel_err(sgd["final"][i][n], ref["final"][i][n]) for i in range(k) for n in names)
        el = max(abs(a - b) / max(abs(b), TINY)
                 for i in range(k) for a, b in zip(sgd["losses"][i], ref["losses"][i]))
        rep.add("average", max(e, el), "", "the oracle's SGD (lr %g, momentum %g) against its plain averaging "
                "(final %.1e, losses %.1e; pass <= 1e-12)" % (isl.lr, isl.momentum, e, el),
                ok=max(e, el) <= 1e-12, soft=False)

    failed = set(rep.failed())
    if diagnose and bug is None and failed & {"losses", "final", "grad_norm", "synced"}:
        diagnose_bugs(F, model, init, toks, cfg, lrs, isl, rtol)
    return rep.print(), rep


def check_settings(rep, F, isl):
    """Each dump's root attributes of the islands' settings (islands, island, sync_every,
    outer_lr, outer_momentum, outer_nesterov, compress) against the ones replayed, island
    i's `island` being i."""
    problems = []
    for i, f in enumerate(F):
        for key, v in isl.attrs(i).items():
            if key not in f.attrs:
                problems.append("island %d: no %s" % (i, key))
                continue
            if isinstance(v, str):
                got = dump_oracle.attr(f, key, str).strip("\0 ")
                same = got == v
            elif isinstance(v, float):
                got = dump_oracle.attr(f, key, float)
                same = abs(got - v) <= 1e-12 * max(abs(v), 1.0)
            else:
                got = dump_oracle.attr(f, key, int)
                same = got == v
            if not same:
                problems.append("island %d: %s=%s (replayed %s)" % (i, key, got, v))
    rep.add("settings", float("inf") if problems else 0.0, "",
            "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else "") if problems else
            "islands %d, island i on dump i, sync_every %d, outer_lr %g, outer_momentum %g, outer_nesterov %d, "
            "compress none" % (isl.k, isl.H, isl.lr, isl.momentum, int(isl.nesterov)),
            ok=not problems, soft=False)


def check_outer_metrics(rep, metrics, isl, S, ref, r32, rtol, verbose):
    """The outer steps the islands' metrics record: the steps, their numbers, the number of
    islands, and outer_norm against the oracle's norm of the anchor's change."""
    due = [s for s in range(S) if outer_due(s, S, isl.H)]
    problems, worst, where, bad = [], 0.0, "", False
    lines = []
    for i, path in enumerate(metrics):
        rows = [r for r in read_metrics(path) if "outer_step" in r]
        steps = [int(r["step"]) for r in rows]
        if steps != due:
            problems.append("island %d: outer steps after steps %s, due after %s" % (
                i, [s + 1 for s in steps], [s + 1 for s in due]))
            continue
        for j, r in enumerate(rows):
            if int(r["outer_step"]) != j + 1 or int(r.get("outer_islands", -1)) != isl.k \
                    or int(r.get("island", -1)) != i:
                problems.append("island %d step %d: outer_step %s, outer_islands %s, island %s (expected %d, %d, %d)"
                                % (i, r["step"], r.get("outer_step"), r.get("outer_islands"), r.get("island"),
                                   j + 1, isl.k, i))
            if j >= len(ref["outer"]):
                continue
            v, o, o32 = float(r.get("outer_norm", float("nan"))), ref["outer"][j][1], r32["outer"][j][1]
            e = abs(v - o) / max(abs(o), TINY) if math.isfinite(v) else float("inf")
            fl = abs(o32 - o) / max(abs(o), TINY)
            if not e <= max(rtol, FLOOR_K * fl):
                bad = True
            if e > worst or not where:
                worst, where = e, "island %d outer step %d" % (i, j + 1)
            lines.append("    island %d outer step %d after step %d: %.9g / %.9g / %.2e / %.2e" % (
                i, j + 1, r["step"] + 1, v, o, e, fl))
    if len(ref["outer"]) != len(due):
        problems.append("the oracle's replay took %d outer steps, %d are due" % (len(ref["outer"]), len(due)))
    ok = rep.add("outer", float("inf") if problems else worst, where,
                 "; ".join(problems[:3]) if problems else
                 "outer steps after steps %s on every island; outer_norm = |anchor change|" % [s + 1 for s in due],
                 ok=not problems and not bad)
    if (not ok or verbose) and lines:
        print("  outer_norm per island and outer step (shardlm / oracle / rel.err / float32-replay rel.err):")
        for line in lines:
            print(line)


def diagnose_bugs(F, model, init, toks, cfg, lrs, isl, rtol):
    """The run replayed with each of BUGS' mistakes: how far the dumps' losses and final
    parameters are from each; the ones within 10 rtol are named."""
    names = model.param_names()
    S = cfg["steps"]
    rows = []
    for bug, what in BUGS.items():
        if not bug_applies(bug, isl, S):
            continue
        r = replay(model, init, toks, cfg, lrs, isl, bug=bug)
        el = max(abs(float(f["losses"][s]) - r["losses"][i][s]) / max(abs(r["losses"][i][s]), TINY)
                 for i, f in enumerate(F) for s in range(S))
        ef = max(rel_err(f["final/" + n][()], r["final"][i][n]) for i, f in enumerate(F) for n in names
                 if model.zero_grad_rows(n) is None)
        rows.append((max(el, ef), el, ef, what))
    print("  islands diagnostics (the run replayed with one mistake; rel.err of the dumps' losses and final):")
    for w, el, ef, what in sorted(rows, key=lambda t: t[0]):
        print("    %-78s losses %.1e final %.1e%s" % (what, el, ef, "   <-- matches" if w <= 10 * rtol else ""))


# --------------------------------------------------------------------------- running shardlm

def mpiexec_argv(a):
    return shlex.split(a.mpiexec or os.environ.get("MPIEXEC") or "mpirun")


def shardlm_settings(a, model_cls, global_batch, relative):
    return model_cls.leading_settings(a) + [
        "model.n_layer=%d" % a.n_layer, "model.n_head=%d" % a.n_head, "model.d_model=%d" % a.d_model,
        "model.vocab_size=%d" % a.vocab, "model.seq_len=%d" % a.seq_len] + model_cls.settings_from_args(a) + [
        "train.steps=%d" % a.steps, "train.micro_batch=%d" % a.batch, "train.global_batch=%d" % global_batch,
    ] + ([] if relative else ["train.lr=%r" % a.lr]) + [
        "train.warmup_steps=%d" % a.warmup, "train.min_lr=%r" % a.min_lr,
        "train.weight_decay=%r" % a.weight_decay, "train.grad_clip=%r" % a.grad_clip,
        "train.seed=%d" % a.seed, "train.beta1=%r" % a.beta1, "train.beta2=%r" % a.beta2,
        "train.eps=%r" % a.eps, "data.train=synthetic", "log.every=1", "sample.tokens=0"]


def run_cmd(cmd, cwd, timeout, env=None):
    print("running: " + " ".join(cmd))
    sys.stdout.flush()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        print("error: timed out after %gs" % timeout)
        return False
    except OSError as e:
        print("error: cannot run %s: %s" % (cmd[0], e))
        return False
    if r.returncode != 0:
        print("error: exit status %d" % r.returncode)
        print("---- stderr ----")
        print(r.stderr.decode(errors="replace").rstrip())
        print("---- stdout (last 4000 chars) ----")
        print(r.stdout.decode(errors="replace")[-4000:].rstrip())
        print("----")
        return False
    return True


def island_layouts(a, k):
    """--transport files: [(ranks, own settings)] of islands 0 .. k-1 from --island-layout
    I:RANKS[:KEY=VALUE...] (the others: --ranks-per-island ranks, no settings of their own)."""
    out = [(a.ranks_per_island, []) for _ in range(k)]
    if a.island_layout and a.transport != "files":
        raise ValueError("--island-layout needs --transport files (the MPI transport cuts one job into "
                         "islands of one layout: give it with --ranks-per-island and --set)")
    seen = set()
    for spec in a.island_layout:
        parts = spec.split(":")
        try:
            i, n = int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            raise ValueError("--island-layout %s: expected I:RANKS[:KEY=VALUE...]" % spec)
        if not 0 <= i < k or n < 1 or i in seen:
            raise ValueError("--island-layout %s: island 0 to %d, once each, on at least 1 rank" % (spec, k - 1))
        own = parts[2:]
        if any("=" not in x for x in own):
            raise ValueError("--island-layout %s: settings are KEY=VALUE" % spec)
        seen.add(i)
        out[i] = (n, own)
    return out


def run_islands(jobs, cwd, timeout, env):
    """--transport files: the islands' jobs (argv lists, island order) started together,
    each in its own process group with its output in cwd/island<i>.out and .err; waits for
    all. When one fails (or time runs out) the others are stopped, since they would wait
    for its files, and the failing island's output is printed. Returns True when all exit 0."""
    procs, outs = [], []
    for i, cmd in enumerate(jobs):
        print("running island %d: %s" % (i, " ".join(cmd)))
        sys.stdout.flush()
        out = [os.path.join(cwd, "island%d.%s" % (i, x)) for x in ("out", "err")]
        outs.append(out)
        with open(out[0], "wb") as fo, open(out[1], "wb") as fe:
            try:
                procs.append(subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=cwd, env=env, start_new_session=True))
            except OSError as e:
                print("error: cannot run %s: %s" % (cmd[0], e))
                stop_jobs(procs)
                return False
    t0, failed, late = time.time(), None, False
    while True:
        codes = [p.poll() for p in procs]   # poll each job: its status is known only once polled
        bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            failed = bad[0]
            break
        if all(c == 0 for c in codes):
            return True
        if time.time() - t0 > timeout:
            late = True
            break
        time.sleep(0.05)
    running = [i for i, p in enumerate(procs) if p.poll() is None]
    stop_jobs(procs)
    if late:
        print("error: the islands' jobs timed out after %gs (islands %s still running)" % (timeout, running))
    else:
        print("error: island %d exited with status %d%s" % (
            failed, procs[failed].returncode, "; stopped islands %s, which would wait for its files" % running
            if running else ""))
    for i in ([failed] if failed is not None else range(len(procs))):
        with open(outs[i][0], "rb") as fo, open(outs[i][1], "rb") as fe:
            so, se = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
        print("---- island %d stderr ----" % i)
        print(se.rstrip())
        print("---- island %d stdout (last 4000 chars) ----" % i)
        print(so[-4000:].rstrip())
        print("----")
    return False


def stop_jobs(procs):
    """Stop the islands' jobs still running (each its own process group, started here)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
    t0 = time.time()
    for p in procs:
        try:
            p.wait(timeout=max(0.1, 10 - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


def want_from_args(a, model_cls, relative):
    want = {"n_layer": a.n_layer, "n_head": a.n_head, "d_model": a.d_model, "vocab_size": a.vocab,
            "seq_len": a.seq_len, "micro_batch": a.batch, "grad_accum": a.accum, "steps": a.steps,
            "warmup_steps": a.warmup, "lr": a.lr, "min_lr": a.min_lr, "weight_decay": a.weight_decay,
            "grad_clip": a.grad_clip, "beta1": a.beta1, "beta2": a.beta2, "eps": a.eps}
    want.update(model_cls.want_from_args(a))
    want.update(optim_oracle.want_from_settings(a.set))
    if relative:
        del want["lr"]
    return want


def islands_from_args(a):
    if a.average:
        return Islands(a.islands, a.sync_every, 1.0, 0.0, a.nesterov, average=True)
    return Islands(a.islands, a.sync_every, a.outer_lr, a.outer_momentum, a.nesterov)


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch", choices=sorted(ARCHS), default="gpt2")
    pre.add_argument("--self-test", action="store_true")
    known, _ = pre.parse_known_args()
    model_cls = ARCHS[known.arch]
    ap = dump_oracle.parser(model_cls, __doc__)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="gpt2", help="the model (default gpt2)")
    g = ap.add_argument_group("islands")
    g.add_argument("--islands", type=int, default=2, help="islands.count k (default 2)")
    g.add_argument("--sync-every", type=int, default=3, help="islands.sync_every H (default 3)")
    g.add_argument("--outer-lr", type=float, default=0.7, help="islands.outer_lr (default 0.7)")
    g.add_argument("--outer-momentum", type=float, default=0.9, help="islands.outer_momentum (default 0.9)")
    g.add_argument("--nesterov", choices=("true", "false"), default="true", help="islands.nesterov (default true)")
    g.add_argument("--average", action="store_true",
                   help="parameter averaging: outer_lr 1, momentum 0, replayed as averaging")
    g.add_argument("--ranks-per-island", type=int, default=1, help="ranks of one island (default 1)")
    g.add_argument("--transport", choices=("mpi", "files"), default="mpi",
                   help="islands.transport: mpi (one job cut into the islands, the default) or files "
                        "(one job per island, started together, meeting through islands.dir)")
    g.add_argument("--island-layout", action="append", default=[], metavar="I:RANKS[:KEY=VALUE...]",
                   help="--transport files: island I runs on RANKS ranks with these settings of its own "
                        "after --set's, e.g. 1:2:parallel.tp=2 (repeatable; the others: "
                        "--ranks-per-island ranks, --set's settings)")
    g.add_argument("--mpiexec", help="the MPI launcher, split like a shell (default $MPIEXEC or mpirun)")
    g.add_argument("--stream", help="with --dump: the stream run's dump (tokens compared with its)")
    g.add_argument("--metrics", help="with --dump: FILE as given to log.metrics (the islands' are "
                                     "FILE.island<i>.jsonl; their outer steps are checked)")
    g.add_argument("--defaults", action="store_true",
                   help="pass no islands.outer_* / nesterov settings: shardlm's defaults must be "
                        "0.7, 0.9 and Nesterov (the values replayed)")
    if "--self-test" not in ap._option_string_actions:
        ap.add_argument("--self-test", action="store_true", help="check this oracle without shardlm")
        ap.add_argument("--keep", metavar="DIR", help="--self-test: keep the synthetic dumps here")
    a = ap.parse_args()
    a.nesterov = a.nesterov == "true"
    torch.set_num_threads(1)

    if a.self_test:
        sys.exit(self_test(a))
    if getattr(a, "n_experts", None):
        ap.error("islands with mixture-of-experts blocks are not replayed by this oracle")
    isl = islands_from_args(a)
    if a.dump:
        base = os.path.abspath(a.dump)
        dumps = [island_path(base, i) for i in range(isl.k)]
        mfiles = [island_path(os.path.abspath(a.metrics), i) for i in range(isl.k)] if a.metrics else None
        nf, _ = check_islands(dumps, a.stream, model_cls, None, isl, a.rtol, a.verbose, mfiles)
        sys.exit(1 if nf else 0)

    need = [k for k in ("n_layer", "n_head", "d_model", "vocab", "seq_len", "batch") if getattr(a, k) is None]
    if need:
        ap.error("required: " + " ".join("--" + k.replace("_", "-") for k in need))
    if a.d_model % a.n_head:
        ap.error("--d-model must be divisible by --n-head")
    if isl.k < 2:
        ap.error("--islands must be at least 2")
    if a.defaults and (a.average or a.outer_lr != 0.7 or a.outer_momentum != 0.9 or not a.nesterov):
        ap.error("--defaults replays outer_lr 0.7, momentum 0.9, Nesterov")
    try:
        layouts = island_layouts(a, isl.k)
    except ValueError as e:
        ap.error(str(e))
    model_cls.check_args(ap, a)
    o = optim_oracle.want_from_settings(a.set)
    relative = o.get("optimizer") == "adafactor" and o.get("adafactor_relative_step", 1)
    want = want_from_args(a, model_cls, relative)

    binary = dump_oracle.find_binary(a.shardlm)
    if not binary:
        print("error: no shardlm binary (give --shardlm)")
        print("0 passed, 1 failed")
        sys.exit(1)
    binary = os.path.abspath(binary) if os.sep in binary else binary
    tmp = None
    if a.workdir:
        workdir = os.path.abspath(a.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = workdir = tempfile.mkdtemp(prefix="islands_oracle_")
    try:
        dump = os.path.join(workdir, "dump.h5")
        metrics = os.path.join(workdir, "metrics.jsonl")
        stream = os.path.join(workdir, "stream.h5")
        dumps = [island_path(dump, i) for i in range(isl.k)]
        mfiles = [island_path(metrics, i) for i in range(isl.k)]
        for p in [dump, metrics, stream] + dumps + mfiles:
            if os.path.exists(p):
                os.remove(p)
        B = a.batch * a.accum
        base = [binary, "train"] + ([os.path.abspath(a.config)] if a.config else [])
        # the stream: one rank, no islands, k global batches per step
        plain = [s for s in a.set if not s.split("=", 1)[0].strip().startswith(("parallel.", "islands."))]
        ok = run_cmd(base + shardlm_settings(a, model_cls, isl.k * B, relative) + ["log.dump=" + stream] + plain,
                     workdir, a.timeout)
        outer = ["islands.count=%d" % isl.k, "islands.sync_every=%d" % isl.H] if a.defaults else isl.settings()
        env = dict(os.environ)
        env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
        common = base + shardlm_settings(a, model_cls, B, relative) + outer + \
            ["log.dump=" + dump, "log.metrics=" + metrics] + a.set
        if a.transport == "mpi":
            ok = ok and run_cmd(mpiexec_argv(a) + ["-n", str(isl.k * a.ranks_per_island)] + common,
                                workdir, a.timeout, env)
        elif ok:
            # a fresh exchange directory and checkpoint directory: an island would take a
            # stale decision there for one of this run, and resume from a stale checkpoint
            xdir, ckdir = os.path.join(workdir, "exchange"), os.path.join(workdir, "ckpt")
            for d in (xdir, ckdir):
                shutil.rmtree(d, ignore_errors=True)
            jobs = []
            for i, (np_i, own) in enumerate(layouts):
                jobs.append(mpiexec_argv(a) + ["-n", str(np_i)] + common + [
                    "islands.transport=files", "islands.dir=" + xdir, "islands.index=%d" % i,
                    "ckpt.dir=" + ckdir, "islands.deadline_s=%d" % DEADLINE_S] + own)
            ok = run_islands(jobs, workdir, a.timeout, env)
        if not ok:
            print("0 passed, 1 failed")
            sys.exit(1)
        if os.path.exists(dump):
            print("error: %s written although each island should write its own" % dump)
            print("0 passed, 1 failed")
            sys.exit(1)
        nf, _ = check_islands(dumps, stream, model_cls, want, isl, a.rtol, a.verbose, mfiles)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if nf else 0)


# --------------------------------------------------------------------------- self-test

def self_test(a):
    import islands_synth
    return islands_synth.self_test(a)


if __name__ == "__main__":
    main()
