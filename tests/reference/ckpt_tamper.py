#!/usr/bin/python3
"""Edit a copy of a shardlm checkpoint with h5py - edits that leave a well-formed HDF5
file, so HDF5's own checksums have nothing to complain about - for the checks only
shardlm's digest and tensor list can make.

  ckpt_tamper.py SRC DST EDIT [redigest]

EDIT: none | step (the step attribute + 1) | config (one character of the configuration
text changed, same length) | rename (adam_m/<first ln1.weight> gets a \\x01 appended) |
extra (a dataset params/extra) | reshape (params/wpe one column wider) | dtype
(params/lnf.bias as float64) | missing (adam_v/wte deleted) | dropgroup (the group /adam_v
deleted) | rootextra (an empty group /extra) | groupextra (a group /extra holding a
dataset x) | rootdata (a dataset /extra at the root).
redigest: then store the meta_digest of the edited file (computed by ckpt_h5py.py's
meta_digest from what h5py reads), as a writer that meant it would have.
"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ckpt_h5py import meta_digest  # noqa: E402


def replace(group, name, data):
    del group[name]
    group.create_dataset(name, data=data)


def main(src, dst, edit, redigest):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        a = f.attrs
        if edit == "step":
            a.modify("step", a["step"] + 1)
        elif edit == "config":
            cfg = bytearray(a["config"])
            at = cfg.index(b"[model]") + 1
            cfg[at] = ord("M")
            a.modify("config", np.bytes_(bytes(cfg)))
        elif edit == "rename":
            name = sorted(n for n in f["adam_m"] if n.endswith("ln1.weight"))[0]
            f["adam_m"].move(name, name + "\x01")
        elif edit == "extra":
            f["params"].create_dataset("extra", data=np.zeros(3, "<f4"))
        elif edit == "reshape":
            w = f["params/wpe"][()]
            replace(f["params"], "wpe", np.zeros((w.shape[0], w.shape[1] + 1), "<f4"))
        elif edit == "dtype":
            replace(f["params"], "lnf.bias", f["params/lnf.bias"][()].astype("<f8"))
        elif edit == "missing":
            del f["adam_v/wte"]
        elif edit == "dropgroup":
            del f["adam_v"]
        elif edit == "rootextra":
            f.create_group("extra")
        elif edit == "groupextra":
            f.create_group("extra").create_dataset("x", data=np.zeros(3, "<f4"))
        elif edit == "rootdata":
            f.create_dataset("extra", data=np.zeros(3, "<f4"))
        elif edit != "none":
            sys.exit(f"unknown edit {edit}")
        if redigest:
            a.modify("meta_digest", np.uint32(meta_digest(f)))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or (len(sys.argv) == 5 and sys.argv[4] != "redigest"):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], len(sys.argv) == 5)
