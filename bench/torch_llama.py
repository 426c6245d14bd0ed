#!/usr/bin/env python3
"""torch_llama.py - the PyTorch Llama baseline for bench/vs-pytorch.

The same Llama as `shardlm train model.arch=llama`, written in PyTorch for the CPU from
the formulas, in fp32:
  * pre-norm blocks with RMSNorm, y = x / sqrt(mean(x^2) + eps) * w (PyTorch 1.13 has no
    RMSNorm module: written by hand, forward and backward), and a final RMSNorm;
  * rotary position embeddings on q and k, rotate-half order (dimension i of a head pairs
    with i + hs/2), angle t * theta^(-2i/hs) at position t;
  * grouped-query attention: n_kv_head key/value heads, query head h reading key/value
    head h // (n_head / n_kv_head); causal; no biases anywhere;
  * a SwiGLU MLP, down(silu(gate(x)) * up(x)), ffn_hidden wide (default shardlm's: 8/3
    d_model rounded up to a multiple of 256);
  * an LM head tied to the token embedding (shardlm's default, model.tie_embeddings=true),
    or its own with --untied;
  * shardlm's initialization: N(0, 0.02) for the embedding, head and projections,
    N(0, 0.02/sqrt(2L)) for the two projections into the residual stream (attention
    output and MLP down), norm weights 1.
The training step, the options, the environment and thread settings, the timing and the
JSON report are shared with bench/torch_gpt2.py (bench/torch_common.py, which also lists
the tuning they share). MFU uses shardlm's formula for this architecture:
flops_per_token = 6*(L*(2*C^2 + 2*C*KV + 3*C*F) + V*C) + 12*L*C*T, KV = n_kv_head*hs.

Model-specific tuning (PyTorch 1.13 has no scaled_dot_product_attention and no fused
RMSNorm, rotary or SwiGLU kernels; measured on the benchmark machine, docs/performance.md):
  * q, k and v come from one product with the three weights stacked (one matrix of
    (n_head + 2 n_kv_head) hs rows, as shardlm stores them), the gate and up projections
    from another; the parameters are the same.
  * the rotation runs once over q and k together (they are adjacent in that product's
    output), with cos/sin tables made once: x*cos + rotate_half(x)*sin as one addcmul.
  * attention (--attention, default grouped): each key/value head serves its group of
    G = n_head/n_kv_head query heads in one product: q is laid out as (B*KV, G*T, hs), so
    the scores of a group are one (G*T x T) baddbmm with the scale and an additive causal
    mask fused in, then softmax, then one bmm with v; k and v are never copied G times.
    --attention expand repeats k and v to n_head heads instead (the usual formulation).
  * RMSNorm as an autograd.Function with its backward written out (fewer passes and saved
    tensors than autograd through its ops); the rotation as one addcmul (both were the
    faster of the forms tried, by 20-25% and about 10%).
  * native kernels where 1.13 has them: F.silu, F.linear, F.cross_entropy (fused
    log-softmax + NLL), torch.rsqrt.
"""
import math

import torch_common


def add_args(p):
    p.set_defaults(n_layer=12, n_head=12, d_model=768, vocab=50257)
    p.add_argument("--n-kv-head", type=int, default=4)
    p.add_argument("--ffn-hidden", type=int, default=0,
                   help="MLP width (0: 8/3 d_model rounded up to a multiple of 256, shardlm's default)")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--untied", action="store_true", help="an LM head of its own (model.tie_embeddings=false)")
    p.add_argument("--attention", choices=("grouped", "expand"), default="grouped",
                   help="grouped: one product per key/value head and its query group; expand: k and v "
                        "repeated to every query head")
    return p


ARGS = torch_common.start(add_args(torch_common.parser(__doc__.split("\n")[0])))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def default_ffn_hidden(C):
    f = (8 * C + 2) // 3
    return (f + 255) // 256 * 256


