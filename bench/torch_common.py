"""torch_common.py - what the PyTorch baselines of bench/vs-pytorch share.

bench/torch_gpt2.py and bench/torch_llama.py each define a model; this module gives them
the same command line, environment, thread settings and training step, and the same timing
and report, so that the two baselines differ only in the network.

The step is shardlm's: zero_grad, a batch of uniformly random tokens of the vocabulary
(drawn each step), forward to the mean cross-entropy, backward, global-norm gradient
clipping, AdamW (betas 0.9/0.95, eps 1e-8, weight decay on the tensors of 2 or more
dimensions only) with linear warmup and cosine decay, all in fp32 (with --bf16 the forward
runs under CPU autocast to bfloat16, PyTorch's own mixed precision).

It times whole steps, skips the first --warmup-steps of them, and prints one JSON object:
  {"step_ms":..,"tokens_per_s":..,"mfu":..,"peak_rss_mib":..,"params":..,...}
with MFU = tokens/s x the model's FLOPs per token (the formula shardlm's log uses for that
architecture) / --peak-gflops.

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
  * AdamW in its single-tensor form (foreach=False): on this CPU the multi-tensor
    (foreach=True) form was ~10% slower per optimizer step (0.31 s vs 0.28 s for 124M
    parameters, 1 thread); --foreach selects it. No fused CPU AdamW exists in 1.13.
    zero_grad(set_to_none=True). Autograd anomaly detection is off (the default,
    enforced).

Usage from a model script (before it imports torch):
    args = torch_common.start(parser)      # parse, then re-execute with the environment
    torch_common.train(args, build)        # build() -> (model, flops_per_token, fields)
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
REEXEC_MARK = "SLM_TORCH_BENCH_REEXEC"


def parser(description):
    """The options every baseline takes: the shape both architectures have, the run and
    the optimizer. A model script adds its own."""
    p = argparse.ArgumentParser(description=description)
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
    p.add_argument("--verbose", action="store_true",
                   help="print each step's time and loss to stderr")
    p.add_argument("--fixed-batch", action="store_true",
                   help="train on one batch drawn at step 0 every step: a check that the model learns "
                        "(the loss falls well below ln(vocab)), where fresh random tokens cannot be learnt")
    return p


def maybe_reexec(args):
    """Set environment that must be in place before libgomp/OpenBLAS/glibc read it."""
    env = dict(os.environ)
    want = {"OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY", "passive"),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(args.threads)),
            "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", str(args.threads))}
    if not args.no_malloc_tuning:
        for k, v in MALLOC_ENV.items():
            want[k] = env.get(k, v)
    if env.get(REEXEC_MARK) == "1" or all(env.get(k) == v for k, v in want.items()):
        return
    env.update(want)
    env[REEXEC_MARK] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def start(p):
    """Parse the command line, then re-execute once with the environment set. Call it
    before importing torch."""
    args = p.parse_args()
    maybe_reexec(args)
    return args


def set_threads(n):
    import ctypes
    import torch
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


def lr_at(step, steps, warmup, lr, min_lr):
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(steps - warmup, 1)
    r = min((step - warmup) / span, 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def train(a, build):
    """Train the model build() returns for a.steps steps and print the JSON report.
    build() runs after the thread settings and the seed, and returns (model,
    flops_per_token, fields): model(idx, targets) is the mean loss, fields are extra
    entries for the report (the architecture and its shape)."""
    import torch
    set_threads(a.threads)
    torch.autograd.set_detect_anomaly(False)
    torch.manual_seed(a.seed)
    model, fpt, fields = build()
    model.train()
    V, T, B = a.vocab, a.seq_len, a.batch
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=a.foreach)
    nparams = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(a.seed)
    times, losses = [], []
    for step in range(a.steps):
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if step == 0 or not a.fixed_batch:
            batch = torch.randint(V, (B, T + 1), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(batch[:, :-1].contiguous(), batch[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        lr = lr_at(step, a.steps, a.lr_warmup, a.lr, a.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        losses.append(loss.item())
        dt = time.perf_counter() - t0
        if a.verbose:
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            print(f"step {step}: {dt * 1e3:.1f} ms loss {losses[-1]:.4f} "
                  f"user {ru1.ru_utime - ru0.ru_utime:.2f} s sys {ru1.ru_stime - ru0.ru_stime:.2f} s "
                  f"minflt {ru1.ru_minflt - ru0.ru_minflt}", file=sys.stderr)
        if step >= a.warmup_steps:
            times.append(dt)
    step_s = sum(times) / len(times) if times else float("nan")
    tps = B * T / step_s if times else float("nan")
    mfu = tps * fpt / (a.peak_gflops * 1e9) if a.peak_gflops > 0 and times else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"impl": "torch", "torch": torch.__version__, "params": nparams,
           "precision": "bf16 autocast" if a.bf16 else "fp32"}
    out.update(fields)
    out.update({"vocab": V, "seq_len": T, "batch": B,
                "threads": torch.get_num_threads(), "steps": a.steps, "timed_steps": len(times),
                "step_ms": step_s * 1e3, "tokens_per_s": tps, "flops_per_token": fpt, "mfu": mfu,
                "peak_rss_mib": rss, "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "step_ms_all": [round(t * 1e3, 2) for t in times]})
    print(json.dumps(out))
