#!/usr/bin/python3
"""Safetensors files and sharded model directories written from the format description
with numpy alone (an 8-byte little-endian header length N, N bytes of JSON mapping each
tensor name to dtype, shape and [begin, end) data offsets, an optional "__metadata__" of
strings, then the raw little-endian data; a sharded model adds model.safetensors.index.json
whose "weight_map" names each tensor's file), and a reader written the same way.

  write OUT               the cases below as files and directories under OUT
  compare OUT CASE DUMP   DUMP (`st_tool dump OUT/CASE format source`) against what numpy
                          says CASE holds: names, dtypes, shapes, files, every value's fp32
                          bits, and the 2-D blocks
  write-bad OUT           broken files: a truncated file, an index naming a missing shard
  check-written DIR DTYPE MAX
                          DIR, written by `st_tool write DIR DTYPE MAX`, read with this
                          reader: file names, index, header layout, tensor order, values
                          (BF16: rounded to nearest even here, from the bits)
"""
import json, os, struct, sys
import numpy as np

U32 = np.uint64(0xFFFFFFFF)


def header_bytes(entries, meta, pad, indent=None):
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    h.update(entries)
    text = json.dumps(h, indent=indent).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return text


def write_file(path, tensors, meta=None, pad=True, order=None, gap=0, indent=None):
    """tensors: name -> (dtype, shape, raw little-endian bytes). Data in `order` (default:
    reversed names, unlike the reader's name order), `gap` unused bytes after each."""
    order = order or sorted(tensors, reverse=True)
    entries, data, off = {}, b"", 0
    for name in order:
        dtype, shape, raw = tensors[name]
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        data += raw + b"\xa5" * gap
        off += len(raw) + gap
    h = header_bytes(dict(sorted(entries.items())), meta, pad, indent)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def f32(rng, shape):
    x = rng.standard_normal(shape).astype("<f4")
    flat = x.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38], dtype="<f4")
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return ("F32", shape, x.tobytes(), x.astype("<f4"))


def half_bits(rng, shape, every=False):
    """uint16 patterns: every one of the 65536 (shuffled) when `every`, else random."""
    n = int(np.prod(shape))
    if every:
        assert n == 65536
        return rng.permutation(65536).astype("<u2").reshape(shape)
    return rng.integers(0, 65536, n, dtype=np.uint32).astype("<u2").reshape(shape)


def bf16(rng, shape, every=False):
    b = half_bits(rng, shape, every)
    expect = (b.astype(np.uint32) << 16).view("<f4")  # bf16 is the top half of an fp32
    return ("BF16", shape, b.tobytes(), expect)


def f16(rng, shape, every=False):
    b = half_bits(rng, shape, every)
    return ("F16", shape, b.tobytes(), b.view("<f2").astype("<f4"))  # numpy's own decoding


def cases():
    """name -> (layout, {tensor: (dtype, shape, raw, expected fp32)}); layout is 'file'
    (with write options) or 'sharded' (file name -> tensor names)."""
    rng = np.random.default_rng(20240611)
    out = {}
    t = {"w.weight": f32(rng, (4, 6)), "b": f32(rng, (10,)), "s": f32(rng, ()), "k": f32(rng, (2, 3, 5)),
         "nothing": f32(rng, (0, 7))}
    out["f32.safetensors"] = ("file", dict(meta={"format": "pt", "source": "numpy"}, gap=4), t)
    t = {"all": bf16(rng, (256, 256), every=True), "r": bf16(rng, (3, 7))}
    out["bf16.safetensors"] = ("file", dict(pad=False, meta={"format": "pt"}), t)
    t = {"all": f16(rng, (256, 256), every=True), "r": f16(rng, (5, 3))}
    out["f16.safetensors"] = ("file", dict(meta=None), t)
    t = {"x.f32": f32(rng, (3, 4)), "x.bf16": bf16(rng, (4, 3)), "x.f16": f16(rng, (6,)),
         "z\u00e9ta": f32(rng, (2,))}
    out["mixed.safetensors"] = ("file", dict(indent=1, pad=False, meta=None), t)
    t = {"layer.%d.%s" % (i, p): (f32 if i % 3 == 0 else bf16 if i % 3 == 1 else f16)(rng, (5, 4 + i))
         for i in range(6) for p in ("w", "v")}
    t["emb"] = f32(rng, (9, 8))
    names = sorted(t)
    files = {"model-%05d-of-00003.safetensors" % (j + 1): names[j::3] for j in range(3)}
    out["sharded"] = ("sharded", files, t)
    return out


