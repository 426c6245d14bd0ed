#!/usr/bin/python3
"""shardlm's Hugging Face import and export against tests/reference/hf_dir.py, the tests'
reader, writer and float64 forward of model directories (nothing of shardlm is used).

  check [--init-only] [--rtol R] DIR DUMP
        a shardlm log.dump of a run that started from DIR: /init/<name> equal DIR's
        weights under shardlm's names bitwise (hf_dir.to_shardlm: GPT-2's Conv1D weights
        transposed); /step0/logits and /step0/loss equal the float64 forward of DIR on the
        dump's step-0 tokens within R (normwise relative): a shardlm window of T+1 tokens
        is T inputs and the T tokens after them as labels; /step0/loss is the mean
        cross-entropy, averaged over the step's micro-batches.
        --init-only: /init alone (a data-parallel dump has no tokens or logits).
  same [--bf16] [--differ SUBSTR,...] CKPT DUMP|FILE.safetensors
        /init of DUMP (or the tensors of a single-file `shardlm ckpt export`) equal the
        /params of checkpoint CKPT bitwise (--bf16: their bfloat16 rounding, to nearest
        even); tensors whose name holds a SUBSTR must differ instead.
  add-head DIR
        put an lm_head.weight (random, not the embedding) into the one-file model of a
        tied DIR, as some tied checkpoints carry one anyway: a loader must ignore it.
"""
import argparse, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import hf_dir  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def cross_entropy(logits, targets):
    """Mean of -log softmax(logits)[target] over every position, in float64."""
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    return float((lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]).mean())


def report(failures, ok_line):
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print(ok_line)
    return 1 if failures else 0


def cmd_check(a):
    import h5py
    s, W, _ = hf_dir.load(a.dir)
    d = h5py.File(a.dump, "r")
    failures = []
    want = hf_dir.to_shardlm(s, W)
    if set(want) != set(d["init"]):
        failures.append("/init holds %s, the directory %s" % (sorted(d["init"]), sorted(want)))
    for name in sorted(set(want) & set(d["init"])):
        if not np.array_equal(d["init"][name][()], want[name].astype(np.float32)):
            failures.append("/init/%s is not the directory's (under shardlm's name and layout)" % name)
    if a.init_only:
        return report(failures, "init    %d tensors equal the directory's" % len(want))
    tokens = d["tokens"][0].astype(np.int64)  # (micro-batches, B, T+1) of step 0
    T = tokens.shape[-1] - 1
    loss = 0.0
    for m in range(tokens.shape[0]):
        # the T inputs (T may be all the positions the model has), the next tokens as labels
        logits = hf_dir.forward(s, W, tokens[m, :, :T])
        loss += cross_entropy(logits, tokens[m, :, 1:]) / tokens.shape[0]
        if m == 0:
            e = rel(d["step0/logits"][()], logits)
            print("logits  relative error %.2e (%s)" % (e, "x".join(map(str, d["step0/logits"].shape))))
            if not e <= a.rtol:
                failures.append("/step0/logits: relative error %.2e > %g" % (e, a.rtol))
    got = float(d["step0/loss"][()])
    e = abs(got - loss) / abs(loss)
    print("loss    %.9f here, %.9f in the dump: relative error %.2e" % (loss, got, e))
    if not e <= a.rtol:
        failures.append("/step0/loss: relative error %.2e > %g" % (e, a.rtol))
    return report(failures, "init    %d tensors equal the directory's" % len(want))


def read_single(path):
    header, _, start, _ = hf_dir.read_header(path)
    blob = open(path, "rb").read()
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = hf_dir.decode(blob[start + b:start + end], e["dtype"], e["shape"]).astype(np.float32)
    return out


def cmd_same(a):
    import h5py
    ck = h5py.File(a.ckpt, "r")["params"]
    got = read_single(a.dump) if a.dump.endswith(".safetensors") else h5py.File(a.dump, "r")["init"]
    differ = a.differ.split(",") if a.differ else []
    failures = []
    if set(got) != set(ck):
        failures.append("%s holds %s, the checkpoint %s" % (a.dump, sorted(got), sorted(ck)))
    for name in sorted(set(got) & set(ck)):
        want, have = ck[name][()], np.asarray(got[name][()], np.float32)
        if a.bf16:
            want = hf_dir.encode(want, "BF16")[1]
        equal = np.array_equal(have.view(np.uint32), want.astype(np.float32).view(np.uint32))
        if any(x in name for x in differ):
            if equal:
                failures.append("%s came back unchanged" % name)
        elif not equal:
            failures.append("%s differs (max |difference| %.3g)" % (name, float(np.abs(have - want).max())))
    return report(failures, "same    %d tensors%s%s" % (len(ck), " (bf16 rounding)" if a.bf16 else "",
                                                        "; those named *%s* differ" % a.differ if a.differ else ""))


def cmd_add_head(a):
    path = os.path.join(a.dir, hf_dir.SINGLE)
    header, meta, start, _ = hf_dir.read_header(path)
    blob = open(path, "rb").read()
    entries = [(n, e["dtype"], e["shape"], blob[start + e["data_offsets"][0]:start + e["data_offsets"][1]])
               for n, e in sorted(header.items())]
    emb = header["model.embed_tokens.weight"]
    head = np.random.default_rng(7).standard_normal(emb["shape"]).astype(np.float32)
    entries.append(("lm_head.weight", emb["dtype"], emb["shape"], hf_dir.encode(head, emb["dtype"])[0]))
    open(path, "wb").write(hf_dir.safetensors_bytes(entries, meta))
    print("%s: lm_head.weight added" % a.dir)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("dump")
    c.add_argument("--rtol", type=float, default=1e-5)
    c.add_argument("--init-only", action="store_true")
    s = sub.add_parser("same")
    s.add_argument("ckpt")
    s.add_argument("dump")
    s.add_argument("--bf16", action="store_true")
    s.add_argument("--differ")
    h = sub.add_parser("add-head")
    h.add_argument("dir")
    a = ap.parse_args()
    try:
        return {"check": cmd_check, "same": cmd_same, "add-head": cmd_add_head}[a.cmd](a)
    except hf_dir.HFError as e:
        print("FAIL:", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
