#!/usr/bin/python3
"""Mixture-of-experts MLP blocks (model.n_experts > 0) for shardlm's float64 PyTorch oracles.

gpt2_oracle.py and llama_oracle.py replace the dense MLP of block l by the layer below
when (l + 1) % moe_every == 0; dump_oracle.py adds the auxiliary and z losses to the
objective, replays the bias balancing and checks the MoE datasets of the dump. Written
from the formulas of docs/moe.md, one expert at a time (an explicit loop over experts).

On the N = B*T tokens of one micro-batch (token t = b*T + position, as (B, T, C) flattens),
x the normed input (the output of ln2 / mlp_norm), E experts, top k:

  logits = x Wr^T (N, E);  p = softmax(logits);  s = p + bias  (bias per layer per expert,
      0 unless moe_balance = bias)
  top-k of s per token: the k largest, ties to the lower expert index
  w_j = p[t, e_j] / sum_j' p[t, e_j']        (renormalised over the k chosen; p, not s)
  capacity cf > 0: cap = ceil(cf N k / E) per expert; an expert's assignments ranked by
      p[t, e] descending, ties to the lower token index; the first cap are kept, a dropped
      one contributes 0, the other weights stay as they are
  out[t] = sum over kept slots j of w_j expert_{e_j}(x[t])
      GPT-2 expert: proj(gelu_tanh(fc(x)));  Llama expert: down(silu(gate x) * up x)
  aux = a E sum_i f_i P_i,  f_i = #{(t, j): e_j = i} / (N k) before drops (a constant: no
      gradient), P_i = (1/N) sum_t p[t, i]
  zl  = z (1/N) sum_t logsumexp(logits[t])^2

The step's objective: the mean cross-entropy over the global batch plus, averaged over its
M micro-batches, the sum over MoE layers of aux + zl. With moe_balance = bias, after each
optimizer step and per MoE layer: c_i = token-slots routed to expert i over the whole step
(before drops), bias_i += r sign(sum_i c_i / E - c_i).

Routing is discontinuous: float32 (shardlm) and float64 (the oracle) route a token the same
way only when its k-th and (k+1)-th selection scores are apart by more than the float32
rounding along the run (and, with a capacity, an expert's last kept and first dropped
probabilities). `Tracker` records the smallest such margins along a run, and the oracle
refuses to compare a run whose margin is below --moe-margin.

Parameters of an MoE block l (its dense MLP tensors are absent):
  blocks.l.moe.router.weight (E, C)
  GPT-2: blocks.l.moe.experts.e.fc.weight (Fe, C), .fc.bias (Fe), .proj.weight (C, Fe), .proj.bias (C)
  Llama: blocks.l.moe.experts.e.gate.weight (Fe, C), .up.weight (Fe, C), .down.weight (C, Fe)

`BUGS` are plausible implementation mistakes the layer (and Tracker) can be made to commit:
the self-test requires the second implementation (moe_synth.py) to tell each from the
correct layer, and when a dump fails, the oracle names the mistake it matches.

`moe_ref.py --self-test` checks all this without shardlm (see moe_synth.self_test).
"""
import math
import os
import sys

import numpy as np
import torch

# Dump root attribute -> (type, default, shardlm key, oracle flag).
ATTRS = {
    "n_experts": (int, 0, "model.n_experts", "--n-experts"),
    "expert_top_k": (int, 2, "model.expert_top_k", "--expert-top-k"),
    "moe_every": (int, 1, "model.moe_every", "--moe-every"),
    "expert_hidden": (int, 0, "model.expert_hidden", "--expert-hidden"),
    "moe_capacity": (float, 0.0, "train.moe_capacity", "--moe-capacity"),
    "moe_aux_loss": (float, 0.01, "train.moe_aux_loss", "--moe-aux-loss"),
    "moe_z_loss": (float, 0.0, "train.moe_z_loss", "--moe-z-loss"),
    "moe_balance": (str, "loss", "train.moe_balance", "--moe-balance"),
    "moe_bias_rate": (float, 0.001, "train.moe_bias_rate", "--moe-bias-rate"),
}
INT_ATTRS = [k for k, v in ATTRS.items() if v[0] is int]
FLOAT_ATTRS = [k for k, v in ATTRS.items() if v[0] is float]
STR_ATTRS = [k for k, v in ATTRS.items() if v[0] is str]
BALANCES = ("loss", "bias")

