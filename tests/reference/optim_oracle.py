#!/usr/bin/python3
"""The optimizers of shardlm's PyTorch oracles (train.optimizer), and their self-test.

dump_oracle.run_trajectory replays a run with the optimizer `make_optimizer` builds from
the dump's root attributes. Gradients arrive already clipped to the global norm
grad_clip; weight decay applies only to the tensors Model.is_decayed names (the
matrices); the learning rate of step s is the schedule's (the dump's /lr), except for
Adafactor with relative_step, which computes its own. The four, written from their
definitions (g the clipped gradient, t = 1, 2, ... the step, p one parameter tensor):

  adamw      torch.optim.AdamW itself, two parameter groups (decay / no decay).

  lamb       (You et al. 2019) m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
             r = m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p,
             trust = |p|/|r| per tensor (1 when either norm is 0), capped at max_trust
             when max_trust > 0, then raised to min_trust; p -= lr trust r.
             With min_trust = max_trust = 1 this is AdamW with decoupled decay, and the
             oracle then replays it with torch.optim.AdamW: a cross-check of shardlm's
             LAMB against the AdamW oracle.

  adafactor  (Shazeer & Stern 2018) rms(x) = |x|/sqrt(numel x). Step size
             rel = min(1e-6 t if warmup_init else 1e-2, 1/sqrt(t)) with relative_step,
             else the schedule's lr; lr_t = rel * max(eps2, rms(p)) with
             scale_parameter, else rel. beta2t = 1 - t^decay_rate, u = g^2 + eps1.
             Matrices (out, in) keep a row and a column average:
               R = beta2t R + (1-beta2t) mean_in(u),  C = beta2t C + (1-beta2t) mean_out(u),
               x = g / sqrt(R_i / mean(R)) / sqrt(C_j);
             vectors keep V = beta2t V + (1-beta2t) u, x = g / sqrt(V).
             x /= max(1, rms(x)/clip_threshold); x *= lr_t; with beta1 > 0
             M = beta1 M + (1-beta1) x and x = M. p -= wd lr_t p (decayed tensors), p -= x.

  sgd        torch.optim.SGD itself (momentum, dampening, nesterov; coupled weight decay
             wd p added to the gradient of decayed tensors).

The dump names its optimizer in the root attribute `optimizer` (none: adamw) and carries
the settings of all four (ATTRS; absent ones take the defaults there). `--set KEY=VALUE`
settings of the oracles (`train.optimizer=lamb`, `lamb.max_trust=10`, ...) are turned
into requested attributes by `want_from_settings`, so the config check sees a dump that
does not echo them.

Zero-gradient elements (Model.zero_grad_rows) move by deterministic weight decay plus
whatever rounding noise in their gradient makes of it; how far that noise can carry them
depends on the optimizer, so each step adds its own bound to `Stepper.zbound` (see
`Stepper._bound`) and the oracle's zero_grad check allows ZERO_GRAD_TOL times the sum.

`optim_oracle.py --self-test` checks this module without shardlm (see `self_test`).
"""
import argparse
import math
import os
import sys

import numpy as np
import torch

OPTIMIZERS = ("adamw", "adafactor", "lamb", "sgd")

# Dump root attribute -> (type, default, the shardlm setting that sets it).
ATTRS = {
    "optimizer": (str, "adamw", "train.optimizer"),
    "adafactor_eps1": (float, 1e-30, "adafactor.eps1"),
    "adafactor_eps2": (float, 1e-3, "adafactor.eps2"),
    "adafactor_clip_threshold": (float, 1.0, "adafactor.clip_threshold"),
    "adafactor_decay_rate": (float, -0.8, "adafactor.decay_rate"),
    "adafactor_beta1": (float, 0.0, "adafactor.beta1"),
    "adafactor_scale_parameter": (int, 1, "adafactor.scale_parameter"),
    "adafactor_relative_step": (int, 1, "adafactor.relative_step"),
    "adafactor_warmup_init": (int, 0, "adafactor.warmup_init"),
    "lamb_min_trust": (float, 0.0, "lamb.min_trust"),
    "lamb_max_trust": (float, 0.0, "lamb.max_trust"),
    "sgd_momentum": (float, 0.0, "sgd.momentum"),
    "sgd_dampening": (float, 0.0, "sgd.dampening"),
    "sgd_nesterov": (int, 0, "sgd.nesterov"),
}
INT_ATTRS = [k for k, v in ATTRS.items() if v[0] is int]
FLOAT_ATTRS = [k for k, v in ATTRS.items() if v[0] is float]
STR_ATTRS = [k for k, v in ATTRS.items() if v[0] is str]

# An SGD step moves an element by lr times its (momentum-averaged) gradient, unnormalised,
# so rounding noise in an exactly-zero gradient moves it by lr times the noise. The noise
# is allowed this fraction of the global (clipped) gradient norm, the allowance the grads
# check gives a tensor whose exact gradient is zero (at the default rtol).
SGD_NOISE = 1e-4


# --------------------------------------------------------------------------- configuration

def fill_defaults(cfg):
    """Give cfg every optimizer attribute it lacks, with its default."""
    for k, (_, default, _) in ATTRS.items():
        cfg.setdefault(k, default)


