#!/usr/bin/python3
"""Independent float64 PyTorch oracle for shardlm's Llama training step (model.arch=llama).

The Llama counterpart of gpt2_oracle.py: it runs `shardlm train` with model.arch=llama,
data.train=synthetic and log.dump=FILE, rebuilds the model here in float64 from the
dumped initial weights and tokens, and makes the same checks with the same tolerances
(config, tokens, logits, loss0, grads, lr, losses, grad_norm, final, zero_grad; see
gpt2_oracle.py and dump_oracle.py, which holds the shared machinery).

The model, written from its formulas (C = d_model, H = n_head, K = n_kv_head,
hs = C/H, F = ffn_hidden, V = vocab_size):

  x = embed[tokens]
  per block:  a = rms1(x)
              h = x + o(attention(rope(q(a)), rope(k(a)), v(a)))
              m = rms2(h)
              x = h + down(silu(gate(m)) * up(m))
  logits = head(rms_f(x))      head.weight, or embed.weight when tie_embeddings
  loss   = mean cross-entropy

  rms(x) = x / sqrt(mean(x^2) + norm_eps) * w
  attention: causal, scores scaled by 1/sqrt(hs), grouped query: query head j reads
      kv head j // (H/K)
  rope (rotate-half): f_i = theta^(-2i/hs) for i < hs/2; at position p dimension i
      pairs with i + hs/2:  x_i' = x_i cos(p f_i) - x_{i+hs/2} sin(p f_i),
                            x_{i+hs/2}' = x_{i+hs/2} cos(p f_i) + x_i sin(p f_i)
  llama3 frequency scaling (rope_scaling = llama3): wavelength w = 2 pi / f against
      low_wl = original_max_pos / low_freq_factor and
      high_wl = original_max_pos / high_freq_factor:
      w < high_wl keeps f (high band); w > low_wl gives f / factor (low band); between,
      s = (original_max_pos / w - low_freq_factor) / (high_freq_factor - low_freq_factor)
      and f' = (1 - s) f / factor + s f (medium band)
  AdamW weight decay applies to the 2-D tensors only (not to the norm weights).

Parameter names and global shapes, as in the dump:
  embed.weight (V,C); blocks.<l>.attn_norm.weight (C), .attn.q.weight (H*hs,C),
  .attn.k.weight (K*hs,C), .attn.v.weight (K*hs,C), .attn.o.weight (C,H*hs),
  .mlp_norm.weight (C), .mlp.gate.weight (F,C), .mlp.up.weight (F,C), .mlp.down.weight (C,F);
  norm.weight (C); head.weight (V,C) only when untied.

Mixture-of-experts blocks (--n-experts E ...): as in gpt2_oracle.py, with SwiGLU experts
blocks.<l>.moe.experts.<e>.gate.weight (Fe,C), .up.weight (Fe,C), .down.weight (C,Fe) and
the router blocks.<l>.moe.router.weight (E,C) in place of the block's mlp.* tensors.

The dump's root attributes are GPT-2's plus arch ("llama"), n_kv_head, ffn_hidden,
tie_embeddings (0/1), norm_eps, rope_theta, rope_scaling ("none" | "llama3"),
rope_factor, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_pos (the
last four may be absent when rope_scaling is none).

Exact zero gradients: with T == 1 every softmax is over one element, so attn.q.weight
and attn.k.weight have zero gradient. Their step-0 gradients are then measured against
the norm of the whole step-0 gradient (they have no norm of their own), and their final
values as `zero_grad` (within 2 x the sum of learning rates of the oracle's).

When the logits fail, the dump is also compared with models that each make one plausible
mistake (interleaved RoPE pairs, no llama3 scaling, kv head j % K, eps outside the sqrt,
...) and the one it matches is named.

Modes:
  run shardlm and check   the shape flags, e.g.
      /usr/bin/python3 tests/reference/llama_oracle.py --shardlm build/shardlm \\
          --n-layer 2 --n-head 6 --n-kv-head 2 --d-model 84 --ffn-hidden 52 --vocab 101 \\
          --seq-len 16 --batch 2 --rope-theta 500 --rope-scaling llama3 --rope-factor 8 \\
          --rope-low-freq-factor 1 --rope-high-freq-factor 4 --rope-original-max-pos 128
  --dump FILE             check an existing dump (configuration from its attributes)
  --bands                 print each RoPE frequency's llama3 band for --head-size (or
                          --d-model / --n-head) and the --rope-* flags, then exit
  --self-test [--keep DIR]
                          validate this oracle without shardlm: gradcheck of the float64
                          model, then synthetic dumps from llama_synth.py's second
                          implementation (numpy, float32, hand-written backward), which
                          must pass, and deliberately broken ones, which must fail
                          (shapes from the flags given, else a built-in set)

The last line printed is `N passed, M failed`; the exit status is 1 when anything
failed, else 0.
"""
import math
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
import dump_oracle  # noqa: E402
import moe_ref  # noqa: E402
from dump_oracle import rel_err  # noqa: E402

