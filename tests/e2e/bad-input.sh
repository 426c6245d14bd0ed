#!/bin/bash
# Bad input is refused before any compute, with a message naming the key, file or value.
. "$(dirname "$0")/common.sh"
S=$SHARDLM
expect_error 2 "unknown key train.learnrate" -- "$S" train train.learnrate=1
expect_error 2 "model.n_head = 3 does not divide model.d_model = 128" -- "$S" train model.n_head=3
expect_error 2 "model.n_layer" "between" -- "$S" train model.n_layer=-2
expect_error 2 "train.steps = 'ten'" -- "$S" train train.steps=ten
expect_error 2 "train.global_batch = 12" -- "$S" train train.global_batch=12
expect_error 2 "cannot open config file $WORK/missing.ini" -- "$S" train "$WORK/missing.ini"
printf '[model]\nn_layer = 2\n[train]\nwarmup = 3\n' >"$WORK/bad.ini"
expect_error 2 "unknown key train.warmup" "bad.ini:4" -- "$S" train "$WORK/bad.ini"
expect_error 2 "train.precision = 'fp16': expected fp32 or bf16" -- "$S" train train.precision=fp16
expect_error 2 "train.recompute = true is not available" -- "$S" train train.recompute=true
# data errors are found when the data is opened, still before the first step
expect_error 1 "no token shard matches '$WORK/none*.bin'" -- "$S" train "data.train=$WORK/none*.bin"
"$PYTHON3" - "$WORK/v.bin" <<'PY'
import struct, sys
toks = [1, 2, 3, 300, 4, 5, 6, 7, 8, 9]
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253)))
    f.write(struct.pack("<%dH" % len(toks), *toks))
PY
expect_error 1 "v.bin: token 300 at byte offset 1030" "model.vocab_size = 256" -- \
    "$S" train "data.train=$WORK/v.bin" model.seq_len=4
head -c 600 "$WORK/v.bin" >"$WORK/short.bin"
expect_error 1 "short.bin: 600 bytes is shorter than the 1024-byte shard header" -- \
    "$S" train "data.train=$WORK/short.bin"
# no step line may appear: nothing was trained
grep -q '^step' "$WORK/out" && fail "a step ran on bad data"
exit 0
