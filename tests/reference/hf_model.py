#!/usr/bin/python3
"""Hugging Face model directories for shardlm's import and export tests, and a float64
forward of such a directory, written here from the descriptions of the formats and of the
two model families - nothing of shardlm is used.

A model directory is config.json plus safetensors: one model.safetensors, or several files
with model.safetensors.index.json, whose "weight_map" names each tensor's file. A
safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping each
tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (into the data after the
header) and an optional "__metadata__" of strings, then the raw little-endian data. F32 is
IEEE binary32, F16 binary16, BF16 the top half of a binary32 (rounded to nearest even here).

The models, as Hugging Face's causal LMs compute them (float64 here):
  llama  x = embed_tokens[id]; per layer x += o(attn(rope(q(n1)), rope(k(n1)), v(n1))),
         n1 = rmsnorm(x) * input_layernorm; x += down(silu(gate(n2)) * up(n2)),
         n2 = rmsnorm(x) * post_attention_layernorm; logits = (rmsnorm(x) * norm) @ head^T,
         head = lm_head, or embed_tokens when tie_word_embeddings. rmsnorm(x) = x /
         sqrt(mean(x^2) + rms_norm_eps). Linear layers are x @ W^T. Rotary: dimension i of
         a head pairs with i + hs/2 (rotate-half), angle position * inv_freq[i], inv_freq[i] =
         rope_theta^(-2i/hs), rescaled by "llama3" scaling when asked. Grouped-query heads:
         query head h reads key/value head h // (heads / kv_heads). Scores / sqrt(hs), causal.
  gpt2   x = wte[id] + wpe[position]; per layer x += c_proj(attn(split3(c_attn(ln_1(x))))),
         x += mlp.c_proj(gelu_tanh(mlp.c_fc(ln_2(x)))); logits = ln_f(x) @ wte^T. Its linear
         layers are Conv1D: x @ W + b with W stored (in, out). LayerNorm eps 1e-5.

  write DIR --arch llama|gpt2 [shape and layout options]   a random model
  check [--init-only] DIR DUMP   /step0/logits and /step0/loss of a shardlm log.dump against
                                 the forward of DIR on the dump's /tokens; /init against DIR
  same CKPT DUMP [--bf16] [--differ SUBSTR,...]
                                 /init of DUMP (or the tensors of a .safetensors file)
                                 against /params of the checkpoint CKPT, bitwise (--bf16:
                                 against their bf16 rounding); tensors whose name holds a
                                 SUBSTR must differ instead
  layout DIR                     print what DIR holds (files, dtypes, index, config)
  break SRC OUT KIND             a copy of SRC broken one way: missing, shape, model_type,
                                 truncated, offsets
"""
import argparse, json, math, os, shutil, struct, sys
import numpy as np

# ---- safetensors ----------------------------------------------------------------------


