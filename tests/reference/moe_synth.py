"""A second implementation of the mixture-of-experts layer, and `moe_ref.py --self-test`.

The layer once more, deliberately unlike moe_ref.py's: numpy (float64 for the layer
comparisons, float32 inside the synthetic training runs), a softmax per token, the top-k by
k scans that take a strictly larger score (so the lower expert index wins a tie), each
expert's capacity by repeatedly taking its largest remaining probability in token order
(so the lower token index wins a tie), and a hand-written backward pass (no autograd): the
experts' MLPs (GPT-2 gelu_tanh, Llama SwiGLU), the renormalised weights, the auxiliary
loss through P_i, the z-loss, the softmax and the router.

`SynthMoE` puts it into llama_synth's float32 Llama (layer by layer over the micro-batch,
since routing, capacity and the losses couple its sequences), with the objective, the bias
balancing and the dump datasets of docs/moe.md and docs/testing.md, and `write_dump` writes such runs in
shardlm's dump layout. Options (`SYNTH_BUGS`) make a run commit one mistake.

self_test (moe_ref.py --self-test):
  1. torch.autograd.gradcheck of moe_ref's float64 layer, routing held fixed, on its
     output, aux and z-loss (both expert kinds, with capacity and bias);
  2. moe_ref's layer against this one on CASES: output, aux, z-loss and the gradients of
     the input, router and every expert tensor (for an upstream on the output, on aux and
     on zl separately), to 1e-10; each case first shows it has what it is for (ties at
     the top-k boundary, tied tokens at a capacity boundary, drops, a bias that changes
     the selection);
  3. every moe_ref.BUGS layer mistake must be told apart by more than 1e-6 in some case;
     the bias update against values worked by hand, and each update mistake must change it;
  4. the architectures' hooks: the MoE parameter names and shapes of both models against
     lists written out here, and a model whose experts all equal the dense MLP gives the
     dense model's logits (every block and every second block, GPT-2 and Llama);
  5. synthetic Llama MoE dumps (SynthMoE) through the dump oracle: the correct runs pass
     (read as `--dump` does and against the request), a dense dump carrying n_experts = 0
     passes, and each broken run (BROKEN) fails one of the checks listed for it.
"""
import argparse
import math
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

import llama_synth
import moe_ref

F32 = np.float32
GC = math.sqrt(2.0 / math.pi)
COMPARE_TOL = 1e-10    # float64 against float64
DETECT_TOL = 1e-6      # a mistake must miss by more than this


# --------------------------------------------------------------------------- the layer

def softmax_rows(logits):
    """Per token: p and logsumexp."""
    N, E = logits.shape
    p = np.empty_like(logits)
    lse = np.empty(N, dtype=logits.dtype)
    for t in range(N):
        m = logits[t].max()
        e = np.exp(logits[t] - m)
        tot = e.sum()
        p[t] = e / tot
        lse[t] = m + np.log(tot)
    return p, lse


def scan_topk(row, k, high=False):
    """k scans, each taking the largest score not yet taken; a strictly larger one replaces
    the best so far, so of equal scores the lower index stays (high: the higher)."""
    taken, out = [False] * len(row), []
    for _ in range(k):
        best = -1
        for e in range(len(row)):
            if taken[e]:
                continue
            if best < 0 or row[e] > row[best] or (high and row[e] == row[best]):
                best = e
        taken[best] = True
        out.append(best)
    return out


def expert_fwd(kind, X, W):
    if kind == "gpt2":
        h = X @ W["fc.weight"].T + W["fc.bias"]
        th = np.tanh(X.dtype.type(GC) * (h + X.dtype.type(0.044715) * h * h * h))
        g = X.dtype.type(0.5) * h * (1 + th)
        return g @ W["proj.weight"].T + W["proj.bias"], (X, h, th, g)
    gt = X @ W["gate.weight"].T
    u = X @ W["up.weight"].T
    sg = 1 / (1 + np.exp(-gt))
    zz = gt * sg * u
    return zz @ W["down.weight"].T, (X, gt, u, sg, zz)


def expert_bwd(kind, W, c, dy, dW):
    """Adds the expert's parameter gradients to dW; returns the gradient of its input."""
    if kind == "gpt2":
        X, h, th, g = c
        dW["proj.weight"] += dy.T @ g
        dW["proj.bias"] += dy.sum(0)
        dg = dy @ W["proj.weight"]
        t = X.dtype.type
        dh = dg * (t(0.5) * (1 + th) + t(0.5) * h * (1 - th * th) * t(GC) * (1 + t(3 * 0.044715) * h * h))
        dW["fc.weight"] += dh.T @ X
        dW["fc.bias"] += dh.sum(0)
        return dh @ W["fc.weight"]
    X, gt, u, sg, zz = c
    dW["down.weight"] += dy.T @ zz
    dzz = dy @ W["down.weight"]
    du = dzz * gt * sg
    dgt = dzz * u * sg * (1 + gt * (1 - sg))
    dW["gate.weight"] += dgt.T @ X
    dW["up.weight"] += du.T @ X
    return dgt @ W["gate.weight"] + du @ W["up.weight"]


# Mistakes this implementation can make (a subset of moe_ref.BUGS, for the dumps).
LAYER_BUGS = ("no_renorm", "ties_high", "f_grad", "z_nosquare", "cap_token_order")


