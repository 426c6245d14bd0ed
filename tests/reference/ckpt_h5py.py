#!/usr/bin/python3
"""Read a shardlm checkpoint with h5py alone (no shardlm code).

  ckpt_h5py.py CKPT DUMP STEP LAYOUT
      Check it against the run's dump: every parameter at its global shape equals the
      dump's final parameters bitwise, the AdamW moments are there at the same shapes,
      and the metadata describes the run (format, version 4, step, optimizer adamw and
      its step, model shape, architecture and model configuration, layout, configuration,
      matmul).
  ckpt_h5py.py --digest CKPT [GROUP...]
      Only the format: version 4, exactly these groups at the root (when given), every
      dataset float32 with a checksum filter, and the meta_digest.

Either way the file is in the HDF5 1.10 format (superblock version 3), and its
meta_digest equals the CRC-32 this script computes from the attributes and tensors it
reads, following the canonical form in docs/checkpoint-format.md (meta_digest, which
tests/reference/ckpt_tamper.py imports).
"""
import sys
import zlib
import h5py
import numpy as np


def text_attr(v):
    """A string attribute as str (h5py gives fixed-length strings as bytes)."""
    return v.decode() if isinstance(v, bytes) else v


def groups_in_order(ck):
    """The root's groups as the digest lists them: params, then the others by the bytes of
    their names (versions 1-3: params, adam_m, adam_v)."""
    rest = sorted((g for g in ck if g != "params"), key=lambda s: s.encode())
    return ["params"] + rest


def meta_digest(ck):
    """CRC-32 of the canonical text of a checkpoint's attributes and tensor list, as
    docs/checkpoint-format.md defines it, from what h5py reads (ck: an open h5py.File)."""
    a = ck.attrs
    version = int(a["version"])

    def text(key):  # a string attribute: key=<length>:<bytes>
        v = a[key]
        return b"%s=%d:%s\n" % (key.encode(), len(v), v)

    def number(key):
        return b"%s=%d\n" % (key.encode(), int(a[key]))
    canon = text("format")
    for key in ("version", "step", "samples", "tokens"):
        canon += number(key)
    if version >= 4:  # the optimizer by name, then its step count, where adam_t was
        canon += text("optimizer") + number("optimizer_step")
    else:
        canon += number("adam_t")
    for key in ("seed", "n_layer", "n_head", "d_model", "vocab_size", "seq_len"):
        canon += number(key)
    if version >= 3:
        canon += text("arch") + text("model_config")
    canon += text("layout") + text("config") + text("matmul")
    for g in groups_in_order(ck):
        for n in sorted(ck[g], key=lambda s: s.encode()):
            d = ck[g][n]
            full = f"{g}/{n}".encode()
            canon += b"tensor=%d:%s\nshape=%s\ndtype=%s\n" % (
                len(full), full, ",".join(map(str, d.shape)).encode(),
                b"float32" if d.dtype == np.dtype("<f4") else b"other")
    return zlib.crc32(canon)


def check_format(ckpt_path, ck, expect):
    """Version 4 in the HDF5 1.10 format, with a meta_digest that matches."""
    a = ck.attrs
    fmt = text_attr(a["format"])
    expect(fmt == "shardlm-checkpoint" and int(a["version"]) == 4, f"format/version {fmt} {a.get('version')}")
    expect("adam_t" not in a, "version 4 has no adam_t attribute")
    with open(ckpt_path, "rb") as raw:
        head = raw.read(9)
    expect(head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 3, f"superblock version {head[8]}, expected 3 (HDF5 1.10)")
    digest = meta_digest(ck)
    expect(a["meta_digest"].dtype == np.uint32 and int(a["meta_digest"]) == digest,
           f"meta_digest {int(a['meta_digest']):08x}, CRC-32 of the attributes and tensors read here {digest:08x}")
    return digest


