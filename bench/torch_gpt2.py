#!/usr/bin/env python3
"""torch_gpt2.py - the PyTorch GPT-2 baseline for bench/vs-pytorch.

The same GPT-2 as `shardlm train` (model.arch=gpt2), written in PyTorch for the CPU:
learned position embeddings, pre-LN blocks, causal multi-head attention, GELU (tanh),
final LayerNorm, LM head tied to the token embedding. The training step, the options,
the environment and thread settings, the timing and the JSON report are shared with
bench/torch_llama.py (bench/torch_common.py, which also lists the tuning they share).
MFU uses flops_per_token = 6*(12*L*C^2 + V*C) + 12*L*C*T, as shardlm's log does.

Model-specific tuning:
  * attention as one baddbmm (scale and additive causal mask fused into the QK^T
    product) + softmax + bmm, with q, k, v sliced out of the fused qkv projection (strided
    views for batch 1, one gather each otherwise); PyTorch 1.13 has no
    scaled_dot_product_attention.
  * native fused kernels where 1.13 has them: nn.LayerNorm, F.gelu(approximate='tanh'),
    F.cross_entropy (fused log-softmax + NLL), F.linear (bias fused into addmm).
"""
import math

import torch_common

ARGS = torch_common.start(torch_common.parser(__doc__.split("\n")[0]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class CausalSelfAttention(nn.Module):
    def __init__(self, C, NH, T):
        super().__init__()
        self.NH, self.hs = NH, C // NH
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        mask = torch.full((T, T), float("-inf")).triu_(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        NH, hs = self.NH, self.hs
        qkv = self.qkv(x).view(B, T, 3, NH, hs)
        # (B*NH, T, hs): strided views (row stride 3C) when B == 1, else one copy each
        q = qkv[:, :, 0].transpose(1, 2).reshape(B * NH, T, hs)
        k = qkv[:, :, 1].transpose(1, 2).reshape(B * NH, T, hs)
        v = qkv[:, :, 2].transpose(1, 2).reshape(B * NH, T, hs)
        att = torch.baddbmm(self.mask[:T, :T], q, k.transpose(1, 2), beta=1.0,
                            alpha=1.0 / math.sqrt(hs))
        att = F.softmax(att, dim=-1)
        y = torch.bmm(att, v).view(B, NH, T, hs).transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.fc = nn.Linear(C, 4 * C)
        self.proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C, NH, T):
        super().__init__()
        self.ln1 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention(C, NH, T)
        self.ln2 = nn.LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, T):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block(C, NH, T) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.register_buffer("pos", torch.arange(T), persistent=False)
        # GPT-2 initialization
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(self.pos[:T])
        for blk in self.blocks:
            x = blk(x)
        x = self.lnf(x)
        logits = F.linear(x, self.wte.weight)  # tied LM head
        return F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))


def build(a):
    L, NH, C, V, T = a.n_layer, a.n_head, a.d_model, a.vocab, a.seq_len
    fpt = 6 * (12 * L * C * C + V * C) + 12 * L * C * T
    return GPT(L, NH, C, V, T), fpt, {"arch": "gpt2", "n_layer": L, "n_head": NH, "d_model": C}


if __name__ == "__main__":
    with torch.autograd.set_grad_enabled(True):
        torch_common.train(ARGS, lambda: build(ARGS))
