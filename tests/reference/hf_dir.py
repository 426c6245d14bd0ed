#!/usr/bin/python3
"""Hugging Face model directories for tests, written and read from the format
descriptions with numpy alone: random Llama and GPT-2 checkpoints, the float64 logits
and loss transformers' LlamaForCausalLM / GPT2LMHeadModel compute on them, their
weights under shardlm's names, and broken directories a loader must refuse.

A model directory holds config.json and either model.safetensors or shards
model-0000K-of-0000N.safetensors with model.safetensors.index.json
({"metadata": {"total_size": bytes of tensor data}, "weight_map": {tensor: file}}).
A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (each
tensor's dtype, shape and [begin, end) data offsets, and "__metadata__": {"format":
"pt"}), padded with spaces to a multiple of 8, then the raw little-endian data. Shards
are cut as Hugging Face cuts them: tensors in the model's order, the next tensor opens a
new file when it would take a non-empty one past the size limit.

Llama (model_type "llama", architectures ["LlamaForCausalLM"]): hidden_size C,
intermediate_size F, num_attention_heads H, num_key_value_heads K, num_hidden_layers,
vocab_size V, max_position_embeddings, rms_norm_eps, head_dim (hs = C/H), rope settings
either the older `rope_theta` + `rope_scaling` ({"rope_type": "llama3", "factor",
"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"} or null), or
the newer `rope_parameters` ({"rope_type": "default" | "llama3", "rope_theta", ...}),
tie_word_embeddings. Tensors: model.embed_tokens.weight (V,C);
model.layers.N.self_attn.{q,k,v,o}_proj.weight ((H*hs,C), (K*hs,C), (K*hs,C), (C,H*hs));
model.layers.N.mlp.{gate,up,down}_proj.weight ((F,C), (F,C), (C,F));
model.layers.N.input_layernorm.weight, .post_attention_layernorm.weight (C);
model.norm.weight (C); lm_head.weight (V,C), absent when tied. Linear weights are
(out, in). Rotary embeddings use the rotate-half pairing (dimension i with i + hs/2).

GPT-2 (model_type "gpt2", architectures ["GPT2LMHeadModel"]): n_embd C, n_head,
n_layer, n_positions, vocab_size, layer_norm_epsilon, activation gelu_new (tanh).
Tensors, optionally under "transformer.": wte.weight (V,C), wpe.weight (n_positions,C),
h.N.ln_1.{weight,bias}, h.N.attn.c_attn.{weight (C,3C), bias}, h.N.attn.c_proj.{weight
(C,C), bias}, h.N.ln_2.*, h.N.mlp.c_fc.{weight (C,4C), bias}, h.N.mlp.c_proj.{weight
(4C,C), bias}, ln_f.*; Conv1D weights are (in, out), the transpose of nn.Linear's; the
head is wte. Optionally the h.N.attn.bias / h.N.attn.masked_bias buffers old
checkpoints carry (a loader ignores them).

The forward pass (float64, from the stored values) is the models' math: GPT-2 =
learned positions, pre-LayerNorm blocks, causal attention scaled by 1/sqrt(hs), tanh-GELU
MLP, final LayerNorm, tied head; Llama as in llama_oracle.py, written here again in the
layout of the checkpoint (rotate-half on duplicated cos/sin tables, kv heads repeated).
The loss is transformers' for labels = input_ids: mean cross-entropy of logits[:, :-1]
against tokens[:, 1:]. A shardlm window of T+1 tokens is such a row: shardlm's T logits
are logits[:, :T] here and its loss is this loss.

Commands:
  write-llama OUT [--layers 2 --hidden 84 --heads 6 --kv-heads 2 --ffn 52 --vocab 101
               --max-pos 128 --eps 1e-5 --head-dim N --rope-theta 500 --rope-scaling llama3|none
               --rope-factor 8 --rope-low-freq-factor 1 --rope-high-freq-factor 4
               --rope-original-max-pos 128 --rope-form scaling|parameters --tied
               --inv-freq-buffers] [--dtype F32|BF16|F16] [--max-shard-size SIZE] [--seed N]
  write-gpt2 OUT  [--layers 2 --hidden 48 --heads 4 --vocab 101 --max-pos 32 --eps 1e-5
               --prefix --mask-buffers] [--dtype ...] [--max-shard-size SIZE] [--seed N]
  forward DIR --out FILE.h5|FILE.npz [--tokens "1,2,3;4,5,6" | --tokens-file F.npy |
               --batch B --seq-len T --seed N]
               HDF5/npz with tokens (int32 B x T), logits (float64 B x T x V), loss
               (float64), token_losses (B x T-1); attributes model_type, source
  to-shardlm DIR OUT.h5 [--seq-len T]
               the weights under shardlm's names as float32 /init/<name> (exactly the
               stored values) with the root attributes a shardlm dump of the model has;
               GPT-2's wpe cut to T rows when given
  inspect DIR  the configuration and each tensor's dtype, shape and file
  write-bad OUT
               broken directories under OUT and OUT/manifest.json, a list of
               {"dir", "problem", "mentions"}: strings an error message should contain
  self-test [--keep DIR]
               writes directories of every kind, reads them back (here and with
               safetensors_write.py's reader), compares the GPT-2 forward with
               gpt2_oracle.py's and the Llama forward with llama_oracle.py's under the
               shardlm names, and checks every broken directory is refused by name

SIZE is bytes, or with a suffix KB/MB/GB (1000s) or KiB/MiB/GiB (1024s). Random weights
(numpy, seeded): linear weights normal with std 1/sqrt(in) (q and k 1.5/sqrt(in)),
embeddings std 0.3 (GPT-2 positions 0.1), norm weights 1 + 0.2 normal, biases 0.1 normal,
so attention is far from uniform and the logits are of order 1.
"""
import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile

import numpy as np

ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2}
TORCH_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class HFError(Exception):
    """A directory, file or configuration a loader must refuse; the message names it."""


# --------------------------------------------------------------------------- encoding

def encode(x, dtype):
    """Float values -> (little-endian bytes in dtype, the float32 values they hold).
    BF16 and F16 round to nearest, ties to even."""
    shape = np.shape(x)
    x = np.ascontiguousarray(x, dtype="<f4")      # (0-d arrays come back 1-d)
    if dtype == "F32":
        return x.tobytes(), x.copy().reshape(shape)
    if dtype == "F16":
        h = x.astype("<f2")
        return h.tobytes(), h.astype("<f4").reshape(shape)
    if dtype == "BF16":
        u = x.view("<u4").astype(np.uint64)
        b = ((u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)).astype("<u2")
        return b.tobytes(), (b.astype(np.uint32) << 16).view("<f4").reshape(shape)
    raise ValueError("dtype %s" % dtype)


def decode(raw, dtype, shape):
    """Raw little-endian bytes -> float64 array."""
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2")
    elif dtype == "BF16":
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view("<f4")
    else:
        raise ValueError("dtype %s" % dtype)
    return a.astype(np.float64).reshape(shape)


