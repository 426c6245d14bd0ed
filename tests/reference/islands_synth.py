"""Synthetic islands runs, for islands_oracle.py --self-test.

A second implementation of DiLoCo training, in another style than the oracle's: numpy,
float32 parameters as shardlm keeps them, llama_synth.py's Llama (per-sequence loops,
hand-written backward, its own clipping and schedule) with optim_oracle.RefOptimizer's
AdamW (element by element) as each island's inner optimizer, and the outer SGD written
out from its definition (numpy float64 on the float32 anchor):

    g   = (1/k) sum_i (anchor - theta_i)
    buf = g on the first outer step, else mu buf + g
    d   = g + mu buf with Nesterov, else buf (g when mu = 0)
    anchor -= lr d;  theta_i = anchor

Each island's run is written as shardlm writes it: a dump in shardlm's layout
(docs/testing.md; its own tokens, the common init, its losses, lr, gradient norms and
final parameters; with "dp" > 1 among the run's attributes, no tokens and a rank's
grad_accum, as an island of dp ranks dumps) and a metrics file whose outer-step records carry the step, the outer
step's number, the number of islands and the norm of the anchor's change; with them a
stream file (the tokens of all islands: k micro-batch blocks per step, and the init), as
the one-rank run without islands would write it.

`self_test` (islands_oracle.py --self-test) checks:
  (a) identities of the oracle's replay: one island with outer lr 1 and no momentum is
      plain training (dump_oracle.run_trajectory), and k islands with outer lr 1 and no
      momentum are parameter averaging (the oracle's separate path), to 1e-12;
  (b) the correct synthetic runs (RUNS) pass, read as `--dump` does and against the
      request;
  (c) runs made with one of islands_oracle.BUGS' mistakes (BROKEN), dumped as if they
      were correct, fail, in one of the checks listed for them; and correct runs whose
      dumps' islands attributes (islands, island, sync_every, outer_lr, outer_momentum,
      outer_nesterov) differ from the replayed settings (ATTRS_BROKEN) fail `settings`
      and nothing else;
  (d) the oracle's replay made with each mistake misses the correct runs (some check
      fails).
"""
import json
import math
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np
import torch

import dump_oracle
import islands_oracle
import llama_oracle
import llama_synth
import optim_oracle
import optim_synth
from islands_oracle import BUGS, Islands, island_path, outer_due

F32 = np.float32

SHAPE = optim_synth.SHAPE
SHAPE_T1 = optim_synth.SHAPE_T1
ZERO_NOISE = optim_synth.ZERO_NOISE

# (label, shape, training attributes changed from llama_synth.TRAIN_DEFAULTS, islands,
# zero-gradient noise)
RUNS = [
    ("k=2, H=3, 7 steps (a short last round), outer lr 0.7, momentum 0.9 Nesterov", SHAPE,
     {"steps": 7}, Islands(2, 3, 0.7, 0.9, True), 0.0),
    ("k=3, H=2, 7 steps, momentum 0.5 without Nesterov, 2 micro-batches of 1", SHAPE,
     {"steps": 7, "micro_batch": 1, "grad_accum": 2}, Islands(3, 2, 0.5, 0.5, False), 0.0),
    ("k=2, H=2, 5 steps, parameter averaging (outer lr 1, momentum 0)", SHAPE,
     {"steps": 5}, Islands(2, 2, 1.0, 0.0, True, average=True), 0.0),
    ("T=1, zero-gradient noise: k=2, H=2, 5 steps, outer lr 0.7, momentum 0.9 Nesterov", SHAPE_T1,
     {"steps": 5}, Islands(2, 2, 0.7, 0.9, True), ZERO_NOISE),
    ("k=2, H=2, 4 steps, islands of dp 2 (no tokens dumped, grad_accum 2 of 4 per rank)", SHAPE,
     {"steps": 4, "micro_batch": 1, "grad_accum": 4, "dp": 2}, Islands(2, 2, 0.7, 0.9, True), 0.0),
]

