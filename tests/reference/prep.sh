#!/bin/bash
# shardlm prep against the gpt-3-encoder npm package: every document of a varied corpus
# (prose, code, many scripts, a 2.4 MB document, one without a line feed, an empty file,
# nested directories, a hidden file) comes out as <|endoftext|> and the package's tokens
# of that document alone, in order, split into train and val by the documented rule and
# cut into shards of the requested size; the shards are byte for byte the same on 1, 2, 3
# and 4 ranks; --separator splits documents as Python's bytes.split does; invalid UTF-8
# gives the tokens `shardlm tokenize` gives the whole document; a vocabulary past 65536
# tokens gives uint32 shards with the package's tokens.
. "$(dirname "$0")/../e2e/common.sh"
command -v node >/dev/null || skip "node is needed to run the oracle (Debian: apt-get install nodejs)"
[ "$PYTHON3" != no ] || skip "python3 is needed to write the corpus and read the shards"
P=$(gpt2_encoder_package) || exit
REF="$SLM_SRCDIR/tests/reference/bpe_ref.js"
mpi() { "$MPIEXEC" -np "$1" --oversubscribe "${@:2}"; }

# --- the corpus ---------------------------------------------------------------------
"$PYTHON3" - "$WORK" <<'EOF' || fail "writing the corpus"
import os, random, sys
w = sys.argv[1]
rng = random.Random(7)
words = ("the of and to in is was he for it with as his on be at by I had not are but from or have an "
         "they which one you were her all she there would their we him been has when who will more no "
         "if out so said what up its about into than them can only other new some could time these two").split()
scripts = ["Καλημέρα κόσμε", "Привет, мир", "你好，世界。", "こんにちは世界", "مرحبا بالعالم", "नमस्ते दुनिया",
           "emoji 👍🏽 👨‍👩‍👧 🇩🇪", "naïve café résumé", "x = f(y) + 3.14159 * z[i];", "it's we're they'll I'd"]
# Most line feeds are where a cut could change the tokens (before an indented line, after
# trailing spaces, in runs of blank lines), so a rank or chunk boundary put there shows.
def line():
    n = rng.randint(1, 14)
    s = " ".join(rng.choice(words) for _ in range(n))
    if rng.random() < 0.15: s += " " + rng.choice(scripts)
    s += rng.choice([".", ",", "!", "?", ":", ";", "", "'", ")"])
    r = rng.random()
    if r < 0.35: s = "    " + s            # indented: no cut before it
    elif r < 0.5: s += "   "               # trailing spaces: no cut after it
    elif r < 0.8: s = ""                   # blank line (runs of them give other tokens when cut)
    return s
def doc(nlines):
    return "\n".join(line() for _ in range(nlines)) + rng.choice(["\n", "", "\n\n", "  \n"])
