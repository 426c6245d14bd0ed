"""Synthetic dumps of runs with Adafactor, LAMB and SGD, for optim_oracle.py --self-test.

The whole path from a dump to a verdict, without shardlm: llama_synth.py's Llama training
run (numpy float32 forward, hand-written backward, its own clipping and schedule) with
optim_oracle.RefOptimizer's step (the element-by-element second implementation) in place
of its AdamW, written in shardlm's dump layout with the optimizer root attributes. The
dump oracle (dump_oracle.check_dump_report with llama_oracle.Llama, float64 autograd and
optim_oracle.make_optimizer) reads them like any dump and must:

  * pass each correct dump, read as `--dump` does and against the request;
  * pass them with float32-sized noise in the exactly-zero q and k gradients of a T = 1
    model on every step (a correct float32 implementation may have it; the zero_grad
    check's per-optimizer bound must allow it);
  * fail the dumps of runs that differ from their attributes (BROKEN), in one of the
    checks listed there.
"""
import math
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

import dump_oracle
import llama_oracle
import llama_synth
import optim_oracle

F32 = np.float32

SHAPE = dict(n_layer=1, n_head=2, n_kv_head=1, d_model=12, ffn_hidden=20, vocab_size=11,
             seq_len=5, micro_batch=2, grad_accum=1, tie_embeddings=0, norm_eps=1e-5,
             rope_theta=10000.0, rope_scaling="none", rope_factor=8.0, rope_low_freq_factor=1.0,
             rope_high_freq_factor=4.0, rope_original_max_pos=8192)
# T = 1: every softmax is over one element, q and k have exactly zero gradient
SHAPE_T1 = dict(SHAPE, seq_len=1, micro_batch=3, tie_embeddings=1)

# (label, shape, training attributes changed from llama_synth.TRAIN_DEFAULTS, optimizer
# attributes). The eps1 of 1e-16 keeps Adafactor from normalising float32 rounding in
# near-zero gradients into full-sized steps (as the oracles' --eps 1e-4 does for Adam).
RUNS = [
    ("adafactor defaults", SHAPE, {}, dict(optimizer="adafactor")),
    ("adafactor beta1 0.9, schedule lr, clip 0.5", SHAPE, {},
     dict(optimizer="adafactor", adafactor_beta1=0.9, adafactor_relative_step=0,
          adafactor_clip_threshold=0.5, adafactor_eps1=1e-16)),
    ("adafactor warmup_init, unscaled, decay_rate -0.6", SHAPE, {},
     dict(optimizer="adafactor", adafactor_warmup_init=1, adafactor_scale_parameter=0,
          adafactor_decay_rate=-0.6, adafactor_eps1=1e-16)),
    ("lamb, trust in [0.01, 2]", SHAPE, {},
     dict(optimizer="lamb", lamb_min_trust=0.01, lamb_max_trust=2.0)),
    ("lamb, trust [1, 1] (replayed with torch AdamW)", SHAPE, {},
     dict(optimizer="lamb", lamb_min_trust=1.0, lamb_max_trust=1.0)),
    ("sgd, momentum 0.9, nesterov, lr 0.1", SHAPE, {"lr": 0.1},
     dict(optimizer="sgd", sgd_momentum=0.9, sgd_nesterov=1)),
    ("sgd, momentum 0.8, dampening 0.3, lr 0.1, wd 0.3", SHAPE, {"lr": 0.1, "weight_decay": 0.3},
     dict(optimizer="sgd", sgd_momentum=0.8, sgd_dampening=0.3)),
    ("T=1, zero-gradient noise: adafactor defaults", SHAPE_T1, {}, dict(optimizer="adafactor")),
    ("T=1, zero-gradient noise: adafactor beta1 0.9, schedule lr", SHAPE_T1, {},
     dict(optimizer="adafactor", adafactor_beta1=0.9, adafactor_relative_step=0)),
    ("T=1, zero-gradient noise: lamb, trust in [0.01, 2]", SHAPE_T1, {},
     dict(optimizer="lamb", lamb_min_trust=0.01, lamb_max_trust=2.0)),
    ("T=1, zero-gradient noise: sgd, momentum 0.9, lr 0.1", SHAPE_T1, {"lr": 0.1},
     dict(optimizer="sgd", sgd_momentum=0.9)),
]
ZERO_NOISE = 1e-7   # of the global gradient norm, on T = 1 runs