def write(outdir):
    for case, (layout, opts, t) in cases().items():
        path = os.path.join(outdir, case)
        if layout == "file":
            write_file(path, {k: v[:3] for k, v in t.items()}, **opts)
            continue
        os.makedirs(path)
        weight_map, total = {}, 0
        for fname, names in opts.items():
            write_file(os.path.join(path, fname), {k: t[k][:3] for k in names}, meta={"format": "pt"})
            for k in names:
                weight_map[k] = fname
                total += len(t[k][2])
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def same_bits(got, want):
    """got: uint32 bit patterns; want: float32 values. Equal bits, or both NaN of one sign."""
    g = np.asarray(got, dtype=np.uint32)
    w = np.ascontiguousarray(want, dtype="<f4").reshape(-1).view(np.uint32)
    gn = (g & 0x7FFFFFFF) > 0x7F800000
    wn = (w & 0x7FFFFFFF) > 0x7F800000
    ok = np.where(wn, gn & ((g >> 31) == (w >> 31)), g == w)
    return int(np.count_nonzero(~ok))


def compare(outdir, case, dump):
    layout, opts, t = cases()[case]
    lines = [json.loads(line) for line in open(dump, encoding="utf-8")]
    head, got = lines[0], {d["name"]: d for d in lines[1:]}
    errors = []
    if head["tensors"] != len(t) or sorted(got) != sorted(t):
        errors.append("tensors %s, expected %s" % (sorted(got), sorted(t)))
    if [d["name"] for d in lines[1:]] != sorted(got, key=lambda s: s.encode()):
        errors.append("not listed in the byte order of the names")
    meta = opts.get("meta") if layout == "file" else {"format": "pt"}
    want_meta = {k: (meta or {}).get(k) for k in ("format", "source")}
    if head["metadata"] != want_meta:
        errors.append("metadata %s, expected %s" % (head["metadata"], want_meta))
    for name in sorted(set(got) & set(t)):
        dtype, shape, _, expect = t[name]
        d = got[name]
        if d["dtype"] != dtype or tuple(d["shape"]) != tuple(shape):
            errors.append("%s: %s %s, expected %s %s" % (name, d["dtype"], d["shape"], dtype, list(shape)))
            continue
        want_file = case if layout == "file" else [f for f, ns in opts.items() if name in ns][0]
        if d["file"] != want_file:
            errors.append("%s: in %s, expected %s" % (name, d["file"], want_file))
        if len(d["bits"]) != expect.size or same_bits(d["bits"], expect):
            errors.append("%s: %d of %d values differ" % (name, same_bits(d["bits"], expect) if len(d["bits"]) ==
                                                         expect.size else -1, expect.size))
        if len(shape) == 2 and min(shape) >= 3:
            blk = expect[1:-1, 1:-1]
            if "block" not in d or len(d["block"]) != blk.size or same_bits(d["block"], blk):
                errors.append("%s: the block [1:-1, 1:-1] differs" % name)
        elif "block" in d:
            errors.append("%s: a block for a tensor that is not 2-D of at least 3 x 3" % name)
    nvals = sum(v[3].size for v in t.values())
    print("%s: %d tensors, %d values (%s) %s" % (case, len(t), nvals, ", ".join(sorted({v[0] for v in t.values()})),
                                                  "FAIL" if errors else "ok"))
    for e in errors:
        print("FAIL: %s: %s" % (case, e), file=sys.stderr)
    return not errors


def write_bad(outdir):
    rng = np.random.default_rng(7)
    t = {"a": f32(rng, (4, 4))[:3], "b": f32(rng, (8,))[:3]}
    write_file(os.path.join(outdir, "cut.safetensors"), t)
    with open(os.path.join(outdir, "cut.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) - 10)
    d = os.path.join(outdir, "lost-shard")
    os.makedirs(d)
    write_file(os.path.join(d, "model-00001-of-00002.safetensors"), {"a": t["a"]})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 96}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                  "b": "model-00002-of-00002.safetensors"}}, f)


# ---- the writer's output ---------------------------------------------------------------

WRITTEN = [("z.weight", (7, 5)), ("a.bias", (13,)), ("m.emb", (20, 16)), ("scalar", ()), ("k.3d", (2, 3, 4)),
           ("empty", (0, 3)), ("\u00fcn\u00ef.c\u00f6d\u00e9", (4,))]  # st_tool's list, in its order


def value_bits(k, n):
    """st_tool's hash of (tensor k, element i) for i < n, as uint32."""
    i = np.arange(n, dtype=np.uint64)
    h = (np.uint64(k) * np.uint64(0x9E3779B1) + i * np.uint64(0x85EBCA77) + np.uint64(0x165667B1)) & U32
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & U32
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & U32
    h ^= h >> np.uint64(15)
    return h.astype(np.uint32)


def bf16_rne(u):
    """fp32 bits -> bf16 bits, round to nearest, ties to even (NaNs: any NaN)."""
    u = u.astype(np.uint64)
    low, high = u & np.uint64(0xFFFF), u >> np.uint64(16)
    up = (low > 0x8000) | ((low == 0x8000) & ((high & np.uint64(1)) == 1))
    return (high + up.astype(np.uint64)).astype(np.uint32)