def moe_forward(x, Wr, experts, kind, k, cap, a, z, bias, bugs=()):
    """x (N, C), Wr (E, C), experts [dict suffix -> array] in x's dtype; bias (E,) float64;
    cap None for dropless. Returns (out, aux, zl, cache); aux and zl are Python floats."""
    dt = x.dtype.type
    N, C = x.shape
    E = Wr.shape[0]
    logits = x @ Wr.T
    p, lse = softmax_rows(logits)
    s = p + bias.astype(x.dtype)
    chosen = [scan_topk(s[t], k, "ties_high" in bugs) for t in range(N)]
    counts = np.zeros(E, dtype=np.int64)
    for t in range(N):
        for e in chosen[t]:
            counts[e] += 1
    keep = [[True] * k for _ in range(N)]
    if cap is not None:
        for i in range(E):
            mine = [(t, j) for t in range(N) for j in range(k) if chosen[t][j] == i]
            if "cap_token_order" in bugs:
                order = mine
            else:
                order, rest = [], list(mine)
                while rest:
                    best = 0
                    for r in range(1, len(rest)):
                        if p[rest[r][0], i] > p[rest[best][0], i]:
                            best = r
                    order.append(rest.pop(best))
            for t, j in order[cap:]:
                keep[t][j] = False
    S = np.array([sum(p[t, e] for e in chosen[t]) for t in range(N)], dtype=x.dtype)
    w = np.zeros((N, k), dtype=x.dtype)
    for t in range(N):
        for j in range(k):
            w[t, j] = p[t, chosen[t][j]] if "no_renorm" in bugs else p[t, chosen[t][j]] / S[t]
    out = np.zeros_like(x)
    ecache = {}
    for e in range(E):
        rows = [(t, j) for t in range(N) for j in range(k) if chosen[t][j] == e and keep[t][j]]
        if not rows:
            continue
        y, c = expert_fwd(kind, x[[t for t, _ in rows]], experts[e])
        for r, (t, j) in enumerate(rows):
            out[t] += w[t, j] * y[r]
        ecache[e] = (rows, y, c)
    f = counts / float(N * k)
    Pm = p.astype(np.float64).mean(0)
    aux = a * E * float(np.sum(f * Pm))
    l2 = lse.astype(np.float64)
    zl = z * float(np.mean(l2 if "z_nosquare" in bugs else l2 * l2))
    cache = dict(x=x, Wr=Wr, experts=experts, kind=kind, k=k, a=a, z=z, p=p, lse=lse,
                 chosen=chosen, keep=keep, counts=counts, S=S, w=w, ecache=ecache, f=f,
                 Pm=Pm, bugs=set(bugs), dt=dt)
    return out, aux, zl, cache


def moe_backward(c, dout, daux, dz):
    """Gradients of sum(out * dout) + daux aux + dz zl: (dx, dWr, [dict per expert])."""
    x, Wr, experts, kind, dt = c["x"], c["Wr"], c["experts"], c["kind"], c["dt"]
    N, C = x.shape
    E, k = Wr.shape[0], c["k"]
    p, chosen, w, S = c["p"], c["chosen"], c["w"], c["S"]
    dx = np.zeros_like(x)
    dexp = [{n: np.zeros_like(v) for n, v in experts[e].items()} for e in range(E)]
    dw = np.zeros((N, k), dtype=x.dtype)
    for e, (rows, y, ec) in c["ecache"].items():
        dy = np.zeros_like(y)
        for r, (t, j) in enumerate(rows):
            dw[t, j] = float(np.dot(dout[t].astype(np.float64), y[r].astype(np.float64)))
            dy[r] = w[t, j] * dout[t]
        dX = expert_bwd(kind, experts[e], ec, dy, dexp[e])
        for r, (t, j) in enumerate(rows):
            dx[t] += dX[r]
    # w_j = p_j / S: dp_m = dw_m / S - sum_j dw_j p_j / S^2 over the chosen m
    dp = np.zeros_like(p)
    for t in range(N):
        if "no_renorm" in c["bugs"]:
            for j in range(k):
                dp[t, chosen[t][j]] += dw[t, j]
            continue
        acc = sum(dw[t, j] * p[t, chosen[t][j]] for j in range(k))
        for j in range(k):
            dp[t, chosen[t][j]] += dw[t, j] / S[t] - acc / (S[t] * S[t])
    # aux = a E sum_i f_i P_i, P_i = mean_t p[t, i]
    coef = daux * c["a"] * E
    for t in range(N):
        for i in range(E):
            dp[t, i] += dt(coef * c["f"][i] / N)
    if "f_grad" in c["bugs"]:   # f_i = (1/(N k)) sum over slots of p / stopgrad(p)
        for t in range(N):
            for e in chosen[t]:
                dp[t, e] += dt(coef * c["Pm"][e] / (N * k) / float(p[t, e]))
    dlogits = np.zeros_like(p)
    for t in range(N):
        dlogits[t] = p[t] * (dp[t] - np.dot(dp[t], p[t]))
        # zl = z (1/N) sum lse^2: dlse_t = 2 z lse_t / N, and dlse/dlogits = p
        g = 1.0 / N if "z_nosquare" in c["bugs"] else 2.0 * float(c["lse"][t]) / N
        dlogits[t] += dt(dz * c["z"] * g) * p[t]
    dWr = dlogits.T @ x
    dx += dlogits @ Wr
    return dx, dWr, dexp


def layer_inputs(P, pre, E):
    """moe_ref-style parameter dict -> (Wr, [expert dicts])."""
    Wr = P[pre + "moe.router.weight"]
    experts = []
    for e in range(E):
        q = "%smoe.experts.%d." % (pre, e)
        experts.append({n[len(q):]: v for n, v in P.items() if n.startswith(q)})
    return Wr, experts


# --------------------------------------------------------------------------- layer cases

PRE = "blocks.0."


