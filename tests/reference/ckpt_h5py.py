#!/usr/bin/python3
"""Read a shardlm checkpoint with h5py alone (no shardlm code) and check it against the
run's dump: every parameter at its global shape equals the dump's final parameters
bitwise, the AdamW moments are there at the same shapes, and the metadata describes the
run (format, version 3, step, model shape, architecture and model configuration, layout,
configuration, matmul). The file is in
the HDF5 1.10 format (superblock version 3), and its meta_digest equals the CRC-32 this
script computes from the attributes and tensors it reads, following the canonical form
in docs/checkpoint-format.md (meta_digest, which tests/reference/ckpt_tamper.py imports).
"""
import sys
import zlib
import h5py
import numpy as np


def meta_digest(ck):
    """CRC-32 of the canonical text of a checkpoint's attributes and tensor list, as
    docs/checkpoint-format.md defines it, from what h5py reads (ck: an open h5py.File)."""
    a = ck.attrs

    def text(key):  # a string attribute: key=<length>:<bytes>
        v = a[key]
        return b"%s=%d:%s\n" % (key.encode(), len(v), v)
    canon = text("format")
    for key in ("version", "step", "samples", "tokens", "adam_t", "seed", "n_layer", "n_head", "d_model",
                "vocab_size", "seq_len"):
        canon += b"%s=%d\n" % (key.encode(), int(a[key]))
    if int(a["version"]) >= 3:
        canon += text("arch") + text("model_config")
    canon += text("layout") + text("config") + text("matmul")
    for g in ("params", "adam_m", "adam_v"):
        for n in sorted(ck[g], key=lambda s: s.encode()):
            d = ck[g][n]
            full = f"{g}/{n}".encode()
            canon += b"tensor=%d:%s\nshape=%s\ndtype=%s\n" % (
                len(full), full, ",".join(map(str, d.shape)).encode(),
                b"float32" if d.dtype == np.dtype("<f4") else b"other")
    return zlib.crc32(canon)


def main():
    ckpt_path, dump_path, step, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ck, dump = h5py.File(ckpt_path, "r"), h5py.File(dump_path, "r")
    a = ck.attrs
    fail = []
    def expect(cond, what):
        if not cond:
            fail.append(what)
    fmt = a["format"].decode() if isinstance(a["format"], bytes) else a["format"]
    expect(fmt == "shardlm-checkpoint" and int(a["version"]) == 3, f"format/version {fmt} {a.get('version')}")
    with open(ckpt_path, "rb") as raw:
        head = raw.read(9)
    expect(head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 3, f"superblock version {head[8]}, expected 3 (HDF5 1.10)")
    expect("matmul" in a and isinstance(a["matmul"], bytes), "no matmul string attribute")
    expect(int(a["step"]) == step and int(a["adam_t"]) == step, f"step {a['step']} adam_t {a['adam_t']}")
    for key in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len"):
        expect(int(a[key]) == int(dump.attrs[key]), f"{key}: {a[key]} vs {dump.attrs[key]}")
    import json
    mc = json.loads(a["model_config"])
    arch = a["arch"].decode() if isinstance(a["arch"], bytes) else a["arch"]
    want_arch = dump.attrs["arch"].decode() if isinstance(dump.attrs["arch"], bytes) else dump.attrs["arch"]
    expect(arch == mc["arch"] == want_arch, f"arch {arch}, model_config's {mc['arch']}, the run's {want_arch}")
    for key in ("n_layer", "n_head", "n_kv_head", "d_model", "ffn_hidden", "vocab_size", "seq_len", "max_pos",
                "tie_embeddings", "rope_original_max_pos"):
        expect(mc[key] == int(dump.attrs[key]), f"model_config {key}: {mc[key]} vs the run's {dump.attrs[key]}")
    for key in ("norm_eps", "rope_theta", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
        expect(mc[key] == float(dump.attrs[key]), f"model_config {key}: {mc[key]} vs the run's {dump.attrs[key]}")
    lay = a["layout"].decode() if isinstance(a["layout"], bytes) else a["layout"]
    expect(lay == layout, f"layout '{lay}' != '{layout}'")
    cfg = a["config"].decode() if isinstance(a["config"], bytes) else a["config"]
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

    digest = meta_digest(ck)
    expect(a["meta_digest"].dtype == np.uint32 and int(a["meta_digest"]) == digest,
           f"meta_digest {int(a['meta_digest']):08x}, CRC-32 of the attributes and tensors read here {digest:08x}")
    print(f"h5py: {len(names)} tensors x 3 groups checked in {ckpt_path}; meta_digest {digest:08x} recomputed")
    for f in fail:
        print("FAIL:", f, file=sys.stderr)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
