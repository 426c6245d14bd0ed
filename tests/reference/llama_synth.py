"""Synthetic Llama dumps, for validating llama_oracle.py without shardlm.

A second implementation of the Llama training run, deliberately different from the
oracle's: numpy in float32 (as shardlm computes), with

  * the forward written per sequence and per query head with explicit loops over kv
    groups (no broadcasting of k/v to query heads),
  * RoPE as a complex rotation: (x_i + j x_{i+hs/2}) * exp(j p f_i), the llama3
    frequencies computed by comparing wavelengths one at a time,
  * a hand-derived backward pass (no autograd anywhere): cross-entropy, RMSNorm, SwiGLU,
    softmax attention with grouped kv heads, the conjugate rotation for RoPE, the
    embedding scatter and, when tied, the head's contribution to embed.weight,
  * its own gradient accumulation, global-norm clipping, warmup + cosine schedule and
    AdamW (decoupled decay on 2-D tensors, bias-corrected moments, eps outside the sqrt),

writing a dump with h5py in shardlm's layout (docs/testing.md, plus the Llama root
attributes; arch as a fixed-length and rope_scaling as a variable-length string, so that
both ways HDF5 stores strings are read). Options make it commit one
mistake on purpose (`BUGS`: interleaved RoPE pairs, kv head j % K, llama3 scaling left out,
weight decay on the norm weights, eps outside the sqrt, a tied embedding missing the head's
gradient, an untied model reading the head from embed.weight, norm_eps or rope_theta
ignored, a wrong arch attribute), `poke` changes one step-0 gradient element after the
fact, and `noise` puts float32-sized rounding noise where the exact gradient is zero
(`BENIGN`: a correct implementation may do that).

self_test(args) (llama_oracle.py --self-test) runs:
  1. torch.autograd.gradcheck of the oracle's float64 logits on tiny odd shapes (tied
     with llama3 RoPE over all three bands and grouped kv heads; untied, 2 layers,
     multi-query, plain RoPE; T = 1);
  2. the oracle's float64 forward against this float32 one, and its autograd gradients
     against the hand-written backward, on one micro-batch;
  3. for each shape (the flags given, else a built-in set): a correct synthetic dump
     must pass every check (read as `--dump` does, and against the request), a benign
     one must pass, and each broken one must fail, at least one of the checks listed for
     it in BUGS.
"""
import math
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

# Mistakes a broken dump can be made with; the value lists the checks that must fail
# (at least one of them, and the dump must not pass as a whole).
BUGS = {
    "interleaved": ("RoPE pairs (2i, 2i+1)", {"logits", "grads"}),
    "modulo_kv": ("query head j reads kv head j % K", {"logits", "grads"}),
    "no_llama3": ("llama3 frequency scaling left out", {"logits", "grads"}),
    "decay_norms": ("weight decay on the norm weights too", {"final"}),
    "eps_outside": ("RMSNorm eps outside the sqrt", {"logits", "grads"}),
    "poke": ("one gradient element changed", {"grads"}),
    "untied_head_grad": ("tied embed.weight without the head's gradient", {"grads"}),
    "head_is_embed": ("untied, but the logits from embed.weight", {"logits", "grads"}),
    "eps_default": ("norm_eps ignored (1e-6 used)", {"logits", "grads"}),
    "theta_default": ("rope_theta ignored (10000 used)", {"logits", "grads"}),
    "wrong_arch": ("arch attribute gpt2", {"config"}),
}
# Harmless differences a correct float32 implementation may show; those dumps must pass.
BENIGN = {
    "zero_grad_noise": "T = 1: rounding noise (1e-7 of the global norm) in the exactly-zero "
                       "q and k gradients",
}

F32 = np.float32


# --------------------------------------------------------------------------- pieces