def parse_size(s):
    """'5GB', '300KiB', '12345' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError("size %r: bytes, or with KB/MB/GB or KiB/MiB/GiB" % s)
    unit = (m.group(2) or "").upper()
    mult = {"": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9,
            "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30}[unit]
    return int(m.group(1)) * mult


# --------------------------------------------------------------------------- writing

def safetensors_bytes(entries, metadata=None):
    """entries: [(name, dtype, shape, raw)] in data order -> the file's bytes."""
    header = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    off, chunks = 0, []
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def shard_plan(sizes, max_bytes):
    """sizes: [(name, nbytes)] in model order -> [[names]] per file."""
    shards, fill = [[]], 0
    for name, n in sizes:
        if max_bytes and shards[-1] and fill + n > max_bytes:
            shards.append([])
            fill = 0
        shards[-1].append(name)
        fill += n
    return shards


def write_model_dir(out, config, tensors, dtype, max_shard_size=0):
    """config: dict for config.json; tensors: [(name, float array)] in model order.
    Returns {name: (file, dtype, shape, float32 values stored)}."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    enc = {name: encode(x, dtype) for name, x in tensors}
    shapes = {name: tuple(np.shape(x)) for name, x in tensors}
    plan = shard_plan([(name, len(enc[name][0])) for name, _ in tensors], max_shard_size)
    files = [SINGLE] if len(plan) == 1 else \
        ["model-%05d-of-%05d.safetensors" % (i + 1, len(plan)) for i in range(len(plan))]
    manifest = {}
    for fname, names in zip(files, plan):
        order = sorted(names, key=lambda s: s.encode())
        blob = safetensors_bytes([(n, dtype, shapes[n], enc[n][0]) for n in order])
        with open(os.path.join(out, fname), "wb") as f:
            f.write(blob)
        for n in names:
            manifest[n] = (fname, dtype, shapes[n], enc[n][1])
    if len(plan) > 1:
        index = {"metadata": {"total_size": sum(len(e[0]) for e in enc.values())},
                 "weight_map": {n: manifest[n][0] for n in sorted(manifest)}}
        with open(os.path.join(out, INDEX), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    return manifest


# --------------------------------------------------------------------------- configs

def llama_config(layers=2, hidden=84, heads=6, kv_heads=2, ffn=52, vocab=101, max_pos=128,
                 eps=1e-5, head_dim=None, rope_theta=500.0, rope_scaling="llama3", rope_factor=8.0,
                 rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_pos=128,
                 rope_form="scaling", tied=False, dtype="F32"):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
         "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
         "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "initializer_range": 0.02,
         "hidden_size": hidden, "intermediate_size": ffn, "num_attention_heads": heads,
         "num_key_value_heads": kv_heads, "num_hidden_layers": layers, "vocab_size": vocab,
         "max_position_embeddings": max_pos, "rms_norm_eps": eps, "pretraining_tp": 1,
         "tie_word_embeddings": bool(tied), "use_cache": True,
         "head_dim": head_dim if head_dim else hidden // heads}
    llama3 = {"factor": rope_factor, "low_freq_factor": rope_low_freq_factor,
              "high_freq_factor": rope_high_freq_factor,
              "original_max_position_embeddings": rope_original_max_pos, "rope_type": "llama3"}
    if rope_form == "scaling":
        c["rope_theta"] = rope_theta
        c["rope_scaling"] = llama3 if rope_scaling == "llama3" else None
        c["torch_dtype"] = TORCH_DTYPE[dtype]
        c["transformers_version"] = "4.46.0"
    elif rope_form == "parameters":
        rp = dict(llama3) if rope_scaling == "llama3" else {"rope_type": "default"}
        rp["rope_theta"] = rope_theta
        c["rope_parameters"] = rp
        c["dtype"] = TORCH_DTYPE[dtype]
        c["transformers_version"] = "5.0.0"
    else:
        raise ValueError("rope_form %s" % rope_form)
    return c


def gpt2_config(layers=2, hidden=48, heads=4, vocab=101, max_pos=32, eps=1e-5, dtype="F32"):
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "activation_function": "gelu_new", "attn_pdrop": 0.1, "embd_pdrop": 0.1,
            "resid_pdrop": 0.1, "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
            "initializer_range": 0.02, "layer_norm_epsilon": eps, "n_ctx": max_pos,
            "n_embd": hidden, "n_head": heads, "n_inner": None, "n_layer": layers,
            "n_positions": max_pos, "scale_attn_weights": True, "tie_word_embeddings": True,
            "torch_dtype": TORCH_DTYPE[dtype], "transformers_version": "4.46.0",
            "use_cache": True, "vocab_size": vocab}


# --------------------------------------------------------------------------- specs

def _need(config, key, where="config.json"):
    if key not in config or config[key] is None:
        raise HFError("%s: %s is missing" % (where, key))
    return config[key]


def llama_rope(config):
    """(theta, scaling 'none'|'llama3', factor, low, high, original_max_pos) from either
    config form."""
    rp = config.get("rope_parameters")
    if rp is not None:
        if not isinstance(rp, dict):
            raise HFError("config.json: rope_parameters is not an object")
        theta = rp.get("rope_theta", config.get("rope_theta", 10000.0))
        params, where = rp, "rope_parameters"
    else:
        theta = config.get("rope_theta", 10000.0)
        params, where = config.get("rope_scaling"), "rope_scaling"
    rtype = "default" if params is None else params.get("rope_type", params.get("type", "default"))
    if rtype == "default":
        return float(theta), "none", 8.0, 1.0, 4.0, 8192
    if rtype != "llama3":
        raise HFError("config.json: %s.rope_type %r is not supported (default, llama3)" % (where, rtype))
    vals = []
    for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        if k not in params:
            raise HFError("config.json: %s.%s is missing for rope_type llama3" % (where, k))
        vals.append(params[k])
    return (float(theta), "llama3", float(vals[0]), float(vals[1]), float(vals[2]), int(vals[3]))


def model_spec(config):
    """The model's dimensions from config.json, validated."""
    mt = config.get("model_type")
    if mt == "llama":
        s = {"kind": "llama"}
        s["C"] = int(_need(config, "hidden_size"))
        s["F"] = int(_need(config, "intermediate_size"))
        s["H"] = int(_need(config, "num_attention_heads"))
        s["L"] = int(_need(config, "num_hidden_layers"))
        s["V"] = int(_need(config, "vocab_size"))
        kv = config.get("num_key_value_heads")
        s["K"] = int(kv) if kv is not None else s["H"]
        if s["K"] < 1 or s["H"] % s["K"]:
            raise HFError("config.json: num_key_value_heads %d does not divide num_attention_heads %d"
                          % (s["K"], s["H"]))
        hd = config.get("head_dim")
        s["hs"] = int(hd) if hd else s["C"] // s["H"]
        if not hd and s["C"] % s["H"]:
            raise HFError("config.json: num_attention_heads %d does not divide hidden_size %d"
                          % (s["H"], s["C"]))
        if s["hs"] % 2:
            raise HFError("config.json: head size %d is odd (rotary pairs need it even)" % s["hs"])
        s["eps"] = float(config.get("rms_norm_eps", 1e-6))
        s["tied"] = bool(config.get("tie_word_embeddings", False))
        s["max_pos"] = int(config.get("max_position_embeddings", 2048))
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise HFError("config.json: hidden_act %r is not supported (silu)" % act)
        for k in ("attention_bias", "mlp_bias"):
            if config.get(k):
                raise HFError("config.json: %s is true; biases are not supported" % k)
        (s["theta"], s["scaling"], s["factor"], s["low"], s["high"], s["orig"]) = llama_rope(config)
        return s
    if mt == "gpt2":
        s = {"kind": "gpt2"}
        s["C"] = int(_need(config, "n_embd"))
        s["H"] = int(_need(config, "n_head"))
        s["L"] = int(_need(config, "n_layer"))
        s["V"] = int(_need(config, "vocab_size"))
        s["max_pos"] = int(config.get("n_positions", 1024))
        s["eps"] = float(config.get("layer_norm_epsilon", 1e-5))
        s["inner"] = int(config.get("n_inner") or 4 * s["C"])
        if s["C"] % s["H"]:
            raise HFError("config.json: n_head %d does not divide n_embd %d" % (s["H"], s["C"]))
        act = config.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise HFError("config.json: activation_function %r is not supported (gelu_new)" % act)
        if config.get("scale_attn_by_inverse_layer_idx"):
            raise HFError("config.json: scale_attn_by_inverse_layer_idx is not supported")
        if not config.get("scale_attn_weights", True):
            raise HFError("config.json: scale_attn_weights false is not supported")
        return s
    raise HFError("config.json: model_type %r is not supported (llama, gpt2)" % (mt,))