def _setting_value(typ, text):
    t = text.strip()
    if typ is str:
        return t
    if typ is int:
        low = t.lower()
        if low in ("true", "yes", "on"):
            return 1
        if low in ("false", "no", "off"):
            return 0
        return int(t)
    return float(t)


def want_from_settings(settings):
    """The optimizer attributes that shardlm `KEY=VALUE` settings ask for (later settings
    win, as on shardlm's command line). Values that do not parse are left to shardlm."""
    by_key = {v[2]: (k, v[0]) for k, v in ATTRS.items()}
    want = {}
    for s in settings:
        key, eq, val = s.partition("=")
        if not eq or key.strip() not in by_key:
            continue
        attr, typ = by_key[key.strip()]
        try:
            want[attr] = _setting_value(typ, val)
        except ValueError:
            pass
    return want


def config_problems(cfg):
    """Why the optimizer configuration cannot be replayed (empty when it can)."""
    p = []
    o = cfg["optimizer"]
    if o not in OPTIMIZERS:
        return ["optimizer=%s is not one of %s" % (o, ", ".join(OPTIMIZERS))]
    if o == "adafactor":
        if not cfg["adafactor_clip_threshold"] > 0:
            p.append("adafactor_clip_threshold=%g is not > 0" % cfg["adafactor_clip_threshold"])
        if not 0 <= cfg["adafactor_beta1"] < 1:
            p.append("adafactor_beta1=%g is not in [0, 1)" % cfg["adafactor_beta1"])
        if not cfg["adafactor_decay_rate"] <= 0:
            p.append("adafactor_decay_rate=%g is not <= 0" % cfg["adafactor_decay_rate"])
    if o == "sgd" and cfg["sgd_nesterov"] and not (cfg["sgd_momentum"] > 0 and cfg["sgd_dampening"] == 0):
        # torch.optim.SGD refuses it; there is no common definition to check against
        p.append("sgd_nesterov needs sgd_momentum > 0 and sgd_dampening = 0")
    return p


def lamb_is_adamw(cfg):
    return cfg["optimizer"] == "lamb" and cfg["lamb_min_trust"] == 1.0 and cfg["lamb_max_trust"] == 1.0


def describe(cfg):
    """One line for the oracle's report."""
    o = cfg["optimizer"]
    if o == "adamw":
        return "optimizer: adamw (torch.optim.AdamW)"
    if o == "lamb":
        s = "optimizer: lamb, trust in [%g, %s]" % (
            cfg["lamb_min_trust"], "%g" % cfg["lamb_max_trust"] if cfg["lamb_max_trust"] > 0 else "inf")
        if lamb_is_adamw(cfg):
            s += ": pinned to 1, so replayed with torch.optim.AdamW"
        return s
    if o == "adafactor":
        return ("optimizer: adafactor, eps1=%g eps2=%g clip_threshold=%g decay_rate=%g beta1=%g "
                "scale_parameter=%d relative_step=%d warmup_init=%d%s"
                % (cfg["adafactor_eps1"], cfg["adafactor_eps2"], cfg["adafactor_clip_threshold"],
                   cfg["adafactor_decay_rate"], cfg["adafactor_beta1"],
                   cfg["adafactor_scale_parameter"], cfg["adafactor_relative_step"],
                   cfg["adafactor_warmup_init"],
                   " (its own step size; the /lr schedule is not used)"
                   if cfg["adafactor_relative_step"] else ""))
    if o == "sgd":
        return "optimizer: sgd (torch.optim.SGD), momentum=%g dampening=%g nesterov=%d" % (
            cfg["sgd_momentum"], cfg["sgd_dampening"], cfg["sgd_nesterov"])
    return "optimizer: %s" % o


# --------------------------------------------------------------------------- the optimizers

def relative_step(t, warmup_init):
    """Adafactor's relative step size at step t = 1, 2, ...: min(1e-2, 1/sqrt(t)), or
    min(1e-6 t, 1/sqrt(t)) with warmup_init. shardlm's /lr records it in such runs."""
    return min(1e-6 * t if warmup_init else 1e-2, 1.0 / math.sqrt(t))


def _rms(x):
    return float(x.norm()) / math.sqrt(x.numel())