# The smallest routing margin (selection-score gap at the top-k boundary, probability gap
# at a capacity boundary) at which a float32 run and the float64 replay are taken to route
# alike. Float32 rounding moves p by ~1e-7 along a 10-step run.
MARGIN = 1e-5

# Mistakes (key -> (description, what they change)): "layer" ones change the layer's
# forward or gradient, "update" ones the bias balancing. `needs` says what a case must
# have for the mistake to show: ties at the top-k boundary, a capacity with drops, a
# non-zero bias, z > 0, a > 0, several micro-batches.
BUGS = {
    "no_renorm": ("top-k weights not renormalised (w_j = p[t, e_j])", "layer", ()),
    "ties_high": ("top-k ties to the higher expert index", "layer", ("ties",)),
    "bias_in_weights": ("combine weights from s = p + bias, not p", "layer", ("bias",)),
    "select_by_p": ("top-k of p: the bias left out of the selection", "layer", ("bias",)),
    "f_tokens": ("f_i over tokens (count / N), not token-slots (count / (N k))", "layer", ("aux",)),
    "f_top1": ("f_i = fraction of tokens whose first choice is i", "layer", ("aux",)),
    "f_grad": ("gradient flows through f_i (same value)", "layer", ("aux",)),
    "f_after_drops": ("f_i counted after capacity drops", "layer", ("aux", "drops")),
    "aux_no_E": ("aux without the factor E", "layer", ("aux",)),
    "z_nosquare": ("z-loss of logsumexp, not its square", "layer", ("z",)),
    "z_sum": ("z-loss summed over tokens, not averaged", "layer", ("z",)),
    "cap_token_order": ("capacity keeps the first assignments in token order", "layer", ("drops",)),
    "cap_ties_high": ("capacity ties to the higher token index", "layer", ("drops", "cap_ties")),
    "cap_slot_priority": ("capacity keeps first choices before second ones, then by p", "layer",
                          ("drops",)),
    "cap_by_weight": ("capacity ranked by the renormalised weight, not p", "layer", ("drops",)),
    "cap_renorm": ("weights renormalised over the kept slots only", "layer", ("drops",)),
    "cap_floor": ("cap = floor(cf N k / E), not ceil", "layer", ("drops",)),
    "bias_sign": ("bias_i += r sign(c_i - mean) (overloaded experts favoured)", "update", ("bias_run",)),
    "bias_after_drops": ("bias balancing counts after capacity drops", "update", ("bias_run", "drops")),
    "bias_per_micro": ("bias updated after every micro-batch, not every step", "update",
                       ("bias_run", "accum")),
    "bias_rows_after": ("/moe_bias row s holds the bias after step s's update", "update", ("bias_run",)),
}


def applicable(bug, cfg):
    """Whether the mistake can show in a run of cfg (its BUGS needs, as far as the
    configuration decides them)."""
    needs = BUGS[bug][2]
    if ("drops" in needs or "cap_ties" in needs) and not cfg["moe_capacity"] > 0:
        return False
    if ("bias" in needs or "bias_run" in needs) and cfg["moe_balance"] != "bias":
        return False
    if "aux" in needs and not cfg["moe_aux_loss"]:
        return False
    if "z" in needs and not cfg["moe_z_loss"]:
        return False
    if "accum" in needs and cfg.get("grad_accum", 1) < 2:
        return False
    return True


# --------------------------------------------------------------------------- configuration

def enabled(cfg):
    return int(cfg.get("n_experts", 0) or 0) > 0


def is_moe_block(cfg, l):
    return enabled(cfg) and (l + 1) % cfg["moe_every"] == 0


def moe_layers(cfg):
    """The MoE blocks, in order (the rows of /moe_bias's second axis)."""
    return [l for l in range(cfg["n_layer"]) if is_moe_block(cfg, l)]


def fill_defaults(cfg):
    for k, (_, default, _, _) in ATTRS.items():
        cfg.setdefault(k, default)


def optional_attrs(cfg):
    """A dense dump may leave every MoE attribute out; an MoE dump must carry them all."""
    return () if enabled(cfg) else tuple(ATTRS)