def llama_tensors(s):
    """[(HF name, shape)] in model order."""
    C, H, K, hs, F, V = s["C"], s["H"], s["K"], s["hs"], s["F"], s["V"]
    out = [("model.embed_tokens.weight", (V, C))]
    for l in range(s["L"]):
        p = "model.layers.%d." % l
        out += [(p + "self_attn.q_proj.weight", (H * hs, C)), (p + "self_attn.k_proj.weight", (K * hs, C)),
                (p + "self_attn.v_proj.weight", (K * hs, C)), (p + "self_attn.o_proj.weight", (C, H * hs)),
                (p + "mlp.gate_proj.weight", (F, C)), (p + "mlp.up_proj.weight", (F, C)),
                (p + "mlp.down_proj.weight", (C, F)), (p + "input_layernorm.weight", (C,)),
                (p + "post_attention_layernorm.weight", (C,))]
    out.append(("model.norm.weight", (C,)))
    if not s["tied"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def gpt2_tensors(s):
    """[(name without prefix, shape)] in model order."""
    C, V, I = s["C"], s["V"], s["inner"]
    out = [("wte.weight", (V, C)), ("wpe.weight", (s["max_pos"], C))]
    for l in range(s["L"]):
        p = "h.%d." % l
        out += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
                (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                (p + "mlp.c_fc.weight", (C, I)), (p + "mlp.c_fc.bias", (I,)),
                (p + "mlp.c_proj.weight", (I, C)), (p + "mlp.c_proj.bias", (C,))]
    out += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return out


# --------------------------------------------------------------------------- random models

def random_llama(s, seed, inv_freq_buffers=False):
    """[(name, float32 array)] for spec s."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in llama_tensors(s):
        if len(shape) == 1:
            x = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name in ("model.embed_tokens.weight",):
            x = 0.3 * rng.standard_normal(shape)
        else:
            gain = 1.5 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
            x = gain / math.sqrt(shape[1]) * rng.standard_normal(shape)
        out.append((name, x.astype(np.float32)))
        if inv_freq_buffers and name.endswith("o_proj.weight"):
            out.append((name.replace("o_proj.weight", "rotary_emb.inv_freq"),
                        llama_inv_freq(s).astype(np.float32)))
    return out


def random_gpt2(s, seed, prefix=False, mask_buffers=False):
    rng = np.random.default_rng(seed)
    pre = "transformer." if prefix else ""
    out = []
    T = s["max_pos"]
    for name, shape in gpt2_tensors(s):
        if name == "wte.weight":
            x = 0.3 * rng.standard_normal(shape)
        elif name == "wpe.weight":
            x = 0.1 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            x = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            x = 1.0 + 0.2 * rng.standard_normal(shape)
        else:   # Conv1D (in, out)
            gain = 1.5 if name.endswith("c_attn.weight") else 1.0
            x = gain / math.sqrt(shape[0]) * rng.standard_normal(shape)
        out.append((pre + name, x.astype(np.float32)))
        if mask_buffers and name.endswith("attn.c_proj.bias"):
            lay = name[:-len("attn.c_proj.bias")]
            out.append((pre + lay + "attn.bias", np.tril(np.ones((T, T), np.float32)).reshape(1, 1, T, T)))
            out.append((pre + lay + "attn.masked_bias", np.array(-1e4, dtype=np.float32)))
    return out


# --------------------------------------------------------------------------- reading

def read_header(path):
    """(header without __metadata__, metadata, data start, data length); every entry
    checked: known dtype, shape, offsets inside the data and matching the shape."""
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise HFError("%s: %d bytes, too short for a safetensors file" % (name, size))
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise HFError("%s: the header length %d runs past the end of the file (%d bytes)"
                              % (name, n, size))
            text = f.read(n)
    except OSError as e:
        raise HFError("%s: cannot be read: %s" % (name, e.strerror))
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HFError("%s: the header is not JSON (%s)" % (name, e))
    if not isinstance(header, dict):
        raise HFError("%s: the header is not a JSON object" % name)
    meta = header.pop("__metadata__", None)
    dlen = size - 8 - n
    for t, e in sorted(header.items()):
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise HFError("%s: tensor %s: the entry lacks dtype, shape or data_offsets" % (name, t))
        if e["dtype"] not in ITEMSIZE:
            raise HFError("%s: tensor %s: dtype %s is not supported (F32, BF16, F16)" % (name, t, e["dtype"]))
        b, en = e["data_offsets"]
        count = int(np.prod(e["shape"], dtype=np.int64))
        if not (0 <= b <= en):
            raise HFError("%s: tensor %s: data_offsets [%d, %d] are not a range" % (name, t, b, en))
        if en > dlen:
            raise HFError("%s: tensor %s: data_offsets [%d, %d] run past the end of the data (%d bytes)"
                          % (name, t, b, en, dlen))
        if en - b != count * ITEMSIZE[e["dtype"]]:
            raise HFError("%s: tensor %s: %d bytes of data for shape %s in %s"
                          % (name, t, en - b, e["shape"], e["dtype"]))
    return header, meta, 8 + n, dlen


class ModelDir:
    """A Hugging Face model directory: config, and where each tensor is."""

    def __init__(self, d):
        self.dir = d
        cpath = os.path.join(d, "config.json")
        if not os.path.exists(cpath):
            raise HFError("%s: no config.json" % d)
        try:
            with open(cpath) as f:
                self.config = json.load(f)
        except ValueError as e:
            raise HFError("config.json: not JSON (%s)" % e)
        self.where = {}      # tensor -> (file, entry, data start)
        self.files = []
        if os.path.exists(os.path.join(d, INDEX)):
            try:
                with open(os.path.join(d, INDEX)) as f:
                    index = json.load(f)
            except ValueError as e:
                raise HFError("%s: not JSON (%s)" % (INDEX, e))
            wm = index.get("weight_map")
            if not isinstance(wm, dict):
                raise HFError("%s: no weight_map" % INDEX)
            headers = {}
            for fname in sorted(set(wm.values())):
                path = os.path.join(d, fname)
                if not os.path.exists(path):
                    raise HFError("%s: the weight_map names %s, which does not exist" % (INDEX, fname))
                headers[fname] = read_header(path)
                self.files.append(fname)
            for t, fname in wm.items():
                h = headers[fname]
                if t not in h[0]:
                    raise HFError("%s: the weight_map puts tensor %s in %s, which does not hold it"
                                  % (INDEX, t, fname))
                self.where[t] = (fname, h[0][t], h[2])
        elif os.path.exists(os.path.join(d, SINGLE)):
            h = read_header(os.path.join(d, SINGLE))
            self.files.append(SINGLE)
            for t, e in h[0].items():
                self.where[t] = (SINGLE, e, h[2])
        else:
            raise HFError("%s: neither %s nor %s" % (d, SINGLE, INDEX))

    def tensor(self, t):
        fname, e, start = self.where[t]
        b, en = e["data_offsets"]
        with open(os.path.join(self.dir, fname), "rb") as f:
            f.seek(start + b)
            raw = f.read(en - b)
        return decode(raw, e["dtype"], e["shape"])


IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$")


def load(d):
    """(spec, {canonical name: float64 array}, ModelDir). Canonical names: Llama's as
    stored, GPT-2's without "transformer.". Every expected tensor must be there with its
    shape; known buffers (GPT-2 attention masks, rotary inv_freq) and a tied lm_head are
    ignored; any other tensor is an error."""
    md = ModelDir(d)
    s = model_spec(md.config)
    if s["kind"] == "llama":
        expected, pre = llama_tensors(s), ""
    else:
        expected = gpt2_tensors(s)
        pre = "transformer." if "transformer.wte.weight" in md.where else ""
    W = {}
    for name, shape in expected:
        full = pre + name
        if full not in md.where:
            raise HFError("%s: tensor %s is missing" % (d, full))
        got = tuple(md.where[full][1]["shape"])
        if got != tuple(shape):
            raise HFError("%s: tensor %s has shape %s, expected %s (%s)"
                          % (md.where[full][0], full, list(got), list(shape), s["kind"]))
        W[name] = md.tensor(full)
    known = {pre + n for n, _ in expected}
    for t in md.where:
        if t in known or IGNORED.search(t) or (s["kind"] == "llama" and s["tied"] and t == "lm_head.weight"):
            continue
        raise HFError("%s: tensor %s is not part of a %s model" % (md.where[t][0], t, s["kind"]))
    return s, W, md


# --------------------------------------------------------------------------- forward

def softmax_causal(scores):
    T = scores.shape[-1]
    scores = np.where(np.triu(np.ones((T, T), dtype=bool), 1), -np.inf, scores)
    scores = scores - scores.max(-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(-1, keepdims=True)


def llama_inv_freq(s):
    hs = s["hs"]
    inv = 1.0 / (s["theta"] ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
    if s["scaling"] != "llama3":
        return inv
    wavelen = 2 * np.pi / inv
    low_wl, high_wl = s["orig"] / s["low"], s["orig"] / s["high"]
    scaled = np.where(wavelen > low_wl, inv / s["factor"], inv)
    smooth = (s["orig"] / wavelen - s["low"]) / (s["high"] - s["low"])
    mid = (1 - smooth) * scaled / s["factor"] + smooth * scaled
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return np.where(medium, mid, scaled)


def llama_forward(s, W, tokens, inv_freq=None):
    """tokens (B,T) -> float64 logits (B,T,V), LlamaForCausalLM's math. inv_freq: other
    rotary frequencies (the self-test's zeros turn RoPE off)."""
    B, T = tokens.shape
    H, K, hs = s["H"], s["K"], s["hs"]
    eps = s["eps"]

    def rms(x, w):
        return w * (x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps))

    def rotate_half(x):
        h = x.shape[-1] // 2
        return np.concatenate([-x[..., h:], x[..., :h]], -1)

    freqs = np.outer(np.arange(T, dtype=np.float64), llama_inv_freq(s) if inv_freq is None else inv_freq)
    emb = np.concatenate([freqs, freqs], -1)             # (T, hs)
    cos, sin = np.cos(emb), np.sin(emb)
    x = W["model.embed_tokens.weight"][tokens]
    for l in range(s["L"]):
        p = "model.layers.%d." % l
        a = rms(x, W[p + "input_layernorm.weight"])
        q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(B, T, H, hs).transpose(0, 2, 1, 3)
        k = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(B, T, K, hs).transpose(0, 2, 1, 3)
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(B, T, K, hs).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, H // K, axis=1)                 # head j reads kv head j // (H/K)
        v = np.repeat(v, H // K, axis=1)
        att = softmax_causal(np.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(hs))
        y = np.einsum("bhts,bhsd->bthd", att, v).reshape(B, T, H * hs)
        x = x + y @ W[p + "self_attn.o_proj.weight"].T
        m = rms(x, W[p + "post_attention_layernorm.weight"])
        g = m @ W[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (m @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight"] if s["tied"] else W["lm_head.weight"]
    return x @ head.T


def gpt2_forward(s, W, tokens):
    """tokens (B,T) -> float64 logits (B,T,V), GPT2LMHeadModel's math."""
    B, T = tokens.shape
    C, H = s["C"], s["H"]
    hs = C // H
    if T > s["max_pos"]:
        raise HFError("%d tokens, more than n_positions %d" % (T, s["max_pos"]))

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + s["eps"]) * W[p + ".weight"] + W[p + ".bias"]

    def conv1d(x, p):
        return x @ W[p + ".weight"] + W[p + ".bias"]

    x = W["wte.weight"][tokens] + W["wpe.weight"][:T]
    for l in range(s["L"]):
        p = "h.%d." % l
        qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3))
        att = softmax_causal(np.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(hs))
        y = np.einsum("bhts,bhsd->bthd", att, v).reshape(B, T, C)
        x = x + conv1d(y, p + "attn.c_proj")
        h = conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        x = x + conv1d(h, p + "mlp.c_proj")
    x = ln(x, "ln_f")
    return x @ W["wte.weight"].T


def forward(s, W, tokens):
    return (llama_forward if s["kind"] == "llama" else gpt2_forward)(s, W, tokens)


def causal_lm_loss(logits, tokens):
    """(mean loss, per-token losses (B,T-1)) for labels = tokens, shifted by one."""
    lg = logits[:, :-1]
    tg = tokens[:, 1:]
    m = lg.max(-1, keepdims=True)
    lse = np.log(np.exp(lg - m).sum(-1)) + m[..., 0]
    per = lse - np.take_along_axis(lg, tg[..., None], -1)[..., 0]
    return float(per.mean()), per


# --------------------------------------------------------------------------- shardlm names

def to_shardlm(s, W, seq_len=None):
    """{shardlm name: float64 array} (see gpt2_oracle.param_names, llama_oracle.param_names)."""
    out = {}
    if s["kind"] == "gpt2":
        out["wte"] = W["wte.weight"]
        out["wpe"] = W["wpe.weight"][:seq_len] if seq_len else W["wpe.weight"]
        for l in range(s["L"]):
            h, b = "h.%d." % l, "blocks.%d." % l
            for src, dst, transpose in (
                    ("ln_1.weight", "ln1.weight", False), ("ln_1.bias", "ln1.bias", False),
                    ("attn.c_attn.weight", "attn.qkv.weight", True), ("attn.c_attn.bias", "attn.qkv.bias", False),
                    ("attn.c_proj.weight", "attn.proj.weight", True), ("attn.c_proj.bias", "attn.proj.bias", False),
                    ("ln_2.weight", "ln2.weight", False), ("ln_2.bias", "ln2.bias", False),
                    ("mlp.c_fc.weight", "mlp.fc.weight", True), ("mlp.c_fc.bias", "mlp.fc.bias", False),
                    ("mlp.c_proj.weight", "mlp.proj.weight", True), ("mlp.c_proj.bias", "mlp.proj.bias", False)):
                x = W[h + src]
                out[b + dst] = x.T.copy() if transpose else x
        out["lnf.weight"], out["lnf.bias"] = W["ln_f.weight"], W["ln_f.bias"]
        return out
    out["embed.weight"] = W["model.embed_tokens.weight"]
    for l in range(s["L"]):
        h, b = "model.layers.%d." % l, "blocks.%d." % l
        for src, dst in (("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn.q"),
                         ("self_attn.k_proj", "attn.k"), ("self_attn.v_proj", "attn.v"),
                         ("self_attn.o_proj", "attn.o"), ("post_attention_layernorm", "mlp_norm"),
                         ("mlp.gate_proj", "mlp.gate"), ("mlp.up_proj", "mlp.up"),
                         ("mlp.down_proj", "mlp.down")):
            out[b + dst + ".weight"] = W[h + src + ".weight"]
    out["norm.weight"] = W["model.norm.weight"]
    if not s["tied"]:
        out["head.weight"] = W["lm_head.weight"]
    return out


def shardlm_attrs(s, seq_len=None):
    """The model's root attributes as a shardlm dump names them."""
    a = {"n_layer": s["L"], "n_head": s["H"], "d_model": s["C"], "vocab_size": s["V"],
         "seq_len": seq_len or s["max_pos"]}
    if s["kind"] == "gpt2":
        a["arch"] = "gpt2"
        return a
    a.update(arch="llama", n_kv_head=s["K"], ffn_hidden=s["F"], tie_embeddings=int(s["tied"]),
             norm_eps=s["eps"], rope_theta=s["theta"], rope_scaling=s["scaling"], rope_factor=s["factor"],
             rope_low_freq_factor=s["low"], rope_high_freq_factor=s["high"],
             rope_original_max_pos=s["orig"])
    return a


# --------------------------------------------------------------------------- broken directories

def write_bad(out):
    """Broken directories under out, and out/manifest.json."""
    os.makedirs(out, exist_ok=True)
    cfg = llama_config(layers=2, hidden=24, heads=4, kv_heads=2, ffn=20, vocab=32, max_pos=64,
                       rope_theta=1000.0, rope_scaling="llama3", rope_original_max_pos=64)
    s = model_spec(cfg)
    base = random_llama(s, 11)
    cases = []

    def add(name, problem, mentions):
        cases.append({"dir": name, "problem": problem, "mentions": mentions})
        return os.path.join(out, name)

    write_model_dir(add("good-llama", "none: the model the others break (it must load)", []),
                    cfg, base, "BF16")

    gone = "model.layers.1.mlp.up_proj.weight"
    write_model_dir(add("missing-tensor", "tensor %s is absent" % gone, [gone]),
                    cfg, [t for t in base if t[0] != gone], "BF16")

    kname = "model.layers.0.self_attn.k_proj.weight"
    rng = np.random.default_rng(1)
    wrong = [(n, x if n != kname else rng.standard_normal((s["H"] * s["hs"], s["C"])).astype(np.float32))
             for n, x in base]
    write_model_dir(add("wrong-shape", "%s is (H*hs, C) = (24, 24), not (K*hs, C) = (12, 24)" % kname,
                        [kname]), cfg, wrong, "BF16")

    write_model_dir(add("unknown-model-type", "config.json says model_type falcon", ["model_type", "falcon"]),
                    dict(cfg, model_type="falcon", architectures=["FalconForCausalLM"]), base, "BF16")

    d = add("truncated", "model.safetensors cut in the middle of its data", [SINGLE])
    write_model_dir(d, cfg, base, "BF16")
    p = os.path.join(d, SINGLE)
    _, _, start, dlen = read_header(p)
    with open(p, "r+b") as f:
        f.truncate(start + dlen // 2 + 3)

    d = add("truncated-header", "model.safetensors cut inside its JSON header", [SINGLE])
    write_model_dir(d, cfg, base, "BF16")
    p = os.path.join(d, SINGLE)
    with open(p, "r+b") as f:
        f.truncate(40)

    d = os.path.join(out, "offsets-past-end")
    write_model_dir(d, cfg, base, "BF16")
    p = os.path.join(d, SINGLE)
    header, meta, start, dlen = read_header(p)
    last = max(header, key=lambda t: header[t]["data_offsets"][1])
    header[last]["data_offsets"] = [o + 64 for o in header[last]["data_offsets"]]
    raw = open(p, "rb").read()
    ordered = {"__metadata__": meta}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[start:])
    add("offsets-past-end", "the header puts %s 64 bytes past the end of the file" % last, [SINGLE, last])

    total = sum(x.size * 2 for _, x in base)
    d = os.path.join(out, "missing-shard")
    m = write_model_dir(d, cfg, base, "BF16", max_shard_size=total // 3 + 1)
    n = len({v[0] for v in m.values()})
    second = "model-00002-of-%05d.safetensors" % n
    os.remove(os.path.join(d, second))
    add("missing-shard", "the index names %s, which is absent" % second, [INDEX, second])

    d = os.path.join(out, "index-misplaced")
    m = write_model_dir(d, cfg, base, "BF16", max_shard_size=total // 3 + 1)
    first = "model-00001-of-%05d.safetensors" % n
    assert m["model.norm.weight"][0] != first
    ip = os.path.join(d, INDEX)
    index = json.load(open(ip))
    index["weight_map"]["model.norm.weight"] = first
    with open(ip, "w") as f:
        json.dump(index, f, indent=2)
    add("index-misplaced", "the weight_map puts model.norm.weight in %s, which does not hold it" % first,
        [INDEX, "model.norm.weight", first])

    write_model_dir(add("rope-yarn", "rope_scaling.rope_type yarn, which is not supported", ["yarn"]),
                    dict(cfg, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                            "original_max_position_embeddings": 64}), base, "BF16")

    bad = dict(cfg, num_key_value_heads=3)
    write_model_dir(add("kv-heads", "num_key_value_heads 3 does not divide num_attention_heads 4",
                        ["num_key_value_heads"]), bad, base, "BF16")

    gcfg = gpt2_config(layers=1, hidden=16, heads=2, vocab=32, max_pos=16)
    gs = model_spec(gcfg)
    g = random_gpt2(gs, 12)
    cname = "h.0.attn.c_attn.weight"
    lin = [(n, x.T.copy() if n == cname else x) for n, x in g]
    write_model_dir(add("gpt2-linear-layout", "%s stored as nn.Linear (3C, C) instead of Conv1D (C, 3C)"
                        % cname, [cname]), gcfg, lin, "F32")

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(cases, f, indent=2)
        f.write("\n")
    return cases


# --------------------------------------------------------------------------- self-test

def self_test(keep=None):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import torch
    import safetensors_write
    import gpt2_oracle
    import llama_oracle

    work = keep or tempfile.mkdtemp(prefix="hf_dir_selftest_")
    os.makedirs(work, exist_ok=True)
    rows = []

    def check(label, ok, detail=""):
        rows.append((label, ok))
        print("  %-4s %s%s" % ("ok" if ok else "FAIL", label, (": " + detail) if detail else ""))
        return ok

    llama_kw = dict(layers=2, hidden=84, heads=6, kv_heads=2, ffn=52, vocab=101, max_pos=128,
                    eps=1e-5, rope_theta=500.0, rope_scaling="llama3", rope_factor=8.0,
                    rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_pos=128)
    models = [
        ("llama-tied-bf16", "llama", dict(llama_kw, tied=True, rope_form="scaling"), "BF16", 0, {}),
        ("llama-untied-f16-sharded", "llama", dict(llama_kw, tied=False, rope_form="parameters"), "F16",
         parse_size("20KB"), {}),
        ("llama-plain-f32-sharded", "llama", dict(llama_kw, heads=3, kv_heads=1, hidden=60, rope_scaling="none",
                                                  rope_theta=10000.0, rope_form="scaling"), "F32",
         parse_size("30KiB"), {"inv_freq_buffers": True}),
        ("llama-plain-newform", "llama", dict(llama_kw, heads=3, kv_heads=1, hidden=60, rope_scaling="none",
                                              rope_theta=10000.0, rope_form="parameters"), "F32", 0, {}),
        ("gpt2-prefix-f32", "gpt2", dict(layers=2, hidden=48, heads=4, vocab=101, max_pos=32), "F32", 0,
         {"prefix": True}),
        ("gpt2-bf16-sharded-buffers", "gpt2", dict(layers=3, hidden=36, heads=3, vocab=67, max_pos=20), "BF16",
         parse_size("12000"), {"mask_buffers": True}),
        ("gpt2-f16", "gpt2", dict(layers=1, hidden=24, heads=2, vocab=37, max_pos=16), "F16", 0, {}),
    ]
    forwards = {}
    for label, kind, kw, dtype, maxb, extra in models:
        print("\n== %s" % label)
        d = os.path.join(work, label)
        cfg = llama_config(dtype=dtype, **kw) if kind == "llama" else gpt2_config(dtype=dtype, **kw)
        s = model_spec(cfg)
        tensors = random_llama(s, 5, **extra) if kind == "llama" else random_gpt2(s, 5, **extra)
        manifest = write_model_dir(d, cfg, tensors, dtype, maxb)

        # the files as the other reader sees them
        errors = []
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        plan = shard_plan([(n, x.size * ITEMSIZE[dtype]) for n, x in tensors], maxb)
        want_files = [SINGLE] if len(plan) == 1 else \
            ["model-%05d-of-%05d.safetensors" % (i + 1, len(plan)) for i in range(len(plan))]
        if files != want_files:
            errors.append("files %s, expected %s" % (files, want_files))
        seen = {}
        sizes = {}
        for fname in files:
            header, data = safetensors_write.read_file(os.path.join(d, fname), errors)
            meta = header.pop("__metadata__", None)
            if meta != {"format": "pt"}:
                errors.append("%s: metadata %s" % (fname, meta))
            end = 0
            for t in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
                e = header[t]
                if e["data_offsets"][0] != end:
                    errors.append("%s: %s not contiguous" % (fname, t))
                end = e["data_offsets"][1]
                seen[t] = fname
                f_, dt, shape, vals = manifest[t]
                raw = data[e["data_offsets"][0]:e["data_offsets"][1]]
                if e["dtype"] != dtype or tuple(e["shape"]) != tuple(shape) or f_ != fname:
                    errors.append("%s: %s %s in %s" % (t, e["dtype"], e["shape"], fname))
                elif not np.array_equal(decode(raw, dtype, shape), vals.astype(np.float64)):
                    errors.append("%s: values differ" % t)
                else:
                    want_raw, _ = encode(dict(tensors)[t], dtype)
                    if raw != want_raw:
                        errors.append("%s: bytes differ from the encoding" % t)
            if end != len(data):
                errors.append("%s: data %d bytes, tensors cover %d" % (fname, len(data), end))
            sizes[fname] = end
        if sorted(seen) != sorted(n for n, _ in tensors):
            errors.append("tensors %d, expected %d" % (len(seen), len(tensors)))
        if len(files) > 1:
            index = json.load(open(os.path.join(d, INDEX)))
            if index["weight_map"] != seen:
                errors.append("weight_map differs from the files' contents")
            if index["metadata"] != {"total_size": sum(sizes.values())}:
                errors.append("index metadata %s" % index["metadata"])
            for fname, n in sizes.items():
                if n > maxb and len([t for t in seen if seen[t] == fname]) > 1:
                    errors.append("%s: %d bytes > %d with several tensors" % (fname, n, maxb))
            # order: the model's order runs through the shards
            order = [seen[n] for n, _ in tensors]
            if order != sorted(order):
                errors.append("tensors not in model order across shards")
        # numpy cross-check of the encodings: F16 via numpy, BF16 as the top half of fp32
        for n, x in tensors[:3]:
            _, vals = encode(x, dtype)
            if dtype == "BF16":
                u = x.view(np.uint32)
                lo, hi = u & 0xFFFF, u >> 16
                up = (lo > 0x8000) | ((lo == 0x8000) & (hi & 1 == 1))
                if not np.array_equal(vals.view(np.uint32), ((hi + up) << 16).astype(np.uint32)):
                    errors.append("%s: BF16 rounding" % n)
                if np.max(np.abs(vals - x) / np.maximum(np.abs(x), 1e-30)) > 2 ** -8:
                    errors.append("%s: BF16 error too large" % n)
        check("%s: %d file(s), %d tensors, read back by safetensors_write.read_file" % (label, len(files), len(tensors)),
              not errors, "; ".join(errors[:4]))

        # my reader, and the forward
        s2, W, md = load(d)
        same = all(np.array_equal(W[n if kind == "llama" else n.replace("transformer.", "", 1)],
                                  manifest[n][3].astype(np.float64))
                   for n, _ in tensors if not IGNORED.search(n))
        check("%s: load() gives the stored values" % label, same)
        rng = np.random.default_rng(9)
        T = min(12, s["max_pos"])
        tok = rng.integers(0, s["V"], size=(3, T))
        logits = forward(s2, W, tok)
        loss, per = causal_lm_loss(logits, tok)
        P = {n: torch.tensor(v, dtype=torch.float64) for n, v in to_shardlm(s2, W, seq_len=T).items()}
        idx = torch.tensor(tok, dtype=torch.int64)
        if kind == "gpt2":
            names = gpt2_oracle.param_names(s["L"])
            shapes = gpt2_oracle.param_shapes(s["L"], s["C"], s["V"], T)
            ref = gpt2_oracle.forward(P, idx, s["L"], s["H"]).numpy()
            what = "gpt2_oracle.forward"
        else:
            a = shardlm_attrs(s2, T)
            names = llama_oracle.param_names(s["L"], a["tie_embeddings"])
            shapes = llama_oracle.param_shapes(s["L"], s["C"], s["H"], s["K"], s["F"], s["V"], a["tie_embeddings"])
            ref = llama_oracle.forward(P, idx, a).numpy()
            what = "llama_oracle.forward"
        names_ok = sorted(names) == sorted(P) and all(tuple(P[n].shape) == tuple(shapes[n]) for n in names)
        e = float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
        tl = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, s["V"]),
                                               torch.tensor(tok[:, 1:]).reshape(-1)).item()
        check("%s: forward vs %s under shardlm names" % (label, what), names_ok and e < 1e-12,
              "rel.err %.1e%s, loss %.6f" % (e, "" if names_ok else ", names/shapes differ", loss))
        check("%s: loss vs torch cross_entropy" % label, abs(tl - loss) < 1e-12 * max(1, abs(loss)))
        forwards[label] = (tok, logits)
        # spread of the attention: make sure positions and RoPE matter
        if kind == "llama":
            e2 = float(np.linalg.norm(llama_forward(s2, W, tok, np.zeros(s["hs"] // 2)) - logits)
                       / np.linalg.norm(logits))
            check("%s: RoPE moves the logits (rel. %.2f without it)" % (label, e2), e2 > 1e-2)

    # both rope forms of one model give one forward
    print("\n== rope forms")
    for form_a, form_b, kw in (("scaling", "parameters", dict(llama_kw, tied=True)),
                               ("scaling", "parameters", dict(llama_kw, rope_scaling="none", tied=False))):
        outs = []
        for form in (form_a, form_b):
            d = os.path.join(work, "form-%s-%s" % (kw["rope_scaling"], form))
            cfg = llama_config(dtype="F32", rope_form=form, **kw)
            s = model_spec(cfg)
            write_model_dir(d, cfg, random_llama(s, 21), "F32")
            s2, W, _ = load(d)
            tok = np.arange(20).reshape(2, 10) % s["V"]
            outs.append((s2, forward(s2, W, tok)))
        keys = ("theta", "scaling", "factor", "low", "high", "orig")
        check("rope_scaling and rope_parameters forms (%s) read alike" % kw["rope_scaling"],
              all(outs[0][0][k] == outs[1][0][k] for k in keys) and np.array_equal(outs[0][1], outs[1][1]))

    # the forward command's file
    print("\n== forward command")
    import h5py
    import subprocess
    d = os.path.join(work, "llama-untied-f16-sharded")
    outp = os.path.join(work, "fwd.h5")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "forward", d, "--out", outp,
                        "--tokens", "1,2,3,4,5;6,7,8,9,10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ok = r.returncode == 0
    if ok:
        with h5py.File(outp, "r") as f:
            tok, lg, ls = f["tokens"][()], f["logits"][()], float(f["loss"][()])
        s, W, _ = load(d)
        ok = tok.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]] and np.array_equal(lg, forward(s, W, tok)) \
            and abs(causal_lm_loss(lg, tok)[0] - ls) < 1e-15
    check("forward --out FILE.h5 holds tokens, logits and loss", ok, r.stderr.decode()[-300:])
    outn = os.path.join(work, "shardlm.h5")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "to-shardlm", d, outn],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ok = r.returncode == 0
    if ok:
        s, W, _ = load(d)
        want = to_shardlm(s, W)
        with h5py.File(outn, "r") as f:
            ok = all(np.array_equal(f["init/" + n][()].astype(np.float64), v) for n, v in want.items()) \
                and f.attrs["arch"] == b"llama" and int(f.attrs["n_kv_head"]) == s["K"]
    check("to-shardlm writes /init/<name> with the stored values and the attributes", ok, r.stderr.decode()[-300:])

    # broken directories
    print("\n== broken directories")
    bad = os.path.join(work, "bad")
    cases = write_bad(bad)
    for c in cases:
        d = os.path.join(bad, c["dir"])
        try:
            load(d)
            msg = None
        except HFError as e:
            msg = str(e)
        if not c["mentions"]:
            check("%s loads" % c["dir"], msg is None, msg or "")
            continue
        ok = msg is not None and all(m in msg for m in c["mentions"])
        check("%s refused, naming %s" % (c["dir"], ", ".join(c["mentions"])), ok, msg or "loaded")

    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    nfail = sum(1 for _, ok in rows if not ok)
    print("\n%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0


# --------------------------------------------------------------------------- CLI

def parse_tokens(a, s):
    if a.tokens:
        rows = [[int(t) for t in r.split(",") if t.strip()] for r in a.tokens.split(";") if r.strip()]
        if len({len(r) for r in rows}) != 1:
            sys.exit("--tokens: every row needs the same length")
        tok = np.array(rows, dtype=np.int64)
    elif a.tokens_file:
        tok = np.load(a.tokens_file).astype(np.int64)
        if tok.ndim == 1:
            tok = tok[None]
    else:
        T = a.seq_len or min(8, s["max_pos"])
        tok = np.random.default_rng(a.seed).integers(0, s["V"], size=(a.batch, T))
    if tok.ndim != 2 or tok.shape[1] < 2:
        sys.exit("tokens: need a (B, T) array with T >= 2")
    if tok.min() < 0 or tok.max() >= s["V"]:
        sys.exit("tokens: ids must be in [0, %d)" % s["V"])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common_write(p):
        p.add_argument("out")
        p.add_argument("--dtype", choices=sorted(ITEMSIZE), default="F32")
        p.add_argument("--max-shard-size", type=parse_size, default=0,
                       help="cut into shards of at most this many bytes (0: one file)")
        p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("write-llama", help="a random Llama")
    common_write(p)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=84)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=52)
    p.add_argument("--vocab", type=int, default=101)
    p.add_argument("--max-pos", type=int, default=128)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--rope-theta", type=float, default=500.0)
    p.add_argument("--rope-scaling", choices=("none", "llama3"), default="llama3")
    p.add_argument("--rope-factor", type=float, default=8.0)
    p.add_argument("--rope-low-freq-factor", type=float, default=1.0)
    p.add_argument("--rope-high-freq-factor", type=float, default=4.0)
    p.add_argument("--rope-original-max-pos", type=int, default=128)
    p.add_argument("--rope-form", choices=("scaling", "parameters"), default="scaling",
                   help="rope_theta + rope_scaling, or rope_parameters")
    p.add_argument("--tied", action="store_true")
    p.add_argument("--inv-freq-buffers", action="store_true",
                   help="add model.layers.N.self_attn.rotary_emb.inv_freq (old checkpoints)")

    p = sub.add_parser("write-gpt2", help="a random GPT-2")
    common_write(p)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=48)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=101)
    p.add_argument("--max-pos", type=int, default=32)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--prefix", action="store_true", help='names under "transformer."')
    p.add_argument("--mask-buffers", action="store_true", help="add h.N.attn.bias and attn.masked_bias")

    p = sub.add_parser("forward", help="float64 logits and loss of a token batch")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="FILE.h5 or FILE.npz")
    p.add_argument("--tokens", help='rows of comma-separated ids, rows separated by ";"')
    p.add_argument("--tokens-file", help="a .npy of (B, T) ids")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("to-shardlm", help="the weights under shardlm's names")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--seq-len", type=int, help="GPT-2: keep this many rows of wpe")

    p = sub.add_parser("inspect", help="configuration and tensors")
    p.add_argument("dir")

    p = sub.add_parser("write-bad", help="broken directories and their manifest")
    p.add_argument("out")

    p = sub.add_parser("self-test", help="check this tool")
    p.add_argument("--keep", metavar="DIR")

    a = ap.parse_args()
    try:
        if a.cmd == "write-llama":
            cfg = llama_config(layers=a.layers, hidden=a.hidden, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn,
                               vocab=a.vocab, max_pos=a.max_pos, eps=a.eps, head_dim=a.head_dim,
                               rope_theta=a.rope_theta, rope_scaling=a.rope_scaling, rope_factor=a.rope_factor,
                               rope_low_freq_factor=a.rope_low_freq_factor,
                               rope_high_freq_factor=a.rope_high_freq_factor,
                               rope_original_max_pos=a.rope_original_max_pos, rope_form=a.rope_form,
                               tied=a.tied, dtype=a.dtype)
            s = model_spec(cfg)
            m = write_model_dir(a.out, cfg, random_llama(s, a.seed, a.inv_freq_buffers), a.dtype, a.max_shard_size)
            print("%s: llama, %d tensors in %d file(s)" % (a.out, len(m), len({v[0] for v in m.values()})))
        elif a.cmd == "write-gpt2":
            cfg = gpt2_config(layers=a.layers, hidden=a.hidden, heads=a.heads, vocab=a.vocab, max_pos=a.max_pos,
                              eps=a.eps, dtype=a.dtype)
            s = model_spec(cfg)
            m = write_model_dir(a.out, cfg, random_gpt2(s, a.seed, a.prefix, a.mask_buffers), a.dtype,
                                a.max_shard_size)
            print("%s: gpt2, %d tensors in %d file(s)" % (a.out, len(m), len({v[0] for v in m.values()})))
        elif a.cmd == "forward":
            s, W, md = load(a.dir)
            tok = parse_tokens(a, s)
            logits = forward(s, W, tok)
            loss, per = causal_lm_loss(logits, tok)
            if a.out.endswith(".npz"):
                np.savez(a.out, tokens=tok.astype(np.int32), logits=logits, loss=np.float64(loss),
                         token_losses=per)
            else:
                import h5py
                with h5py.File(a.out, "w") as f:
                    f["tokens"] = tok.astype(np.int32)
                    f["logits"] = logits
                    f["loss"] = np.float64(loss)
                    f["token_losses"] = per
                    f.attrs["model_type"] = s["kind"]
                    f.attrs["source"] = os.path.abspath(a.dir)
            print("%s: %s, tokens %s, loss %.12f; logits written to %s"
                  % (a.dir, s["kind"], "x".join(map(str, tok.shape)), loss, a.out))
        elif a.cmd == "to-shardlm":
            import h5py
            s, W, md = load(a.dir)
            if s["kind"] == "gpt2" and a.seq_len and a.seq_len > s["max_pos"]:
                sys.exit("--seq-len %d is more than n_positions %d" % (a.seq_len, s["max_pos"]))
            P = to_shardlm(s, W, a.seq_len)
            with h5py.File(a.out, "w") as f:
                for k, v in shardlm_attrs(s, a.seq_len).items():
                    f.attrs[k] = np.bytes_(v) if isinstance(v, str) else v
                for n, v in P.items():
                    f["init/" + n] = v.astype(np.float32)
            print("%s: %d tensors under shardlm names in %s" % (a.dir, len(P), a.out))
        elif a.cmd == "inspect":
            md = ModelDir(a.dir)
            s = model_spec(md.config)
            print(json.dumps(s, sort_keys=True))
            for t in sorted(md.where):
                fname, e, _ = md.where[t]
                print("%-52s %-5s %-16s %s" % (t, e["dtype"], e["shape"], fname))
            load(a.dir)
            print("ok: every tensor of the %s model is present with its shape" % s["kind"])
        elif a.cmd == "write-bad":
            for c in write_bad(a.out):
                print("%-22s %s" % (c["dir"], c["problem"]))
        elif a.cmd == "self-test":
            sys.exit(self_test(a.keep))
    except HFError as e:
        sys.exit("error: %s" % e)


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