def make_case(label, seed, kind, N, C, E, k, Fe, cf=0.0, a=0.1, z=0.01, bias=0.0,
              tie_experts=None, dup=None, wr_scale=0.6, bias_add=None, probs=None):
    """A layer problem: x (N, C), the block's parameters, a bias. tie_experts (i, j): router
    rows i and j equal (their scores tie, bias equal too); dup [(t, u)...]: token u a copy
    of token t; probs (N, E): the router is the identity (C = E) and x = log(probs) plus a
    random shift per token, so that p = probs."""
    rng = np.random.default_rng(seed)
    cfg = dict(d_model=C, n_experts=E, expert_top_k=k, expert_hidden=Fe, moe_capacity=cf,
               moe_aux_loss=a, moe_z_loss=z, moe_every=1, moe_balance="loss", moe_bias_rate=0.0)
    x = rng.standard_normal((N, C))
    for t, u in dup or ():
        x[u] = x[t]
    P = {}
    for n, shp in moe_ref.block_tensors(PRE, cfg, kind):
        P[n] = rng.standard_normal(shp) * (wr_scale if n.endswith("router.weight") else 0.4)
    if probs is not None:
        x = np.log(np.asarray(probs, dtype=np.float64))
        x += rng.standard_normal((N, 1))       # p stays, logsumexp does not vanish
        P[PRE + "moe.router.weight"] = np.eye(E)
    b = rng.standard_normal(E) * bias
    if bias_add is not None:
        b = b + np.asarray(bias_add, dtype=np.float64)
    if tie_experts:
        i, j = tie_experts
        P[PRE + "moe.router.weight"][j] = P[PRE + "moe.router.weight"][i]
        b[j] = b[i]
    return dict(label=label, kind=kind, cfg=cfg, x=x, P=P, bias=b, N=N)


CASES = [
    # GPT-2 experts, dropless, no bias
    make_case("gpt2 E=5 k=2 dropless", 1, "gpt2", N=9, C=7, E=5, k=2, Fe=6),
    # Llama experts, dropless, a bias that changes the selection, k=3
    make_case("llama E=6 k=3 dropless, bias", 2, "llama", N=10, C=8, E=6, k=3, Fe=5, bias=0.15),
    # ties at the top-k boundary (router rows 1 and 2 equal), capacity with tied tokens
    make_case("gpt2 E=4 k=2 capacity 1.0, tied experts 1|2, tied tokens", 3, "gpt2", N=12, C=6,
              E=4, k=2, Fe=5, cf=1.0, tie_experts=(1, 2),
              dup=[(0, 3), (0, 5), (0, 8), (0, 10), (2, 7), (2, 11)]),
    # capacity with a bias, Llama experts
    make_case("llama E=5 k=2 capacity 0.8, bias", 4, "llama", N=11, C=6, E=5, k=2, Fe=4, cf=0.8,
              bias=0.12, wr_scale=1.2),
    # k = E: every expert chosen, the weights are p itself
    make_case("llama E=3 k=3 dropless", 5, "llama", N=5, C=4, E=3, k=3, Fe=3),
    # k = 1 with capacity, strong imbalance
    # expert 0 over capacity (5 of cap 4) with second choices above first ones in p
    make_case("llama E=3 k=2 capacity 1.0, p given: second choices outrank first ones", 7,
              "llama", N=6, C=3, E=3, k=2, Fe=4, cf=1.0,
              probs=[[.36, .33, .31], [.45, .50, .05], [.40, .35, .25], [.5, .1, .4],
                     [.42, .48, .10], [.2, .3, .5]]),
    make_case("gpt2 E=4 k=1 capacity 1.0, bias toward expert 0", 6, "gpt2", N=10, C=5, E=4, k=1,
              Fe=3, cf=1.0, wr_scale=1.5, bias=0.05, bias_add=[0.6, 0, 0, 0]),
]


def case_properties(case):
    """What the case has: ties at the top-k boundary, tied probabilities at a capacity
    boundary, drops, a bias that changes a selection."""
    cfg, x, P = case["cfg"], case["x"], case["P"]
    k, N = cfg["expert_top_k"], case["N"]
    logits = x @ P[PRE + "moe.router.weight"].T
    p, _ = softmax_rows(logits)
    s = p + case["bias"]
    r = moe_ref.route(p, s, k, moe_ref.capacity(cfg, N))
    r0 = moe_ref.route(p, p, k, None)
    have = set()
    if r.margin == 0.0:
        have.add("ties")
    if r.cap_margin == 0.0:
        have.add("cap_ties")
    if r.drops:
        have.add("drops")
    if np.any(r.chosen != r0.chosen):
        have.add("bias")
    if cfg["moe_aux_loss"]:
        have.add("aux")
    if cfg["moe_z_loss"]:
        have.add("z")
    return have, r


def torch_case(case, bug=None):
    """moe_ref's layer: values and gradients for the three upstreams."""
    import torch
    cfg, kind = case["cfg"], case["kind"]
    names = sorted(case["P"])
    P = {n: torch.tensor(case["P"][n], requires_grad=True) for n in names}
    x = torch.tensor(case["x"], requires_grad=True)
    out, aux, zl, _ = moe_ref.layer(x, P, PRE, cfg, kind, case["bias"], bug)
    dout = np.random.default_rng(99).standard_normal(out.shape)
    res = {"out": out.detach().numpy(), "aux": float(aux), "zl": float(zl)}
    wrt = [x] + [P[n] for n in names]
    for tag, L in (("g_out", (out * torch.tensor(dout)).sum()), ("g_aux", aux), ("g_z", zl)):
        if not torch.is_tensor(L) or not L.requires_grad:
            gs = [torch.zeros_like(t) for t in wrt]
        else:
            gs = torch.autograd.grad(L, wrt, allow_unused=True, retain_graph=True)
            gs = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, gs)]
        res[tag] = {"x": gs[0].numpy()}
        res[tag].update({n: g.numpy() for n, g in zip(names, gs[1:])})
    return res, dout


def numpy_case(case, dout, bugs=()):
    cfg, kind = case["cfg"], case["kind"]
    E = cfg["n_experts"]
    Wr, experts = layer_inputs(case["P"], PRE, E)
    out, aux, zl, c = moe_forward(case["x"], Wr, experts, kind, cfg["expert_top_k"],
                                  moe_ref.capacity(cfg, case["N"]), cfg["moe_aux_loss"],
                                  cfg["moe_z_loss"], case["bias"], bugs)
    res = {"out": out, "aux": aux, "zl": zl}
    for tag, (do, da, dz) in (("g_out", (dout, 0.0, 0.0)), ("g_aux", (np.zeros_like(out), 1.0, 0.0)),
                              ("g_z", (np.zeros_like(out), 0.0, 1.0))):
        dx, dWr, dexp = moe_backward(c, do, da, dz)
        g = {"x": dx, PRE + "moe.router.weight": dWr}
        for e in range(E):
            for n, v in dexp[e].items():
                g["%smoe.experts.%d.%s" % (PRE, e, n)] = v
        res[tag] = g
    return res


