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
# mixture of experts: impossible routing, a negative capacity, MoE keys on a dense model
expect_error 2 "model.expert_top_k = 7: each token goes to between 1 and model.n_experts = 6 experts" -- \
    "$S" train model.n_experts=6 model.expert_top_k=7
expect_error 2 "train.moe_capacity = -0.5 must be 0 (dropless) or positive" -- \
    "$S" train model.n_experts=6 train.moe_capacity=-0.5
expect_error 2 "model.expert_top_k = 2 is set, but model.n_experts = 0" -- "$S" train model.expert_top_k=2
expect_error 2 "model.moe_every = 5: between 1 (every block) and model.n_layer = 4" -- \
    "$S" train model.n_experts=4 model.moe_every=5
expect_error 2 "train.moe_balance = 'aux': expected loss or bias" -- "$S" train model.n_experts=4 train.moe_balance=aux
expect_error 2 "model.expert_hidden = 13: must be positive and a multiple of parallel.tp = 2" -- \
    "$MPIEXEC" -n 2 "$S" train model.n_experts=4 model.expert_hidden=13 parallel.tp=2
# expert parallelism that cannot split the experts or the data-parallel ranks
expect_error 2 "parallel.ep = 3 does not divide the 2 data-parallel ranks" -- \
    "$MPIEXEC" -n 2 "$S" train model.n_experts=6 parallel.ep=3
expect_error 2 "parallel.ep = 4 does not divide model.n_experts = 6" -- \
    "$MPIEXEC" -n 4 "$S" train model.n_experts=6 parallel.ep=4 train.global_batch=32
expect_error 2 "parallel.ep = 2 needs experts to split: set model.n_experts" -- "$MPIEXEC" -n 2 "$S" train parallel.ep=2
# islands: a world they cannot split evenly, an unknown wire format
expect_error 2 "2 ranks cannot be split into islands.count = 3 islands of equal size" -- \
    "$MPIEXEC" -n 2 "$S" train islands.count=3
expect_error 2 "islands.compress = 'zstd': expected none, bf16 or int8" -- "$S" train islands.compress=zstd
expect_error 2 "islands.transport = files needs islands.dir" -- "$S" train islands.count=2 islands.transport=files
expect_error 2 "islands.index = 2: this job's island must be 0 to islands.count - 1 = 1" -- \
    "$S" train islands.count=2 islands.transport=files "islands.dir=$WORK/x" islands.index=2
expect_error 2 "islands.compress = int8 with islands.transport = files" -- \
    "$S" train islands.count=2 islands.transport=files "islands.dir=$WORK/x" islands.compress=int8 "ckpt.dir=$WORK/ck"
expect_error 2 "islands.transport = 'nfs': expected mpi or files" -- "$S" train islands.transport=nfs
expect_error 2 "eval.patience = 2 with islands.count = 2" -- \
    "$MPIEXEC" -n 2 "$S" train islands.count=2 eval.patience=2 eval.every=5 data.val=synthetic
# an MoE checkpoint has no Hugging Face form here: refused before the directory is made
"$S" train model.n_experts=4 train.steps=1 sample.tokens=0 "ckpt.dir=$WORK/moe-ck" >/dev/null || fail "MoE run"
expect_error 1 "holds a mixture-of-experts model (model.n_experts = 4)" "--format safetensors" -- \
    "$S" ckpt export "$(ls "$WORK"/moe-ck/step_*.h5)" "$WORK/moe-hf" --format hf
[ ! -e "$WORK/moe-hf" ] || fail "the refused export left $WORK/moe-hf behind"
# optimizers: an unknown one, and settings the method cannot take, naming the key
expect_error 2 "train.optimizer = adam: unknown (adamw, adafactor, lamb, sgd)" -- "$S" train train.optimizer=adam
expect_error 2 "sgd.nesterov = true needs sgd.momentum > 0" -- "$S" train train.optimizer=sgd sgd.nesterov=true
expect_error 2 "train.lr = 0.01 is set, but Adafactor's default relative step" -- \
    "$S" train train.optimizer=adafactor train.lr=0.01
expect_error 2 "adafactor.decay_rate" "between" -- "$S" train train.optimizer=adafactor adafactor.decay_rate=0.5
expect_error 2 "lamb.max_trust = 1 is below lamb.min_trust = 2" -- \
    "$S" train train.optimizer=lamb lamb.min_trust=2 lamb.max_trust=1
# architectures: what a model cannot be is refused before training, naming the key
expect_error 2 "model.arch = 'mamba' is not an architecture shardlm has" -- "$S" train model.arch=mamba
expect_error 2 "model.n_kv_head = 3 does not divide model.n_head = 4" -- "$S" train model.arch=llama model.n_kv_head=3
expect_error 2 "rotary embeddings need an even head size" -- "$S" train model.arch=llama model.n_head=2 model.d_model=6
expect_error 2 "model.rope_low_freq_factor = 4 and model.rope_high_freq_factor = 2" -- \
    "$S" train model.arch=llama model.rope_scaling=llama3 model.rope_low_freq_factor=4 model.rope_high_freq_factor=2