def config_problems(cfg):
    if not enabled(cfg):
        return [] if cfg.get("n_experts", 0) == 0 else ["n_experts=%d is negative" % cfg["n_experts"]]
    p = []
    E, k = cfg["n_experts"], cfg["expert_top_k"]
    if not 1 <= k <= E:
        p.append("expert_top_k=%d is not in [1, n_experts=%d]" % (k, E))
    if cfg["moe_every"] < 1:
        p.append("moe_every=%d is not >= 1" % cfg["moe_every"])
    if cfg["expert_hidden"] < 1:
        p.append("expert_hidden=%d: the dump must give the resolved width" % cfg["expert_hidden"])
    if cfg["moe_balance"] not in BALANCES:
        p.append("moe_balance=%s is not one of %s" % (cfg["moe_balance"], ", ".join(BALANCES)))
    if cfg["moe_capacity"] < 0:
        p.append("moe_capacity=%g is negative" % cfg["moe_capacity"])
    return p


def capacity(cfg, N):
    """Assignments an expert keeps per micro-batch of N tokens (None: dropless)."""
    cf = cfg["moe_capacity"]
    if cf <= 0:
        return None
    return int(math.ceil(cf * N * cfg["expert_top_k"] / cfg["n_experts"]))


def describe(cfg):
    if not enabled(cfg):
        return ""
    N = cfg["micro_batch"] * cfg["seq_len"]
    cap = capacity(cfg, N)
    return ("moe: E=%d k=%d every %d (blocks %s) expert_hidden=%d capacity %s aux %g z %g "
            "balance %s%s" % (
                cfg["n_experts"], cfg["expert_top_k"], cfg["moe_every"],
                ",".join(str(l) for l in moe_layers(cfg)) or "none", cfg["expert_hidden"],
                "%g (cap %d of N k = %d assignments per expert)" % (cfg["moe_capacity"], cap,
                                                                    N * cfg["expert_top_k"])
                if cap else "none (dropless)",
                cfg["moe_aux_loss"], cfg["moe_z_loss"], cfg["moe_balance"],
                " (rate %g)" % cfg["moe_bias_rate"] if cfg["moe_balance"] == "bias" else ""))


# ---- the command line (dump_oracle.parser / main)

def add_args(ap):
    g = ap.add_argument_group("mixture of experts (absent: shardlm's defaults; none: dense)")
    g.add_argument("--n-experts", type=int, help="experts E per MoE block (model.n_experts)")
    g.add_argument("--expert-top-k", type=int, help="experts per token k (model.expert_top_k)")
    g.add_argument("--moe-every", type=int, help="block l is MoE iff (l+1) %% this == 0")
    g.add_argument("--expert-hidden", type=int, help="expert MLP width (model.expert_hidden)")
    g.add_argument("--moe-capacity", type=float, help="capacity factor, 0 dropless (train.moe_capacity)")
    g.add_argument("--moe-aux-loss", type=float, help="auxiliary loss coefficient a")
    g.add_argument("--moe-z-loss", type=float, help="z-loss coefficient z")
    g.add_argument("--moe-balance", choices=BALANCES, help="loss | bias (train.moe_balance)")
    g.add_argument("--moe-bias-rate", type=float, help="bias balancing rate r")
    g.add_argument("--moe-margin", type=float, default=MARGIN,
                   help="smallest routing margin along the run at which the comparison is "
                        "meaningful (default %g)" % MARGIN)
    g.add_argument("--moe-expect-drops", action="store_true",
                   help="fail unless the run drops assignments (with --moe-capacity)")
    g.add_argument("--seed-search", type=int, default=0, metavar="N",
                   help="try train.seed = --seed, --seed+1, ... (at most N runs) until the "
                        "routing margin is large enough, then check that run")


def _given(a):
    return {k: getattr(a, v[3][2:].replace("-", "_")) for k, v in ATTRS.items()
            if getattr(a, v[3][2:].replace("-", "_")) is not None}


def check_args(ap, a):
    g = _given(a)
    if g and "n_experts" not in g:
        ap.error("the MoE flags need --n-experts")
    if g.get("n_experts", 0) < 0:
        ap.error("--n-experts must be >= 0")
    if a.moe_expect_drops and not g.get("moe_capacity") and not a.dump:
        ap.error("--moe-expect-drops needs --moe-capacity > 0")


def want_from_args(a, dense_hidden):
    """The MoE root attributes the flags ask for (defaults for the flags not given;
    expert_hidden resolved). A run without --n-experts asks for a dense model."""
    g = _given(a)
    if not g.get("n_experts"):
        return {"n_experts": 0}
    w = {k: v[1] for k, v in ATTRS.items()}
    w.update(g)
    if not w["expert_hidden"]:
        w["expert_hidden"] = dense_hidden
    return w


