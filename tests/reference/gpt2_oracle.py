#!/usr/bin/python3
"""Independent float64 PyTorch oracle for shardlm's GPT-2 training step.

Runs `shardlm train` on a small configuration with data.train=synthetic and
log.dump=FILE, then rebuilds the model in PyTorch (float64), loads the dumped
initial weights and the dumped token stream, and checks:

  config     the dump's root attributes echo the requested configuration
  tokens     /tokens has the right shape and every id is in [0, V)
  logits     /step0/logits (micro-batch 0, initial weights)
  loss0      /step0/loss (mean CE over the whole step-0 global batch)
  grads      /step0/grads/<name> for every parameter (mean-loss gradient,
             accumulated over micro-batches, before clipping)
  lr         /lr against the warmup + cosine schedule computed here
  losses     /losses, every step, along our own float64 trajectory
  grad_norm  /grad_norm, every step (before clipping)
  final      /final/<name> after all steps (AdamW, two param groups, global
             grad-norm clipping, our schedule; with --set train.optimizer=adafactor,
             lamb or sgd that optimizer, from optim_oracle.py)

  zero_grad  the few parameter rows whose exact gradient is identically zero
             (key bias; with T == 1 all q/k rows of qkv), excluded from `final`

With mixture-of-experts blocks (--n-experts E and the other MoE flags, see moe_ref.py;
model.n_experts etc. in shardlm) the MLP of block l is the MoE layer when
(l + 1) % moe_every == 0, grads, grad_norm and final are of the whole objective
(cross-entropy plus the micro-batch average of each MoE layer's aux + z losses), and:

  margin     the smallest routing margin along the float64 run (k-th against (k+1)-th
             selection score of any token; with a capacity, an expert's last kept against
             first dropped probability) must be >= --moe-margin (1e-5) and 10x the float32
             replay's score differences: nearer a tie the comparison is not meaningful, the
             report says so and names a seed to try (--seed-search N tries seeds itself)
  moe_aux    /moe_aux_loss, every step (as losses; measured against the step's value, or a
  moe_z      tenth of the series' largest), and /moe_z_loss
  moe_bias   /moe_bias (steps, MoE layers, E) against the replayed bias balancing, as
             max|shardlm - oracle| / moe_bias_rate; required with --moe-balance bias
  drops      with --moe-expect-drops: the float64 run dropped some assignments

and the config check covers the MoE root attributes (a dump without them is dense). When
a step-0 check fails, step 0 is replayed with each of moe_ref.BUGS' mistakes and the one
the dump matches is named.

Error metric: normwise relative error ||a-b||_2 / max(||b||_2, tiny) per tensor
(|a-b|/|b| for scalars), b being the float64 oracle value. A check passes when
its largest error is <= --rtol, except:
  * losses, grad_norm, final (which follow a 10-step trajectory) also accept up to
    10x the error of a float32 replay of the same run (same model and optimizer in
    float32, same init and tokens). Adam divides by sqrt(v)+eps, so a gradient
    element near eps turns float32 rounding into an lr-sized step; on such runs
    no float32 code can meet rtol, and the oracle says so in a warning.
  * zero_grad passes when max|shardlm - oracle| <= 2 * sum(lr) (only Adam-normalised
    rounding noise moves those entries; other optimizers bound such steps otherwise,
    see optim_oracle.Stepper).
The default --eps is 1e-4 rather than torch's 1e-8 for this reason: with 1e-8,
some seeds put gradient elements near eps and a correct float32 implementation
drifts from float64 by ~1e-3 after 10 steps (the float32 replay does the same).
With 1e-4 the honest float32 error stays near 1e-6, and the eps placement
(outside sqrt, after bias correction) can actually be tested. Defaults lr 1e-2,
warmup 3 of 10 steps and grad_clip 1.0 make warmup, cosine decay and clipping all
active (the number of clipped steps is printed).

The last line printed is `N passed, M failed`; the exit status is 1 when anything
failed (or shardlm could not be run), else 0. A `note:` line flags checks that
passed but sit far above float32 rounding (more than rtol/10).

Example:
  /usr/bin/python3 tests/reference/gpt2_oracle.py --shardlm build/shardlm \
      --n-layer 2 --n-head 2 --d-model 12 --vocab 11 --seq-len 4 --batch 3 --accum 2
  /usr/bin/python3 tests/reference/gpt2_oracle.py --shardlm build/shardlm \
      --n-layer 2 --n-head 3 --d-model 24 --vocab 37 --seq-len 7 --batch 2 \
      --n-experts 6 --expert-top-k 2 --expert-hidden 37 --moe-aux-loss 0.1 --moe-z-loss 0.01 \
      --seed-search 10

--dump FILE skips running shardlm and checks an existing dump (the config is
then taken from the dump's attributes; the CLI shape flags are ignored). A dump whose
`arch` attribute names another architecture fails the config check.

This file holds the GPT-2 model; running shardlm, the reference training run, the
checks and the report are dump_oracle.py's, shared with llama_oracle.py.
"""
import math
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
import dump_oracle  # noqa: E402
import moe_ref  # noqa: E402
from dump_oracle import rel_err  # noqa: E402


# --------------------------------------------------------------------------- model

def param_names(n_layer, cfg=None):
    """cfg: the MoE attributes (moe_ref), when the model may have MoE blocks."""
    names = ["wte", "wpe"]
    for i in range(n_layer):
        p = "blocks.%d." % i
        names += [p + s for s in (
            "ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
            "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias")]
        if cfg is not None and moe_ref.is_moe_block(cfg, i):
            names += [n for n, _ in moe_ref.block_tensors(p, cfg, "gpt2")]
        else:
            names += [p + s for s in ("mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias")]
    names += ["lnf.weight", "lnf.bias"]
    return names


