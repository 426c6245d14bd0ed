#!/usr/bin/python3
"""Single-bit flips of an HDF5 checkpoint, judged by h5py alone (no shardlm code).

  ckpt_bitflips.py make SRC OUTDIR N SEED
      N copies of SRC in OUTDIR, each with one bit flipped: half at a byte drawn uniformly
      from the whole file, half from the bytes outside every dataset's data chunks (the
      chunk byte ranges come from h5py's get_chunk_info), so the metadata - superblock,
      object headers, link and attribute storage, chunk indexes - gets real coverage.
      Prints one line per copy: PATH OFFSET BIT REGION (REGION: chunk or meta).

  ckpt_bitflips.py judge SRC FLIPS VERIFY_OUTPUT RESUME_LIST
      For every copy listed in FLIPS, whether the flip changed anything h5py reads from
      the file: every group's and dataset's name, every dataset's shape, dtype and
      values, every attribute's name, dtype, shape and value (an exception while reading
      counts as a change). VERIFY_OUTPUT holds the lines of one `shardlm ckpt verify`
      over all copies (ok: PATH ... / bad: PATH: reason). Fails if a copy whose h5py
      view changed is not reported bad, if a copy has no verdict, or if fewer than a
      sixth of the flips changed something in the chunks or outside them (the flips
      would not exercise the file). Writes to RESUME_LIST the first three caught flips
      that lie outside chunk data.
"""
import hashlib
import os
import random
import sys

import h5py
import numpy as np


def chunk_ranges(path):
    """(start, end) byte ranges of every stored data chunk of every dataset."""
    ranges = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    ranges.append((info.byte_offset, info.byte_offset + info.size))
        f.visititems(visit)
    return sorted(ranges)


def outside(ranges, size):
    """The complement of ranges in [0, size), as (start, end) pairs."""
    gaps, at = [], 0
    for a, b in ranges:
        if a > at:
            gaps.append((at, a))
        at = max(at, b)
    if at < size:
        gaps.append((at, size))
    return gaps


def make(src, outdir, n, seed):
    data = open(src, "rb").read()
    ranges = chunk_ranges(src)
    gaps = outside(ranges, len(data))
    in_chunk = bytearray(len(data))
    for a, b in ranges:
        in_chunk[a:b] = b"\1" * (b - a)
    rng = random.Random(seed)
    meta_total = sum(b - a for a, b in gaps)
    for k in range(n):
        if k % 2 == 0:
            off = rng.randrange(len(data))
        else:  # uniform over the bytes outside chunks
            r = rng.randrange(meta_total)
            for a, b in gaps:
                if r < b - a:
                    off = a + r
                    break
                r -= b - a
        bit = rng.randrange(8)
        out = bytearray(data)
        out[off] ^= 1 << bit
        path = f"{outdir}/flip_{k:04d}.h5"
        with open(path, "wb") as f:
            f.write(out)
        print(path, off, bit, "chunk" if in_chunk[off] else "meta")
    print(f"{n} copies of {src} ({len(data)} bytes, {meta_total} outside data chunks)", file=sys.stderr)


def view(path):
    """A digest of everything h5py reads from the file."""
    h = hashlib.sha256()

    def add(*parts):
        for p in parts:
            b = p if isinstance(p, bytes) else str(p).encode()
            h.update(len(b).to_bytes(8, "little") + b)

    def attrs(obj):
        for k in sorted(obj.attrs.keys()):
            v = np.asarray(obj.attrs[k])
            add("attr", k, v.dtype.str, v.shape, v.tobytes())

    def walk(g, prefix):
        attrs(g)
        for name in sorted(g.keys()):
            obj = g[name]
            if isinstance(obj, h5py.Group):
                add("group", prefix + name)
                walk(obj, prefix + name + "/")
            elif isinstance(obj, h5py.Dataset):
                add("dataset", prefix + name, obj.shape, obj.dtype.str)
                attrs(obj)
                add(np.ascontiguousarray(obj[()]).tobytes())
            else:
                add("other", prefix + name, type(obj).__name__)

    with h5py.File(path, "r") as f:
        walk(f, "/")
    return h.hexdigest()


def view_isolated(path):
    """view(path) in a child process, so that an HDF5 library crash on a damaged file
    (it happens) is a verdict - "h5py cannot read it" - rather than the end of the run.
    None: the file could not be read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = view(path).encode()
        except Exception:
            out = b""
        os.write(w, out)
        os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode() or None


def judge(src, flips_path, verify_path, resume_path):
    ref = view(src)
    flips = [line.split() for line in open(flips_path) if line.strip()]
    verdict = {}
    for line in open(verify_path, errors="replace"):
        if line.startswith("ok: ") or line.startswith("bad: "):
            word, rest = line.split(": ", 1)
            verdict.setdefault(rest.split(" ")[0].rstrip(":"), (word, rest.strip()))
    fails, resume = [], []
    count = {"noop": 0, "changed": 0, "caught": 0, "noop_flagged": 0, "unreadable": 0}
    by_region = {"chunk": [0, 0], "meta": [0, 0]}  # changed, caught
    for path, off, bit, region in flips:
        seen = view_isolated(path)
        changed = seen != ref  # unreadable (None) is a change too
        count["unreadable"] += seen is None
        if path not in verdict:
            fails.append(f"{path}: no ok/bad line from shardlm ckpt verify")
            continue
        bad = verdict[path][0] == "bad"
        if not changed:
            count["noop"] += 1
            count["noop_flagged"] += bad
            continue
        count["changed"] += 1
        by_region[region][0] += 1
        if bad:
            count["caught"] += 1
            by_region[region][1] += 1
            if region == "meta" and len(resume) < 3:
                resume.append(path)
        else:
            fails.append(f"{path}: bit {bit} of byte {off} ({region}) changed what h5py reads, but verify said: "
                         f"ok: {verdict[path][1]}")
    print(f"{len(flips)} flips: {count['noop']} no-ops (h5py saw no change; {count['noop_flagged']} of them "
          f"reported bad anyway), {count['changed']} changed what h5py reads ({count['unreadable']} of them h5py "
          f"could not read at all), {count['caught']} of those caught by shardlm ckpt verify")
    for region, (changed, caught) in by_region.items():
        print(f"  in {'data chunks' if region == 'chunk' else 'metadata (outside chunks)'}: {changed} changed, "
              f"{caught} caught")
    # the harness itself: flips that change nothing would make this test pass vacuously
    for region, (changed, caught) in by_region.items():
        if changed < len(flips) // 6:
            fails.append(f"only {changed} of {len(flips)} flips in {region} changed what h5py reads: the flips do "
                         f"not exercise the file")
    with open(resume_path, "w") as f:
        f.write("".join(p + "\n" for p in resume))
    for msg in fails[:20]:
        print("MISSED:", msg, file=sys.stderr)
    if len(fails) > 20:
        print(f"... and {len(fails) - 20} more", file=sys.stderr)
    return 1 if fails else 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) == 6 and sys.argv[1] == "judge":
        sys.exit(judge(*sys.argv[2:6]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