def llama3_freqs(hs, theta, scaling, factor, low, high, orig):
    """Rotary frequencies, one at a time by wavelength."""
    out = []
    for i in range(hs // 2):
        f = 1.0 / (theta ** ((2 * i) / hs))
        if scaling == "llama3":
            wl = 2 * math.pi / f
            if wl > orig / low:
                f = f / factor
            elif wl >= orig / high:
                t = (orig / wl - low) / (high - low)
                f = t * f + (1 - t) * (f / factor)
        out.append(f)
    return np.array(out)


def rotate(x, phase, interleaved=False):
    """x (T, hs) real; phase (T, hs/2) complex unit numbers. Returns the rotated x."""
    if interleaved:
        z = x[:, 0::2] + 1j * x[:, 1::2]
    else:
        h = x.shape[1] // 2
        z = x[:, :h] + 1j * x[:, h:]
    z = z * phase
    out = np.empty_like(x)
    if interleaved:
        out[:, 0::2], out[:, 1::2] = z.real, z.imag
    else:
        h = x.shape[1] // 2
        out[:, :h], out[:, h:] = z.real, z.imag
    return out


def rms_fwd(x, w, eps, outside=False):
    ms = np.mean(x * x, axis=-1, keepdims=True)
    r = (np.sqrt(ms) + F32(eps)) if outside else np.sqrt(ms + F32(eps))
    n = x / r
    return n * w, (n, r)


def rms_bwd(dy, w, cache, outside=False):
    n, r = cache
    dw = np.sum(dy * n, axis=tuple(range(dy.ndim - 1)))
    dn = dy * w
    C = n.shape[-1]
    if outside:   # y = x / (s + eps), s = sqrt(mean x^2): ds/dx = x / (C s)
        x = n * r     # r = sqrt(mean x^2) + eps
        sq = np.sqrt(np.mean(x * x, axis=-1, keepdims=True))
        dx = dn / r - x * np.sum(dn * x, axis=-1, keepdims=True) / (r * r * C * sq)
        return dx, dw
    dx = (dn - n * np.mean(dn * n, axis=-1, keepdims=True)) / r
    return dx, dw


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- model

class SynthLlama:
    """cfg: the dump's attributes (dict). bugs: a set of BUGS keys."""

    def __init__(self, cfg, bugs=()):
        self.c = cfg
        self.bugs = set(bugs)
        c = cfg
        self.L, self.H, self.K = c["n_layer"], c["n_head"], c["n_kv_head"]
        self.C, self.V, self.Fh = c["d_model"], c["vocab_size"], c["ffn_hidden"]
        self.hs = self.C // self.H
        self.tied = bool(c["tie_embeddings"])
        self.eps = 1e-6 if "eps_default" in self.bugs else c["norm_eps"]
        scaling = "none" if "no_llama3" in self.bugs else c["rope_scaling"]
        theta = 10000.0 if "theta_default" in self.bugs else c["rope_theta"]
        self.freqs = llama3_freqs(self.hs, theta, scaling, c["rope_factor"],
                                  c["rope_low_freq_factor"], c["rope_high_freq_factor"],
                                  c["rope_original_max_pos"])
        # which query heads read kv head g
        self.readers = [[j for j in range(self.H) if self.kv_of(j) == g] for g in range(self.K)]

    def kv_of(self, j):
        if "modulo_kv" in self.bugs:
            return j % self.K
        per = self.H // self.K
        g = 0
        while (g + 1) * per <= j:
            g += 1
        return g

    def names(self):
        n = ["embed.weight"]
        for l in range(self.L):
            n += ["blocks.%d.%s" % (l, s) for s in (
                "attn_norm.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight",
                "attn.o.weight", "mlp_norm.weight", "mlp.gate.weight", "mlp.up.weight",
                "mlp.down.weight")]
        n.append("norm.weight")
        if not self.tied:
            n.append("head.weight")
        return n

    def init(self, seed):
        """shardlm-like: normal(0, 0.02), o and down 0.02/sqrt(2L), norm weights 1,
        here jittered (1 + 0.1 normal) so that a misplaced weight shows."""
        rng = np.random.default_rng(seed)
        P = {}
        C, V, Fh, hs, H, K = self.C, self.V, self.Fh, self.hs, self.H, self.K
        shapes = {"embed.weight": (V, C), "norm.weight": (C,), "head.weight": (V, C)}
        for l in range(self.L):
            p = "blocks.%d." % l
            shapes.update({p + "attn_norm.weight": (C,), p + "attn.q.weight": (H * hs, C),
                           p + "attn.k.weight": (K * hs, C), p + "attn.v.weight": (K * hs, C),
                           p + "attn.o.weight": (C, H * hs), p + "mlp_norm.weight": (C,),
                           p + "mlp.gate.weight": (Fh, C), p + "mlp.up.weight": (Fh, C),
                           p + "mlp.down.weight": (C, Fh)})
        for n in self.names():
            s = shapes[n]
            if len(s) == 1:
                P[n] = (1.0 + 0.1 * rng.standard_normal(s)).astype(F32)
            else:
                std = 0.02 / math.sqrt(2 * self.L) if n.endswith(("attn.o.weight", "mlp.down.weight")) else 0.02
                P[n] = (std * rng.standard_normal(s)).astype(F32)
        return P

    # ---- one sequence at a time, one half-block at a time
    def phase(self, T):
        """The unit rotations (T, hs/2) of positions 0..T-1."""
        return np.exp(1j * np.outer(np.arange(T), self.freqs))

    def seq_forward(self, P, ids):
        """ids (T,) -> logits (T,V) and the cache for seq_backward."""
        phase = self.phase(len(ids))          # (T, hs/2)
        x = P["embed.weight"][ids].copy()
        caches = []
        for l in range(self.L):
            h, c = self.attn_forward(P, l, x, phase)
            x, cm = self.mlp_forward(P, l, h)
            c.update(cm)
            caches.append(c)
        logits, ch = self.head_forward(P, x)
        ch.update(layers=caches, phase=phase, ids=ids)
        return logits, ch

    def attn_forward(self, P, l, x, phase):
        """The attention half of block l on one sequence x (T, C): h = x + o(attention)."""
        T, H, K, hs = x.shape[0], self.H, self.K, self.hs
        outside = "eps_outside" in self.bugs
        inter = "interleaved" in self.bugs
        p = "blocks.%d." % l
        a, c1 = rms_fwd(x, P[p + "attn_norm.weight"], self.eps, outside)
        q = a @ P[p + "attn.q.weight"].T
        k = a @ P[p + "attn.k.weight"].T
        v = a @ P[p + "attn.v.weight"].T
        qr = np.empty_like(q)
        kr = np.empty_like(k)
        for j in range(H):
            qr[:, j * hs:(j + 1) * hs] = rotate(q[:, j * hs:(j + 1) * hs], phase, inter)
        for g in range(K):
            kr[:, g * hs:(g + 1) * hs] = rotate(k[:, g * hs:(g + 1) * hs], phase, inter)
        y = np.zeros((T, H * hs), dtype=F32)
        probs = {}
        for g in range(K):
            kg, vg = kr[:, g * hs:(g + 1) * hs], v[:, g * hs:(g + 1) * hs]
            for j in self.readers[g]:
                qj = qr[:, j * hs:(j + 1) * hs]
                pj = np.zeros((T, T), dtype=F32)
                for t in range(T):     # query t sees keys 0..t
                    s = (kg[:t + 1] @ qj[t]) / F32(math.sqrt(hs))
                    e = np.exp(s - s.max())
                    pj[t, :t + 1] = e / e.sum()
                probs[j] = pj
                y[:, j * hs:(j + 1) * hs] = pj @ vg
        h = x + y @ P[p + "attn.o.weight"].T
        return h, dict(x=x, a=a, c1=c1, q=q, k=k, v=v, qr=qr, kr=kr, probs=probs, y=y, h=h)

    def mlp_forward(self, P, l, h):
        """The MLP half of block l on h (T, C): h + down(silu(gate m) * up m), m = rms2(h)."""
        p = "blocks.%d." % l
        m, c2 = rms_fwd(h, P[p + "mlp_norm.weight"], self.eps, "eps_outside" in self.bugs)
        gt = m @ P[p + "mlp.gate.weight"].T
        u = m @ P[p + "mlp.up.weight"].T
        sg = sigmoid(gt)
        z = gt * sg * u
        xn = h + z @ P[p + "mlp.down.weight"].T
        return xn, dict(m=m, c2=c2, gt=gt, u=u, sg=sg, z=z)

    def head_forward(self, P, x):
        """The final norm and the head: x (T, C) -> logits (T, V)."""
        nf, cf = rms_fwd(x, P["norm.weight"], self.eps, "eps_outside" in self.bugs)
        W = P["embed.weight"] if self.tied or "head_is_embed" in self.bugs else P["head.weight"]
        logits = nf @ W.T
        return logits.astype(F32), dict(x=x, nf=nf, cf=cf)

    def seq_backward(self, P, cache, dlogits, G):
        """Accumulates into G the gradient for dlogits (T,V)."""
        dx = self.head_backward(P, cache, dlogits, G)
        for l in reversed(range(self.L)):
            c = cache["layers"][l]
            dh = self.mlp_backward(P, l, c, dx, G)
            dx = self.attn_backward(P, l, c, dh, G, cache["phase"])
        np.add.at(G["embed.weight"], cache["ids"], dx)

    def head_backward(self, P, cache, dlogits, G):
        """head_forward's backward: the gradient with respect to its input x."""
        outside = "eps_outside" in self.bugs
        W = P["embed.weight"] if self.tied or "head_is_embed" in self.bugs else P["head.weight"]
        dW = dlogits.T @ cache["nf"]
        if "head_is_embed" in self.bugs:
            G["embed.weight"] += dW
        elif self.tied:
            if "untied_head_grad" not in self.bugs:
                G["embed.weight"] += dW
        else:
            G["head.weight"] += dW
        dnf = dlogits @ W
        dx, dw = rms_bwd(dnf, P["norm.weight"], cache["cf"], outside)
        G["norm.weight"] += dw
        return dx

    def mlp_backward(self, P, l, c, dx, G):
        """mlp_forward's backward: dx the gradient with respect to its output, returns the
        one with respect to h (the residual included)."""
        p = "blocks.%d." % l
        # MLP: x_out = h + down(silu(gt) * u)
        G[p + "mlp.down.weight"] += dx.T @ c["z"]
        dz = dx @ P[p + "mlp.down.weight"]
        du = dz * c["gt"] * c["sg"]
        dgt = dz * c["u"] * c["sg"] * (1 + c["gt"] * (1 - c["sg"]))
        G[p + "mlp.gate.weight"] += dgt.T @ c["m"]
        G[p + "mlp.up.weight"] += du.T @ c["m"]
        dm = dgt @ P[p + "mlp.gate.weight"] + du @ P[p + "mlp.up.weight"]
        dh_n, dw = rms_bwd(dm, P[p + "mlp_norm.weight"], c["c2"], "eps_outside" in self.bugs)
        G[p + "mlp_norm.weight"] += dw
        return dx + dh_n

    def attn_backward(self, P, l, c, dh, G, phase):
        """attn_forward's backward: dh the gradient with respect to h, returns the one with
        respect to x (the residual included)."""
        H, K, hs = self.H, self.K, self.hs
        outside = "eps_outside" in self.bugs
        inter = "interleaved" in self.bugs
        p = "blocks.%d." % l
        # attention: h = x + o(y)
        G[p + "attn.o.weight"] += dh.T @ c["y"]
        dy = dh @ P[p + "attn.o.weight"]
        dqr = np.zeros_like(c["qr"])
        dkr = np.zeros_like(c["kr"])
        dv = np.zeros_like(c["v"])
        for g in range(K):
            kg, vg = c["kr"][:, g * hs:(g + 1) * hs], c["v"][:, g * hs:(g + 1) * hs]
            for j in self.readers[g]:
                pj = c["probs"][j]
                dyj = dy[:, j * hs:(j + 1) * hs]
                dv[:, g * hs:(g + 1) * hs] += pj.T @ dyj
                dp = dyj @ vg.T
                ds = pj * (dp - np.sum(dp * pj, axis=1, keepdims=True))
                ds /= F32(math.sqrt(hs))
                dqr[:, j * hs:(j + 1) * hs] = ds @ kg
                dkr[:, g * hs:(g + 1) * hs] += ds.T @ c["qr"][:, j * hs:(j + 1) * hs]
        back = np.conj(phase)       # the inverse rotation is the transpose
        dq = np.empty_like(dqr)
        dk = np.empty_like(dkr)
        for j in range(H):
            dq[:, j * hs:(j + 1) * hs] = rotate(dqr[:, j * hs:(j + 1) * hs], back, inter)
        for g in range(K):
            dk[:, g * hs:(g + 1) * hs] = rotate(dkr[:, g * hs:(g + 1) * hs], back, inter)
        G[p + "attn.q.weight"] += dq.T @ c["a"]
        G[p + "attn.k.weight"] += dk.T @ c["a"]
        G[p + "attn.v.weight"] += dv.T @ c["a"]
        da = dq @ P[p + "attn.q.weight"] + dk @ P[p + "attn.k.weight"] + dv @ P[p + "attn.v.weight"]
        dxa, dw = rms_bwd(da, P[p + "attn_norm.weight"], c["c1"], outside)
        G[p + "attn_norm.weight"] += dw
        return dh + dxa

    def begin_step(self, s):
        """Called by train before step s (moe_synth's model keeps per-step state)."""

    def end_step(self, s, out):
        """Called by train after step s's update; may record into the run's `out`."""

    def micro_batch(self, P, window, G, scale):
        """window (B,T+1). Adds scale * d(mean loss)/dP to G; returns (mean loss, logits)."""
        B, T1 = window.shape
        T = T1 - 1
        total, all_logits = 0.0, []
        for b in range(B):
            ids, tgt = window[b, :-1], window[b, 1:]
            logits, cache = self.seq_forward(P, ids)
            z = logits - logits.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            total += float(np.sum(lse - z[np.arange(T), tgt]))
            sm = np.exp(z - lse[:, None])
            sm[np.arange(T), tgt] -= 1
            self.seq_backward(P, cache, (sm / F32(B * T) * F32(scale)).astype(F32), G)
            all_logits.append(logits)
        return total / (B * T), np.stack(all_logits)


def lr_schedule(S, lr, warmup, min_lr):
    out = []
    for s in range(S):
        if s < warmup:
            out.append(lr * (s + 1) / warmup)
        else:
            frac = (s - warmup) / max(1, S - warmup)
            out.append(min_lr + (lr - min_lr) * (1 + math.cos(math.pi * frac)) / 2)
    return out


def step_gradients(model, P, tokens_s, out, s):
    """Step s's gradients summed over its micro-batches (tokens_s), and its loss; the
    first micro-batch's logits of step 0 go to out."""
    A = tokens_s.shape[0]
    G = {n: np.zeros_like(P[n]) for n in model.names()}
    loss = 0.0
    for a in range(A):
        l, logits = model.micro_batch(P, tokens_s[a], G, 1.0 / A)
        loss += l / A
        if s == 0 and a == 0:
            out["logits"] = logits
    return G, loss


def global_norm(G):
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in G.values()))