def put(rel, text):
    path = os.path.join(w, "corpus", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
for i in range(40):
    put(f"a{i:02d}.txt", doc(rng.randint(1, 60)))
put("big/m01.txt", doc(45000))                       # ~2.4 MB: ranks' shares start inside it
put("big/m02.txt", " ".join(rng.choice(words) for _ in range(30000)))   # no line feed at all
put("big/sub/z.txt", doc(30))
put("empty.txt", "")
put(".hidden", "never read")
put("one.txt", "x")
# Documents between separators "\n===\n": short ones, so ranks start near separators,
# empty ones, and separators that run into each other.
SEP = "\n===\n"
odd = ["", SEP, "\n===", "===\n", "x" + SEP + "y", "\n", "\n\n"]
docs = [doc(rng.randint(1, 4)) if i % 4 else rng.choice(odd) for i in range(3000)]
with open(os.path.join(w, "sep.txt"), "wb") as f:
    f.write((SEP + SEP.join(docs) + SEP).encode())
with open(os.path.join(w, "bad.txt"), "wb") as f:
    f.write(b"valid text\n" + bytes(range(0x80, 0x100)) + b"\nmore \xe4\xbd words\xff\n")
EOF

# The documents in prep's order (sorted, recursive, hidden files skipped) and the
# package's tokens for each.
"$PYTHON3" - "$WORK" <<'EOF' || fail "listing the documents"
import os, sys
w = sys.argv[1]
def files(d):
    for name in sorted(os.listdir(d)):
        if name.startswith("."): continue
        p = os.path.join(d, name)
        yield from files(p) if os.path.isdir(p) else [p]
os.makedirs(f"{w}/docs")
n = 0
with open(f"{w}/docs.list", "w") as lst:
    for p in files(f"{w}/corpus"):
        data = open(p, "rb").read()
        if data:
            open(f"{w}/docs/{n:04d}", "wb").write(data)
            print(f"{w}/docs/{n:04d}", file=lst)
            n += 1
    sep = open(f"{w}/sep.txt", "rb").read()
    for d in sep.split(b"\n===\n"):
        if d:
            open(f"{w}/docs/s{n:04d}", "wb").write(d)
            print(f"{w}/docs/s{n:04d}", file=lst)
            n += 1
EOF
mapfile -t DOCS <"$WORK/docs.list"
node "$REF" "$P" each "${DOCS[@]}" >"$WORK/docs.ids" || fail "the oracle failed"
"$SHARDLM" tokenize --tokenizer "$P" "$WORK/bad.txt" >"$WORK/bad.ids" || fail "shardlm tokenize bad.txt failed"

# check_shards DIR NAME VAL EOT SHARD_TOKENS WIDTH FIRST_DOC LAST_DOC [EXTRA_IDS_FILE]:
# the shards in DIR are the documents FIRST..LAST of docs.ids (then EXTRA's one line),
# each after EOT (-1: none), split by VAL, SHARD_TOKENS per shard, WIDTH-byte tokens.
check_shards() {
    "$PYTHON3" - "$WORK/docs.ids" "$@" <<'EOF'
import glob, math, struct, sys
ids_file, d, name, f, eot, S, width, lo, hi = sys.argv[1:10]
f, eot, S, width, lo, hi = float(f), int(eot), int(S), int(width), int(lo), int(hi)
docs = [list(map(int, l.split())) for l in open(ids_file)][lo:hi + 1]
if len(sys.argv) > 10:
    docs += [list(map(int, l.split())) for l in open(sys.argv[10])]
want = {"train": [], "val": []}
for i, toks in enumerate(docs):
    split = "val" if f > 0 and math.floor((i + 1) * f) > math.floor(i * f) else "train"
    want[split] += ([eot] if eot >= 0 else []) + toks
for split in ("train", "val"):
    files = sorted(glob.glob(f"{d}/{name}_{split}_*.bin"))
    if [p[-10:-4] for p in files] != [f"{k:06d}" for k in range(len(files))]:
        sys.exit(f"{split}: shard names {files} are not 000000, 000001, ...")
    got = []
    for k, p in enumerate(files):
        raw = open(p, "rb").read()
        magic, version, count = struct.unpack("<3i", raw[:12])
        if (magic, version) != (20240520, 1 if width == 2 else 2):
            sys.exit(f"{p}: header magic {magic} version {version}")
        if len(raw) != 1024 + width * count:
            sys.exit(f"{p}: {len(raw)} bytes for {count} tokens")
        if count != S and k != len(files) - 1 or count > S or count == 0:
            sys.exit(f"{p}: {count} tokens; every shard but the last holds {S}")
        got += struct.unpack(f"<{count}{'H' if width == 2 else 'I'}", raw[1024:])
    if got != want[split]:
        at = next((i for i, (a, b) in enumerate(zip(got, want[split])) if a != b), min(len(got), len(want[split])))
        sys.exit(f"{split}: {len(got)} tokens, the oracle's {len(want[split])}; first difference at {at}: "
                 f"{got[at:at + 8]} against {want[split][at:at + 8]}")
    print(f"ok: {split}: {len(got)} tokens in {len(files)} shard(s) equal the oracle's")
EOF
}

NCORPUS=$(grep -c '/docs/[0-9]' "$WORK/docs.list")
NALL=$(wc -l <"$WORK/docs.list")
prep() { "$SHARDLM" prep --tokenizer "$P" "$@"; }

# 1 rank, then 2, 3 and 4: the same bytes.
prep --out "$WORK/o1" --val 0.2 --shard-tokens 50000 "$WORK/corpus" >"$WORK/o1.log" || fail "prep on 1 rank failed"
cat "$WORK/o1.log"
grep -q "^train     .* documents" "$WORK/o1.log" || fail "no summary line for train"
check_shards "$WORK/o1" data 0.2 50256 50000 2 0 $((NCORPUS - 1)) || fail "1 rank: the shards differ from the oracle"
for np in 2 3 4; do
    mpi "$np" "$SHARDLM" prep --tokenizer "$P" --out "$WORK/o$np" --val 0.2 --shard-tokens 50000 "$WORK/corpus" \
        >"$WORK/o$np.log" || fail "prep on $np ranks failed"
    diff -r "$WORK/o1" "$WORK/o$np" >/dev/null || fail "prep on $np ranks wrote other shards than on 1 rank"
    echo "ok: $np ranks wrote the same shards, byte for byte"
done

# Separators, without <|endoftext|>, on 1 and 3 ranks.
prep --out "$WORK/s1" --name sep --val 0.1 --separator '\n===\n' --no-eot --shard-tokens 20000 "$WORK/sep.txt" \
    >/dev/null || fail "prep --separator failed"
check_shards "$WORK/s1" sep 0.1 -1 20000 2 "$NCORPUS" $((NALL - 1)) || fail "--separator: the shards differ"
for np in 2 3 4; do
    mpi "$np" "$SHARDLM" prep --tokenizer "$P" --out "$WORK/s$np" --name sep --val 0.1 --separator '\n===\n' \
        --no-eot --shard-tokens 20000 "$WORK/sep.txt" >/dev/null || fail "prep --separator on $np ranks failed"
    diff -r "$WORK/s1" "$WORK/s$np" >/dev/null || fail "--separator: $np ranks wrote other shards than 1"
    echo "ok: --separator on $np ranks wrote the same shards"
done

# Invalid UTF-8: the tokens of the whole document (the oracle only reads valid UTF-8).
prep --out "$WORK/b" --val 0 "$WORK/bad.txt" >/dev/null || fail "prep of invalid UTF-8 failed"
check_shards "$WORK/b" data 0 50256 100000000 2 1 0 "$WORK/bad.ids" || fail "invalid UTF-8: the shards differ"

# A vocabulary past 65536 tokens: uint32 shards (version 2) with the package's tokens.
mkdir "$WORK/big" && cp "$P/Encoder.js" "$WORK/big/" || fail "cannot copy Encoder.js"
"$PYTHON3" - "$WORK/big" <<'EOF' || fail "writing the large vocabulary"
import itertools, json, sys
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
alphabet = [chr(c) for c in cs]
vocab = {c: i for i, c in enumerate(alphabet)}
for t in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=4):   # 456976 fillers, take 70000
    if len(vocab) == 256 + 70000: break
    vocab["".join(t)] = len(vocab)
merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("a", "n"), ("an", "d")]
for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
json.dump(vocab, open(sys.argv[1] + "/encoder.json", "w"))
open(sys.argv[1] + "/vocab.bpe", "w").write("#version: big\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
open(sys.argv[1] + "/text", "w").write("the cat and the hat\nthen and there")
EOF
prep_big() { "$SHARDLM" prep --encoder "$WORK/big/encoder.json" --vocab "$WORK/big/vocab.bpe" "$@"; }
prep_big --out "$WORK/u32" --val 0 "$WORK/big/text" >"$WORK/u32.log" || fail "prep with a large vocabulary failed"
grep -q "uint32" "$WORK/u32.log" || fail "a vocabulary past 65536 tokens did not give uint32 shards"
grep -q "no <|endoftext|>" "$WORK/u32.log" || fail "a vocabulary without <|endoftext|> is not reported"
node "$REF" "$WORK/big" encode "$WORK/big/text" >"$WORK/big.ids" || fail "the oracle failed on the large vocabulary"
grep -qE '(^| )7025[6-9]( |$)|7026[0-9]' "$WORK/big.ids" || fail "the test text has no token id past 65535"
check_shards "$WORK/u32" data 0 -1 100000000 4 1 0 "$WORK/big.ids" || fail "uint32: the shards differ"
echo "ok: shardlm prep equals the oracle and is independent of the rank count"
