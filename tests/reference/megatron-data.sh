#!/bin/bash
# Token files written from their format descriptions (tests/reference/megatron_file.py):
# the same token stream as an llm.c shard (uint16), as shardlm's uint32 shard, and as a
# Megatron-LM indexed dataset (uint16 and int32, documents split into sequences) trains to
# bitwise the same losses; the Megatron prefix names it as well as the .idx; a broken index
# (a sequence past the end of the .bin, a wrong header) and a token past the vocabulary are
# errors naming the file.
. "$(dirname "$0")/../e2e/common.sh"
S=$SHARDLM
W=tests/reference/megatron_file.py
"$PYTHON3" - "$WORK/tokens" <<'PY'
import random, sys
random.seed(3)
with open(sys.argv[1], "w") as f:  # 40 documents of 20-200 tokens below 300
    f.write("\n\n".join(" ".join(str(random.randrange(300)) for _ in range(random.randrange(20, 200)))
                        for _ in range(40)))
PY
w() { "$PYTHON3" "$SLM_SRCDIR/$W" "$@" || fail "writing $2"; }
w llmc "$WORK/a.bin" 1 "$WORK/tokens"
w llmc "$WORK/b.bin" 2 "$WORK/tokens"
w megatron "$WORK/m16" 8 "$WORK/tokens"
w megatron "$WORK/m32" 4 "$WORK/tokens"
model=(model.n_layer=1 model.n_head=2 model.d_model=16 model.vocab_size=300 model.seq_len=16 train.steps=8
       train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)
loss() { "$S" train "${model[@]}" "data.train=$1" "log.metrics=$WORK/m.jsonl" >"$WORK/out" 2>&1 \
             || { cat "$WORK/out"; fail "training on $1"; }
         grep -o '"loss":[^,]*' "$WORK/m.jsonl" | paste -sd' '; }
ref=$(loss "$WORK/a.bin")
for d in "$WORK/b.bin" "$WORK/m16.idx" "$WORK/m32.idx" "$WORK/m16"; do
    [ "$(loss "$d")" = "$ref" ] || fail "$d: losses differ from the llm.c shard's"
done
grep -q "1 shard matching $WORK/m16" "$WORK/out" || { cat "$WORK/out"; fail "the prefix did not name the dataset"; }
echo "ok: uint16 and uint32 llm.c shards and Megatron uint16/int32 datasets give the same 8 losses"

w megatron "$WORK/bad" 8 "$WORK/tokens" --corrupt
expect_error 1 "$WORK/bad.idx: sequence" "past the end of $WORK/bad.bin" -- "$S" train "${model[@]}" "data.train=$WORK/bad.idx"
printf 'MMIDIDY\0\0' | dd of="$WORK/m16.idx" bs=1 conv=notrunc 2>/dev/null
expect_error 1 "$WORK/m16.idx: not a Megatron index" -- "$S" train "${model[@]}" "data.train=$WORK/m16.idx"
expect_error 1 "$WORK/m32.bin: token 299 at byte offset" "is not below model.vocab_size = 299" -- \
    "$S" train "${model[@]}" model.vocab_size=299 "data.train=$WORK/m32.idx"