def digest_only(ckpt_path, groups):
    ck = h5py.File(ckpt_path, "r")
    fail = []

    def expect(cond, what):
        if not cond:
            fail.append(what)
    digest = check_format(ckpt_path, ck, expect)
    if groups:
        expect(sorted(ck) == sorted(groups), f"groups at the root {sorted(ck)}, expected {sorted(groups)}")
    n = 0
    for g in ck:
        expect(isinstance(ck[g], h5py.Group), f"/{g} is not a group")
        for name, d in ck[g].items():
            n += 1
            expect(d.dtype == np.dtype("<f4"), f"/{g}/{name}: dtype {d.dtype}")
            expect(d.size == 0 or d.id.get_create_plist().get_nfilters() >= 1, f"/{g}/{name}: no checksum filter")
    print(f"h5py: {n} datasets in {len(ck)} groups ({', '.join(groups_in_order(ck))}) of {ckpt_path}; "
          f"optimizer {text_attr(ck.attrs['optimizer'])} step {int(ck.attrs['optimizer_step'])}; "
          f"meta_digest {digest:08x} recomputed")
    for f in fail:
        print("FAIL:", f, file=sys.stderr)
    return 1 if fail else 0


def main():
    ckpt_path, dump_path, step, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ck, dump = h5py.File(ckpt_path, "r"), h5py.File(dump_path, "r")
    a = ck.attrs
    fail = []
    def expect(cond, what):
        if not cond:
            fail.append(what)
    digest = check_format(ckpt_path, ck, expect)
    expect("matmul" in a and isinstance(a["matmul"], bytes), "no matmul string attribute")
    expect(int(a["step"]) == step and int(a["optimizer_step"]) == step and text_attr(a["optimizer"]) == "adamw",
           f"step {a['step']}, optimizer {a['optimizer']} at step {a['optimizer_step']}")
    expect(sorted(ck) == ["adam_m", "adam_v", "params"], f"groups at the root: {sorted(ck)}")
    for key in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len"):
        expect(int(a[key]) == int(dump.attrs[key]), f"{key}: {a[key]} vs {dump.attrs[key]}")
    import json
    mc = json.loads(a["model_config"])
    arch = text_attr(a["arch"])
    want_arch = text_attr(dump.attrs["arch"])
    expect(arch == mc["arch"] == want_arch, f"arch {arch}, model_config's {mc['arch']}, the run's {want_arch}")
    for key in ("n_layer", "n_head", "n_kv_head", "d_model", "ffn_hidden", "vocab_size", "seq_len", "max_pos",
                "tie_embeddings", "rope_original_max_pos"):
        expect(mc[key] == int(dump.attrs[key]), f"model_config {key}: {mc[key]} vs the run's {dump.attrs[key]}")
    for key in ("norm_eps", "rope_theta", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
        expect(mc[key] == float(dump.attrs[key]), f"model_config {key}: {mc[key]} vs the run's {dump.attrs[key]}")
    lay = text_attr(a["layout"])
    expect(lay == layout, f"layout '{lay}' != '{layout}'")
    cfg = text_attr(a["config"])
    expect("[model]" in cfg and f"n_layer = {int(a['n_layer'])}" in cfg, "config attribute lacks the model section")
    names = sorted(dump["final"])
    expect(sorted(ck["params"]) == names, "parameter names differ from the dump's")
    for n in names:
        p = ck["params"][n]
        expect(p.dtype == np.float32 and p.shape == dump["final"][n].shape, f"{n}: {p.dtype} {p.shape}")
        expect(np.array_equal(p[()], dump["final"][n][()]), f"{n}: values differ from the dump's final parameters")
        for g in ("adam_m", "adam_v"):
            m = ck[g][n][()]
            expect(m.shape == p.shape and np.all(np.isfinite(m)), f"{g}/{n}: shape or values")
        expect(np.all(ck["adam_v"][n][()] >= 0), f"adam_v/{n} has negative second moments")
        expect(p.id.get_create_plist().get_nfilters() >= 1, f"{n}: no checksum filter")

    print(f"h5py: {len(names)} tensors x 3 groups checked in {ckpt_path}; meta_digest {digest:08x} recomputed")
    for f in fail:
        print("FAIL:", f, file=sys.stderr)
    return 1 if fail else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--digest":
        sys.exit(digest_only(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main())