def compare(a, b):
    """(worst rel.err, where) of two case results (b the reference). A gradient is measured
    relative to its own norm, but at least 1e-5 of the largest gradient of the same upstream:
    with k = 1 the weights are 1 and the router's gradient from the output is exactly 0,
    which both sides compute as rounding noise."""
    from dump_oracle import rel_err
    rows = [(rel_err(a["out"], b["out"]), "out"), (rel_err(a["aux"], b["aux"]), "aux"),
            (rel_err(a["zl"], b["zl"]), "zl")]
    for tag in ("g_out", "g_aux", "g_z"):
        top = max(np.linalg.norm(v) for v in b[tag].values())
        for n in b[tag]:
            d = np.linalg.norm((np.asarray(a[tag][n]) - b[tag][n]).ravel()) \
                if np.shape(a[tag][n]) == np.shape(b[tag][n]) else float("inf")
            rows.append((d / max(np.linalg.norm(b[tag][n]), 1e-5 * top, 1e-300),
                         "%s d/d %s" % (tag, n)))
    return max(rows)


def gradcheck_cases():
    """torch.autograd.gradcheck of moe_ref.layer, routing fixed, on (out, aux, zl)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        for case in (CASES[0], CASES[2], CASES[3]):
            cfg, kind = case["cfg"], case["kind"]
            names = sorted(case["P"])
            x0 = torch.tensor(case["x"])
            P0 = {n: torch.tensor(v) for n, v in case["P"].items()}
            _, _, _, r = moe_ref.layer(x0, P0, PRE, cfg, kind, case["bias"])

            def fn(x, *ps):
                out, aux, zl, _ = moe_ref.layer(x, dict(zip(names, ps)), PRE, cfg, kind,
                                                case["bias"], routing=r)
                return out, aux.reshape(1), zl.reshape(1)

            inputs = [x0.clone().requires_grad_(True)] + [P0[n].clone().requires_grad_(True) for n in names]
            ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5,
                                          raise_exception=False)
            results.append(("gradcheck %s (%d drops, %d inputs)" % (
                case["label"], r.drops, sum(t.numel() for t in inputs)), ok))
    finally:
        torch.set_num_threads(threads)
    return results


# --------------------------------------------------------------------------- the bias update

def bias_update_tests(row):
    """The balancing update on counts worked by hand, through moe_ref.Tracker."""
    cfg = dict(n_layer=2, moe_every=2, n_experts=4, expert_top_k=2, moe_balance="bias",
               moe_bias_rate=0.25, moe_capacity=0.0, moe_aux_loss=0.0, moe_z_loss=0.0, d_model=3)
    # counts over a step [5, 3, 0, 4] = [3, 1, 0, 2] + [2, 2, 0, 2] from two micro-batches:
    # mean 3, sign(3 - c) = [-1, 0, +1, -1]; updated per micro-batch (mean 1.5 each):
    # [-1, +1, +1, -1] + [-1, -1, +1, -1]
    want = {None: [[-0.25, 0.0, 0.25, -0.25]],
            "bias_sign": [[0.25, 0.0, -0.25, 0.25]],
            "bias_per_micro": [[-0.5, 0.0, 0.5, -0.5]]}

    def run(bug):
        tr = moe_ref.Tracker(cfg, bug)
        tr.begin_step(0)
        for a, c in enumerate(([3, 1, 0, 2], [2, 2, 0, 2])):
            tr.begin_micro(a)
            tr._counts[1] += np.array(c)
            tr.end_micro(2)
        tr.end_step()
        tr.begin_step(1)
        return tr.bias_array()

    got = run(None)
    ok = got.shape == (2, 1, 4) and np.all(got[0] == 0) and np.allclose(got[1], want[None], atol=0)
    row("bias update on counts [3,1,0,2] + [2,2,0,2], r = 0.25: rows 0 and %s" % got[1].tolist(), ok)
    got = run("bias_sign")
    row("mistake 'bias_sign' changes it: %s" % got[1].tolist(),
        np.allclose(got[1], want["bias_sign"]))
    got = run("bias_per_micro")
    row("mistake 'bias_per_micro' changes it: %s" % got[1].tolist(),
        np.allclose(got[1], want["bias_per_micro"]))
    got = run("bias_rows_after")
    row("mistake 'bias_rows_after' changes /moe_bias row 0: %s" % got[0].tolist(), np.any(got[0] != 0))


# --------------------------------------------------------------------------- the models' hooks

def expected_names(arch, cfg):
    """The MoE tensors docs/moe.md lists, written out (name -> shape)."""
    C, E, Fe = cfg["d_model"], cfg["n_experts"], cfg["expert_hidden"]
    out = {}
    for l in range(cfg["n_layer"]):
        if (l + 1) % cfg["moe_every"]:
            continue
        out["blocks.%d.moe.router.weight" % l] = (E, C)
        for e in range(E):
            q = "blocks.%d.moe.experts.%d." % (l, e)
            if arch == "gpt2":
                out.update({q + "fc.weight": (Fe, C), q + "fc.bias": (Fe,),
                            q + "proj.weight": (C, Fe), q + "proj.bias": (C,)})
            else:
                out.update({q + "gate.weight": (Fe, C), q + "up.weight": (Fe, C),
                            q + "down.weight": (C, Fe)})
    return out


def hook_tests(row):
    import torch
    import gpt2_oracle
    import llama_oracle
    base = dict(n_layer=3, n_head=2, d_model=8, vocab_size=13, seq_len=5, micro_batch=2,
                n_experts=3, expert_top_k=2, moe_capacity=0.0, moe_aux_loss=0.1,
                moe_z_loss=0.01, moe_balance="loss", moe_bias_rate=0.001)
    llama_extra = dict(n_kv_head=1, ffn_hidden=12, tie_embeddings=0, norm_eps=1e-5,
                       rope_theta=10000.0, rope_scaling="none", rope_factor=8.0,
                       rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_pos=8192)
    archs = [("gpt2", gpt2_oracle.GPT2, dict(base), {"mlp.fc.weight": "fc.weight", "mlp.fc.bias": "fc.bias",
                                                     "mlp.proj.weight": "proj.weight",
                                                     "mlp.proj.bias": "proj.bias"}),
             ("llama", llama_oracle.Llama, dict(base, **llama_extra),
              {"mlp.gate.weight": "gate.weight", "mlp.up.weight": "up.weight",
               "mlp.down.weight": "down.weight"})]
    rng = np.random.default_rng(11)
    for arch, cls, c0, mlp_map in archs:
        for every in (1, 2):
            dense_cfg = dict(c0, n_experts=0)
            moe_cfg = dict(c0, moe_every=every, expert_hidden=cls.dense_hidden(c0))
            dm, mm = cls(dense_cfg), cls(moe_cfg)
            dn, ds = dm.param_names(), dm.param_shapes()
            mn, ms = mm.param_names(), mm.param_shapes()
            exp = expected_names(arch, moe_cfg)
            moe_blocks = [l for l in range(c0["n_layer"]) if (l + 1) % every == 0]
            gone = {"blocks.%d.%s" % (l, n) for l in moe_blocks for n in mlp_map}
            want = {n: ds[n] for n in dn if n not in gone}
            want.update(exp)
            ok = set(mn) == set(want) and len(mn) == len(set(mn)) and all(ms[n] == want[n] for n in mn)
            row("%s moe_every %d: parameter names and shapes as docs/moe.md lists (%d MoE tensors "
                "in blocks %s)" % (arch, every, len(exp), moe_blocks), ok)
            # experts equal to the dense MLP: the logits are the dense model's
            P = {n: torch.tensor(rng.standard_normal(ds[n]) * (0.3 if len(ds[n]) == 2 else 0.1)
                                 + (1.0 if n.endswith("weight") and len(ds[n]) == 1 else 0.0)) for n in dn}
            Q = {n: P[n] for n in dn if n not in gone}
            for l in moe_blocks:
                Q["blocks.%d.moe.router.weight" % l] = torch.tensor(rng.standard_normal((3, 8)))
                for e in range(3):
                    for dname, ename in mlp_map.items():
                        Q["blocks.%d.moe.experts.%d.%s" % (l, e, ename)] = P["blocks.%d.%s" % (l, dname)]
            idx = torch.tensor(rng.integers(0, 13, size=(2, 5)))
            with torch.no_grad():
                ld = dm.forward(P, idx)
                lm = mm.forward(Q, idx)
                tr = moe_ref.Tracker(moe_cfg)
                tr.begin_step(0)
                tr.begin_micro(0)
                lt = mm.forward(Q, idx, moe=tr)
            from dump_oracle import rel_err
            e1, e2 = rel_err(lm.numpy(), ld.numpy()), rel_err(lt.numpy(), ld.numpy())
            row("%s moe_every %d: experts equal to the dense MLP give the dense logits" % (arch, every),
                e1 < 1e-12 and e2 < 1e-12 and len(tr._terms) == len(moe_blocks),
                "rel.err %.1e / %.1e (with a tracker: %d MoE layers seen)" % (e1, e2, len(tr._terms)))


# --------------------------------------------------------------------------- synthetic runs

# Mistakes of a whole run: the layer's (LAYER_BUGS), and these.
SYNTH_BUGS = {
    "aux_sum_micro": "/moe_aux_loss summed over micro-batches, not averaged",
    "z_uncoef": "/moe_z_loss without the coefficient z",
    "bias_sign": "bias_i += r sign(c_i - mean)",
    "bias_per_micro": "bias updated after every micro-batch",
    "bias_rows_after": "/moe_bias row s written after step s's update",
    "no_aux_grad": "the auxiliary loss in the record but not in the gradient",
}


class SynthMoE(llama_synth.SynthLlama):
    """llama_synth's float32 Llama with MoE blocks. cfg carries the MoE attributes."""

    def __init__(self, cfg, bugs=()):
        super().__init__(cfg, [b for b in bugs if b in llama_synth.BUGS])
        self.moe_bugs = set(bugs)
        self.layers = moe_ref.moe_layers(cfg)
        self.E, self.k = cfg["n_experts"], cfg["expert_top_k"]
        self.bias = {l: np.zeros(self.E) for l in self.layers}
        self.rows = []

    def names(self):
        out = []
        for n in super().names():
            parts = n.split(".")
            if len(parts) > 2 and parts[0] == "blocks" and int(parts[1]) in self.layers and parts[2] == "mlp":
                if parts[3] == "gate":       # the first of the dense MLP's tensors
                    out += [m for m, _ in moe_ref.block_tensors("blocks.%s." % parts[1], self.c, "llama")]
                continue
            out.append(n)
        return out

    def init(self, seed, router_std=0.3, near_tie=None):
        """llama_synth's init for the dense tensors; experts like the dense MLP, routers
        N(0, router_std) (wider than shardlm's 0.02, so that routing is decisive).
        near_tie (l, i, j): router row j of block l = row i + 1e-9 (a run without margin)."""
        dense = llama_synth.SynthLlama(dict(self.c, ffn_hidden=self.c["ffn_hidden"])).init(seed)
        rng = np.random.default_rng(seed + 100)
        P = {}
        C, Fe = self.C, self.c["expert_hidden"]
        for n in self.names():
            if n in dense:
                P[n] = dense[n]
            elif n.endswith("router.weight"):
                P[n] = (router_std * rng.standard_normal((self.E, C))).astype(F32)
            else:
                shp = dict(moe_ref.expert_tensors("llama", C, Fe))[n.split(".", 5)[5]]
                std = 0.02 / math.sqrt(2 * self.L) if n.endswith("down.weight") else 0.02
                P[n] = (std * 4 * rng.standard_normal(shp)).astype(F32)
        if near_tie:
            l, i, j = near_tie
            W = P["blocks.%d.moe.router.weight" % l]
            W[j] = W[i] + F32(1e-9)
        return P

    def begin_step(self, s):
        if "bias_rows_after" not in self.moe_bugs:
            self.rows.append(np.array([self.bias[l] for l in self.layers]))
        self.counts = {l: np.zeros(self.E) for l in self.layers}
        self.aux = self.zl = 0.0

    def _update(self):
        if self.c["moe_balance"] != "bias":
            return
        for l in self.layers:
            c = self.counts[l]
            d = c - c.mean() if "bias_sign" in self.moe_bugs else c.mean() - c
            self.bias[l] = self.bias[l] + self.c["moe_bias_rate"] * np.sign(d)

    def end_step(self, s, out):
        if "bias_per_micro" not in self.moe_bugs:
            self._update()
        if "bias_rows_after" in self.moe_bugs:
            self.rows.append(np.array([self.bias[l] for l in self.layers]))
        out.setdefault("moe_aux", []).append(self.aux)
        out.setdefault("moe_z", []).append(self.zl)
        out["moe_bias"] = self.rows

    def micro_batch(self, P, window, G, scale):
        """The micro-batch layer by layer: attention per sequence, the MoE over all of its
        B*T tokens (t = b*T + position). Adds scale * d(objective)/dP to G; returns (mean
        cross-entropy, logits) and accumulates aux, zl and the counts of the step."""
        B, T1 = window.shape
        T = T1 - 1
        phase = self.phase(T)
        cap = moe_ref.capacity(self.c, B * T)
        xs = [P["embed.weight"][window[b, :-1]].copy() for b in range(B)]
        caches = []
        for l in range(self.L):
            pre = "blocks.%d." % l
            hc = [self.attn_forward(P, l, xs[b], phase) for b in range(B)]
            if l in self.layers:
                ms = [llama_synth.rms_fwd(h, P[pre + "mlp_norm.weight"], self.eps) for h, _ in hc]
                X = np.concatenate([m for m, _ in ms])
                Wr, experts = layer_inputs(P, pre, self.E)
                out, aux, zl, mc = moe_forward(X, Wr, experts, "llama", self.k, cap,
                                               self.c["moe_aux_loss"], self.c["moe_z_loss"],
                                               self.bias[l], [b for b in self.moe_bugs if b in LAYER_BUGS])
                xs = [hc[b][0] + out[b * T:(b + 1) * T] for b in range(B)]
                caches.append(("moe", hc, ms, mc))
                self.aux += aux * (1.0 if "aux_sum_micro" in self.moe_bugs else scale)
                if "z_uncoef" in self.moe_bugs and self.c["moe_z_loss"]:
                    zl = zl / self.c["moe_z_loss"]
                self.zl += zl * scale
                self.counts[l] += mc["counts"]
            else:
                mc = [self.mlp_forward(P, l, hc[b][0]) for b in range(B)]
                xs = [x for x, _ in mc]
                caches.append(("dense", hc, mc))
        total, logits_all, dxs = 0.0, [], []
        for b in range(B):
            logits, ch = self.head_forward(P, xs[b])
            tgt = window[b, 1:]
            zz = logits - logits.max(axis=1, keepdims=True)
            lse = np.log(np.exp(zz).sum(axis=1))
            total += float(np.sum(lse - zz[np.arange(T), tgt]))
            sm = np.exp(zz - lse[:, None])
            sm[np.arange(T), tgt] -= 1
            dxs.append(self.head_backward(P, ch, (sm / F32(B * T) * F32(scale)).astype(F32), G))
            logits_all.append(logits)
        for l in reversed(range(self.L)):
            pre = "blocks.%d." % l
            c = caches[l]
            if c[0] == "moe":
                _, hc, ms, mc = c
                daux = 0.0 if "no_aux_grad" in self.moe_bugs else scale
                dX, dWr, dexp = moe_backward(mc, np.concatenate(dxs), daux, scale)
                G[pre + "moe.router.weight"] += dWr
                for e in range(self.E):
                    for n, v in dexp[e].items():
                        G["%smoe.experts.%d.%s" % (pre, e, n)] += v
                dhs = []
                for b in range(B):
                    dh_n, dw = llama_synth.rms_bwd(dX[b * T:(b + 1) * T], P[pre + "mlp_norm.weight"],
                                                   ms[b][1])
                    G[pre + "mlp_norm.weight"] += dw
                    dhs.append(dxs[b] + dh_n)
            else:
                _, hc, mc = c
                dhs = [self.mlp_backward(P, l, dict(hc[b][1], **mc[b][1]), dxs[b], G) for b in range(B)]
            dxs = [self.attn_backward(P, l, hc[b][1], dhs[b], G, phase) for b in range(B)]
        for b in range(B):
            np.add.at(G["embed.weight"], window[b, :-1], dxs[b])
        if "bias_per_micro" in self.moe_bugs:
            self._update()
            self.counts = {l: np.zeros(self.E) for l in self.layers}
        return total / (B * T), np.stack(logits_all)


