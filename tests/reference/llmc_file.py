#!/usr/bin/python3
"""Write an llm.c GPT-2 checkpoint from the format's description (256 int32 header:
magic 20240326, version, maxT, V, L, NH, C, Vp; then fp32 tensors with all layers of a
tensor together), or check that a shardlm dump's /init holds exactly those weights.
  llmc_file.py write OUT.bin L NH C V Vp maxT [--version N] [--magic N] [--truncate]
  llmc_file.py check OUT.bin DUMP.h5"""
import struct, sys
import numpy as np

def tensors(L, C, V, Vp, maxT):
    """llm.c's order and shapes: (name, shape) with the layer dimension first."""
    return [("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
            ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)),
            ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
            ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)), ("lnfw", (C,)), ("lnfb", (C,))]

def read(path):
    raw = open(path, "rb").read()
    h = struct.unpack("<256i", raw[:1024])
    maxT, V, L, NH, C, Vp = h[2], h[3], h[4], h[5], h[6], h[7]
    data = np.frombuffer(raw[1024:], dtype="<f4")
    out, off = {}, 0
    for name, shape in tensors(L, C, V, Vp, maxT):
        n = int(np.prod(shape))
        out[name] = data[off:off + n].reshape(shape)
        off += n
    return out, (maxT, V, L, NH, C, Vp)

if sys.argv[1] == "write":
    path, L, NH, C, V, Vp, maxT = sys.argv[2], *map(int, sys.argv[3:9])
    version = int(sys.argv[sys.argv.index("--version") + 1]) if "--version" in sys.argv else 3
    magic = int(sys.argv[sys.argv.index("--magic") + 1]) if "--magic" in sys.argv else 20240326
    rng = np.random.default_rng(7)
    body = b"".join(rng.standard_normal(int(np.prod(s)), dtype=np.float32).astype("<f4").tobytes()
                    for _, s in tensors(L, C, V, Vp, maxT))
    if "--truncate" in sys.argv:
        body = body[: len(body) // 2]
    header = struct.pack("<256i", magic, version, maxT, V, L, NH, C, Vp, *([0] * 248))
    open(path, "wb").write(header + body)
else:
    import h5py
    w, (maxT, V, L, NH, C, Vp) = read(sys.argv[2])
    init = h5py.File(sys.argv[3], "r")["init"]
    T = init["wpe"].shape[0]
    expect = {"wte": w["wte"][:V], "wpe": w["wpe"][:T], "lnf.weight": w["lnfw"], "lnf.bias": w["lnfb"]}
    names = {"ln1w": "ln1.weight", "ln1b": "ln1.bias", "qkvw": "attn.qkv.weight", "qkvb": "attn.qkv.bias",
             "attprojw": "attn.proj.weight", "attprojb": "attn.proj.bias", "ln2w": "ln2.weight",
             "ln2b": "ln2.bias", "fcw": "mlp.fc.weight", "fcb": "mlp.fc.bias", "fcprojw": "mlp.proj.weight",
             "fcprojb": "mlp.proj.bias"}
    for src, dst in names.items():
        for l in range(L):
            expect[f"blocks.{l}.{dst}"] = w[src][l]
    bad = [n for n, v in expect.items() if not np.array_equal(init[n][()], v)]
    assert sorted(expect) == sorted(init), "tensor names differ"
    print(f"{len(expect)} tensors match the llm.c file" if not bad else f"differ: {bad}")
    sys.exit(1 if bad else 0)