# Runs that differ from what their dump says: (label, index into RUNS, change, checks
# of which at least one must fail). change: "run" overrides the optimizer the run used
# (the dump keeps RUNS' attributes), "decay_all" decays the norm weights too, "omit"
# leaves the `optimizer` attribute out, "ask" checks the correct dump against a request
# for other settings.
BROKEN = [
    ("adafactor decays the norm weights too", 1, {"decay_all": True}, {"final", "losses"}),
    ("adafactor ran relative_step, the dump says the schedule", 1,
     {"run": {"adafactor_relative_step": 1}}, {"final", "losses"}),
    ("adafactor ran without beta1, the dump says 0.9", 1,
     {"run": {"adafactor_beta1": 0.0}}, {"final", "losses"}),
    ("lamb ran with unclamped trust, the dump says [0.01, 2]", 3,
     {"run": {"lamb_min_trust": 0.0, "lamb_max_trust": 0.0}}, {"final", "losses"}),
    ("lamb ran, the dump has no optimizer attribute (so is AdamW)", 3, {"omit": True},
     {"final", "losses"}),
    ("lamb dump, adafactor asked for", 3, {"ask": {"optimizer": "adafactor"}}, {"config"}),
    ("lamb dump, max_trust 10 asked for", 3, {"ask": {"lamb_max_trust": 10.0}}, {"config"}),
    ("sgd ran without nesterov, the dump says nesterov", 5, {"run": {"sgd_nesterov": 0}},
     {"final", "losses"}),
    ("sgd ran without dampening, the dump says 0.3", 6, {"run": {"sgd_dampening": 0.0}},
     {"final", "losses"}),
]


def train(model, P0, tokens, cfg, run, decay_all=False, noise=0.0, seed=0):
    """The run in float32 parameters with RefOptimizer `run` (its attributes). noise:
    gradients that are exactly zero get normal noise of this fraction of the global
    norm, every step."""
    rng = np.random.default_rng(seed)
    S = tokens.shape[0]
    names = model.names()
    P = {n: P0[n].copy() for n in names}
    ref = optim_oracle.RefOptimizer(run["optimizer"], dict(cfg, **run), [P[n].shape for n in names],
                                    [decay_all or P[n].ndim == 2 for n in names])
    lrs = llama_synth.lr_schedule(S, cfg["lr"], cfg["warmup_steps"], cfg["min_lr"])
    # shardlm's /lr records the step size the optimizer used: Adafactor's relative step
    # replaces the schedule
    ran = dict(cfg, **run)
    recorded = lrs
    if ran["optimizer"] == "adafactor" and ran.get("adafactor_relative_step", 1):
        recorded = [optim_oracle.relative_step(s + 1, ran.get("adafactor_warmup_init", 0)) for s in range(S)]
    out = {"losses": [], "grad_norm": [], "lr": recorded}
    for s in range(S):
        G, loss = llama_synth.step_gradients(model, P, tokens[s], out, s)
        if noise:
            norm = llama_synth.global_norm(G)
            for n in names:
                if not np.any(G[n]):
                    G[n] = (noise * norm / math.sqrt(G[n].size) * rng.standard_normal(G[n].shape)).astype(F32)
        llama_synth.record_and_clip(G, loss, out, s, cfg["grad_clip"])
        params = [P[n].astype(np.float64) for n in names]
        ref.step(params, [G[n].astype(np.float64) for n in names], lrs[s])
        for n, p in zip(names, params):
            P[n] = p.astype(F32)
    out["final"] = P
    return out


def write_optim_attrs(f, full, name=True):
    """The optimizer's root attributes as shardlm records them, from full (every setting
    filled in, optim_oracle.fill_defaults); name: also the attribute naming it."""
    for k in optim_oracle.INT_ATTRS:
        f.attrs.create(k, int(full[k]), dtype=np.int64)
    for k in optim_oracle.FLOAT_ATTRS:
        f.attrs.create(k, float(full[k]), dtype=np.float64)
    if name:
        f.attrs["optimizer"] = np.bytes_(full["optimizer"])