def param_shapes(L, C, V, T, cfg=None):
    s = {"wte": (V, C), "wpe": (T, C), "lnf.weight": (C,), "lnf.bias": (C,)}
    for i in range(L):
        p = "blocks.%d." % i
        s.update({
            p + "ln1.weight": (C,), p + "ln1.bias": (C,),
            p + "attn.qkv.weight": (3 * C, C), p + "attn.qkv.bias": (3 * C,),
            p + "attn.proj.weight": (C, C), p + "attn.proj.bias": (C,),
            p + "ln2.weight": (C,), p + "ln2.bias": (C,),
        })
        if cfg is not None and moe_ref.is_moe_block(cfg, i):
            s.update(moe_ref.block_tensors(p, cfg, "gpt2"))
        else:
            s.update({
                p + "mlp.fc.weight": (4 * C, C), p + "mlp.fc.bias": (4 * C,),
                p + "mlp.proj.weight": (C, 4 * C), p + "mlp.proj.bias": (C,),
            })
    return s


def layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)      # biased, as torch.nn.LayerNorm
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def linear(x, w, b):
    return x @ w.t() + b


def attention(x, P, pre, n_head):
    B, T, C = x.shape
    hs = C // n_head
    qkv = linear(x, P[pre + "attn.qkv.weight"], P[pre + "attn.qkv.bias"])
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    q = q.reshape(B, T, n_head, hs).transpose(1, 2)   # (B,H,T,hs)
    k = k.reshape(B, T, n_head, hs).transpose(1, 2)
    v = v.reshape(B, T, n_head, hs).transpose(1, 2)
    att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    att = att.masked_fill(mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    return linear(y, P[pre + "attn.proj.weight"], P[pre + "attn.proj.bias"])


def forward(P, idx, n_layer, n_head, cfg=None, moe=None):
    """idx (B,T) int64 -> logits (B,T,V). cfg: the MoE attributes, when the model may have
    MoE blocks (their MLP half is moe_ref's layer, `moe` the run's moe_ref.Tracker)."""
    B, T = idx.shape
    x = P["wte"][idx] + P["wpe"][:T].unsqueeze(0)
    for i in range(n_layer):
        pre = "blocks.%d." % i
        h = layernorm(x, P[pre + "ln1.weight"], P[pre + "ln1.bias"])
        x = x + attention(h, P, pre, n_head)
        h = layernorm(x, P[pre + "ln2.weight"], P[pre + "ln2.bias"])
        if cfg is not None and moe_ref.is_moe_block(cfg, i):
            x = x + moe_ref.mlp(h, P, pre, i, "gpt2", cfg, moe)
            continue
        h = gelu_tanh(linear(h, P[pre + "mlp.fc.weight"], P[pre + "mlp.fc.bias"]))
        x = x + linear(h, P[pre + "mlp.proj.weight"], P[pre + "mlp.proj.bias"])
    x = layernorm(x, P["lnf.weight"], P["lnf.bias"])
    return x @ P["wte"].t()


def zero_grad_rows(name, C, T):
    """Rows (axis 0) of a parameter whose exact gradient is identically zero, or None.
    The key bias shifts every score of a softmax row by the same q.b_k, so its gradient
    is 0; with T == 1 every softmax is over one element, so all of q and k are inert."""
    if not name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        return None
    rows = np.zeros(3 * C, dtype=bool)
    if T == 1:
        rows[:2 * C] = True
    elif name.endswith("bias"):
        rows[C:2 * C] = True
    else:
        return None
    return rows


def is_decayed(name, shape):
    return len(shape) == 2   # wte, wpe, every Linear weight


class GPT2(dump_oracle.Model):
    """GPT-2 as the dump checks see it (dumps without an `arch` attribute are GPT-2)."""
    arch = "gpt2"
    arch_required = False

    @classmethod
    def dense_hidden(cls, cfg):
        return 4 * cfg["d_model"]

    def param_names(self):
        return param_names(self.cfg["n_layer"], self.cfg)

    def param_shapes(self):
        c = self.cfg
        return param_shapes(c["n_layer"], c["d_model"], c["vocab_size"], c["seq_len"], c)

    def forward(self, P, idx, moe=None):
        return forward(P, idx, self.cfg["n_layer"], self.cfg["n_head"], self.cfg, moe)

    def is_decayed(self, name, shape):
        return is_decayed(name, shape)

    def zero_grad_rows(self, name):
        return zero_grad_rows(name, self.cfg["d_model"], self.cfg["seq_len"])

    @property
    def zero_grad_what(self):
        return "q,k rows of qkv (T=1)" if self.cfg["seq_len"] == 1 else "k rows of qkv.bias"

    def grad_hints(self, n, g, r):
        if not (n.endswith("attn.qkv.weight") or n.endswith("attn.qkv.bias")):
            return []
        C = self.cfg["d_model"]
        parts = ["q", "k", "v"]
        sub = ["%s %.1e" % (parts[j], rel_err(g[j * C:(j + 1) * C], r[j * C:(j + 1) * C]))
               for j in range(3)]
        return ["per q/k/v: " + ", ".join(sub)]

    def grad_footer(self, f):
        if "step0/grads/wte" in f:
            return ["(note: wte is tied; its gradient must include both the embedding and the "
                    "lm-head contribution)"]
        return []


if __name__ == "__main__":
    dump_oracle.main(GPT2, __doc__)