SCALINGS = ("none", "llama3")
LLAMA3_DEFAULTS = {"rope_factor": 8.0, "rope_low_freq_factor": 1.0,
                   "rope_high_freq_factor": 4.0, "rope_original_max_pos": 8192}


# --------------------------------------------------------------------------- RoPE

def rope_frequencies(hs, theta, scaling="none", factor=8.0, low_freq_factor=1.0,
                     high_freq_factor=4.0, original_max_pos=8192):
    """The hs/2 rotary frequencies (float64 numpy) and, per frequency, its llama3 band:
    'high' (kept), 'medium' (smoothed), 'low' (divided by factor), or '-' without scaling."""
    i = np.arange(hs // 2, dtype=np.float64)
    f = float(theta) ** (-2.0 * i / hs)
    if scaling == "none":
        return f, ["-"] * len(f)
    if scaling != "llama3":
        raise ValueError("rope_scaling %r is not none or llama3" % scaling)
    low_wl = original_max_pos / low_freq_factor
    high_wl = original_max_pos / high_freq_factor
    out, bands = f.copy(), []
    for j, fj in enumerate(f):
        w = 2.0 * math.pi / fj
        if w < high_wl:
            bands.append("high")
        elif w > low_wl:
            out[j] = fj / factor
            bands.append("low")
        else:
            s = (original_max_pos / w - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out[j] = (1.0 - s) * fj / factor + s * fj
            bands.append("medium")
    return out, bands


def cfg_frequencies(cfg, scaling=None):
    hs = cfg["d_model"] // cfg["n_head"]
    return rope_frequencies(hs, cfg["rope_theta"], cfg["rope_scaling"] if scaling is None else scaling,
                            cfg["rope_factor"], cfg["rope_low_freq_factor"],
                            cfg["rope_high_freq_factor"], cfg["rope_original_max_pos"])


def band_table(hs, theta, scaling, factor, low, high, orig, T=None):
    """Lines describing each frequency: index, base f, wavelength, band, scaled f."""
    base, _ = rope_frequencies(hs, theta)
    f, bands = rope_frequencies(hs, theta, scaling, factor, low, high, orig)
    lines = ["head size %d, theta %g, %s" % (hs, theta, "no scaling" if scaling == "none" else
             "llama3: factor %g, low_freq_factor %g, high_freq_factor %g, original_max_pos %d "
             "(high band: wavelength < %g, low band: > %g)"
             % (factor, low, high, orig, orig / high, orig / low))]
    lines.append("%3s  %-12s %-12s %-7s %-12s %s" % ("i", "f", "wavelength", "band", "scaled f",
                                                   "max angle" if T else ""))
    for j in range(len(f)):
        lines.append("%3d  %-12.6g %-12.6g %-7s %-12.6g %s" % (
            j, base[j], 2 * math.pi / base[j], bands[j], f[j],
            "%.4g rad at position %d" % (f[j] * (T - 1), T - 1) if T else ""))
    if scaling == "llama3":
        n = {b: bands.count(b) for b in ("high", "medium", "low")}
        lines.append("bands: %d high, %d medium, %d low%s" % (
            n["high"], n["medium"], n["low"],
            "" if all(n.values()) else "  (not all three bands occur)"))
    return lines


def rope_apply(x, cos, sin, pairing="half"):
    """x (..., T, hs), cos/sin (T, hs/2). pairing 'half': dimension i with i + hs/2
    (the convention checked); 'interleaved': 2i with 2i+1 (a mistake, for diagnostics)."""
    if pairing == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


# --------------------------------------------------------------------------- model

def param_names(n_layer, tied, cfg=None):
    """cfg: the MoE attributes (moe_ref), when the model may have MoE blocks."""
    names = ["embed.weight"]
    for i in range(n_layer):
        p = "blocks.%d." % i
        names += [p + s for s in (
            "attn_norm.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight",
            "attn.o.weight", "mlp_norm.weight")]
        if cfg is not None and moe_ref.is_moe_block(cfg, i):
            names += [n for n, _ in moe_ref.block_tensors(p, cfg, "llama")]
        else:
            names += [p + s for s in ("mlp.gate.weight", "mlp.up.weight", "mlp.down.weight")]
    names += ["norm.weight"]
    if not tied:
        names += ["head.weight"]
    return names


def param_shapes(L, C, H, K, Fh, V, tied, cfg=None):
    hs = C // H
    s = {"embed.weight": (V, C), "norm.weight": (C,)}
    if not tied:
        s["head.weight"] = (V, C)
    for i in range(L):
        p = "blocks.%d." % i
        s.update({
            p + "attn_norm.weight": (C,), p + "attn.q.weight": (H * hs, C),
            p + "attn.k.weight": (K * hs, C), p + "attn.v.weight": (K * hs, C),
            p + "attn.o.weight": (C, H * hs), p + "mlp_norm.weight": (C,),
        })
        if cfg is not None and moe_ref.is_moe_block(cfg, i):
            s.update(moe_ref.block_tensors(p, cfg, "llama"))
        else:
            s.update({p + "mlp.gate.weight": (Fh, C), p + "mlp.up.weight": (Fh, C),
                      p + "mlp.down.weight": (C, Fh)})
    return s


def rms_norm(x, w, eps, eps_outside=False):
    ms = (x * x).mean(-1, keepdim=True)
    if eps_outside:   # a mistake, for diagnostics
        return x / (torch.sqrt(ms) + eps) * w
    return x / torch.sqrt(ms + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


# The checked model has every option at its first value; the others are plausible
# implementation mistakes, used only to name what a failing dump matches.
OPTIONS = {"pairing": ("half", "interleaved"), "rope": ("on", "off"),
           "scaling": ("as configured", "none", "llama3"), "kv": ("block", "modulo"),
           "eps": ("inside", "outside"), "freq": ("2i/hs", "i/hs"), "mlp": ("silu(gate)*up", "silu(up)*gate"),
           "scale": ("1/sqrt(hs)", "1/sqrt(C)")}


def forward(P, idx, cfg, opt=None, moe=None):
    """idx (B,T) int64 -> logits (B,T,V), in the dtype of P. opt: OPTIONS overrides. The
    MLP half of an MoE block (moe_ref.is_moe_block(cfg, l)) is moe_ref's layer; moe: the
    run's moe_ref.Tracker."""
    o = {k: v[0] for k, v in OPTIONS.items()}
    o.update(opt or {})
    B, T = idx.shape
    L, H, K, C = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_model"]
    hs = C // H
    eps = cfg["norm_eps"]
    dt = P["embed.weight"].dtype
    scaling = cfg["rope_scaling"] if o["scaling"] == "as configured" else o["scaling"]
    f, _ = cfg_frequencies(cfg, scaling)
    if o["freq"] == "i/hs":
        f = float(cfg["rope_theta"]) ** (-np.arange(hs // 2, dtype=np.float64) / hs)
    ang = np.outer(np.arange(T, dtype=np.float64), f)      # (T, hs/2), in float64
    cos = torch.tensor(np.cos(ang), dtype=dt)
    sin = torch.tensor(np.sin(ang), dtype=dt)
    group = H // K
    kv_of = torch.arange(H) // group if o["kv"] == "block" else torch.arange(H) % K
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scale = 1.0 / math.sqrt(hs if o["scale"] == "1/sqrt(hs)" else C)
    eps_out = o["eps"] == "outside"

    x = P["embed.weight"][idx]
    for i in range(L):
        pre = "blocks.%d." % i
        a = rms_norm(x, P[pre + "attn_norm.weight"], eps, eps_out)
        q = (a @ P[pre + "attn.q.weight"].t()).reshape(B, T, H, hs).transpose(1, 2)
        k = (a @ P[pre + "attn.k.weight"].t()).reshape(B, T, K, hs).transpose(1, 2)
        v = (a @ P[pre + "attn.v.weight"].t()).reshape(B, T, K, hs).transpose(1, 2)
        if o["rope"] == "on":
            q = rope_apply(q, cos, sin, o["pairing"])
            k = rope_apply(k, cos, sin, o["pairing"])
        k, v = k[:, kv_of], v[:, kv_of]                     # (B,H,T,hs)
        att = (q @ k.transpose(-1, -2)) * scale
        att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, H * hs)
        h = x + y @ P[pre + "attn.o.weight"].t()
        m = rms_norm(h, P[pre + "mlp_norm.weight"], eps, eps_out)
        if moe_ref.is_moe_block(cfg, i):
            x = h + moe_ref.mlp(m, P, pre, i, "llama", cfg, moe)
            continue
        g = m @ P[pre + "mlp.gate.weight"].t()
        u = m @ P[pre + "mlp.up.weight"].t()
        z = silu(g) * u if o["mlp"] == "silu(gate)*up" else silu(u) * g
        x = h + z @ P[pre + "mlp.down.weight"].t()
    x = rms_norm(x, P["norm.weight"], eps, eps_out)
    head = P["embed.weight"] if cfg["tie_embeddings"] else P["head.weight"]
    return x @ head.t()


class Llama(dump_oracle.Model):
    arch = "llama"
    int_attrs = ("n_kv_head", "ffn_hidden", "tie_embeddings", "rope_original_max_pos")
    float_attrs = ("norm_eps", "rope_theta", "rope_factor", "rope_low_freq_factor",
                   "rope_high_freq_factor")
    str_attrs = ("rope_scaling",)

    def __init__(self, cfg, opt=None):
        super().__init__(cfg)
        self.opt = opt or {}

    # ---- CLI
    @classmethod
    def add_args(cls, ap):
        g = ap.add_argument_group("llama")
        g.add_argument("--n-kv-head", type=int, help="key/value heads K (divides --n-head)")
        g.add_argument("--ffn-hidden", type=int, help="MLP hidden width F")
        g.add_argument("--untied", action="store_true", help="a separate head.weight (default: tied)")
        g.add_argument("--norm-eps", type=float, default=1e-5)
        g.add_argument("--rope-theta", type=float, default=10000.0)
        g.add_argument("--rope-scaling", choices=SCALINGS, default="none")
        g.add_argument("--rope-factor", type=float, default=LLAMA3_DEFAULTS["rope_factor"])
        g.add_argument("--rope-low-freq-factor", type=float,
                       default=LLAMA3_DEFAULTS["rope_low_freq_factor"])
        g.add_argument("--rope-high-freq-factor", type=float,
                       default=LLAMA3_DEFAULTS["rope_high_freq_factor"])
        g.add_argument("--rope-original-max-pos", type=int,
                       default=LLAMA3_DEFAULTS["rope_original_max_pos"])
        g.add_argument("--bands", action="store_true",
                       help="print the llama3 band of each RoPE frequency and exit")
        g.add_argument("--head-size", type=int, help="for --bands (default d_model / n_head)")
        g.add_argument("--self-test", action="store_true",
                       help="validate the oracle on synthetic dumps (no shardlm needed)")
        g.add_argument("--keep", metavar="DIR", help="--self-test: keep the synthetic dumps here")

    @classmethod
    def special_mode(cls, a):
        if a.bands:
            hs = a.head_size or (a.d_model // a.n_head if a.d_model and a.n_head else None)
            if not hs:
                sys.exit("--bands needs --head-size, or --d-model and --n-head")
            for line in band_table(hs, a.rope_theta, a.rope_scaling, a.rope_factor,
                                   a.rope_low_freq_factor, a.rope_high_freq_factor,
                                   a.rope_original_max_pos, a.seq_len):
                print(line)
            return 0
        if a.self_test:
            import llama_synth
            return llama_synth.self_test(a)
        return None

    @classmethod
    def check_args(cls, ap, a):
        if a.n_kv_head is None or a.ffn_hidden is None:
            ap.error("required: --n-kv-head --ffn-hidden")
        if a.n_head % a.n_kv_head:
            ap.error("--n-kv-head must divide --n-head")
        if (a.d_model // a.n_head) % 2:
            ap.error("the head size d_model / n_head must be even (RoPE pairs dimensions)")

    @classmethod
    def want_from_args(cls, a):
        w = {"n_kv_head": a.n_kv_head, "ffn_hidden": a.ffn_hidden,
             "tie_embeddings": 0 if a.untied else 1, "norm_eps": a.norm_eps,
             "rope_theta": a.rope_theta, "rope_scaling": a.rope_scaling}
        if a.rope_scaling == "llama3":
            w.update({"rope_factor": a.rope_factor, "rope_low_freq_factor": a.rope_low_freq_factor,
                      "rope_high_freq_factor": a.rope_high_freq_factor,
                      "rope_original_max_pos": a.rope_original_max_pos})
        return w

    @classmethod
    def leading_settings(cls, a):
        return ["model.arch=llama"]

    @classmethod
    def settings_from_args(cls, a):
        s = ["model.n_kv_head=%d" % a.n_kv_head,
             "model.ffn_hidden=%d" % a.ffn_hidden,
             "model.tie_embeddings=%s" % ("false" if a.untied else "true"),
             "model.norm_eps=%r" % a.norm_eps, "model.rope_theta=%r" % a.rope_theta,
             "model.rope_scaling=%s" % a.rope_scaling]
        if a.rope_scaling == "llama3":
            s += ["model.rope_factor=%r" % a.rope_factor,
                  "model.rope_low_freq_factor=%r" % a.rope_low_freq_factor,
                  "model.rope_high_freq_factor=%r" % a.rope_high_freq_factor,
                  "model.rope_original_max_pos=%d" % a.rope_original_max_pos]
        return s

    @classmethod
    def optional_attrs(cls, cfg):
        if cfg.get("rope_scaling") == "llama3":
            return ()
        return tuple(LLAMA3_DEFAULTS)

    @classmethod
    def cfg_defaults(cls, cfg):
        for k, v in LLAMA3_DEFAULTS.items():
            cfg.setdefault(k, v)

    @classmethod
    def config_problems(cls, cfg):
        p = []
        H, K, C = cfg["n_head"], cfg["n_kv_head"], cfg["d_model"]
        if cfg["rope_scaling"] not in SCALINGS:
            p.append("rope_scaling=%s is not one of %s" % (cfg["rope_scaling"], ", ".join(SCALINGS)))
        if K < 1 or H % K:
            p.append("n_kv_head=%d does not divide n_head=%d" % (K, H))
        if C % H or (C // H) % 2:
            p.append("head size d_model/n_head = %d/%d is not an even integer" % (C, H))
        if cfg["tie_embeddings"] not in (0, 1):
            p.append("tie_embeddings=%d is not 0 or 1" % cfg["tie_embeddings"])
        if cfg["rope_scaling"] == "llama3" and not (
                cfg["rope_high_freq_factor"] > cfg["rope_low_freq_factor"] > 0 and cfg["rope_factor"] > 0):
            p.append("llama3 scaling needs high_freq_factor > low_freq_factor > 0 and factor > 0")
        return p

    # ---- model
    @classmethod
    def dense_hidden(cls, cfg):
        return cfg["ffn_hidden"]

    def param_names(self):
        return param_names(self.cfg["n_layer"], self.cfg["tie_embeddings"], self.cfg)

    def param_shapes(self):
        c = self.cfg
        return param_shapes(c["n_layer"], c["d_model"], c["n_head"], c["n_kv_head"],
                            c["ffn_hidden"], c["vocab_size"], c["tie_embeddings"], c)

    def forward(self, P, idx, moe=None):
        return forward(P, idx, self.cfg, self.opt, moe)

    def zero_grad_rows(self, name):
        """With T == 1 each softmax has one element: q and k have no influence."""
        if self.cfg["seq_len"] == 1 and name.endswith(("attn.q.weight", "attn.k.weight")):
            return np.ones(self.param_shapes()[name][0], dtype=bool)
        return None

    zero_grad_what = "attn.q, attn.k (T=1)"

    def describe(self):
        c = self.cfg
        hs = c["d_model"] // c["n_head"]
        line = "llama: K=%d hs=%d F=%d %s norm_eps=%g rope theta=%g scaling=%s" % (
            c["n_kv_head"], hs, c["ffn_hidden"], "tied" if c["tie_embeddings"] else "untied",
            c["norm_eps"], c["rope_theta"], c["rope_scaling"])
        if c["rope_scaling"] == "llama3":
            _, bands = cfg_frequencies(c)
            line += " (factor %g, low %g, high %g, original_max_pos %d; bands %d/%d/%d high/medium/low)" % (
                c["rope_factor"], c["rope_low_freq_factor"], c["rope_high_freq_factor"],
                c["rope_original_max_pos"], bands.count("high"), bands.count("medium"),
                bands.count("low"))
        return line

    # ---- diagnostics
    def grad_hints(self, n, g, r):
        c = self.cfg
        hs = c["d_model"] // c["n_head"]
        if n.endswith(("attn.q.weight", "attn.k.weight", "attn.v.weight")):
            nh = g.shape[0] // hs
            sub = ["%d %.1e" % (j, rel_err(g[j * hs:(j + 1) * hs], r[j * hs:(j + 1) * hs]))
                   for j in range(nh)]
            return ["per head: " + ", ".join(sub)]
        if n.endswith("attn.o.weight"):
            nh = g.shape[1] // hs
            sub = ["%d %.1e" % (j, rel_err(g[:, j * hs:(j + 1) * hs], r[:, j * hs:(j + 1) * hs]))
                   for j in range(nh)]
            return ["per head (columns): " + ", ".join(sub)]
        return []

    def grad_footer(self, f):
        if self.cfg["tie_embeddings"]:
            return ["(note: embed.weight is tied; its gradient must include both the embedding "
                    "and the head contribution)"]
        return []

    def variants(self):
        c = self.cfg
        H, K = c["n_head"], c["n_kv_head"]
        v = [("RoPE pairs (2i, 2i+1) instead of (i, i+hs/2)", {"pairing": "interleaved"}),
             ("no RoPE", {"rope": "off"}),
             ("RoPE frequencies theta^(-i/hs)", {"freq": "i/hs"}),
             ("RMSNorm x / (sqrt(mean x^2) + eps)", {"eps": "outside"}),
             ("silu(up) * gate", {"mlp": "silu(up)*gate"}),
             ("scores scaled by 1/sqrt(d_model)", {"scale": "1/sqrt(C)"})]
        if c["rope_scaling"] == "llama3":
            v.append(("no llama3 frequency scaling", {"scaling": "none"}))
        else:
            v.append(("llama3 scaling although rope_scaling=none (rope_* attributes)",
                      {"scaling": "llama3"}))
        if 1 < K < H:
            v.append(("query head j reads kv head j % K (not j // (H/K))", {"kv": "modulo"}))
        if c["tie_embeddings"] == 0:
            v.append(("head = embed.weight although untied", "tied"))
        out = []
        for label, opt in v:
            if opt == "tied":
                out.append((label, Llama(dict(c, tie_embeddings=1))))
            else:
                out.append((label, Llama(c, opt)))
        return out


if __name__ == "__main__":
    dump_oracle.main(Llama, __doc__)