# (label, index into RUNS, the synthetic run's mistake, how its dumps record the tokens,
# checks of which at least one must fail). Each mistake of BUGS appears at least once.
BROKEN = [
    ("outer momentum not Nesterov", 0, "plain_momentum", None, {"losses", "final"}),
    ("sum of the pseudo-gradients, not the mean", 0, "sum", None, {"losses", "final"}),
    ("sum of the pseudo-gradients, k = 3", 1, "sum", None, {"losses", "final"}),
    ("inner AdamW state reset at every outer step", 0, "inner_reset", None, {"losses", "final"}),
    ("no outer step after the last step", 0, "no_last_outer", None, {"final", "outer", "synced"}),
    ("islands' data swapped, the dumps record what was read", 0, "swap_data", "read", {"tokens"}),
    ("islands' data swapped, the dumps record the assigned batches", 0, "swap_data", "assigned",
     {"losses", "final"}),
    ("pseudo-gradient theta - anchor", 1, "delta_sign", None, {"losses", "final"}),
    ("outer momentum buffer dropped at every outer step", 1, "momentum_reset", None, {"losses", "final"}),
    ("outer steps one step late", 0, "outer_late", None, {"losses", "final", "outer"}),
    ("outer lr ignored", 0, "outer_lr_one", None, {"losses", "final"}),
    ("parameters not set to the anchor after the outer step", 2, "no_broadcast", None,
     {"losses", "final", "synced"}),
    ("averaging with the sum", 2, "sum", None, {"losses", "final"}),
]



def _set_attr(f, key, value):
    del f.attrs[key]
    f.attrs.create(key, value, dtype=np.int64 if isinstance(value, int) else np.float64)


def _swap_island(fs):
    _set_attr(fs[0], "island", 1)
    _set_attr(fs[1], "island", 0)


def _drop_settings(fs):
    for f in fs:
        for key in Islands(2, 1).attrs(0):
            del f.attrs[key]


# (label, index into RUNS, how the correct run's dumps are altered): the islands' settings
# in the dumps' attributes that do not echo the replayed ones; each must fail `settings`
# and nothing else.
ATTRS_BROKEN = [
    ("island 0's dump says island 1 and island 1's island 0", 0, _swap_island),
    ("outer_nesterov 0 on island 1 although Nesterov is replayed", 0,
     lambda fs: _set_attr(fs[1], "outer_nesterov", 0)),
    ("sync_every 3 on every island, H = 2 replayed", 1, lambda fs: [_set_attr(f, "sync_every", 3) for f in fs]),
    ("outer_lr 0.7 on island 2, 0.5 replayed", 1, lambda fs: _set_attr(fs[2], "outer_lr", 0.7)),
    ("outer_momentum 0.9 in the averaging run (momentum 0 replayed)", 2,
     lambda fs: [_set_attr(f, "outer_momentum", 0.9) for f in fs]),
    ("islands 3 in a run of 2", 0, lambda fs: [_set_attr(f, "islands", 3) for f in fs]),
    ("no islands' settings at all (a dump of a shardlm before they were recorded)", 0, _drop_settings),
]

DETECT_TOL = 1e-4     # the oracle's default rtol: a mistake must be visible at it
IDENTITY_TOL = 1e-12


# --------------------------------------------------------------------------- the run

def run_cfg(k):
    _, shape, train, isl, noise = RUNS[k]
    cfg = dict(llama_synth.TRAIN_DEFAULTS, **shape)
    cfg.update(train)
    return cfg, isl, noise