class Adafactor(torch.optim.Optimizer):
    """Adafactor as in the module docstring. Groups carry lr (used without relative_step)
    and weight_decay. After each step, state["lr_t"] holds the step's lr_t and
    state["bound"] how far it could move an element whose exact gradient is 0.

    `bug` makes it commit one named mistake (ADAFACTOR_BUGS), for the self-test."""

    def __init__(self, params, lr=0.0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8,
                 beta1=0.0, weight_decay=0.0, scale_parameter=True, relative_step=True,
                 warmup_init=False, bug=None):
        defaults = dict(lr=lr, eps1=eps1, eps2=eps2, clip_threshold=clip_threshold,
                        decay_rate=decay_rate, beta1=beta1, weight_decay=weight_decay,
                        scale_parameter=scale_parameter, relative_step=relative_step,
                        warmup_init=warmup_init)
        super().__init__(params, defaults)
        self.bug = bug

    def _step_size(self, group, t, rms_p):
        if group["relative_step"]:
            warm = group["warmup_init"] and self.bug != "warmup_init_ignored"
            rel = relative_step(t, warm)
        else:
            rel = group["lr"]
        if group["scale_parameter"]:
            floor = 0.0 if self.bug == "eps2_floor_missing" else group["eps2"]
            return rel, rel * max(floor, rms_p)
        return rel, rel

    @torch.no_grad()
    def step(self, closure=None):
        bug = self.bug
        for group in self.param_groups:
            b1, clip = group["beta1"], group["clip_threshold"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                factored = p.dim() >= 2 and bug != "never_factored"
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    if factored:
                        st["row"] = torch.zeros(p.shape[:-1], dtype=p.dtype)
                        st["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype)
                    else:
                        st["v"] = torch.zeros_like(p)
                    if b1 > 0:
                        st["m"] = torch.zeros_like(p)
                    st["bound_max"] = 0.0
                st["step"] += 1
                t = st["step"]
                rel, lr_t = self._step_size(group, t, _rms(p))
                beta2t = 1.0 - (t + 1 if bug == "beta2_step_off_by_one" else t) ** group["decay_rate"]
                u = g * g
                if bug != "no_eps1":
                    u = u + group["eps1"]
                if factored:
                    st["row"].mul_(beta2t).add_(u.mean(dim=-1), alpha=1.0 - beta2t)
                    st["col"].mul_(beta2t).add_(u.mean(dim=-2), alpha=1.0 - beta2t)
                    r = st["row"]
                    if bug != "row_not_normalised":
                        r = r / r.mean(dim=-1, keepdim=True)
                    x = g * r.rsqrt().unsqueeze(-1) * st["col"].rsqrt().unsqueeze(-2)
                else:
                    st["v"].mul_(beta2t).add_(u, alpha=1.0 - beta2t)
                    x = g * st["v"].rsqrt()
                if b1 > 0 and bug == "momentum_before_clip":
                    st["m"].mul_(b1).add_(x, alpha=1.0 - b1)
                    x = st["m"].clone()
                if bug != "clip_skipped":
                    x.div_(max(1.0, _rms(x) / clip))
                x.mul_(lr_t)
                if b1 > 0 and bug != "momentum_before_clip":
                    st["m"].mul_(b1).add_(x, alpha=1.0 - b1)
                    x = st["m"]
                wd = group["weight_decay"]
                if wd != 0:
                    p.add_(p, alpha=-wd * (rel if bug == "decay_with_rel" else lr_t))
                p.sub_(x)
                # Noise in an exactly-zero gradient element: for a vector its x is at most
                # |g|/sqrt((1-beta2t) g^2) = 1/sqrt(1-beta2t); for a matrix the factored
                # estimate gives no such bound (the element's row and column may both be
                # small), only the clipping: rms(x) <= clip puts no element above
                # clip*sqrt(numel). With beta1, M is an average of past x's.
                c = clip * math.sqrt(p.numel())
                if not factored:
                    c = min(c, 1.0 / math.sqrt(1.0 - beta2t) if beta2t < 1 else c)
                st["lr_t"] = lr_t
                st["bound_max"] = max(st["bound_max"], lr_t * c)
                st["bound"] = st["bound_max"] if b1 > 0 else lr_t * c
        return None


class Lamb(torch.optim.Optimizer):
    """LAMB as in the module docstring. Groups carry lr and weight_decay. After each step,
    state["trust"] holds the step's trust ratio. `bug`: one named mistake (LAMB_BUGS)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 min_trust=0.0, max_trust=0.0, bug=None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        min_trust=min_trust, max_trust=max_trust)
        super().__init__(params, defaults)
        self.bug = bug

    def _trust(self, group, pn, rn):
        bug = self.bug
        if pn > 0 and rn > 0:
            trust = rn / pn if bug == "trust_inverted" else pn / rn
        else:
            trust = 0.0 if bug == "zero_norm_trust_zero" else 1.0
        if group["max_trust"] > 0 and bug != "max_trust_ignored":
            trust = min(trust, group["max_trust"])
        if bug != "min_trust_ignored":
            trust = max(trust, group["min_trust"])
        return trust

    @torch.no_grad()
    def step(self, closure=None):
        bug = self.bug
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["m"].mul_(b1).add_(g, alpha=1.0 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
                if bug == "no_bias_correction":
                    mh, vh = st["m"], st["v"]
                else:
                    mh, vh = st["m"] / (1.0 - b1 ** t), st["v"] / (1.0 - b2 ** t)
                den = (vh + eps).sqrt() if bug == "eps_inside_sqrt" else vh.sqrt() + eps
                r = mh / den
                if wd != 0 and bug != "decay_outside_trust":
                    r = r + wd * p
                trust = self._trust(group, float(p.norm()), float(r.norm()))
                if wd != 0 and bug == "decay_outside_trust":
                    p.mul_(1.0 - lr * wd)
                p.add_(r, alpha=-lr * trust)
                st["trust"] = trust
        return None


ADAFACTOR_BUGS = {
    "row_not_normalised": "factored: the row average R used without dividing by mean(R)",
    "clip_skipped": "the update not clipped to rms <= clip_threshold",
    "no_eps1": "eps1 not added to g^2",
    "eps2_floor_missing": "lr_t = rel * rms(p), without the eps2 floor",
    "beta2_step_off_by_one": "beta2t = 1 - (t+1)^decay_rate",
    "momentum_before_clip": "beta1 averages the update before clipping and lr_t",
    "decay_with_rel": "weight decay scaled by the relative step, not lr_t",
    "warmup_init_ignored": "relative step min(1e-2, 1/sqrt(t)) even with warmup_init",
    "never_factored": "matrices keep a full second moment, as vectors do",
}
LAMB_BUGS = {
    "no_bias_correction": "moments without bias correction",
    "trust_inverted": "trust = |r|/|p|",
    "eps_inside_sqrt": "r = m^/sqrt(v^ + eps)",
    "decay_outside_trust": "weight decay applied as p *= 1 - lr wd, outside r and the trust ratio",
    "max_trust_ignored": "trust not capped at max_trust",
    "min_trust_ignored": "trust not raised to min_trust",
    "zero_norm_trust_zero": "trust 0 (not 1) when |p| or |r| is 0",
}
# Mistakes in make_optimizer itself: wiring the settings to the optimizers.
FACTORY_BUGS = {
    "decay_everywhere": "weight decay on every tensor, vectors too",
    "nesterov_ignored": "sgd: nesterov not passed on",
    "dampening_ignored": "sgd: dampening not passed on",
    "relative_step_ignored": "adafactor: the schedule's lr even with relative_step",
    "scale_parameter_ignored": "adafactor: lr_t scaled by rms(p) even without scale_parameter",
}


# --------------------------------------------------------------------------- the factory

class Stepper:
    """An optimizer as run_trajectory drives it: step(lr, gnorm) after the gradients are in
    place and clipped (lr: the schedule's, gnorm: the clipped global norm). zbound[name]
    sums, per tensor, how far each step could move an element whose exact gradient is 0
    by rounding noise alone (beyond its weight decay, which is deterministic); zunit says
    what that sum is, for the report."""

    def __init__(self, kind, opt, P, names, cfg):
        self.kind, self.opt, self.cfg = kind, opt, cfg
        self.P = {n: P[n] for n in names}
        self.zbound = {n: 0.0 for n in names}
        self.sgd_buf = {n: 0.0 for n in names}
        self.nstep = 0
        self.zunit = {"adamw": "sum(lr)", "lamb": "sum(lr*trust)", "adafactor": "sum(lr_t*c_t)",
                      "sgd": "sum(lr*%g*|g|)" % SGD_NOISE}[kind]

    def step(self, lr, gnorm):
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.nstep += 1
        for n, p in self.P.items():
            self.zbound[n] += self._bound(n, p, lr, gnorm)

    def _bound(self, n, p, lr, gnorm):
        """How far this step could move element of p whose exact gradient is 0.
        AdamW: |m^|/(sqrt(v^)+eps) stays near 1 (at most ~1.2 for the oracle's betas), so
          lr; LAMB: the same times the tensor's trust ratio.
        Adafactor: lr_t times the bound on one element of the normalised update (see
          Adafactor.step).
        SGD: nothing is normalised, so noise moves the element by lr times the noise,
          allowed SGD_NOISE * gnorm per step, carried by momentum as the buffer carries
          the gradient."""
        if self.kind == "adamw" or (self.kind == "lamb" and "trust" not in self.opt.state[p]):
            return lr
        if self.kind == "lamb":
            return lr * self.opt.state[p]["trust"]
        if self.kind == "adafactor":
            return self.opt.state[p]["bound"]
        c = self.cfg
        m, d = c["sgd_momentum"], c["sgd_dampening"]
        noise = SGD_NOISE * gnorm
        if m == 0:
            return lr * noise
        buf = noise if self.nstep == 1 else m * self.sgd_buf[n] + (1.0 - d) * noise
        self.sgd_buf[n] = buf
        return lr * (noise + m * buf if c["sgd_nesterov"] else buf)


def make_optimizer(model, P, names, cfg, bug=None):
    """The optimizer cfg names, over the tensors P[name] (in `names` order), with weight
    decay on the tensors model.is_decayed picks. cfg: dump_oracle's configuration (the
    dump's root attributes; the optimizer ones may be absent). Returns a Stepper.
    `bug`: a key of FACTORY_BUGS, ADAFACTOR_BUGS or LAMB_BUGS, for the self-test."""
    cfg = dict(cfg)
    fill_defaults(cfg)
    kind = cfg["optimizer"]
    decayed = [model.is_decayed(n, tuple(P[n].shape)) or bug == "decay_everywhere" for n in names]
    dec = [P[n] for n, d in zip(names, decayed) if d]
    nodec = [P[n] for n, d in zip(names, decayed) if not d]
    wd = cfg["weight_decay"]
    groups = [{"params": dec, "weight_decay": wd}, {"params": nodec, "weight_decay": 0.0}]
    if kind == "adamw" or lamb_is_adamw(cfg) and bug not in LAMB_BUGS:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["eps"])
    elif kind == "lamb":
        opt = Lamb(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                   min_trust=cfg["lamb_min_trust"], max_trust=cfg["lamb_max_trust"],
                   bug=bug if bug in LAMB_BUGS else None)
    elif kind == "adafactor":
        opt = Adafactor(groups, lr=cfg["lr"], eps1=cfg["adafactor_eps1"], eps2=cfg["adafactor_eps2"],
                        clip_threshold=cfg["adafactor_clip_threshold"],
                        decay_rate=cfg["adafactor_decay_rate"], beta1=cfg["adafactor_beta1"],
                        scale_parameter=bool(cfg["adafactor_scale_parameter"])
                        or bug == "scale_parameter_ignored",
                        relative_step=bool(cfg["adafactor_relative_step"])
                        and bug != "relative_step_ignored",
                        warmup_init=bool(cfg["adafactor_warmup_init"]),
                        bug=bug if bug in ADAFACTOR_BUGS else None)
    elif kind == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["sgd_momentum"],
                              dampening=0.0 if bug == "dampening_ignored" else cfg["sgd_dampening"],
                              nesterov=bool(cfg["sgd_nesterov"]) and bug != "nesterov_ignored")
    else:
        raise ValueError("optimizer %r is not one of %s" % (kind, ", ".join(OPTIMIZERS)))
    return Stepper(kind, opt, P, names, cfg)


# --------------------------------------------------------------------------- second implementation
#
# The same four optimizers once more for the self-test, in another style: numpy float64,
# one element at a time, loops over rows and columns, Python floats for every scalar.
# Parameters and state are lists of float64 arrays in a fixed order; `decayed` flags the
# tensors weight decay applies to. SGD follows torch's definition (buffer = first gradient
# on step 1, dampening afterwards; nesterov adds momentum * buffer to the gradient).

class RefOptimizer:
    def __init__(self, kind, hp, shapes, decayed):
        """hp: the configuration dict (dump attribute names)."""
        self.kind, self.hp, self.decayed = kind, dict(hp), list(decayed)
        fill_defaults(self.hp)
        self.t = 0
        self.state = [dict() for _ in shapes]

    def step(self, params, grads, lr):
        """params, grads: lists of float64 arrays; params are updated in place."""
        self.t += 1
        for k, (p, g) in enumerate(zip(params, grads)):
            getattr(self, "_" + self.kind)(k, p, g, lr)

    # ---- AdamW (decoupled decay), for the LAMB-equals-AdamW comparisons
    def _adamw(self, k, p, g, lr):
        self._lamb(k, p, g, lr, pinned=True)

    def _lamb(self, k, p, g, lr, pinned=False):
        h, st, t = self.hp, self.state[k], self.t
        b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
        wd = h["weight_decay"] if self.decayed[k] else 0.0
        pf, gf = p.reshape(-1), g.reshape(-1)
        n = pf.size
        if not st:
            st["m"] = [0.0] * n
            st["v"] = [0.0] * n
        r = [0.0] * n
        for i in range(n):
            gi = float(gf[i])
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * gi
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * gi * gi
            mh = st["m"][i] / (1 - b1 ** t)
            vh = st["v"][i] / (1 - b2 ** t)
            r[i] = mh / (math.sqrt(vh) + eps) + wd * float(pf[i])
        if pinned:
            trust = 1.0
        else:
            pn = math.sqrt(sum(float(x) * float(x) for x in pf))
            rn = math.sqrt(sum(x * x for x in r))
            trust = pn / rn if pn > 0 and rn > 0 else 1.0
            if h["lamb_max_trust"] > 0 and trust > h["lamb_max_trust"]:
                trust = h["lamb_max_trust"]
            if trust < h["lamb_min_trust"]:
                trust = h["lamb_min_trust"]
        for i in range(n):
            pf[i] = float(pf[i]) - lr * trust * r[i]

    def _adafactor(self, k, p, g, lr):
        h, st, t = self.hp, self.state[k], self.t
        eps1, clip = h["adafactor_eps1"], h["adafactor_clip_threshold"]
        b1 = h["adafactor_beta1"]
        n = p.size
        rms_p = math.sqrt(sum(float(x) ** 2 for x in p.reshape(-1)) / n)
        if h["adafactor_relative_step"]:
            top = 1e-6 * t if h["adafactor_warmup_init"] else 1e-2
            rel = min(top, 1.0 / math.sqrt(t))
        else:
            rel = lr
        alpha = rel * max(h["adafactor_eps2"], rms_p) if h["adafactor_scale_parameter"] else rel
        b2 = 1.0 - t ** h["adafactor_decay_rate"]
        x = np.zeros(p.shape)
        if p.ndim == 2:
            rows, cols = p.shape
            if not st:
                st["R"], st["C"] = [0.0] * rows, [0.0] * cols
            for i in range(rows):
                s = 0.0
                for j in range(cols):
                    s += float(g[i, j]) ** 2 + eps1
                st["R"][i] = b2 * st["R"][i] + (1 - b2) * s / cols
            for j in range(cols):
                s = 0.0
                for i in range(rows):
                    s += float(g[i, j]) ** 2 + eps1
                st["C"][j] = b2 * st["C"][j] + (1 - b2) * s / rows
            rmean = sum(st["R"]) / rows
            for i in range(rows):
                for j in range(cols):
                    vhat = st["R"][i] / rmean * st["C"][j]    # the rank-1 second moment
                    x[i, j] = float(g[i, j]) / math.sqrt(vhat)
        else:
            if not st:
                st["V"] = [0.0] * n
            for i in range(n):
                gi = float(g[i])
                st["V"][i] = b2 * st["V"][i] + (1 - b2) * (gi * gi + eps1)
                x[i] = gi / math.sqrt(st["V"][i])
        xf = x.reshape(-1)
        rms_x = math.sqrt(sum(float(v) ** 2 for v in xf) / n)
        scale = alpha / max(1.0, rms_x / clip)
        for i in range(n):
            xf[i] = float(xf[i]) * scale
        if b1 > 0:
            if "M" not in st:
                st["M"] = [0.0] * n
            for i in range(n):
                st["M"][i] = b1 * st["M"][i] + (1 - b1) * float(xf[i])
                xf[i] = st["M"][i]
        wd = h["weight_decay"] if self.decayed[k] else 0.0
        pf = p.reshape(-1)
        for i in range(n):
            q = float(pf[i])
            pf[i] = q - wd * alpha * q - float(xf[i])

    def _sgd(self, k, p, g, lr):
        h, st = self.hp, self.state[k]
        m, d, nest = h["sgd_momentum"], h["sgd_dampening"], h["sgd_nesterov"]
        wd = h["weight_decay"] if self.decayed[k] else 0.0
        pf, gf = p.reshape(-1), g.reshape(-1)
        first = not st
        if first:
            st["buf"] = [0.0] * pf.size
        for i in range(pf.size):
            step = float(gf[i]) + wd * float(pf[i])
            if m != 0:
                buf = step if first else m * st["buf"][i] + (1 - d) * step
                st["buf"][i] = buf
                step = step + m * buf if nest else buf
            pf[i] = float(pf[i]) - lr * step


# --------------------------------------------------------------------------- self-test

class _Tensors:
    """A stand-in for dump_oracle.Model: names, shapes, decay on matrices."""

    def __init__(self, shapes):
        self.shapes = dict(shapes)

    def param_names(self):
        return list(self.shapes)

    def is_decayed(self, name, shape):
        return len(shape) == 2


# Odd shapes, a single row and a single column, a zero-initialised vector (|p| = 0: the
# eps2 floor, LAMB's trust of 1), a matrix with a row and a vector with elements whose
# gradient is always 0 (eps1 is all that keeps 0/0 away).
SHAPES = {"w75": (7, 5), "row": (1, 9), "col": (6, 1), "vec": (13,), "zero": (4,),
          "w53z": (5, 3), "vecz": (3,)}
ZERO_ROWS = {"w53z": [2], "vecz": [1]}


def problem(seed, steps, pscale=1.0, gscale=0.1):
    """Initial parameters and `steps` gradients (name -> float64 array)."""
    rng = np.random.default_rng(seed)
    init = {}
    for n, s in SHAPES.items():
        init[n] = np.zeros(s) if n == "zero" else pscale * rng.standard_normal(s)
    grads = []
    for _ in range(steps):
        g = {}
        for n, s in SHAPES.items():
            x = gscale * rng.standard_normal(s)
            if n == "vec":        # widely spread magnitudes
                x *= 10.0 ** rng.uniform(-3, 1, size=s)
            for r in ZERO_ROWS.get(n, ()):
                x[r] = 0.0
            g[n] = x
        grads.append(g)
    return init, grads


def run_torch(cfg, init, grads, lrs, bug=None, dtype=torch.float64):
    model = _Tensors({n: v.shape for n, v in init.items()})
    names = model.param_names()
    P = {n: torch.tensor(init[n], dtype=dtype, requires_grad=True) for n in names}
    opt = make_optimizer(model, P, names, cfg, bug=bug)
    for s, g in enumerate(grads):
        for n in names:
            P[n].grad = torch.tensor(g[n], dtype=dtype)
        opt.step(lrs[s], 1.0)
    return {n: P[n].detach().double().numpy() for n in names}, opt


def run_ref(cfg, init, grads, lrs, kind=None):
    names = list(init)
    params = [init[n].astype(np.float64).copy() for n in names]
    ref = RefOptimizer(kind or cfg["optimizer"], cfg, [p.shape for p in params],
                       [p.ndim == 2 for p in params])
    for s, g in enumerate(grads):
        ref.step(params, [g[n] for n in names], lrs[s])
    return dict(zip(names, params))


def worst_err(a, b):
    """Largest normwise relative error over the tensors (inf when any is not finite)."""
    w = 0.0
    for n in b:
        x, y = np.asarray(a[n], np.float64), np.asarray(b[n], np.float64)
        if not np.all(np.isfinite(x)):
            return float("inf")
        w = max(w, float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(y)), 1e-300))
    return w


BASE = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-4, "weight_decay": 0.1}
LRS = [0.02, 0.05, 0.03, 0.011, 0.007, 0.004, 0.02]

# (label, configuration, problem(seed, steps, pscale, gscale)). The comparisons run every
# case; a mutation must be caught by at least one case of its optimizer.
CASES = [
    ("adafactor defaults (relative step, scaled, no beta1)",
     dict(BASE, optimizer="adafactor", weight_decay=0.0), (1, 6, 1.0, 0.1)),
    ("adafactor beta1 0.9, weight decay 0.1",
     dict(BASE, optimizer="adafactor", adafactor_beta1=0.9), (2, 6, 1.0, 0.1)),
    ("adafactor schedule lr, clip 0.5, decay_rate -0.5",
     dict(BASE, optimizer="adafactor", adafactor_relative_step=0, adafactor_clip_threshold=0.5,
          adafactor_decay_rate=-0.5), (3, 7, 1.0, 0.1)),
    ("adafactor warmup_init, eps2 0.05, small parameters",
     dict(BASE, optimizer="adafactor", adafactor_warmup_init=1, adafactor_eps2=0.05),
     (4, 6, 0.01, 0.1)),
    ("adafactor unscaled, schedule lr, clip 100, beta1 0.5, weight decay 0.3",
     dict(BASE, optimizer="adafactor", adafactor_scale_parameter=0, adafactor_relative_step=0,
          adafactor_clip_threshold=100.0, adafactor_beta1=0.5, weight_decay=0.3), (5, 6, 1.0, 0.1)),
    ("lamb, trust unclamped",
     dict(BASE, optimizer="lamb"), (11, 6, 1.0, 0.1)),
    ("lamb, max_trust 3 on large parameters",
     dict(BASE, optimizer="lamb", lamb_max_trust=3.0), (12, 6, 10.0, 0.1)),
    ("lamb, min_trust 0.5 on small parameters, no weight decay",
     dict(BASE, optimizer="lamb", lamb_min_trust=0.5, weight_decay=0.0), (13, 6, 0.01, 0.1)),
    ("lamb, beta1 0, beta2 0.999, eps 1e-8, trust in [0.2, 2]",
     dict(BASE, optimizer="lamb", beta1=0.0, beta2=0.999, eps=1e-8, lamb_min_trust=0.2,
          lamb_max_trust=2.0), (14, 5, 1.0, 0.1)),
    ("sgd, plain",
     dict(BASE, optimizer="sgd", lr=0.1), (21, 5, 1.0, 0.1)),
    ("sgd, momentum 0.9, nesterov",
     dict(BASE, optimizer="sgd", sgd_momentum=0.9, sgd_nesterov=1), (22, 6, 1.0, 0.1)),
    ("sgd, momentum 0.8, dampening 0.3",
     dict(BASE, optimizer="sgd", sgd_momentum=0.8, sgd_dampening=0.3), (23, 6, 1.0, 0.1)),
]
COMPARE_TOL = 1e-12
UPDATE_TOL = 1e-9      # final - init cancels up to 5 digits where steps are small
# A mutation counts as caught when a comparison misses by more than this: the oracle's
# default rtol, so a shardlm that made the same mistake would be visible too.
DETECT_TOL = 1e-4


def bug_optimizer(bug):
    if bug in ADAFACTOR_BUGS or bug in ("relative_step_ignored", "scale_parameter_ignored"):
        return "adafactor"
    if bug in LAMB_BUGS:
        return "lamb"
    if bug in ("nesterov_ignored", "dampening_ignored"):
        return "sgd"
    return None   # every optimizer


def lamb_vs_adamw(bug=None, seed=31):
    """LAMB with the trust pinned to 1 (this module's Lamb, not the factory's AdamW
    replay) against torch.optim.AdamW, float64, decay on matrices."""
    init, grads = problem(seed, 6)
    model = _Tensors({n: v.shape for n, v in init.items()})
    names = model.param_names()
    out = []
    for which in ("lamb", "adamw"):
        P = {n: torch.tensor(init[n], dtype=torch.float64, requires_grad=True) for n in names}
        dec = [P[n] for n in names if model.is_decayed(n, P[n].shape)]
        nodec = [P[n] for n in names if not model.is_decayed(n, P[n].shape)]
        groups = [{"params": dec, "weight_decay": 0.1}, {"params": nodec, "weight_decay": 0.0}]
        if which == "lamb":
            opt = Lamb(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-6, min_trust=1.0, max_trust=1.0,
                       bug=bug)
        else:
            opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-6)
        for s, g in enumerate(grads):
            for n in names:
                P[n].grad = torch.tensor(g[n], dtype=torch.float64)
            for grp in opt.param_groups:
                grp["lr"] = LRS[s]
            opt.step()
        out.append({n: P[n].detach().numpy() for n in names})
    return worst_err(out[0], out[1])


def zero_grad_bounds(cfg, seed, noise):
    """Two runs of the same problem whose zero-gradient elements get independent noise
    of relative size `noise`; returns the largest |difference| there over the sum of the
    per-step bounds (Stepper.zbound), which the oracle allows up to ZERO_GRAD_TOL (2)."""
    init, grads = problem(seed, 7)
    rng = np.random.default_rng(seed + 100)
    runs = []
    for _ in range(2):
        gs = []
        for g in grads:
            g = {n: v.copy() for n, v in g.items()}
            for n, rows in ZERO_ROWS.items():
                for r in rows:
                    g[n][r] = noise * rng.standard_normal(g[n][r].shape) * np.abs(g[n]).max()
            gs.append(g)
        runs.append(run_torch(cfg, init, gs, LRS))
    w = 0.0
    for n, rows in ZERO_ROWS.items():
        d = np.abs(runs[0][0][n][rows] - runs[1][0][n][rows]).max()
        w = max(w, d / runs[0][1].zbound[n])
    return w


def self_test(a):
    """optim_oracle.py --self-test; prints a line per check, returns the exit status.
      (a) Lamb with min_trust = max_trust = 1 against torch.optim.AdamW (float64);
      (b, c) Adafactor, LAMB and SGD, built by make_optimizer from dump attributes,
          against RefOptimizer on CASES (odd shapes, zero rows, clamps that bind), and
          the factory's AdamW replay of LAMB at trust 1 against RefOptimizer's LAMB;
      (d) every mutation (ADAFACTOR_BUGS, LAMB_BUGS, FACTORY_BUGS) must miss by more
          than DETECT_TOL in some case;
      then the zero-gradient bounds (Stepper.zbound) against runs with noise there, the
      float32 runs against float64, and unless --no-dumps, optim_synth's synthetic
      dumps through the dump oracle."""
    rows = []

    def row(label, ok, detail=""):
        rows.append((label, ok))
        print("  %-4s %-66s %s" % ("ok" if ok else "FAIL", label, detail))
        sys.stdout.flush()

    print("== (a) LAMB with min_trust = max_trust = 1 against torch.optim.AdamW (float64)")
    e = lamb_vs_adamw()
    row("lamb pinned to 1 == torch AdamW", e <= COMPARE_TOL, "rel.err %.1e" % e)

    print("== (b, c) this module's optimizers (through make_optimizer) against the loops")
    base_err = {}
    for label, cfg, prob in CASES:
        init, grads = problem(*prob)
        got, _ = run_torch(cfg, init, grads, LRS)
        want = run_ref(cfg, init, grads, LRS)
        e = worst_err(got, want)
        base_err[label] = e
        # and the updates themselves (final - init), which for the small steps of
        # warmup_init are far smaller than the parameters
        eu = worst_err({n: got[n] - init[n] for n in init}, {n: want[n] - init[n] for n in init})
        row(label, e <= COMPARE_TOL and eu <= UPDATE_TOL,
            "rel.err %.1e, of the updates %.1e" % (e, eu))

    print("== (b, c) the factory's AdamW replay of LAMB at trust 1 against the loops' LAMB")
    cfg = dict(BASE, optimizer="lamb", lamb_min_trust=1.0, lamb_max_trust=1.0)
    init, grads = problem(41, 6)
    got, st = run_torch(cfg, init, grads, LRS)
    want = run_ref(cfg, init, grads, LRS)
    e = worst_err(got, want)
    row("lamb trust [1, 1] is replayed by torch AdamW and matches",
        e <= COMPARE_TOL and isinstance(st.opt, torch.optim.AdamW), "rel.err %.1e" % e)

    print("== (d) each mutation must be caught (some comparison misses by > %g)" % DETECT_TOL)
    for bug, what in list(ADAFACTOR_BUGS.items()) + list(LAMB_BUGS.items()) + list(FACTORY_BUGS.items()):
        kind = bug_optimizer(bug)
        worst, where = 0.0, ""
        for label, cfg, prob in CASES:
            if kind and cfg["optimizer"] != kind:
                continue
            init, grads = problem(*prob)
            got, _ = run_torch(cfg, init, grads, LRS, bug=bug)
            want = run_ref(cfg, init, grads, LRS)
            e = worst_err(got, want)
            if e > worst or not where:
                worst, where = e, label
        if bug in LAMB_BUGS:
            e = lamb_vs_adamw(bug)
            if e > worst:
                worst, where = e, "LAMB at trust 1 against torch AdamW"
        row("%s: %s" % (bug, what), worst > DETECT_TOL, "caught by %.1e in '%s'" % (worst, where))

    print("== zero-gradient elements with rounding noise stay within the bound the oracle allows")
    from dump_oracle import ZERO_GRAD_TOL
    for label, cfg, prob in CASES:
        for noise in (1e-9, 1e-6):
            w = zero_grad_bounds(cfg, prob[0], noise)
            row("%s, noise %g" % (label, noise), w <= ZERO_GRAD_TOL,
                "max|d| / bound = %.2e (pass <= %g)" % (w, ZERO_GRAD_TOL))

    print("== float32: the same optimizers run in float32 stay close to float64")
    for label, cfg, prob in CASES:
        init, grads = problem(*prob)
        g64, _ = run_torch(cfg, init, grads, LRS)
        g32, _ = run_torch(cfg, init, grads, LRS, dtype=torch.float32)
        e = worst_err(g32, g64)
        row(label + " (float32)", e <= 1e-4, "rel.err %.1e" % e)

    if not a.no_dumps:
        import optim_synth
        optim_synth.dump_tests(row, a)

    print("\nself-test summary:")
    nfail = sum(1 for _, ok in rows if not ok)
    for label, ok in rows:
        if not ok:
            print("  FAIL %s" % label)
    print("\n%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--self-test", action="store_true", help="check this module (no shardlm needed)")
    ap.add_argument("--no-dumps", action="store_true",
                    help="--self-test: leave out the synthetic dumps checked by the Llama oracle")
    ap.add_argument("--keep", metavar="DIR", help="--self-test: keep the synthetic dumps here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if not a.self_test:
        ap.error("nothing to do: the oracles import this module; give --self-test to check it")
    torch.set_num_threads(1)
    sys.exit(self_test(a))


if __name__ == "__main__":
    sys.dont_write_bytecode = True   # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