MOE_TRAIN = {"n_experts": 0, "expert_top_k": 2, "moe_every": 1, "expert_hidden": 0,
             "moe_capacity": 0.0, "moe_aux_loss": 0.01, "moe_z_loss": 0.0, "moe_balance": "loss",
             "moe_bias_rate": 0.001}


def write_dump(path, cfg, bugs=(), init=None, attrs=None, drop=()):
    """A synthetic run of cfg (model, training and MoE attributes) with `bugs`. init:
    keyword arguments of SynthMoE.init; attrs: root attributes written instead of cfg's;
    drop: datasets left out."""
    model = SynthMoE(cfg, bugs)
    rng = np.random.default_rng(cfg["seed"])
    P0 = model.init(cfg["seed"] + 1, **(init or {}))
    S, A, B, T = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"]
    tokens = rng.integers(0, cfg["vocab_size"], size=(S, A, B, T + 1)).astype(np.int32)
    r = llama_synth.train(model, P0, tokens, cfg)
    at = dict(cfg, **(attrs or {}))
    with h5py.File(path, "w") as f:
        llama_synth.write_model_attrs(f, at, ints=moe_ref.INT_ATTRS, floats=moe_ref.FLOAT_ATTRS)
        f.attrs["moe_balance"] = np.bytes_(at["moe_balance"])
        f["tokens"] = tokens
        for n in model.names():
            f["init/" + n] = P0[n]
            f["step0/grads/" + n] = r["grads"][n]
            f["final/" + n] = r["final"][n]
        llama_synth.write_step_records(f, r)
        if cfg["n_experts"] > 0:
            for key, val in (("moe_aux_loss", r["moe_aux"]), ("moe_z_loss", r["moe_z"])):
                if key not in drop:
                    f[key] = np.array(val, dtype=np.float64)
            if cfg["moe_balance"] == "bias" and "moe_bias" not in drop:
                f["moe_bias"] = np.array(r["moe_bias"], dtype=np.float64)
    return r