def record_and_clip(G, loss, out, s, grad_clip):
    """Record step s's loss and gradient norm (and step 0's gradients) in out, then clip G
    in place as shardlm does."""
    norm = global_norm(G)
    if s == 0:
        out["loss0"] = loss
        out["grads"] = {n: g.copy() for n, g in G.items()}
    out["losses"].append(loss)
    out["grad_norm"].append(norm)
    if grad_clip > 0 and norm > grad_clip:
        for n in G:
            G[n] *= F32(grad_clip / norm)


def train(model, P0, tokens, cfg):
    """The whole run in float32. Returns the dump's contents."""
    S = tokens.shape[0]
    names = model.names()
    P = {n: P0[n].copy() for n in names}
    m1 = {n: np.zeros_like(P[n]) for n in names}
    m2 = {n: np.zeros_like(P[n]) for n in names}
    lrs = lr_schedule(S, cfg["lr"], cfg["warmup_steps"], cfg["min_lr"])
    b1, b2, eps, wd = cfg["beta1"], cfg["beta2"], cfg["eps"], cfg["weight_decay"]
    out = {"losses": [], "grad_norm": [], "lr": lrs}
    for s in range(S):
        model.begin_step(s)
        G, loss = step_gradients(model, P, tokens[s], out, s)
        record_and_clip(G, loss, out, s, cfg["grad_clip"])
        t = s + 1
        for n in names:
            decayed = P[n].ndim == 2 or ("decay_norms" in model.bugs)
            if decayed:
                P[n] *= F32(1 - lrs[s] * wd)
            m1[n] = F32(b1) * m1[n] + F32(1 - b1) * G[n]
            m2[n] = F32(b2) * m2[n] + F32(1 - b2) * G[n] * G[n]
            mh = m1[n] / F32(1 - b1 ** t)
            vh = m2[n] / F32(1 - b2 ** t)
            P[n] -= F32(lrs[s]) * mh / (np.sqrt(vh) + F32(eps))
        model.end_step(s, out)
    out["final"] = P
    return out


