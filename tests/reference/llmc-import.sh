#!/bin/bash
# model.init_from reads llm.c GPT-2 checkpoints (written here from the format description):
# every tensor lands where it belongs - the first V rows of the padded embedding, the first
# seq_len positions - on one rank and sharded over three at ZeRO stage 3; files of another
# version, magic, shape or size are refused with a message naming what is wrong.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
W="$SLM_SRCDIR/tests/reference/llmc_file.py"
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9 train.steps=1
      train.micro_batch=1 train.global_batch=3 sample.tokens=0 log.peak_gflops=10 train.threads=1)
"$PYTHON3" "$W" write "$WORK/m.bin" 2 3 24 37 40 16 || fail "writing the llm.c file"
"$SHARDLM" train "${args[@]}" "model.init_from=$WORK/m.bin" "log.dump=$WORK/d1.h5" >"$WORK/out" || fail "import on 1 rank"
grep -q "^init .*m.bin (llm.c GPT-2 checkpoint)" "$WORK/out" || fail "no import line"
"$PYTHON3" "$W" check "$WORK/m.bin" "$WORK/d1.h5" || fail "1 rank: imported weights"
timeout 300 "$MPIEXEC" -n 3 "$SHARDLM" train "${args[@]}" parallel.zero_stage=3 "model.init_from=$WORK/m.bin" \
    "log.dump=$WORK/d3.h5" >/dev/null || fail "import on 3 ranks"
"$PYTHON3" "$W" check "$WORK/m.bin" "$WORK/d3.h5" || fail "3 ranks stage 3: imported weights"
"$PYTHON3" "$W" write "$WORK/v5.bin" 2 3 24 37 40 16 --version 5
expect_error 1 "llm.c checkpoint version 5; only version 3 (fp32)" -- "$SHARDLM" train "${args[@]}" "model.init_from=$WORK/v5.bin"
"$PYTHON3" "$W" write "$WORK/mg.bin" 2 3 24 37 40 16 --magic 1234
expect_error 1 "bad magic 1234" -- "$SHARDLM" train "${args[@]}" "model.init_from=$WORK/mg.bin"
expect_error 1 "holds n_layer=2" "model.n_layer=3" -- "$SHARDLM" train "${args[@]}" model.n_layer=3 "model.init_from=$WORK/m.bin"
expect_error 1 "has positions for 16 tokens; model.seq_len = 20" -- "$SHARDLM" train "${args[@]}" model.seq_len=20 "model.init_from=$WORK/m.bin"
"$PYTHON3" "$W" write "$WORK/tr.bin" 2 3 24 37 40 16 --truncate
expect_error 1 "tr.bin" "but its header describes" -- "$SHARDLM" train "${args[@]}" "model.init_from=$WORK/tr.bin"