SHAPE = dict(n_layer=2, n_head=2, n_kv_head=1, d_model=12, ffn_hidden=20, vocab_size=23, seq_len=5,
             micro_batch=2, grad_accum=1, tie_embeddings=0, norm_eps=1e-5, rope_theta=10000.0,
             rope_scaling="none", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
             rope_original_max_pos=8192)

# (label, shape and training changes, MoE attributes). The seeds are ones whose runs keep
# a routing margin above moe_ref.MARGIN (1234 routes run 0 within 3e-6 of a tie, and ties
# 1235's drops exactly: two equal tokens at position 0).
RUNS = [
    ("E=6 k=2 every block, Fe=7, aux 0.1, z 0.01, 2 micro-batches", dict(grad_accum=2, seed=1235),
     dict(n_experts=6, expert_top_k=2, expert_hidden=7, moe_aux_loss=0.1, moe_z_loss=0.01)),
    ("E=5 k=2 every 2nd block, capacity 1.0 (drops), aux 0.1, z 0.01", dict(micro_batch=3, seed=1237),
     dict(n_experts=5, expert_top_k=2, moe_every=2, expert_hidden=9, moe_capacity=1.0,
          moe_aux_loss=0.1, moe_z_loss=0.01)),
    ("E=4 k=1, bias balancing r 0.01, capacity 1.5, 2 micro-batches", dict(grad_accum=2, seed=1237),
     dict(n_experts=4, expert_top_k=1, expert_hidden=6, moe_capacity=1.5, moe_balance="bias",
          moe_bias_rate=0.01, moe_aux_loss=0.0, moe_z_loss=0.02)),
]