# --------------------------------------------------------------------------- dumps

TRAIN_DEFAULTS = {"steps": 10, "warmup_steps": 3, "lr": 1e-2, "min_lr": 1e-3,
                  "weight_decay": 0.1, "grad_clip": 1.0, "beta1": 0.9, "beta2": 0.95,
                  "eps": 1e-4, "seed": 1234}


def write_step_records(f, r):
    """The records of a run r in the dump f besides tokens and parameters: step 0's logits and
    loss, and each step's loss, learning rate and gradient norm (docs/testing.md)."""
    f["step0/logits"] = r["logits"].astype(F32)
    f["step0/loss"] = np.float64(r["loss0"])
    f["losses"] = np.array(r["losses"], dtype=F32)
    f["lr"] = np.array(r["lr"], dtype=np.float64)
    f["grad_norm"] = np.array(r["grad_norm"], dtype=np.float64)


MODEL_INT_ATTRS = ("n_layer", "n_head", "d_model", "vocab_size", "seq_len", "micro_batch", "grad_accum", "steps",
                   "warmup_steps", "seed", "n_kv_head", "ffn_hidden", "tie_embeddings", "rope_original_max_pos")
MODEL_FLOAT_ATTRS = ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2", "eps", "norm_eps", "rope_theta",
                     "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor")