def settings_from_args(a):
    """shardlm `key=value` settings for the flags given (the others keep shardlm's defaults)."""
    out = []
    for k, v in _given(a).items():
        typ, key = ATTRS[k][0], ATTRS[k][2]
        out.append("%s=%s" % (key, "%d" % v if typ is int else "%r" % v if typ is float else v))
    return out


# --------------------------------------------------------------------------- parameters

def expert_tensors(kind, C, Fe):
    """[(suffix, shape)] of one expert of the architecture `kind`."""
    if kind == "gpt2":
        return [("fc.weight", (Fe, C)), ("fc.bias", (Fe,)), ("proj.weight", (C, Fe)),
                ("proj.bias", (C,))]
    if kind == "llama":
        return [("gate.weight", (Fe, C)), ("up.weight", (Fe, C)), ("down.weight", (C, Fe))]
    raise ValueError("no experts for arch %r" % kind)


def block_tensors(pre, cfg, kind):
    """[(name, shape)] of the MoE block with prefix `pre` ("blocks.l.")."""
    C, E, Fe = cfg["d_model"], cfg["n_experts"], cfg["expert_hidden"]
    out = [(pre + "moe.router.weight", (E, C))]
    for e in range(E):
        out += [("%smoe.experts.%d.%s" % (pre, e, s), shp) for s, shp in expert_tensors(kind, C, Fe)]
    return out


# --------------------------------------------------------------------------- the layer

def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def expert_forward(kind, x, P, pre):
    """One expert, the architecture's own MLP, on rows x (n, C)."""
    if kind == "gpt2":
        h = gelu_tanh(x @ P[pre + "fc.weight"].t() + P[pre + "fc.bias"])
        return h @ P[pre + "proj.weight"].t() + P[pre + "proj.bias"]
    g = x @ P[pre + "gate.weight"].t()
    u = x @ P[pre + "up.weight"].t()
    return (g * torch.sigmoid(g) * u) @ P[pre + "down.weight"].t()


class Routing:
    """The discrete decisions of one layer on one micro-batch: chosen (N, k) expert ids in
    slot order, keep (N, k) (False: dropped by the capacity), counts (E,) token-slots per
    expert before drops; the margins at the top-k and capacity boundaries; s and p, the
    scores they were decided on."""

    def __init__(self, chosen, keep, counts, margin, margin_at, cap_margin, cap_at, cap, s, p):
        self.s, self.p = s, p
        self.chosen, self.keep, self.counts = chosen, keep, counts
        self.margin, self.margin_at = margin, margin_at
        self.cap_margin, self.cap_at, self.cap = cap_margin, cap_at, cap

    @property
    def drops(self):
        return int((~self.keep).sum())


def route(p, s, k, cap, bug=None):
    """p, s (N, E) float64 numpy arrays: probabilities and selection scores. cap: the
    capacity (None: dropless). Sorting with explicit keys: (-s, e) for the top-k,
    (-p, t) for an expert's assignments."""
    N, E = p.shape
    chosen = np.zeros((N, k), dtype=np.int64)
    margin, margin_at = float("inf"), None
    for t in range(N):
        if bug == "ties_high":
            order = sorted(range(E), key=lambda e: (-s[t, e], -e))
        elif bug == "select_by_p":
            order = sorted(range(E), key=lambda e: (-p[t, e], e))
        else:
            order = sorted(range(E), key=lambda e: (-s[t, e], e))
        chosen[t] = order[:k]
        if k < E:
            m = float(s[t, order[k - 1]] - s[t, order[k]])
            if m < margin:
                margin, margin_at = m, (t, order[k - 1], order[k])
    counts = np.zeros(E, dtype=np.int64)
    for t in range(N):
        for j in range(k):
            counts[chosen[t, j]] += 1
    keep = np.ones((N, k), dtype=bool)
    cap_margin, cap_at = float("inf"), None
    if cap is not None:
        pk = np.take_along_axis(p, chosen, 1)
        wk = pk / pk.sum(1, keepdims=True)
        for i in range(E):
            slots = [(t, j) for t in range(N) for j in range(k) if chosen[t, j] == i]
            if len(slots) <= cap:
                continue
            right = sorted(slots, key=lambda tj: (-p[tj[0], i], tj[0]))
            m = float(p[right[cap - 1][0], i] - p[right[cap][0], i]) if cap > 0 else float("inf")
            if m < cap_margin:
                cap_margin, cap_at = m, (i, right[cap - 1][0], right[cap][0])
            keys = {"cap_ties_high": lambda tj: (-p[tj[0], i], -tj[0]),
                    "cap_token_order": lambda tj: tj[0],
                    "cap_slot_priority": lambda tj: (tj[1], -p[tj[0], i], tj[0]),
                    "cap_by_weight": lambda tj: (-wk[tj], tj[0])}
            ranked = sorted(slots, key=keys[bug]) if bug in keys else right
            for t, j in ranked[cap:]:
                keep[t, j] = False
    return Routing(chosen, keep, counts, margin, margin_at, cap_margin, cap_at, cap, s, p)