# (label, index into RUNS, what changes, checks of which one must fail). change keys:
# bugs (SynthMoE mistakes), init (SynthMoE.init arguments), attrs (root attributes written
# otherwise than run), drop (datasets left out), ask (the correct dump against a request
# for other settings), opts (the oracle's MoE options).
BROKEN = [
    ("top-k weights not renormalised", 0, {"bugs": ("no_renorm",)}, {"logits", "grads"}),
    ("gradient through f_i", 0, {"bugs": ("f_grad",)}, {"grads"}),
    ("z-loss without the square", 0, {"bugs": ("z_nosquare",)}, {"moe_z"}),
    ("aux in the record, not in the gradient", 0, {"bugs": ("no_aux_grad",)}, {"grads"}),
    ("/moe_aux_loss summed over micro-batches", 0, {"bugs": ("aux_sum_micro",)}, {"moe_aux"}),
    ("/moe_z_loss without its coefficient", 0, {"bugs": ("z_uncoef",)}, {"moe_z"}),
    ("/moe_aux_loss missing", 0, {"drop": ("moe_aux_loss",)}, {"moe_aux"}),
    ("router rows 0 and 1 of block 0 tied to 1e-9", 0, {"init": {"near_tie": (0, 0, 1)}}, {"margin"}),
    ("expert_hidden written as 0", 0, {"attrs": {"expert_hidden": 0}}, {"config"}),
    ("moe_every written as 1, the run had 2", 1, {"attrs": {"moe_every": 1}}, {"config", "tokens"}),
    ("capacity keeps the first assignments in token order", 1, {"bugs": ("cap_token_order",)},
     {"logits", "grads"}),
    ("dump asked for with z 0.02", 1, {"ask": {"moe_z_loss": 0.02}}, {"config"}),
    ("bias sign flipped", 2, {"bugs": ("bias_sign",)}, {"moe_bias"}),
    ("bias updated per micro-batch", 2, {"bugs": ("bias_per_micro",)}, {"moe_bias"}),
    ("/moe_bias rows after the update", 2, {"bugs": ("bias_rows_after",)}, {"moe_bias"}),
    ("/moe_bias missing", 2, {"drop": ("moe_bias",)}, {"moe_bias"}),
    ("drops expected, capacity 3.0 has none", 1, {"attrs": {}, "run": {"moe_capacity": 3.0},
                                                  "opts": {"expect_drops": True}}, {"drops"}),
]


def run_cfg(k, change=None):
    label, shp, moe = RUNS[k]
    cfg = dict(llama_synth.TRAIN_DEFAULTS, **SHAPE)
    cfg.update(MOE_TRAIN)
    cfg.update(shp)
    cfg.update(moe)
    if change and "run" in change:
        cfg.update(change["run"])
    return cfg


def request(cfg):
    import dump_oracle
    want = {k: cfg[k] for k in dump_oracle.COMMON_INTS + dump_oracle.COMMON_FLOATS}
    want.update({k: cfg[k] for k in ("n_kv_head", "ffn_hidden", "tie_embeddings", "norm_eps",
                                     "rope_theta", "rope_scaling")})
    want.update({k: cfg[k] for k in moe_ref.ATTRS})
    return want


def quiet_check(path, want, verbose, opts=None):
    import dump_oracle
    import llama_oracle
    if verbose:
        return dump_oracle.check_dump_report(path, llama_oracle.Llama, want, 1e-4, True, opts)
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return dump_oracle.check_dump_report(path, llama_oracle.Llama, want, 1e-4, False, opts)
    finally:
        sys.stdout.close()
        sys.stdout = saved