def write_model_attrs(f, cfg, dp=1, arch="llama", ints=(), floats=()):
    """The root attributes of a synthetic dump that shardlm writes for every run: the model
    and training settings of cfg (and the keys ints and floats after them), dp (grad_accum
    is then per rank), arch and rope_scaling - one fixed-length and one variable-length
    string: the oracle reads either."""
    for k in MODEL_INT_ATTRS + tuple(ints):
        f.attrs.create(k, int(cfg[k]) // (dp if k == "grad_accum" else 1), dtype=np.int64)
    f.attrs.create("dp", dp, dtype=np.int64)
    for k in MODEL_FLOAT_ATTRS + tuple(floats):
        f.attrs.create(k, float(cfg[k]), dtype=np.float64)
    f.attrs["arch"] = np.bytes_(arch)
    f.attrs["rope_scaling"] = str(cfg["rope_scaling"])


def write_dump(path, cfg, bugs=(), poke=None, noise=0.0):
    """A synthetic dump of cfg (model and training attributes) made with `bugs`.
    poke (name, flat index, fraction): that gradient element of step 0 moved by the
    fraction of the tensor's norm. noise: step-0 gradients that are exactly zero get
    normal noise of this fraction of the global gradient norm."""
    model = SynthLlama(cfg, bugs)
    rng = np.random.default_rng(cfg["seed"])
    P0 = model.init(cfg["seed"] + 1)
    S, A, B, T = cfg["steps"], cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"]
    tokens = rng.integers(0, cfg["vocab_size"], size=(S, A, B, T + 1)).astype(np.int32)
    r = train(model, P0, tokens, cfg)
    with h5py.File(path, "w") as f:
        write_model_attrs(f, cfg, arch="gpt2" if "wrong_arch" in bugs else "llama")
        f["tokens"] = tokens
        for n in model.names():
            f["init/" + n] = P0[n]
            g = r["grads"][n]
            if poke and n == poke[0]:
                g = g.copy()
                g.reshape(-1)[poke[1]] += F32(poke[2] * np.linalg.norm(g))
            if noise and not np.any(g):
                g = (noise * r["grad_norm"][0] / math.sqrt(g.size)
                     * rng.standard_normal(g.shape)).astype(F32)
            f["step0/grads/" + n] = g
            f["final/" + n] = r["final"][n]
        write_step_records(f, r)
    return r


# --------------------------------------------------------------------------- self-test

# Built-in shapes: every band of llama3 within the head, head sizes that are not powers
# of two, grouped, multi-query and plain multi-head attention, odd F and V, T = 1.
SHAPES = [
    dict(n_layer=2, n_head=6, n_kv_head=2, d_model=84, ffn_hidden=52, vocab_size=101, seq_len=16,
         micro_batch=2, grad_accum=1, tie_embeddings=1, norm_eps=1e-5, rope_theta=500.0,
         rope_scaling="llama3", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
         rope_original_max_pos=128),
    dict(n_layer=1, n_head=6, n_kv_head=3, d_model=60, ffn_hidden=52, vocab_size=37, seq_len=7,
         micro_batch=2, grad_accum=2, tie_embeddings=0, norm_eps=1e-3, rope_theta=10000.0,
         rope_scaling="none", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
         rope_original_max_pos=8192),
    dict(n_layer=2, n_head=2, n_kv_head=1, d_model=12, ffn_hidden=20, vocab_size=11, seq_len=1,
         micro_batch=3, grad_accum=1, tie_embeddings=1, norm_eps=1e-5, rope_theta=10000.0,
         rope_scaling="none", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
         rope_original_max_pos=8192),
]


def shape_from_args(a):
    """The shape the flags ask for, or None when no shape flag was given."""
    if a.n_layer is None:
        return None
    return dict(n_layer=a.n_layer, n_head=a.n_head, n_kv_head=a.n_kv_head, d_model=a.d_model,
                ffn_hidden=a.ffn_hidden, vocab_size=a.vocab, seq_len=a.seq_len, micro_batch=a.batch,
                grad_accum=a.accum, tie_embeddings=0 if a.untied else 1, norm_eps=a.norm_eps,
                rope_theta=a.rope_theta, rope_scaling=a.rope_scaling, rope_factor=a.rope_factor,
                rope_low_freq_factor=a.rope_low_freq_factor,
                rope_high_freq_factor=a.rope_high_freq_factor,
                rope_original_max_pos=a.rope_original_max_pos)


def applicable(bug, cfg):
    if bug == "zero_grad_noise":
        return cfg["seq_len"] == 1
    if bug == "modulo_kv":   # differs from j // (H/K) exactly when 1 < K < H
        return 1 < cfg["n_kv_head"] < cfg["n_head"]
    if bug == "no_llama3":
        return cfg["rope_scaling"] == "llama3"
    if bug == "untied_head_grad":
        return bool(cfg["tie_embeddings"])
    if bug == "head_is_embed":
        return not cfg["tie_embeddings"]
    if bug == "eps_default":
        return cfg["norm_eps"] != 1e-6
    if bug == "theta_default":
        return cfg["rope_theta"] != 10000.0 and cfg["seq_len"] > 1
    if bug in ("interleaved",):
        return cfg["seq_len"] > 1
    return True


def gradcheck_cases():
    """torch.autograd.gradcheck of the oracle's logits (float64, every parameter
    perturbed) on tiny odd shapes. Runs single-threaded: these are thousands of tiny
    forward passes, which threads only slow down."""
    import torch
    import llama_oracle as lo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(7)
    base = dict(n_layer=1, n_head=4, n_kv_head=2, d_model=24, ffn_hidden=10, vocab_size=7,
                seq_len=5, norm_eps=1e-3, rope_theta=50.0, rope_scaling="llama3", rope_factor=4.0,
                rope_low_freq_factor=1.0, rope_high_freq_factor=3.0, rope_original_max_pos=24,
                tie_embeddings=1)
    cases = [("tied, llama3, H=4 K=2 hs=6", base),
             ("untied, plain RoPE, 2 layers, H=3 K=1 hs=4", dict(
                 base, n_layer=2, n_head=3, n_kv_head=1, d_model=12, ffn_hidden=6,
                 rope_scaling="none", tie_embeddings=0)),
             ("T=1, H=2 K=2 hs=4", dict(base, n_head=2, n_kv_head=2, d_model=8, seq_len=1))]
    results = []
    try:
        for label, cfg in cases:
            names = lo.param_names(cfg["n_layer"], cfg["tie_embeddings"])
            shapes = lo.param_shapes(cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["n_kv_head"],
                                     cfg["ffn_hidden"], cfg["vocab_size"], cfg["tie_embeddings"])
            params = [torch.randn(shapes[n], dtype=torch.float64) * (0.5 if len(shapes[n]) == 2 else 0.2)
                      + (1.0 if len(shapes[n]) == 1 else 0.0) for n in names]
            params = [p.requires_grad_(True) for p in params]
            idx = torch.randint(0, cfg["vocab_size"], (2, cfg["seq_len"]))
            _, bands = lo.cfg_frequencies(cfg)

            def logits_fn(*ps):
                return lo.forward(dict(zip(names, ps)), idx, cfg)

            ok = torch.autograd.gradcheck(logits_fn, params, eps=1e-6, atol=1e-7, rtol=1e-5,
                                          raise_exception=False)
            nel = sum(p.numel() for p in params)
            results.append(("gradcheck %s (%d parameters; bands %s)" % (label, nel, "/".join(bands)), ok))
    finally:
        torch.set_num_threads(threads)
    return results


def direct_compare(cfg):
    """The oracle's float64 forward and autograd gradient against this file's float32
    forward and hand-written backward, on one micro-batch."""
    import torch
    import llama_oracle as lo
    from dump_oracle import rel_err
    full = dict(TRAIN_DEFAULTS, **cfg)
    m = SynthLlama(full)
    P = m.init(3)
    rng = np.random.default_rng(5)
    win = rng.integers(0, cfg["vocab_size"], size=(cfg["micro_batch"], cfg["seq_len"] + 1))
    G = {n: np.zeros_like(P[n]) for n in m.names()}
    loss, logits = m.micro_batch(P, win, G, 1.0)
    Pt = {n: torch.tensor(P[n], dtype=torch.float64, requires_grad=True) for n in m.names()}
    lt = lo.forward(Pt, torch.tensor(win[:, :-1], dtype=torch.int64), full)
    lo_loss = torch.nn.functional.cross_entropy(lt.reshape(-1, cfg["vocab_size"]),
                                                torch.tensor(win[:, 1:], dtype=torch.int64).reshape(-1))
    lo_loss.backward()
    e_logits = rel_err(logits, lt.detach().numpy())
    e_loss = rel_err(loss, lo_loss.item())
    e_grad = max(rel_err(G[n], Pt[n].grad.numpy()) for n in m.names())
    return e_logits, e_loss, e_grad


def self_test(a):
    """llama_oracle.py --self-test. Prints a table; returns the exit status."""
    import llama_oracle as lo
    import dump_oracle
    rows = []

    print("== gradcheck of the float64 oracle model")
    for label, ok in gradcheck_cases():
        print("  %s: %s" % (label, "ok" if ok else "FAIL"))
        rows.append((label, ok))

    given = shape_from_args(a)
    shapes = [given] if given else SHAPES
    keep = a.keep
    work = keep or tempfile.mkdtemp(prefix="llama_selftest_")
    os.makedirs(work, exist_ok=True)
    try:
        for si, shape in enumerate(shapes):
            cfg = dict(TRAIN_DEFAULTS, **shape)
            cfg.update(steps=a.steps, warmup_steps=a.warmup, lr=a.lr, min_lr=a.min_lr,
                       weight_decay=a.weight_decay, grad_clip=a.grad_clip, beta1=a.beta1,
                       beta2=a.beta2, eps=a.eps, seed=a.seed)
            tag = "L%d H%d K%d C%d F%d V%d T%d B%d A%d %s %s" % (
                cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_model"], cfg["ffn_hidden"],
                cfg["vocab_size"], cfg["seq_len"], cfg["micro_batch"], cfg["grad_accum"],
                "tied" if cfg["tie_embeddings"] else "untied", cfg["rope_scaling"])
            print("\n== shape %d: %s" % (si, tag))
            for line in lo.band_table(cfg["d_model"] // cfg["n_head"], cfg["rope_theta"],
                                      cfg["rope_scaling"], cfg["rope_factor"],
                                      cfg["rope_low_freq_factor"], cfg["rope_high_freq_factor"],
                                      cfg["rope_original_max_pos"], cfg["seq_len"]):
                print("  " + line)
            el, eloss, eg = direct_compare(cfg)
            ok = el < 1e-5 and eloss < 1e-5 and eg < 1e-4
            print("  direct: float32 numpy vs float64 oracle: logits %.2e, loss %.2e, worst grad %.2e %s"
                  % (el, eloss, eg, "ok" if ok else "FAIL"))
            rows.append(("shape %d direct comparison" % si, ok))
            want = {k: cfg[k] for k in dump_oracle.COMMON_INTS + dump_oracle.COMMON_FLOATS}
            want.update({k: cfg[k] for k in ("n_kv_head", "ffn_hidden", "tie_embeddings", "norm_eps",
                                             "rope_theta", "rope_scaling")})
            if cfg["rope_scaling"] == "llama3":
                want.update({k: cfg[k] for k in ("rope_factor", "rope_low_freq_factor",
                                                 "rope_high_freq_factor", "rope_original_max_pos")})
            want["grad_accum"] = cfg["grad_accum"]

            cases = [("correct", ())] + [(b, ()) for b in BENIGN if applicable(b, cfg)] + \
                [(b, (b,)) for b in BUGS if applicable(b, cfg)]
            for name, bugs in cases:
                path = os.path.join(work, "shape%d-%s.h5" % (si, name))
                poke, noise = None, 0.0
                if name == "poke":   # one element of a middle tensor, by 1% of its norm
                    poke, bugs = ("blocks.0.mlp.up.weight", 17, 0.01), ()
                if name == "zero_grad_noise":
                    noise = 1e-7
                write_dump(path, cfg, bugs, poke, noise)
                print("\n-- shape %d, dump '%s'%s" % (si, name, "" if name == "correct" else
                                                      ": " + (BUGS.get(name) or (BENIGN[name],))[0]))
                sys.stdout.flush()
                # dumps are checked as `--dump` does (configuration from the file), and the
                # correct one also against the request
                nf, rep = dump_oracle.check_dump_report(path, lo.Llama, None, a.rtol, a.verbose)
                failed = set(rep.failed())
                if name == "correct":
                    nf2, _ = dump_oracle.check_dump_report(path, lo.Llama, want, a.rtol, False)
                    ok = nf == 0 and nf2 == 0
                    verdict = "passes" if ok else "FAILS (it must pass)"
                elif name in BENIGN:
                    ok = nf == 0
                    verdict = "passes" if ok else "FAILS %s (it must pass)" % ",".join(sorted(failed))
                else:
                    must = BUGS[name][1]
                    ok = nf > 0 and bool(failed & must)
                    verdict = "fails %s%s" % (",".join(sorted(failed)) or "nothing",
                                              "" if ok else " (must fail one of %s)" % ",".join(sorted(must)))
                print(">> shape %d '%s': %s" % (si, name, verdict))
                rows.append(("shape %d dump '%s': %s" % (si, name, verdict), ok))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\nself-test summary:")
    for label, ok in rows:
        print("  %-4s %s" % ("ok" if ok else "FAIL", label))
    nfail = sum(1 for _, ok in rows if not ok)
    print("\n%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0