def train_islands(model, P0, tokens, cfg, isl, bug=None, noise=0.0, seed=0):
    """The islands' run. tokens: k arrays (S, A, B, T+1), island i's assigned batches.
    Returns k records (as llama_synth.train's, plus "outer": [(step, number, norm)])."""
    rng = np.random.default_rng(seed)
    names = model.names()
    k, S = isl.k, cfg["steps"]
    mu = isl.momentum
    lr = 1.0 if bug == "outer_lr_one" else isl.lr
    nesterov = isl.nesterov and mu > 0 and bug != "plain_momentum"
    lrs = llama_synth.lr_schedule(S, cfg["lr"], cfg["warmup_steps"], cfg["min_lr"])
    shapes = [P0[n].shape for n in names]
    decayed = [P0[n].ndim == 2 for n in names]

    def adamw():
        return optim_oracle.RefOptimizer("adamw", cfg, shapes, decayed)

    theta = [{n: P0[n].copy() for n in names} for _ in range(k)]
    inner = [adamw() for _ in range(k)]
    anchor = {n: P0[n].copy() for n in names}
    buf = None
    feed = list(range(k))
    if bug == "swap_data":
        feed[0], feed[1] = 1, 0
    outs = [{"losses": [], "grad_norm": [], "lr": lrs, "outer": []} for _ in range(k)]
    nouter = 0
    for s in range(S):
        for i in range(k):
            G, loss = llama_synth.step_gradients(model, theta[i], tokens[feed[i]][s], outs[i], s)
            if noise:
                norm = llama_synth.global_norm(G)
                for n in names:
                    if not np.any(G[n]):
                        G[n] = (noise * norm / math.sqrt(G[n].size) * rng.standard_normal(G[n].shape)).astype(F32)
            llama_synth.record_and_clip(G, loss, outs[i], s, cfg["grad_clip"])
            params = [theta[i][n].astype(np.float64) for n in names]
            inner[i].step(params, [G[n].astype(np.float64) for n in names], lrs[s])
            theta[i] = {n: p.astype(F32) for n, p in zip(names, params)}
        if not outer_due(s, S, isl.H, bug):
            continue
        nouter += 1
        if bug == "momentum_reset":
            buf = None
        first = buf is None
        if first:
            buf = {}
        sq = 0.0
        new = {}
        for n in names:
            a = anchor[n].astype(np.float64)
            g = np.zeros_like(a)
            for i in range(k):
                d = a - theta[i][n].astype(np.float64)
                g += -d if bug == "delta_sign" else d
            if bug != "sum":
                g /= k
            if mu > 0:
                buf[n] = g.copy() if first else mu * buf[n] + g
                d = g + mu * buf[n] if nesterov else buf[n]
            else:
                d = g
            new[n] = (a - lr * d).astype(F32)
            sq += float(np.sum((new[n].astype(np.float64) - a) ** 2))
        anchor = new
        for i in range(k):
            outs[i]["outer"].append((s, nouter, math.sqrt(sq)))
            if bug != "no_broadcast":
                theta[i] = {n: anchor[n].copy() for n in names}
        if bug == "inner_reset":
            inner = [adamw() for _ in range(k)]
    for i in range(k):
        outs[i]["final"] = theta[i]
    return outs


# --------------------------------------------------------------------------- files

def write_attrs(f, cfg, isl=None, island=0):
    """The root attributes of a Llama dump with AdamW (as optim_synth's), and the islands'
    settings as shardlm records them (isl None: a run without islands, on the defaults)."""
    full = {"optimizer": "adamw"}
    optim_oracle.fill_defaults(full)
    llama_synth.write_model_attrs(f, cfg, dp=cfg.get("dp", 1))
    optim_synth.write_optim_attrs(f, full)
    isl = isl or Islands(1, 1)
    for k, v in isl.attrs(island).items():
        if isinstance(v, str):
            f.attrs[k] = np.bytes_(v)
        elif isinstance(v, float):
            f.attrs.create(k, v, dtype=np.float64)
        else:
            f.attrs.create(k, v, dtype=np.int64)


