#!/bin/bash
# Fuzz the readers of outside input with clang's libFuzzer, AddressSanitizer and UBSan,
# each for a bounded time (FUZZ_SECONDS, default 15): the llm.c shard reader, the Megatron
# index reader, the GPT-2 vocabulary loaders (plus their encode/decode round trip) and the
# safetensors reader (a file and a sharded model's index). Each
# target is built here from the sources it tests, instrumented, and starts from a seed
# corpus of valid files; any crash, sanitizer report or leak fails the test and leaves the
# input that caused it in the log. Skips (77) when clang's libFuzzer is missing.
. "$(dirname "$0")/../e2e/common.sh"
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || skip "clang missing (apt-get install clang)"
seconds=${FUZZ_SECONDS:-15}
top=$SLM_SRCDIR
flags=(-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$top/include"
       -I"$top/src/data")
echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' >"$WORK/probe.c"
"$CLANG" -fsanitize=fuzzer "$WORK/probe.c" -o "$WORK/probe" 2>/dev/null || skip "clang has no libFuzzer (apt-get install libclang-rt-14-dev)"
core=("$top/src/core/status.c" "$top/src/core/rng.c")
bpe=("$top"/src/data/bpe.c "$top"/src/data/bpe_pretok.c "$top"/src/data/bpe_merge.c)
bpe_libs=$(pkg-config --cflags --libs jansson libpcre2-8)
# the dataset can carry a tokenizer (data.tokenizer), so it links the BPE code too
data=("$top/src/data/dataset.c" "$top/src/data/synthetic.c" "$top/src/data/shard.c" "${bpe[@]}")
# shellcheck disable=SC2046
build() { "$CLANG" "${flags[@]}" "$@" -lm || fail "cannot build ${*: -1}"; }
build "$top/tests/fuzz/fuzz_shard.c" "${core[@]}" "${data[@]}" $bpe_libs -o "$WORK/fuzz_shard"
build "$top/tests/fuzz/fuzz_index.c" "${core[@]}" "${data[@]}" $bpe_libs -o "$WORK/fuzz_index"
build "$top/tests/fuzz/fuzz_bpe.c" "${core[@]}" "${bpe[@]}" $bpe_libs -o "$WORK/fuzz_bpe"
build "$top/tests/fuzz/fuzz_safetensors.c" "${core[@]}" "$top/src/ckpt/safetensors.c" "$top/src/ckpt/safetensors_read.c" \
    $(pkg-config --cflags --libs jansson) -o "$WORK/fuzz_safetensors"

# seed corpora: valid inputs of each kind (tokens below the targets' vocabulary of 300)
mkdir -p "$WORK"/seeds/{shard,index,bpe,safetensors}
"$PYTHON3" - "$WORK/seeds" <<'PY'
import json, struct, sys
d = sys.argv[1]
toks = [(i * 37) % 300 for i in range(100)]
open(d + "/shard/a", "wb").write(struct.pack("<256i", 20240520, 1, 100, *([0] * 253)) + struct.pack("<100H", *toks))
open(d + "/shard/b", "wb").write(struct.pack("<256i", 20240520, 2, 100, *([0] * 253)) + struct.pack("<100I", *toks))
sizes, offs = [40, 60], [0, 80]
idx = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 2, 3) + struct.pack("<2i", *sizes) + struct.pack("<2q", *offs) \
      + struct.pack("<3q", 0, 1, 2)
open(d + "/index/a", "wb").write(struct.pack("<H", len(idx)) + idx + struct.pack("<100H", *toks))
# a byte-level vocabulary as GPT-2 maps bytes to characters, plus two merges
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
enc = {chr(c): i for i, c in enumerate(cs)}
enc["th"] = 256; enc["the"] = 257
js = json.dumps(enc).encode()
open(d + "/bpe/a", "wb").write(struct.pack("<H", len(js)) + js + b"#version: 0.2\nt h\nth e\n")
# safetensors: an index naming s.safetensors, then that file (F32, BF16 and F16 tensors)
def st(tensors, meta=None):
    h, data = ({"__metadata__": meta} if meta else {}), b""
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + data
shard = st([("w", "F32", [3, 4], struct.pack("<12f", *range(12))), ("b", "BF16", [4], struct.pack("<4H", 0x3F80, 0xC040, 0x7F80, 1)),
            ("h", "F16", [2, 3], struct.pack("<6H", 0x3C00, 0xC000, 0x7BFF, 1, 0x7C00, 0x7E00)), ("s", "F32", [], b"\0\0\x80?")],
           {"format": "pt"})
idx = json.dumps({"metadata": {"total_size": 72}, "weight_map": {n: "s.safetensors" for n in "wbhs"}}).encode()
open(d + "/safetensors/a", "wb").write(struct.pack("<H", len(idx)) + idx + shard)
PY
# inputs that once failed run first, every time
for f in "$top"/tests/fuzz/regressions/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    cp "$f" "$WORK/seeds/${name%%-*}/$name"
done
for t in shard index bpe safetensors; do
    echo "== fuzz_$t for $seconds s"
    (cd "$WORK" && ASAN_OPTIONS=detect_leaks=1 ./fuzz_$t -max_total_time="$seconds" -max_len=4096 -timeout=10 \
        -print_final_stats=1 "seeds/$t" >"$WORK/$t.log" 2>&1) \
        || { tail -n 40 "$WORK/$t.log"; fail "fuzz_$t found a failing input (above)"; }
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$WORK/$t.log"
done