def layer(x, P, pre, cfg, kind, bias=None, bug=None, routing=None):
    """The MoE layer on x (..., C) (the normed input), in x's dtype. bias: (E,) numpy
    float64 or None (zeros). routing: a Routing to use instead of computing one (the
    gradcheck holds it fixed). Returns (out like x, aux, zl, routing)."""
    shape = x.shape
    C, E, k = cfg["d_model"], cfg["n_experts"], cfg["expert_top_k"]
    a, z = cfg["moe_aux_loss"], cfg["moe_z_loss"]
    xf = x.reshape(-1, C)
    N = xf.shape[0]
    logits = xf @ P[pre + "moe.router.weight"].t()
    p = torch.softmax(logits, dim=-1)
    b = torch.zeros(E, dtype=x.dtype) if bias is None else torch.tensor(bias, dtype=x.dtype)
    s = p.detach() + b                       # in the run's dtype, as shardlm adds them
    if routing is None:
        cap = capacity(cfg, N)
        if bug == "cap_floor" and cap is not None:
            cap = int(math.floor(cfg["moe_capacity"] * N * k / E))
        routing = route(p.detach().double().numpy(), s.double().numpy(), k, cap, bug)
    chosen = torch.tensor(routing.chosen)
    keep = torch.tensor(routing.keep)

    pk = p.gather(1, chosen)                 # (N, k)
    if bug == "bias_in_weights":
        sk = (p + b).gather(1, chosen)
        w = sk / sk.sum(1, keepdim=True)
    elif bug == "no_renorm":
        w = pk
    elif bug == "cap_renorm":
        kept = pk * keep.to(pk.dtype)
        w = pk / kept.sum(1, keepdim=True).clamp_min(1e-300)
    else:
        w = pk / pk.sum(1, keepdim=True)

    out = torch.zeros_like(xf)
    for e in range(E):                       # one expert at a time
        slots = [(t, j) for t in range(N) for j in range(k)
                 if routing.chosen[t, j] == e and routing.keep[t, j]]
        if not slots:
            continue
        toks = torch.tensor([t for t, _ in slots])
        js = torch.tensor([j for _, j in slots])
        ye = expert_forward(kind, xf[toks], P, "%smoe.experts.%d." % (pre, e))
        out = out.index_add(0, toks, w[toks, js].unsqueeze(1) * ye)

    # auxiliary loss: f constant (counts before drops), P with its gradient
    cnt = routing.counts.astype(np.float64)
    if bug == "f_tokens":
        f = torch.tensor(cnt / N, dtype=x.dtype)
    elif bug == "f_top1":
        f = torch.tensor(np.bincount(routing.chosen[:, 0], minlength=E) / N, dtype=x.dtype)
    elif bug == "f_after_drops":
        kc = np.zeros(E)
        for t in range(N):
            for j in range(k):
                if routing.keep[t, j]:
                    kc[routing.chosen[t, j]] += 1
        f = torch.tensor(kc / (N * k), dtype=x.dtype)
    elif bug == "f_grad":     # the same value, through p: sum over slots of p / stopgrad(p)
        one = pk / pk.detach()
        f = torch.stack([one[chosen == e].sum() for e in range(E)]) / (N * k)
    else:
        f = torch.tensor(cnt / (N * k), dtype=x.dtype)
    Pm = p.mean(0)
    aux = a * (1 if bug == "aux_no_E" else E) * (f * Pm).sum()
    lse = torch.logsumexp(logits, dim=-1)
    if bug == "z_nosquare":
        zl = z * lse.mean()
    elif bug == "z_sum":
        zl = z * (lse ** 2).sum()
    else:
        zl = z * (lse ** 2).mean()
    return out.reshape(shape), aux, zl, routing


# --------------------------------------------------------------------------- a training run