def write_dump(path, cfg, attrs, run=None, decay_all=False, omit=False, noise=0.0):
    """A dump of cfg (model and training attributes) whose optimizer attributes are
    `attrs`; the run itself uses `run` (default: attrs)."""
    model = llama_synth.SynthLlama(cfg)
    rng = np.random.default_rng(cfg["seed"])
    P0 = model.init(cfg["seed"] + 1)
    S, A, B, T = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"]
    tokens = rng.integers(0, cfg["vocab_size"], size=(S, A, B, T + 1)).astype(np.int32)
    r = train(model, P0, tokens, cfg, run or attrs, decay_all, noise, cfg["seed"] + 2)
    full = dict(attrs)
    optim_oracle.fill_defaults(full)
    with h5py.File(path, "w") as f:
        llama_synth.write_model_attrs(f, cfg)
        write_optim_attrs(f, full, name=not omit)
        f["tokens"] = tokens
        for n in model.names():
            f["init/" + n] = P0[n]
            f["step0/grads/" + n] = r["grads"][n]
            f["final/" + n] = r["final"][n]
        llama_synth.write_step_records(f, r)


def request(cfg, attrs):
    """What an oracle run asking for cfg and attrs would want."""
    want = {k: cfg[k] for k in dump_oracle.COMMON_INTS + dump_oracle.COMMON_FLOATS}
    want.update({k: cfg[k] for k in ("n_kv_head", "ffn_hidden", "tie_embeddings", "norm_eps",
                                     "rope_theta", "rope_scaling")})
    want.update(attrs)
    return want


def quiet_check(path, want, rtol, verbose):
    """check_dump_report, its report printed only when verbose."""
    if verbose:
        return dump_oracle.check_dump_report(path, llama_oracle.Llama, want, rtol, True)
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return dump_oracle.check_dump_report(path, llama_oracle.Llama, want, rtol, False)
    finally:
        sys.stdout.close()
        sys.stdout = saved


def dump_tests(row, a):
    """Adds one self-test row per dump (see the module docstring)."""
    rtol = 1e-4
    print("== synthetic Llama dumps (numpy float32 run, loop optimizers) through the dump oracle")
    work = a.keep or tempfile.mkdtemp(prefix="optim_selftest_")
    os.makedirs(work, exist_ok=True)
    try:
        for i, (label, shape, train_cfg, attrs) in enumerate(RUNS):
            cfg = dict(llama_synth.TRAIN_DEFAULTS, **shape)
            cfg.update(train_cfg)
            noise = ZERO_NOISE if shape["seq_len"] == 1 else 0.0
            path = os.path.join(work, "run%d.h5" % i)
            write_dump(path, cfg, attrs, noise=noise)
            nf, rep = quiet_check(path, None, rtol, a.verbose)
            nf2, _ = quiet_check(path, request(cfg, attrs), rtol, False)
            zg = [r for r in rep.rows if r[0] == "zero_grad"]
            detail = "as --dump: %s; as requested: %s" % (
                "passes" if nf == 0 else "FAILS " + ",".join(rep.failed()),
                "passes" if nf2 == 0 else "FAILS")
            if zg:
                detail += "; zero_grad %.1e" % zg[0][2]
            row("dump: " + label, nf == 0 and nf2 == 0, detail)
        for label, k, change, must in BROKEN:
            _, shape, train_cfg, attrs = RUNS[k]
            cfg = dict(llama_synth.TRAIN_DEFAULTS, **shape)
            cfg.update(train_cfg)
            path = os.path.join(work, "broken-%s.h5" % label.replace(" ", "_").replace(",", ""))
            want = None
            if "ask" in change:
                path = os.path.join(work, "run%d.h5" % k)
                want = request(cfg, dict(attrs, **change["ask"]))
            else:
                write_dump(path, cfg, attrs, run=dict(attrs, **change.get("run", {})),
                           decay_all=change.get("decay_all", False), omit=change.get("omit", False))
            nf, rep = quiet_check(path, want, rtol, a.verbose)
            failed = set(rep.failed())
            row("broken dump: " + label, nf > 0 and bool(failed & must),
                "fails %s%s" % (",".join(sorted(failed)) or "nothing",
                                "" if failed & must else " (must fail one of %s)" % ",".join(sorted(must))))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
