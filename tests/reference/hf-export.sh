#!/bin/bash
# `shardlm ckpt export --format hf` round trips: a checkpoint exported as a Hugging Face model
# directory (F32, sharded into several files by a small --max-shard-size, with an index)
# and imported by a fresh run (model.init_from) gives back its parameters bitwise - on one
# rank and at ZeRO 3 on two, for Llama (untied, grouped-query, llama3 scaling) and GPT-2
# (Conv1D transposes); exported as BF16 it gives back their bf16 rounding (to nearest
# even, computed here); exported with interleaved rotary pairing it comes back bitwise when
# imported as interleaved (what its config.json records) and differs in q and k alone when
# imported as half. The single-file export still holds every parameter as F32. The
# directories are read by tests/reference/hf_dir.py (written from the format descriptions:
# every tensor of the model under Hugging Face's name and shape, nothing else) and compared
# with h5py (tests/reference/hf_compare.py).
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py or numpy missing for $PYTHON3"
D="$SLM_SRCDIR/tests/reference/hf_dir.py"
C="$SLM_SRCDIR/tests/reference/hf_compare.py"
S=$SHARDLM
common=(train.micro_batch=1 train.global_batch=2 sample.tokens=0 log.peak_gflops=10 train.threads=1
        train.matmul=openblas)
llama=(model.arch=llama model.n_layer=3 model.n_head=4 model.n_kv_head=2 model.d_model=24 model.ffn_hidden=26
       model.vocab_size=37 model.seq_len=8 model.max_pos=12 model.tie_embeddings=false model.rope_theta=500
       model.rope_scaling=llama3 model.rope_factor=4 model.rope_original_max_pos=8 model.rope_high_freq_factor=2)
gpt2=(model.n_layer=2 model.n_head=2 model.d_model=16 model.vocab_size=29 model.seq_len=8)

# import DIR DUMP [NP [settings...]]: a fresh one-step run from DIR, dumping its start
import() {
    local dir=$1 dump=$2 np=${3:-1}
    shift 3 2>/dev/null || shift $#
    timeout 120 "$MPIEXEC" -n "$np" "$S" train "${common[@]}" train.steps=1 "model.init_from=$dir" "log.dump=$dump" "$@" \
        >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err"; fail "importing $dir $*"; }
}
# same CKPT DUMP [options]: the dump starts from the checkpoint's parameters
same() { "$PYTHON3" "$C" same "$@" || fail "same $*"; }
# layout DIR DTYPE: hf_dir.py reads the model; how many files, each tensor's dtype
layout() {
    "$PYTHON3" "$D" inspect "$1" >"$WORK/layout" || { cat "$WORK/layout"; fail "hf_dir.py cannot read $1"; }
    grep -q "^ok: every tensor" "$WORK/layout" || fail "$1: not every tensor"
    [ "$(grep -c " $2 " "$WORK/layout")" = "$(grep -c "safetensors$" "$WORK/layout")" ] || fail "$1: not all $2"
    grep -q "\"torch_dtype\": \"$3\"" "$1/config.json" || fail "$1: torch_dtype is not $3"
    ls "$1"/*.safetensors | wc -l
}

for arch in llama gpt2; do
    if [ $arch = llama ]; then model=("${llama[@]}"); else model=("${gpt2[@]}"); fi
    "$S" train "${common[@]}" "${model[@]}" train.steps=3 "ckpt.dir=$WORK/ck-$arch" >/dev/null || fail "$arch: training"
    ck="$WORK/ck-$arch/step_000000003.h5"
    "$S" ckpt export --format hf "$ck" "$WORK/$arch-f32" --max-shard-size 2KB >"$WORK/out" || fail "$arch: export"
    grep -q "exported .* (Hugging Face model directory)" "$WORK/out" || fail "$arch: no export line"
    files=$(layout "$WORK/$arch-f32" F32 float32)
    [ "$files" -ge 2 ] && [ -f "$WORK/$arch-f32/model.safetensors.index.json" ] || fail "$arch: $files files"
    echo "$arch: F32 in $files files"
    import "$WORK/$arch-f32" "$WORK/d.h5"
    same "$ck" "$WORK/d.h5"
    import "$WORK/$arch-f32" "$WORK/d3.h5" 2 parallel.zero_stage=3
    same "$ck" "$WORK/d3.h5"
    "$S" ckpt export --format hf "$ck" "$WORK/$arch-bf16" --dtype bf16 >/dev/null || fail "$arch: bf16 export"
    [ "$(layout "$WORK/$arch-bf16" BF16 bfloat16)" = 1 ] || fail "$arch: not one BF16 file"
    import "$WORK/$arch-bf16" "$WORK/b.h5"
    same "$ck" "$WORK/b.h5" --bf16
    "$S" ckpt export "$ck" "$WORK/$arch.safetensors" >/dev/null || fail "$arch: single-file export"
    same "$ck" "$WORK/$arch.safetensors"
done

# interleaved rotary pairing: q and k rows reordered, recorded in config.json
ck="$WORK/ck-llama/step_000000003.h5"
"$S" ckpt export --format hf "$ck" "$WORK/inter" --rope-pairing interleaved >/dev/null || fail "interleaved export"
grep -q '"shardlm_rope_pairing": "interleaved"' "$WORK/inter/config.json" || fail "config.json does not record the pairing"
import "$WORK/inter" "$WORK/i.h5"
grep -q "q and k rows interleaved" "$WORK/out" || fail "the import does not say it reads interleaved rows"
same "$ck" "$WORK/i.h5"
import "$WORK/inter" "$WORK/h.h5" 1 model.init_rope_pairing=half
same "$ck" "$WORK/h.h5" --differ attn.q.weight,attn.k.weight

# what export refuses
expect_error 1 "already holds a config.json" -- "$S" ckpt export --format hf "$ck" "$WORK/inter"
expect_error 2 "--dtype f16: expected f32 or bf16" -- "$S" ckpt export --format hf "$ck" "$WORK/x" --dtype f16
expect_error 2 "--max-shard-size '12XB'" -- "$S" ckpt export --format hf "$ck" "$WORK/x" --max-shard-size 12XB
expect_error 2 "go with --format hf" -- "$S" ckpt export "$ck" "$WORK/x.safetensors" --dtype bf16
exit 0
