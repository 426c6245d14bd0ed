#!/usr/bin/python3
"""An independent safetensors reader, written from the format's description (8-byte
little-endian header length, a JSON header of dtype/shape/data_offsets, raw little-endian
data), used to check `shardlm ckpt export` against the checkpoint as h5py reads it."""
import json, struct, sys
import h5py
import numpy as np

st_path, ckpt_path = sys.argv[1], sys.argv[2]
raw = open(st_path, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
meta = header.pop("__metadata__", {})
ck = h5py.File(ckpt_path, "r")
errors = []
if sorted(header) != sorted(ck["params"]):
    errors.append("tensor names differ from the checkpoint's /params")
end = 0
for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    b, e = info["data_offsets"]
    if info["dtype"] != "F32" or b != end:
        errors.append(f"{name}: dtype {info['dtype']} or offsets {b} not contiguous after {end}")
    end = e
    arr = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    if not np.array_equal(arr, ck["params"][name][()]):
        errors.append(f"{name}: values differ")
if end != len(data):
    errors.append(f"data section has {len(data)} bytes, tensors cover {end}")
if meta.get("step") != str(int(ck.attrs["step"])):
    errors.append(f"metadata step {meta.get('step')}")
print(f"safetensors: {len(header)} tensors, {end} bytes, metadata {meta}")
for e in errors:
    print("FAIL:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