def write_run(work, cfg, isl, bug=None, record=None, noise=0.0):
    """The dumps, metrics files and stream file of a synthetic run in directory work.
    record: with swap_data, "read" dumps the tokens each island read, "assigned" its own
    slice. Returns (dump paths, metrics paths, stream path)."""
    os.makedirs(work, exist_ok=True)
    model = llama_synth.SynthLlama(cfg)
    rng = np.random.default_rng(cfg["seed"])
    P0 = model.init(cfg["seed"] + 1)
    S, A, B, T, k = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"], isl.k
    stream_tokens = rng.integers(0, cfg["vocab_size"], size=(S, k * A, B, T + 1)).astype(np.int32)
    tokens = [stream_tokens[:, i * A:(i + 1) * A] for i in range(k)]
    outs = train_islands(model, P0, tokens, cfg, isl, bug, noise, cfg["seed"] + 2)
    base = os.path.join(work, "dump.h5")
    dumps = [island_path(base, i) for i in range(k)]
    metrics = [island_path(os.path.join(work, "metrics.jsonl"), i) for i in range(k)]
    for i in range(k):
        r = outs[i]
        read = i if bug != "swap_data" or record != "read" else [1, 0][i] if i < 2 else i
        with h5py.File(dumps[i], "w") as f:
            write_attrs(f, cfg, isl, i)
            if cfg.get("dp", 1) == 1:   # with dp > 1 shardlm dumps no tokens
                f["tokens"] = tokens[read]
            for n in model.names():
                f["init/" + n] = P0[n]
                f["step0/grads/" + n] = r["grads"][n]
                f["final/" + n] = r["final"][n]
            llama_synth.write_step_records(f, r)
        outer = {s: (j, norm) for s, j, norm in r["outer"]}
        with open(metrics[i], "w") as fh:
            for s in range(S):
                row = {"step": s, "steps": S, "loss": r["losses"][s], "lr": r["lr"][s],
                       "grad_norm": r["grad_norm"][s]}
                if s in outer:
                    row.update(island=i, outer_step=outer[s][0], outer_islands=k, outer_norm=outer[s][1])
                fh.write(json.dumps(row) + "\n")
    stream = os.path.join(work, "stream.h5")
    with h5py.File(stream, "w") as f:
        cs = dict(cfg, grad_accum=k * A, dp=1)
        write_attrs(f, cs)
        f["tokens"] = stream_tokens
        for n in model.names():
            f["init/" + n] = P0[n]
    return dumps, metrics, stream


def quiet(fn, verbose):
    """fn() with its printing shown only when verbose."""
    if verbose:
        return fn()
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return fn()
    finally:
        sys.stdout.close()
        sys.stdout = saved


# --------------------------------------------------------------------------- identities

def random_problem(model_cls, cfg, seed, k):
    """A random init (as a float32 dump would hold it) and k islands' random tokens."""
    model = model_cls(cfg)
    rng = np.random.default_rng(seed)
    init = {}
    for n, s in model.param_shapes().items():
        x = 0.3 * rng.standard_normal(s) if len(s) == 2 else 1.0 + 0.1 * rng.standard_normal(s)
        init[n] = x.astype(np.float32).astype(np.float64)
    S, A, B, T = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"]
    toks = [torch.tensor(rng.integers(0, cfg["vocab_size"], size=(S, A, B, T + 1)), dtype=torch.int64)
            for _ in range(k)]
    return model, init, toks


GPT2_CFG = dict(n_layer=1, n_head=2, d_model=8, vocab_size=7, seq_len=3, micro_batch=2, grad_accum=2,
                steps=5, warmup_steps=2, lr=1e-2, min_lr=1e-3, weight_decay=0.1, grad_clip=1.0,
                beta1=0.9, beta2=0.95, eps=1e-4)


