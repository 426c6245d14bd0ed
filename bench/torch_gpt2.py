#!/usr/bin/env python3
"""torch_gpt2.py - the PyTorch baseline for bench/vs-pytorch.

The same GPT-2 and training step as `shardlm train`, written in PyTorch for the CPU:
learned position embeddings, pre-LN blocks, causal multi-head attention, GELU (tanh),
final LayerNorm, LM head tied to the token embedding, mean cross-entropy, global-norm
gradient clipping, AdamW (weight decay on the 2-D tensors only: wte, wpe and the four
matrices of each block) with linear warmup and cosine decay, all in fp32 (with --bf16,
the forward runs under CPU autocast to bfloat16, PyTorch's own mixed precision). The data are
uniformly random tokens of the given vocabulary, drawn each step.

It times whole steps (zero_grad, batch, forward, backward, clip, AdamW), skips the first
--warmup-steps of them, and prints one JSON object:
  {"step_ms":..,"tokens_per_s":..,"mfu":..,"peak_rss_mib":..,...}
with MFU computed as shardlm's log does: flops_per_token = 6*(12*L*C^2 + V*C) + 12*L*C*T,
divided by --peak-gflops.

Tuning applied so that the baseline is as fast as PyTorch 1.13 on a CPU reasonably gets
(measured on the benchmark machine; see docs/performance.md):
  * torch.set_num_threads(N) for ATen's OpenMP pool, set_num_interop_threads(1), and
    OpenBLAS (which does the matmuls: this torch build has BLAS_INFO=generic, i.e. the
    system libblas.so.3 = OpenBLAS) set to N threads both through the environment and
    openblas_set_num_threads().
  * glibc malloc is told (before the interpreter starts: the script re-executes itself
    once) not to return memory to the kernel between steps (mmap_max=0,
    trim_threshold/top_pad large). PyTorch frees and reallocates every activation each
    step; by default each large tensor is a fresh mmap, so every step pays page faults
    and kernel page zeroing for ~GiBs of activations. Disable with --no-malloc-tuning.
  * OMP_WAIT_POLICY=passive when the caller did not choose (shardlm does the same for
    itself): with OpenBLAS's own pthreads doing the matmuls, spinning OpenMP workers
    steal the cores between ops.
  * attention as one baddbmm (scale and additive causal mask fused into the QK^T
    product) + softmax + bmm, with q, k, v sliced out of the fused qkv projection (strided
    views for batch 1, one gather each otherwise); PyTorch 1.13 has no
    scaled_dot_product_attention.
  * native fused kernels where 1.13 has them: nn.LayerNorm, F.gelu(approximate='tanh'),
    F.cross_entropy (fused log-softmax + NLL), F.linear (bias fused into addmm).
  * AdamW in its single-tensor form (foreach=False): on this CPU the multi-tensor
    (foreach=True) form was ~10% slower per optimizer step (0.31 s vs 0.28 s for 124M
    parameters, 1 thread); --foreach selects it. No fused CPU AdamW exists in 1.13.
    zero_grad(set_to_none=True). Autograd anomaly detection is off (the default,
    enforced).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

MALLOC_ENV = {
    # glibc tunables: keep freed memory in the heap instead of unmapping it
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_TOP_PAD_": str(1 << 28),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="steps run first and excluded from timing (default 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peak-gflops", type=float, default=0.0,
                   help="sgemm peak for MFU (0: report mfu as null)")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--min-lr", type=float, default=6e-5)
    p.add_argument("--lr-warmup", type=int, default=2, help="learning-rate warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--foreach", action="store_true", help="AdamW with foreach=True")
    p.add_argument("--bf16", action="store_true",
                   help="forward and loss under torch.autocast('cpu', dtype=torch.bfloat16): the "
                        "matrix products in bf16 through oneDNN, fp32 weights and optimizer")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="leave glibc malloc at its defaults")
    p.add_argument("--verbose", action="store_true", help="print each step's time to stderr")
    return p.parse_args()


def maybe_reexec(args):
    """Set environment that must be in place before libgomp/OpenBLAS/glibc read it."""
    env = dict(os.environ)
    want = {"OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY", "passive"),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(args.threads)),
            "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", str(args.threads))}
    if not args.no_malloc_tuning:
        for k, v in MALLOC_ENV.items():
            want[k] = env.get(k, v)
    if env.get("TORCH_GPT2_REEXEC") == "1" or all(env.get(k) == v for k, v in want.items()):
        return
    env.update(want)
    env["TORCH_GPT2_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


ARGS = parse_args()
maybe_reexec(ARGS)

import ctypes  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def set_threads(n):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(ctypes.c_int(n))
            break
        except (OSError, AttributeError):
            continue


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


def lr_at(step, steps, warmup, lr, min_lr):
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(steps - warmup, 1)
    r = min((step - warmup) / span, 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def main(a):
    set_threads(a.threads)
    torch.autograd.set_detect_anomaly(False)
    torch.manual_seed(a.seed)
    L, NH, C, V, T, B = a.n_layer, a.n_head, a.d_model, a.vocab, a.seq_len, a.batch
    model = GPT(L, NH, C, V, T)
    model.train()
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=a.foreach)
    nparams = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(a.seed)
    times = []
    loss_v = float("nan")
    for step in range(a.steps):
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        batch = torch.randint(V, (B, T + 1), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(batch[:, :-1].contiguous(), batch[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        lr = lr_at(step, a.steps, a.lr_warmup, a.lr, a.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        loss_v = loss.item()
        dt = time.perf_counter() - t0
        if a.verbose:
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            print(f"step {step}: {dt * 1e3:.1f} ms loss {loss_v:.4f} "
                  f"user {ru1.ru_utime - ru0.ru_utime:.2f} s sys {ru1.ru_stime - ru0.ru_stime:.2f} s "
                  f"minflt {ru1.ru_minflt - ru0.ru_minflt}", file=sys.stderr)
        if step >= a.warmup_steps:
            times.append(dt)
    step_s = sum(times) / len(times) if times else float("nan")
    tps = B * T / step_s if times else float("nan")
    fpt = 6 * (12 * L * C * C + V * C) + 12 * L * C * T
    mfu = tps * fpt / (a.peak_gflops * 1e9) if a.peak_gflops > 0 and times else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"impl": "torch", "torch": torch.__version__, "params": nparams,
           "precision": "bf16 autocast" if a.bf16 else "fp32", "n_layer": L, "n_head": NH, "d_model": C, "vocab": V, "seq_len": T, "batch": B,
           "threads": torch.get_num_threads(), "steps": a.steps, "timed_steps": len(times),
           "step_ms": step_s * 1e3, "tokens_per_s": tps, "mfu": mfu,
           "peak_rss_mib": rss, "last_loss": loss_v,
           "step_ms_all": [round(t * 1e3, 2) for t in times]}
    print(json.dumps(out))


if __name__ == "__main__":
    with torch.autograd.set_grad_enabled(True):
        main(ARGS)