def read_file(path, errors):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n]
    if n % 8 or text.rstrip(b" ")[-1:] != b"}" or text[:1] != b"{":
        errors.append("%s: header of %d bytes not '{...}' padded with spaces to a multiple of 8" % (path, n))
    return json.loads(text.decode("utf-8")), raw[8 + n:]


def check_written(d, dtype, maxb):
    errors = []
    size = 4 if dtype == "F32" else 2
    items = sorted(WRITTEN, key=lambda x: x[0].encode())
    nbytes = {name: int(np.prod(shape)) * size for name, shape in WRITTEN}
    # shards as Hugging Face cuts them: the next tensor opens a new file when it would take
    # a non-empty one past the limit
    shards, fill = [[]], 0
    for name, _ in items:
        if maxb and shards[-1] and fill + nbytes[name] > maxb:
            shards.append([])
            fill = 0
        shards[-1].append(name)
        fill += nbytes[name]
    if len(shards) == 1:
        files = {"model.safetensors": shards[0]}
    else:
        files = {"model-%05d-of-%05d.safetensors" % (j + 1, len(shards)): s for j, s in enumerate(shards)}
    want_listing = sorted(files) + (["model.safetensors.index.json"] if len(shards) > 1 else [])
    if sorted(os.listdir(d)) != want_listing:
        errors.append("files %s, expected %s" % (sorted(os.listdir(d)), want_listing))
    if len(shards) > 1 and os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        want_map = {name: f for f, ns in files.items() for name in ns}
        if index.get("weight_map") != want_map:
            errors.append("weight_map %s, expected %s" % (index.get("weight_map"), want_map))
        if index.get("metadata") != {"total_size": sum(nbytes.values())}:
            errors.append("index metadata %s, expected total_size %d" % (index.get("metadata"), sum(nbytes.values())))
    k_of = {name: k for k, (name, _) in enumerate(WRITTEN)}
    shape_of = dict(WRITTEN)
    for fname, names in files.items():
        path = os.path.join(d, fname)
        if not os.path.exists(path):
            continue
        header, data = read_file(path, errors)
        meta = header.pop("__metadata__", None)
        if meta != {"format": "pt", "writer": "st_tool"}:
            errors.append("%s: __metadata__ %s" % (fname, meta))
        if sorted(header) != sorted(names):
            errors.append("%s: holds %s, expected %s" % (fname, sorted(header), names))
            continue
        by_offset = sorted(header, key=lambda k: (header[k]["data_offsets"][0], header[k]["data_offsets"][1]))
        end = 0
        for name in by_offset:
            e = header[name]
            b0, b1 = e["data_offsets"]
            if b0 != end:
                errors.append("%s: %s starts at %d, not where the tensor before it ended (%d)" % (fname, name, b0, end))
            end = b1
            if e["dtype"] != dtype or tuple(e["shape"]) != shape_of[name] or b1 - b0 != nbytes[name]:
                errors.append("%s: %s is %s %s [%d, %d)" % (fname, name, e["dtype"], e["shape"], b0, b1))
                continue
            src = value_bits(k_of[name], int(np.prod(shape_of[name])))
            if dtype == "F32":
                got = np.frombuffer(data[b0:b1], dtype="<u4")
                bad = np.count_nonzero(got != src)
            else:
                got = np.frombuffer(data[b0:b1], dtype="<u2").astype(np.uint32)
                want = bf16_rne(src)
                nan_src = (src & 0x7FFFFFFF) > 0x7F800000
                nan_got = ((got & 0x7F80) == 0x7F80) & ((got & 0x7F) != 0)
                bad = np.count_nonzero(np.where(nan_src, ~nan_got, got != want))
            if bad:
                errors.append("%s: %s: %d of %d values differ" % (fname, name, bad, src.size))
        if [n for n in by_offset] != sorted(names, key=lambda s: s.encode()):
            errors.append("%s: data not in name order: %s" % (fname, by_offset))
        if end != len(data):
            errors.append("%s: the data has %d bytes, the tensors cover %d" % (fname, len(data), end))
    print("%s: %s, %d file(s), %d tensors %s" % (d, dtype, len(shards), len(WRITTEN), "FAIL" if errors else "ok"))
    for e in errors:
        print("FAIL: %s" % e, file=sys.stderr)
    return not errors


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "write-bad":
        write_bad(sys.argv[2])
    elif cmd == "compare":
        sys.exit(0 if compare(*sys.argv[2:5]) else 1)
    elif cmd == "check-written":
        sys.exit(0 if check_written(sys.argv[2], sys.argv[3], int(sys.argv[4])) else 1)
    else:
        sys.exit("usage: safetensors_write.py write|write-bad OUT | compare OUT CASE DUMP | check-written DIR DTYPE MAX")