def identities(row):
    cfgs = [("gpt2", islands_oracle.ARCHS["gpt2"], dict(GPT2_CFG)),
            ("llama", llama_oracle.Llama, dict(GPT2_CFG, **{k: v for k, v in SHAPE.items()
                                                            if k not in ("micro_batch", "grad_accum")}))]
    for label, cls, cfg in cfgs:
        cls.cfg_defaults(cfg)
        optim_oracle.fill_defaults(cfg)
        S = cfg["steps"]
        lrs = [dump_oracle.lr_at(s, cfg["lr"], cfg["warmup_steps"], S, cfg["min_lr"]) for s in range(S)]
        # one island, outer lr 1, no momentum: the outer step puts the anchor on theta
        model, init, toks = random_problem(cls, cfg, 11, 1)
        for H in (1, 2, S + 1):
            isl = Islands(1, H, 1.0, 0.0, False)
            r = islands_oracle.replay(model, init, toks, cfg, lrs, isl)
            t = dump_oracle.run_trajectory(model, init, toks[0], cfg, lrs)
            e = max([dump_oracle.rel_err(r["final"][0][n], t["final"][n]) for n in init] +
                    [abs(a - b) / abs(b) for a, b in zip(r["losses"][0], t["losses"])])
            row("%s: one island, H=%d, outer lr 1 without momentum == plain training" % (label, H),
                e <= IDENTITY_TOL, "rel.err %.1e" % e)
        # k islands: the SGD at lr 1 without momentum against plain averaging
        model, init, toks = random_problem(cls, cfg, 12, 3)
        isl = Islands(3, 2, 1.0, 0.0, True, average=True)
        r_avg = islands_oracle.replay(model, init, toks, cfg, lrs, isl)
        r_sgd = islands_oracle.replay(model, init, toks, cfg, lrs, isl, average=False)
        e = max(dump_oracle.rel_err(r_sgd["final"][i][n], r_avg["final"][i][n]) for i in range(3) for n in init)
        row("%s: 3 islands, H=2, the SGD at lr 1 without momentum == averaging" % label, e <= IDENTITY_TOL,
            "rel.err %.1e" % e)
        # and the averaging differs from the defaults (the comparison has teeth)
        r_def = islands_oracle.replay(model, init, toks, cfg, lrs, Islands(3, 2))
        e = max(dump_oracle.rel_err(r_def["final"][0][n], r_avg["final"][0][n]) for n in init)
        row("%s: 3 islands, H=2, the defaults (0.7, 0.9 Nesterov) differ from averaging" % label,
            e > DETECT_TOL, "rel.err %.1e" % e)


# --------------------------------------------------------------------------- self-test