def bf16_bits(a):
    """float32 -> bfloat16 bits, rounded to nearest, ties to even."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def bf16_round(a):
    return (bf16_bits(a).astype(np.uint32) << 16).view("<f4")


def encode(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":
        return bf16_bits(a).tobytes()
    raise ValueError(dtype)


def decode(raw, dtype, shape):
    """-> float32 values exactly as stored."""
    if dtype == "F32":
        x = np.frombuffer(raw, "<f4")
    elif dtype == "F16":
        x = np.frombuffer(raw, "<f2").astype(np.float32)
    elif dtype == "BF16":
        x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4")
    else:
        raise ValueError(dtype)
    return x.reshape(shape)


def write_file(path, items, meta={"format": "pt"}):
    """items: [(name, dtype, shape, raw bytes)], laid out in this order."""
    entries, off = {}, 0
    for name, dtype, shape, raw in items:
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    header = {"__metadata__": meta} if meta is not None else {}
    header.update(entries)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for item in items:
            f.write(item[3])


def read_file(path):
    """-> {name: (dtype, shape, raw bytes)}"""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), data[b:end])
    return out


def dir_files(d):
    """The safetensors files of a model directory, and {name: file}."""
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(os.path.join(d, "model.safetensors")):
        names = read_file(os.path.join(d, "model.safetensors"))
        return ["model.safetensors"], {k: "model.safetensors" for k in names}
    weight_map = json.load(open(idx))["weight_map"]
    return sorted(set(weight_map.values())), weight_map


def read_dir(d):
    """{name: (dtype, float32 array)} of every tensor of a model directory."""
    files, _ = dir_files(d)
    out = {}
    for f in files:
        for name, (dtype, shape, raw) in read_file(os.path.join(d, f)).items():
            out[name] = (dtype, decode(raw, dtype, shape))
    return out


def write_dir(d, tensors, dtype, shard_bytes):
    """tensors: [(name, float32 array)]; files of at most shard_bytes of data (0: one)."""
    items = [(n, dtype, a.shape, encode(a, dtype)) for n, a in tensors]
    if not shard_bytes:
        write_file(os.path.join(d, "model.safetensors"), items)
        return 1
    shards, cur, fill = [], [], 0
    for it in items:
        if cur and fill + len(it[3]) > shard_bytes:
            shards.append(cur)
            cur, fill = [], 0
        cur.append(it)
        fill += len(it[3])
    shards.append(cur)
    weight_map = {}
    for k, s in enumerate(shards):
        name = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        write_file(os.path.join(d, name), s)
        weight_map.update({it[0]: name for it in s})
    total = sum(len(it[3]) for it in items)
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    return len(shards)


# ---- random models ----------------------------------------------------------------------


def llama_config(a):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.d_model,
         "intermediate_size": a.ffn, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
         "num_hidden_layers": a.layers, "vocab_size": a.vocab, "max_position_embeddings": a.max_pos,
         "rms_norm_eps": a.eps, "tie_word_embeddings": not a.untied, "hidden_act": "silu",
         "attention_bias": False, "torch_dtype": {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[a.dtype]}
    scaling = None
    if a.llama3:
        scaling = {"rope_type": "llama3", "factor": a.llama3[0], "low_freq_factor": a.llama3[1],
                   "high_freq_factor": a.llama3[2], "original_max_position_embeddings": int(a.llama3[3])}
    if a.rope_parameters:  # the newer form: the base and the scaling together
        p = {"rope_type": "default", "rope_theta": a.theta}
        if scaling:
            p.update(scaling)
        c["rope_parameters"] = p
    else:
        c["rope_theta"] = a.theta
        c["rope_scaling"] = scaling
    return c


def llama_tensors(a, rng):
    C, F, V, hs = a.d_model, a.ffn, a.vocab, a.d_model // a.heads
    g = lambda *s: (0.2 * rng.standard_normal(s)).astype(np.float32)
    norm = lambda: (1 + 0.2 * rng.standard_normal(C)).astype(np.float32)
    t = [("model.embed_tokens.weight", g(V, C))]
    for l in range(a.layers):
        p = "model.layers.%d." % l
        t += [(p + "input_layernorm.weight", norm()), (p + "self_attn.q_proj.weight", g(a.heads * hs, C)),
              (p + "self_attn.k_proj.weight", g(a.kv_heads * hs, C)),
              (p + "self_attn.v_proj.weight", g(a.kv_heads * hs, C)),
              (p + "self_attn.o_proj.weight", g(C, a.heads * hs)), (p + "post_attention_layernorm.weight", norm()),
              (p + "mlp.gate_proj.weight", g(F, C)), (p + "mlp.up_proj.weight", g(F, C)),
              (p + "mlp.down_proj.weight", g(C, F))]
    t.append(("model.norm.weight", norm()))
    if a.untied or a.lm_head_too:
        t.append(("lm_head.weight", g(V, C)))
    return t


def gpt2_config(a):
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": a.d_model, "n_head": a.heads,
            "n_layer": a.layers, "n_positions": a.max_pos, "vocab_size": a.vocab,
            "n_inner": a.ffn if a.ffn != 4 * a.d_model else None, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "torch_dtype": {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[a.dtype]}


def gpt2_tensors(a, rng):
    C, F, V, P = a.d_model, a.ffn, a.vocab, a.prefix
    g = lambda *s: (0.2 * rng.standard_normal(s)).astype(np.float32)
    t = [(P + "wte.weight", g(V, C)), (P + "wpe.weight", g(a.max_pos, C))]
    for l in range(a.layers):
        p = P + "h.%d." % l
        t += [(p + "ln_1.weight", 1 + g(C)), (p + "ln_1.bias", g(C)),
              (p + "attn.c_attn.weight", g(C, 3 * C)), (p + "attn.c_attn.bias", g(3 * C)),  # Conv1D: (in, out)
              (p + "attn.c_proj.weight", g(C, C)), (p + "attn.c_proj.bias", g(C)),
              (p + "ln_2.weight", 1 + g(C)), (p + "ln_2.bias", g(C)),
              (p + "mlp.c_fc.weight", g(C, F)), (p + "mlp.c_fc.bias", g(F)),
              (p + "mlp.c_proj.weight", g(F, C)), (p + "mlp.c_proj.bias", g(C))]
    t += [(P + "ln_f.weight", 1 + g(C)), (P + "ln_f.bias", g(C))]
    if a.lm_head_too:
        t.append(("lm_head.weight", t[0][1].copy()))
    return t


def cmd_write(a):
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    cfg, tensors = (llama_config(a), llama_tensors(a, rng)) if a.arch == "llama" else (gpt2_config(a), gpt2_tensors(a, rng))
    rng.shuffle(tensors)  # the files need not follow any order
    json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"), indent=2)
    n = write_dir(a.dir, tensors, a.dtype, a.shard_bytes)
    print("wrote %s: %s, %d tensors, %s, %d file%s" % (a.dir, a.arch, len(tensors), a.dtype, n, "s" * (n > 1)))


# ---- the forward, float64 -----------------------------------------------------------------


def rope_settings(cfg):
    """(theta, scaling dict or None) from either form of the rotary keys."""
    if cfg.get("rope_parameters") is not None:
        p = cfg["rope_parameters"]
        return p.get("rope_theta", cfg.get("rope_theta", 10000.0)), (p if p.get("rope_type", "default") != "default" else None)
    s = cfg.get("rope_scaling")
    if s is not None and s.get("rope_type", s.get("type")) == "default":
        s = None
    return cfg.get("rope_theta", 10000.0), s


def inv_freqs(hs, theta, scaling):
    inv = 1.0 / theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)
    if scaling is None:
        return inv
    assert scaling.get("rope_type", scaling.get("type")) == "llama3"
    f, lo, hi, old = (scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
                      scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > old / lo, inv / f, inv)  # long wavelengths stretched
    smooth = (old / wavelen - lo) / (hi - lo)
    mid = (wavelen <= old / lo) & (wavelen >= old / hi)
    return np.where(mid, (1 - smooth) * inv / f + smooth * inv, out)


def causal_attention(q, k, v):
    """q (B,H,T,hs), k and v (B,H,T,hs) -> (B,T,H*hs)."""
    import torch
    B, H, T, hs = q.shape
    att = q @ k.transpose(-1, -2) / math.sqrt(hs)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return (torch.softmax(att, -1) @ v).transpose(1, 2).reshape(B, T, H * hs)


def llama_logits(cfg, W, idx):
    import torch
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    K, L, eps = cfg.get("num_key_value_heads", H), cfg["num_hidden_layers"], cfg.get("rms_norm_eps", 1e-6)
    hs, B, T = C // H, idx.shape[0], idx.shape[1]
    rms = lambda x, w: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w
    theta, scaling = rope_settings(cfg)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * torch.tensor(inv_freqs(hs, theta, scaling))[None, :]
    cos, sin = torch.cos(torch.cat([ang, ang], -1)), torch.sin(torch.cat([ang, ang], -1))

    def rope(x):  # (B,h,T,hs): rotate-half
        x1, x2 = x[..., :hs // 2], x[..., hs // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = W["model.embed_tokens.weight"][idx]
    for l in range(L):
        p = "model.layers.%d." % l
        h = rms(x, W[p + "input_layernorm.weight"])
        heads = lambda w, n: (h @ W[w].t()).reshape(B, T, n, hs).transpose(1, 2)
        q, k, v = rope(heads(p + "self_attn.q_proj.weight", H)), rope(heads(p + "self_attn.k_proj.weight", K)), \
            heads(p + "self_attn.v_proj.weight", K)
        k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)
        x = x + causal_attention(q, k, v) @ W[p + "self_attn.o_proj.weight"].t()
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        gate, up = h @ W[p + "mlp.gate_proj.weight"].t(), h @ W[p + "mlp.up_proj.weight"].t()
        x = x + (gate * torch.sigmoid(gate) * up) @ W[p + "mlp.down_proj.weight"].t()
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return rms(x, W["model.norm.weight"]) @ head.t()


def gpt2_logits(cfg, W, idx):
    import torch
    W = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in W.items()}
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hs, B, T = C // H, idx.shape[0], idx.shape[1]

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg.get("layer_norm_epsilon", 1e-5)) * W[p + ".weight"] + W[p + ".bias"]

    conv1d = lambda x, p: x @ W[p + ".weight"] + W[p + ".bias"]  # weight (in, out)
    gelu = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    x = W["wte.weight"][idx] + W["wpe.weight"][:T][None]
    for l in range(L):
        p = "h.%d." % l
        qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, H, hs).transpose(1, 2) for j in range(3))
        x = x + conv1d(causal_attention(q, k, v), p + "attn.c_proj")
        x = x + conv1d(gelu(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "ln_f") @ W["wte.weight"].t()


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# shardlm's name -> (Hugging Face's name, stored transposed), restated from the formats
def shardlm_names(cfg):
    if cfg["model_type"] == "llama":
        m = {"embed.weight": ("model.embed_tokens.weight", 0), "norm.weight": ("model.norm.weight", 0)}
        if not cfg.get("tie_word_embeddings", False):
            m["head.weight"] = ("lm_head.weight", 0)
        leaves = {"attn_norm.weight": "input_layernorm.weight", "attn.q.weight": "self_attn.q_proj.weight",
                  "attn.k.weight": "self_attn.k_proj.weight", "attn.v.weight": "self_attn.v_proj.weight",
                  "attn.o.weight": "self_attn.o_proj.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
                  "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
                  "mlp.down.weight": "mlp.down_proj.weight"}
        for l in range(cfg["num_hidden_layers"]):
            m.update({"blocks.%d.%s" % (l, s): ("model.layers.%d.%s" % (l, h), 0) for s, h in leaves.items()})
        return m
    m = {"wte": ("wte.weight", 0), "wpe": ("wpe.weight", 0), "lnf.weight": ("ln_f.weight", 0),
         "lnf.bias": ("ln_f.bias", 0)}
    leaves = {"ln1": ("ln_1", 0), "attn.qkv": ("attn.c_attn", 1), "attn.proj": ("attn.c_proj", 1), "ln2": ("ln_2", 0),
              "mlp.fc": ("mlp.c_fc", 1), "mlp.proj": ("mlp.c_proj", 1)}
    for l in range(cfg["n_layer"]):
        for s, (h, tr) in leaves.items():
            m["blocks.%d.%s.weight" % (l, s)] = ("h.%d.%s.weight" % (l, h), tr)
            m["blocks.%d.%s.bias" % (l, s)] = ("h.%d.%s.bias" % (l, h), 0)
    return m


def cmd_check(a):
    import h5py, torch
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    stored = read_dir(a.dir)
    W = {k: torch.tensor(v.astype(np.float64)) for k, (_, v) in stored.items()}
    d = h5py.File(a.dump, "r")
    failures = []
    # the weights the run started from: the files' values, exactly
    bare = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, (_, v) in stored.items()}
    for ours, (theirs, transposed) in shardlm_names(cfg).items():
        want = bare[theirs].T if transposed else bare[theirs]
        if not np.array_equal(d["init"][ours][()], want):
            failures.append("/init/%s is not %s%s" % (ours, theirs, " transposed" if transposed else ""))
    if a.init_only:
        for f in failures:
            print("FAIL:", f)
        print("init    %d tensors equal the files'" % len(shardlm_names(cfg)) if not failures else "")
        return 1 if failures else 0
    tokens = torch.tensor(d["tokens"][0].astype(np.int64))  # (accum, B, T+1) of step 0
    forward = llama_logits if cfg["model_type"] == "llama" else gpt2_logits
    loss = 0.0
    for m in range(tokens.shape[0]):
        logits = forward(cfg, W, tokens[m, :, :-1])
        if m == 0:
            e = rel(d["step0/logits"][()], logits.numpy())
            print("logits  relative error %.2e (%s)" % (e, "x".join(map(str, logits.shape))))
            if not e <= a.rtol:
                failures.append("/step0/logits: relative error %.2e > %g" % (e, a.rtol))
        loss += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[m, :, 1:].reshape(-1)).item()
    loss /= tokens.shape[0]
    e = abs(float(d["step0/loss"][()]) - loss) / abs(loss)
    print("loss    %.9f here, %.9f in the dump: relative error %.2e" % (loss, float(d["step0/loss"][()]), e))
    if not e <= a.rtol:
        failures.append("/step0/loss: relative error %.2e > %g" % (e, a.rtol))
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


def cmd_same(a):
    import h5py
    ck = h5py.File(a.ckpt, "r")
    if a.dump.endswith(".safetensors"):  # `shardlm ckpt export CKPT OUT.safetensors`: F32, shardlm's names
        init = {k: decode(raw, dt, shp) for k, (dt, shp, raw) in read_file(a.dump).items()}
        assert set(init) == set(ck["params"]), "not the checkpoint's tensors"
    else:
        init = h5py.File(a.dump, "r")["init"]
    differ = a.differ.split(",") if a.differ else []
    failures, n = [], 0
    for name in ck["params"]:
        want, got = ck["params"][name][()], init[name][()]
        if a.bf16:
            want = bf16_round(want)
        n += 1
        if any(x in name for x in differ):
            if np.array_equal(got, want):
                failures.append("%s came back unchanged" % name)
        elif not np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32)):
            failures.append("%s differs (max |difference| %.3g)" % (name, float(np.abs(got - want).max())))
    for f in failures:
        print("FAIL:", f)
    print("%d tensors compared%s%s" % (n, " with bf16 rounding" if a.bf16 else "",
                                       ", those named *%s* must differ" % a.differ if a.differ else ""))
    return 1 if failures else 0


def cmd_layout(a):
    files, weight_map = dir_files(a.dir)
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    stored = read_dir(a.dir)
    dtypes = sorted({dt for dt, _ in stored.values()})
    print("files %d dtypes %s tensors %d model_type %s torch_dtype %s" % (len(files), ",".join(dtypes), len(stored),
                                                                          cfg["model_type"], cfg.get("torch_dtype")))
    assert set(weight_map) == set(stored), "the index and the files disagree"
    return 0


def cmd_break(a):
    shutil.copytree(a.src, a.out)
    path = os.path.join(a.out, "model.safetensors")
    items = [(k, dt, shp, raw) for k, (dt, shp, raw) in read_file(path).items()]
    victim = min((it[0], i) for i, it in enumerate(items)
                 if it[0].endswith("mlp.c_fc.weight") or it[0].endswith("mlp.up_proj.weight"))[1]
    if a.kind == "missing":
        print("removed", items.pop(victim)[0])
        write_file(path, items)
    elif a.kind == "shape":  # a Conv1D weight stored (out, in), or one row too many
        name, dt, shp, raw = items[victim]
        if "c_fc" in name:
            items[victim] = (name, dt, shp[::-1], raw)
        else:
            items[victim] = (name, dt, (shp[0] + 1, shp[1]), raw + raw[:len(raw) // shp[0]])
        print("reshaped", name, "to", items[victim][2])
        write_file(path, items)
    elif a.kind == "model_type":
        cfg = json.load(open(os.path.join(a.out, "config.json")))
        cfg["model_type"] = "mistral"
        json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"))
    elif a.kind == "truncated":
        size = os.path.getsize(path)
        os.truncate(path, size - 100)
    elif a.kind == "offsets":  # the header moved: the last tensor's range ends past the data
        blob = open(path, "rb").read()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
        b, e = header[last]["data_offsets"]
        header[last]["data_offsets"] = [b + 64, e + 64]
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob[8 + n:])
        print("moved", last, "to", header[last]["data_offsets"])
    else:
        raise SystemExit("unknown kind " + a.kind)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("--arch", choices=["llama", "gpt2"], required=True)
    w.add_argument("--layers", type=int, default=2)
    w.add_argument("--heads", type=int, default=4)
    w.add_argument("--kv-heads", type=int, default=None)
    w.add_argument("--d-model", type=int, default=24)
    w.add_argument("--ffn", type=int, default=None)
    w.add_argument("--vocab", type=int, default=37)
    w.add_argument("--max-pos", type=int, default=32)
    w.add_argument("--eps", type=float, default=1e-5)
    w.add_argument("--theta", type=float, default=10000.0)
    w.add_argument("--llama3", type=float, nargs=4, metavar=("FACTOR", "LOW", "HIGH", "ORIGINAL"),
                   help="llama3 rotary scaling")
    w.add_argument("--rope-parameters", action="store_true", help="the newer form of the rotary keys")
    w.add_argument("--untied", action="store_true", help="llama: a head of its own")
    w.add_argument("--lm-head-too", action="store_true", help="a tied model's files hold lm_head.weight anyway")
    w.add_argument("--prefix", default="", help='gpt2: "transformer." in front of every name')
    w.add_argument("--dtype", choices=["F32", "BF16", "F16"], default="F32")
    w.add_argument("--shard-bytes", type=int, default=0)
    w.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("dump")
    c.add_argument("--rtol", type=float, default=1e-5)
    c.add_argument("--init-only", action="store_true", help="only /init (a data-parallel dump has no logits)")
    s = sub.add_parser("same")
    s.add_argument("ckpt")
    s.add_argument("dump")
    s.add_argument("--bf16", action="store_true")
    s.add_argument("--differ")
    l = sub.add_parser("layout")
    l.add_argument("dir")
    b = sub.add_parser("break")
    b.add_argument("src")
    b.add_argument("out")
    b.add_argument("kind")
    a = ap.parse_args()
    if a.cmd == "write":
        a.kv_heads = a.kv_heads or a.heads
        a.ffn = a.ffn or (4 * a.d_model if a.arch == "gpt2" else 64)
    return {"write": cmd_write, "check": cmd_check, "same": cmd_same, "layout": cmd_layout, "break": cmd_break}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