class Tracker:
    """The MoE side of one training run (run_trajectory): the bias of each MoE layer, the
    step's aux and z losses and token-slot counts, and the smallest routing margins seen.
    The model's forward calls `mlp` for each MoE block; run_trajectory calls begin_step,
    begin_micro, objective, end_micro and end_step around it."""

    def __init__(self, cfg, bug=None):
        self.cfg, self.bug = cfg, bug
        self.layers = moe_layers(cfg)
        E = cfg["n_experts"]
        self.bias = {l: np.zeros(E) for l in self.layers}
        self.bias_rows, self.aux_steps, self.z_steps = [], [], []
        self.margin = (float("inf"), None)       # (value, where)
        self.cap_margin = (float("inf"), None)
        self.drops = self.slots = 0
        self.step = self.micro = 0
        self.routings = []                       # (step, micro, layer, Routing)
        self._terms = []
        self._counts = None

    def begin_step(self, s):
        self.step = s
        self._counts = {l: np.zeros(self.cfg["n_experts"], dtype=np.int64) for l in self.layers}
        self._aux = self._z = 0.0
        if self.bug != "bias_rows_after":
            self._row()

    def _row(self):
        self.bias_rows.append(np.array([self.bias[l] for l in self.layers]).reshape(
            len(self.layers), self.cfg["n_experts"]))

    def begin_micro(self, a):
        self.micro = a
        self._terms = []

    def mlp(self, x, P, pre, l, kind):
        """The MoE block l's MLP half on x (B, T, C): called by the models' forward."""
        bug = self.bug if self.bug in BUGS and BUGS[self.bug][1] == "layer" else None
        out, aux, zl, r = layer(x, P, pre, self.cfg, kind, self.bias[l], bug)
        self._terms.append((l, aux, zl))
        self.routings.append((self.step, self.micro, l, r))
        c = r.counts
        if self.bug == "bias_after_drops":
            c = np.zeros_like(c)
            for t in range(r.chosen.shape[0]):
                for j in range(r.chosen.shape[1]):
                    if r.keep[t, j]:
                        c[r.chosen[t, j]] += 1
        if self._counts is not None:
            self._counts[l] += c
        where = "step %d micro-batch %d block %d" % (self.step, self.micro, l)
        if r.margin < self.margin[0]:
            t, e1, e2 = r.margin_at
            self.margin = (r.margin, "%s token %d (experts %d | %d)" % (where, t, e1, e2))
        if r.cap_margin < self.cap_margin[0]:
            i, t1, t2 = r.cap_at
            self.cap_margin = (r.cap_margin, "%s expert %d (tokens %d | %d)" % (where, i, t1, t2))
        self.drops += r.drops
        self.slots += r.chosen.size
        return out

    def objective(self):
        """The micro-batch's sum over MoE layers of aux + zl (a tensor)."""
        tot = 0.0
        for _, aux, zl in self._terms:
            tot = tot + aux + zl
        return tot

    def end_micro(self, A):
        self._aux += sum(float(aux) for _, aux, _ in self._terms) / A
        self._z += sum(float(zl) for _, _, zl in self._terms) / A
        if self.bug == "bias_per_micro":
            self._update()
            self._counts = {l: np.zeros_like(c) for l, c in self._counts.items()}

    def end_step(self):
        self.aux_steps.append(self._aux)
        self.z_steps.append(self._z)
        if self.bug != "bias_per_micro":
            self._update()
        if self.bug == "bias_rows_after":
            self._row()

    def _update(self):
        if self.cfg["moe_balance"] != "bias":
            return
        r, E = self.cfg["moe_bias_rate"], self.cfg["n_experts"]
        for l in self.layers:
            c = self._counts[l].astype(np.float64)
            d = c - c.sum() / E if self.bug == "bias_sign" else c.sum() / E - c
            self.bias[l] = self.bias[l] + r * np.sign(d)

    def bias_array(self):
        """(steps, n_moe_layers, E): the bias during each step, as /moe_bias."""
        return np.array(self.bias_rows)


def mlp(x, P, pre, l, kind, cfg, tracker=None):
    """What a model's forward calls for the MLP half of MoE block l (x: the normed input).
    Without a tracker (diagnostics on step 0) the bias is zero and nothing is recorded."""
    if tracker is None:
        return layer(x, P, pre, cfg, kind)[0]
    return tracker.mlp(x, P, pre, l, kind)


if __name__ == "__main__":
    sys.dont_write_bytecode = True   # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moe_synth
    sys.exit(moe_synth.main())