def self_test(a):
    rows = []

    def row(label, ok, detail=""):
        rows.append((label, ok))
        print("  %-4s %-86s %s" % ("ok" if ok else "FAIL", label, detail))
        sys.stdout.flush()

    print("== (a) identities of the oracle's replay")
    identities(row)

    work = a.keep or tempfile.mkdtemp(prefix="islands_selftest_")
    os.makedirs(work, exist_ok=True)
    rtol = DETECT_TOL
    Llama = llama_oracle.Llama
    try:
        print("== (b) correct synthetic runs (numpy float32 Llama, RefOptimizer AdamW, the outer SGD "
              "from its formulas)")
        made = []
        for k, (label, *_rest) in enumerate(RUNS):
            cfg, isl, noise = run_cfg(k)
            files = write_run(os.path.join(work, "run%d" % k), cfg, isl, noise=noise)
            made.append(files)
            dumps, metrics, stream = files
            nf, rep = quiet(lambda: islands_oracle.check_islands(dumps, stream, Llama, None, isl, rtol,
                                                                 a.verbose, metrics), a.verbose)
            want = optim_synth.request(cfg, {"optimizer": "adamw"})
            nf2, _ = quiet(lambda: islands_oracle.check_islands(dumps, stream, Llama, want, isl, rtol,
                                                                False, metrics), a.verbose)
            worst = {r[0]: r[2] for r in rep.rows}
            row("run: " + label, nf == 0 and nf2 == 0,
                "%s; losses %.1e, final %.1e%s" % (
                    "passes" if nf == 0 and nf2 == 0 else "FAILS " + ",".join(rep.failed()),
                    worst.get("losses", float("nan")), worst.get("final", float("nan")),
                    "; zero_grad %.2f" % worst["zero_grad"] if "zero_grad" in worst else ""))

        print("== (c) runs made with a mistake, dumped as if correct, must fail")
        covered = set()
        for label, k, bug, record, must in BROKEN:
            cfg, isl, noise = run_cfg(k)
            assert islands_oracle.bug_applies(bug, isl, cfg["steps"]), (label, bug)
            covered.add(bug)
            dumps, metrics, stream = write_run(os.path.join(work, "broken-%s-%s-%d" % (bug, record, k)), cfg,
                                               isl, bug=bug, record=record, noise=noise)
            nf, rep = quiet(lambda: islands_oracle.check_islands(dumps, stream, Llama, None, isl, rtol,
                                                                 a.verbose, metrics, diagnose=False),
                            a.verbose)
            failed = set(rep.failed())
            row("broken: %s (%s)" % (label, RUNS[k][0].split(",")[0] + ", " + RUNS[k][0].split(",")[1].strip()),
                nf > 0 and bool(failed & must),
                "fails %s%s" % (",".join(sorted(failed)) or "nothing",
                                "" if failed & must else " (must fail one of %s)" % ",".join(sorted(must))))
        left = set(BUGS) - covered
        row("every mistake of BUGS has a broken run", not left, ", ".join(sorted(left)))

        print("== (c') correct runs whose dumps' islands attributes do not echo the replayed settings")
        for n, (label, k, alter) in enumerate(ATTRS_BROKEN):
            cfg, isl, _ = run_cfg(k)
            src = os.path.join(work, "run%d" % k)
            dst = os.path.join(work, "attrs%d" % n)
            shutil.copytree(src, dst)
            dumps, metrics, stream = [[p.replace(src, dst) for p in x] if isinstance(x, list) else x.replace(src, dst)
                                      for x in made[k]]
            fs = [h5py.File(p, "r+") for p in dumps]
            try:
                alter(fs)
            finally:
                for f in fs:
                    f.close()
            nf, rep = quiet(lambda: islands_oracle.check_islands(dumps, stream, Llama, None, isl, rtol,
                                                                 a.verbose, metrics, diagnose=False),
                            a.verbose)
            failed = set(rep.failed())
            note = [r[4] for r in rep.rows if r[0] == "settings"]
            row("attributes: " + label, failed == {"settings"},
                "fails %s%s" % (",".join(sorted(failed)) or "nothing", ": " + note[0] if note and failed else ""))

        print("== (d) the oracle replaying each mistake must miss the correct runs")
        for bug, what in BUGS.items():
            hits = []
            for k in range(len(RUNS)):
                cfg, isl, _ = run_cfg(k)
                if not islands_oracle.bug_applies(bug, isl, cfg["steps"]) or \
                        len(hits) >= (2 if bug == "sum" else 1):
                    continue
                dumps, metrics, stream = made[k]
                nf, rep = quiet(lambda: islands_oracle.check_islands(dumps, stream, Llama, None, isl, rtol,
                                                                     False, metrics, bug=bug, diagnose=False),
                                a.verbose)
                worst = {r[0]: r[2] for r in rep.rows}
                hits.append((k, nf > 0, ",".join(rep.failed()), worst.get("losses", 0.0), worst.get("final", 0.0)))
            ok = bool(hits) and all(h[1] for h in hits)
            row("oracle with %s: %s" % (bug, what), ok,
                "; ".join("run %d fails %s (losses %.1e, final %.1e)" % (h[0], h[2] or "nothing", h[3], h[4])
                          for h in hits) or "applies to no run")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\nself-test summary:")
    nfail = sum(1 for _, ok in rows if not ok)
    for label, ok in rows:
        if not ok:
            print("  FAIL %s" % label)
    print("\n%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0