def row_value(rep, name):
    for r in rep.rows:
        if r[0] == name:
            return r
    return None


def dump_tests(row, a):
    print("== synthetic Llama MoE runs (numpy float32, hand-written backward) through the dump oracle")
    work = a.keep or tempfile.mkdtemp(prefix="moe_selftest_")
    os.makedirs(work, exist_ok=True)
    try:
        for i, (label, _, _) in enumerate(RUNS):
            cfg = run_cfg(i)
            path = os.path.join(work, "run%d.h5" % i)
            r = write_dump(path, cfg)
            nf, rep = quiet_check(path, None, a.verbose)
            nf2, _ = quiet_check(path, request(cfg), False)
            m = row_value(rep, "margin")
            detail = "as --dump: %s; as requested: %s; %s" % (
                "passes" if nf == 0 else "FAILS " + ",".join(rep.failed()),
                "passes" if nf2 == 0 else "FAILS", m[4] if m else "no margin row")
            extra = ""
            if cfg["moe_balance"] == "bias":
                b = np.array(r["moe_bias"])
                extra = "; final bias spread %.3f" % (b[-1].max() - b[-1].min())
                if not np.any(b):
                    detail += "; the bias never moved (the run tests nothing)"
                    nf += 1
            row("dump: " + label, nf == 0 and nf2 == 0, detail + extra)
        # a dense run whose dump carries the MoE attributes with n_experts = 0
        cfg = dict(run_cfg(0), n_experts=0)
        path = os.path.join(work, "dense.h5")
        write_dump(path, cfg)
        nf, rep = quiet_check(path, None, a.verbose)
        nf2, _ = quiet_check(path, request(cfg), False)
        row("dump: dense, n_experts = 0 among its attributes", nf == 0 and nf2 == 0 and
            row_value(rep, "margin") is None, "as --dump: %s; as requested: %s" % (
                "passes" if nf == 0 else "FAILS " + ",".join(rep.failed()),
                "passes" if nf2 == 0 else "FAILS"))
        for label, k, change, must in BROKEN:
            cfg = run_cfg(k, change)
            want = None
            if "ask" in change:
                path = os.path.join(work, "run%d.h5" % k)
                want = request(dict(cfg, **change["ask"]))
            else:
                tag = "".join(ch if ch.isalnum() else "_" for ch in label)
                path = os.path.join(work, "broken-%s.h5" % tag)
                write_dump(path, cfg, change.get("bugs", ()), change.get("init"),
                           change.get("attrs"), change.get("drop", ()))
            nf, rep = quiet_check(path, want, a.verbose, change.get("opts"))
            failed = set(rep.failed())
            row("broken dump: " + label, nf > 0 and bool(failed & must),
                "fails %s%s" % (",".join(sorted(failed)) or "nothing",
                                "" if failed & must else " (must fail one of %s)" % ",".join(sorted(must))))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- self-test

def self_test(a):
    import torch
    torch.set_num_threads(1)
    rows = []

    def row(label, ok, detail=""):
        rows.append((label, ok))
        print("  %-4s %-74s %s" % ("ok" if ok else "FAIL", label, detail))
        sys.stdout.flush()

    print("== 1. gradcheck of moe_ref's float64 layer, routing fixed")
    for label, ok in gradcheck_cases():
        row(label, ok)

    print("== 2. moe_ref's layer against the numpy loops (forward, aux, z, every gradient)")
    props = {}
    for case in CASES:
        have, r = case_properties(case)
        props[case["label"]] = have
        t, dout = torch_case(case)
        n = numpy_case(case, dout)
        e, where = compare(t, n)
        row(case["label"], e <= COMPARE_TOL, "worst rel.err %.1e (%s); has %s; %d of %d slots dropped" % (
            e, where, ",".join(sorted(have)), r.drops, r.chosen.size))
    for need, what in (("ties", "ties at the top-k boundary"),
                       ("cap_ties", "tied tokens at a capacity boundary"),
                       ("drops", "drops"), ("bias", "a bias that changes the routing")):
        row("some case has %s" % what, any(need in h for h in props.values()))

    print("== 3. each mistake of moe_ref.BUGS must be told apart (by more than %g)" % DETECT_TOL)
    for bug, (what, kind, _) in moe_ref.BUGS.items():
        if kind != "layer":
            continue
        worst, where = 0.0, ""
        for case in CASES:
            t, dout = torch_case(case, bug)
            n = numpy_case(case, dout)
            e, w = compare(t, n)
            if e > worst:
                worst, where = e, "%s, %s" % (case["label"], w)
        row("%s: %s" % (bug, what), worst > DETECT_TOL, "caught by %.1e in '%s'" % (worst, where))
    for bug in LAYER_BUGS:   # the numpy side's own mistakes, used by the synthetic dumps
        worst = 0.0
        for case in CASES:
            t, dout = torch_case(case)
            e, _ = compare(numpy_case(case, dout, (bug,)), t)
            worst = max(worst, e)
        row("numpy layer with '%s' differs from moe_ref's" % bug, worst > DETECT_TOL, "by %.1e" % worst)
    bias_update_tests(row)

    print("== 4. the models' MoE blocks")
    hook_tests(row)

    if not a.no_dumps:
        print("== 5.")
        dump_tests(row, a)

    print("\nself-test summary:")
    nfail = sum(1 for _, ok in rows if not ok)
    for label, ok in rows:
        if not ok:
            print("  FAIL %s" % label)
    print("\n%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0


def main():
    ap = argparse.ArgumentParser(description="Mixture-of-experts layer of shardlm's oracles: self-test")
    ap.add_argument("--self-test", action="store_true", help="check the MoE oracle (no shardlm needed)")
    ap.add_argument("--no-dumps", action="store_true", help="leave out the synthetic dumps")
    ap.add_argument("--keep", metavar="DIR", help="keep the synthetic dumps here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if not a.self_test:
        ap.error("nothing to do: the oracles import moe_ref.py; give --self-test to check it")
    return self_test(a)