class RMSNormFunction(torch.autograd.Function):
    """y = x * r * w with r = 1/sqrt(mean(x^2) + eps), and its backward written out:
    with xh = x * r, dx = r * (w dy - xh * mean(w dy xh)) and dw = sum over rows of dy xh.
    Autograd through the five ops of the forward keeps more tensors and runs more passes:
    this was 20-25% faster per forward and backward (768 wide, 1024 rows, 1 thread)."""

    @staticmethod
    def forward(ctx, x, w, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, w, r)
        return x * r * w

    @staticmethod
    def backward(ctx, dy):
        x, w, r = ctx.saved_tensors
        xh = x * r
        wdy = dy * w
        dx = r * (wdy - xh * (wdy * xh).mean(-1, keepdim=True))
        dw = (dy * xh).reshape(-1, x.shape[-1]).sum(0)
        return dx, dw, None


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return RMSNormFunction.apply(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, C, NH, NKV, T, theta, grouped):
        super().__init__()
        self.NH, self.NKV, self.hs, self.grouped = NH, NKV, C // NH, grouped
        hs, G = self.hs, NH // NKV
        self.qkv = nn.Linear(C, (NH + 2 * NKV) * hs, bias=False)
        self.o = nn.Linear(NH * hs, C, bias=False)
        # rotary tables in double, rounded once: (T, 1, hs), both halves of a head alike
        inv = theta ** (-torch.arange(0, hs // 2, dtype=torch.float64) * 2 / hs)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", torch.cat((ang.cos(), ang.cos()), -1).float()[:, None, :], persistent=False)
        self.register_buffer("sin", torch.cat((ang.sin(), ang.sin()), -1).float()[:, None, :], persistent=False)
        # additive causal mask, one (T, T) block per query head of a group (the benchmark's
        # sequences are always T long)
        mask = torch.full((T, T), float("-inf")).triu_(1)
        self.register_buffer("mask", mask.repeat(G, 1) if grouped else mask, persistent=False)

    def rope(self, x, T):
        # x (B, T, heads, hs) -> x*cos + rotate_half(x)*sin, rotate_half(x) = (-x2, x1)
        half = self.hs // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), -1)
        return torch.addcmul(x * self.cos[:T], rot, self.sin[:T])

    def forward(self, x):
        B, T, C = x.shape
        NH, NKV, hs = self.NH, self.NKV, self.hs
        G = NH // NKV
        qkv = self.qkv(x).view(B, T, NH + 2 * NKV, hs)
        qk = self.rope(qkv[:, :, :NH + NKV], T)  # q and k heads, rotated at once
        scale = 1.0 / math.sqrt(hs)
        if self.grouped:
            # (B*KV, G*T, hs): the G query heads of key/value head j one after the other
            q = qk[:, :, :NH].view(B, T, NKV, G, hs).permute(0, 2, 3, 1, 4).reshape(B * NKV, G * T, hs)
            k = qk[:, :, NH:].transpose(1, 2).reshape(B * NKV, T, hs)
            v = qkv[:, :, NH + NKV:].transpose(1, 2).reshape(B * NKV, T, hs)
            att = torch.baddbmm(self.mask, q, k.transpose(1, 2), beta=1.0, alpha=scale)
            att = F.softmax(att, dim=-1)
            y = torch.bmm(att, v).view(B, NKV, G, T, hs).permute(0, 3, 1, 2, 4).reshape(B, T, NH * hs)
        else:
            q = qk[:, :, :NH].transpose(1, 2).reshape(B * NH, T, hs)
            k = qk[:, :, NH:].transpose(1, 2)[:, :, None].expand(B, NKV, G, T, hs).reshape(B * NH, T, hs)
            v = qkv[:, :, NH + NKV:].transpose(1, 2)[:, :, None].expand(B, NKV, G, T, hs).reshape(B * NH, T, hs)
            att = torch.baddbmm(self.mask[:T, :T], q, k.transpose(1, 2), beta=1.0, alpha=scale)
            att = F.softmax(att, dim=-1)
            y = torch.bmm(att, v).view(B, NH, T, hs).transpose(1, 2).reshape(B, T, NH * hs)
        return self.o(y)


class MLP(nn.Module):
    def __init__(self, C, FH):
        super().__init__()
        self.FH = FH
        self.gate_up = nn.Linear(C, 2 * FH, bias=False)  # gate rows, then up rows
        self.down = nn.Linear(FH, C, bias=False)

    def forward(self, x):
        g, u = self.gate_up(x).split(self.FH, dim=-1)
        return self.down(F.silu(g) * u)


class Block(nn.Module):
    def __init__(self, a, FH):
        super().__init__()
        C = a.d_model
        self.attn_norm = RMSNorm(C, a.norm_eps)
        self.attn = Attention(C, a.n_head, a.n_kv_head, a.seq_len, a.rope_theta, a.attention == "grouped")
        self.mlp_norm = RMSNorm(C, a.norm_eps)
        self.mlp = MLP(C, FH)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, a, FH):
        super().__init__()
        L, C, V = a.n_layer, a.d_model, a.vocab
        self.embed = nn.Embedding(V, C)
        self.blocks = nn.ModuleList([Block(a, FH) for _ in range(L)])
        self.norm = RMSNorm(C, a.norm_eps)
        self.head = nn.Linear(C, V, bias=False) if a.untied else None
        for name, p in self.named_parameters():
            if p.dim() == 2:
                into_residual = name.endswith("attn.o.weight") or name.endswith("mlp.down.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L) if into_residual else 0.02)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        logits = F.linear(x, self.head.weight if self.head is not None else self.embed.weight)
        return F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))


def build(a):
    L, NH, NKV, C, V, T = a.n_layer, a.n_head, a.n_kv_head, a.d_model, a.vocab, a.seq_len
    if C % NH or NH % NKV or (C // NH) % 2:
        raise SystemExit("torch_llama.py: need n_head | d_model, n_kv_head | n_head and an even head size")
    FH = a.ffn_hidden if a.ffn_hidden > 0 else default_ffn_hidden(C)
    KV = NKV * (C // NH)
    fpt = 6 * (L * (2 * C * C + 2 * C * KV + 3 * C * FH) + V * C) + 12 * L * C * T
    fields = {"arch": "llama", "n_layer": L, "n_head": NH, "n_kv_head": NKV, "d_model": C, "ffn_hidden": FH,
              "tie_embeddings": not a.untied, "attention": a.attention}
    return Llama(a, FH), fpt, fields


if __name__ == "__main__":
    with torch.autograd.set_grad_enabled(True):
        torch_common.train(ARGS, lambda: build(ARGS))