expect_error 2 "model.rope_scaling = 'yarn': expected none or llama3" -- "$S" train model.arch=llama model.rope_scaling=yarn
expect_error 2 "model.tie_embeddings = false: GPT-2's LM head is its token embedding" -- \
    "$S" train model.tie_embeddings=false
expect_error 2 "model.n_kv_head = 2: GPT-2 has as many key/value heads" -- "$S" train model.n_kv_head=2
expect_error 2 "GPT-2 has learned positions, no rotary embeddings" -- "$S" train model.rope_theta=500000
expect_error 2 "model.seq_len = 64 is longer than the 32 positions the model has (model.max_pos)" -- \
    "$S" train model.max_pos=32
expect_error 2 "train.precision = 'fp16': expected fp32 or bf16" -- "$S" train train.precision=fp16
expect_error 2 "train.matmul = 'mkl': expected auto, openblas or dnnl" -- "$S" train train.matmul=mkl
if [ "$SLM_HAVE_DNNL" != yes ]; then
    expect_error 2 "train.matmul = dnnl: this shardlm was built without oneDNN" -- "$S" train train.matmul=dnnl
fi
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

# --- the GPT-2 tokenizer and shardlm prep -----------------------------------------------
# A byte-level vocabulary of 256 tokens without merges (every byte is a token).
mkdir "$WORK/tok" "$WORK/text" && : >"$WORK/text/empty.txt" && echo "some text" >"$WORK/text/a.txt" || fail mkdir
"$PYTHON3" - "$WORK/tok" <<'PY'
import json, sys
bs = list(range(33, 127)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs = bs[:] + [256 + n for n in range(256 - len(bs))]
bs += [b for b in range(256) if b not in bs]
json.dump({chr(c): i for i, c in enumerate(cs)}, open(sys.argv[1] + "/encoder.json", "w"))
open(sys.argv[1] + "/vocab.bpe", "w").write("#version: none\n")
PY
P="$S prep --tokenizer $WORK/tok --out $WORK/shards"
expect_error 1 "prep: the inputs hold no text" "empty.txt" -- $P "$WORK/text/empty.txt"
expect_error 1 "prep: $WORK/text/missing.txt: No such file" -- $P "$WORK/text/missing.txt"
expect_error 1 "prep: $WORK/text/*.md: no file matches" -- $P "$WORK/text/*.md"
expect_error 2 "prep: the val fraction 1.5 is not between 0 and 1" -- $P --val 1.5 "$WORK/text"
expect_error 2 "prep: --shard-tokens 0 is not between 1" -- $P --shard-tokens 0 "$WORK/text"
expect_error 2 "prep: --separator: unknown escape \\q" -- $P --separator 'a\qb' "$WORK/text"
expect_error 2 "prep: which text files?" -- $P
expect_error 2 "prep: where do the shards go? (--out DIR)" -- "$S" prep --tokenizer "$WORK/tok" "$WORK/text"
printf '{"a": 0,\n "b": }' >"$WORK/broken.json"
expect_error 1 "broken.json:2:7: not valid JSON" -- "$S" prep --encoder "$WORK/broken.json" --vocab "$WORK/tok/vocab.bpe" \
    --out "$WORK/shards" "$WORK/text"
expect_error 1 "$WORK/nowhere/encoder.json" -- "$S" prep --tokenizer "$WORK/nowhere" --out "$WORK/shards" "$WORK/text"
[ ! -e "$WORK/shards" ] || [ -z "$(ls -A "$WORK/shards")" ] || fail "a failed prep left files in $WORK/shards"
$P "$WORK/text" >/dev/null || fail "prep of a good corpus failed"
expect_error 1 "already holds 1 shard named data_*.bin" "--force" -- $P "$WORK/text"
$P --force "$WORK/text" >/dev/null || fail "prep --force did not replace the shards"
# on several ranks the error is the same, printed once
expect_error 1 "the inputs hold no text" -- "$MPIEXEC" -np 2 $P-2 "$WORK/text/empty.txt"
[ "$(grep -c 'shardlm: error' "$WORK/err")" = 1 ] || fail "2 ranks printed the error $(grep -c 'shardlm: error' "$WORK/err") times"
# a run names data.tokenizer when the directory is wrong or does not fit the model
expect_error 1 "data.tokenizer = $WORK/nowhere" "encoder.json" -- \
    "$S" train "data.train=$WORK/shards/data_train_*.bin" "data.tokenizer=$WORK/nowhere" model.seq_len=4
mkdir "$WORK/abc" && printf abcabcabcabc >"$WORK/abc/t.txt" && "$S" prep --tokenizer "$WORK/tok" --out "$WORK/abc" \
    --val 0 "$WORK/abc/t.txt" >/dev/null || fail "prep of abc failed" # ids 64..66
expect_error 1 "data.tokenizer = $WORK/tok has 256 tokens, more than model.vocab_size = 100" -- \
    "$S" train "data.train=$WORK/abc/data_train_*.bin" "data.tokenizer=$WORK/tok" model.seq_len=4 model.vocab_size=100
expect_error 1 "the synthetic corpus has its own code" -- "$S" train "data.tokenizer=$WORK/tok"
exit 0
