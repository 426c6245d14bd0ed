#!/bin/bash
# A layout that cannot work is refused on every rank before the first collective, with
# one clear message and no hang.
. "$(dirname "$0")/../e2e/common.sh"
args=(model.n_layer=1 model.n_head=2 model.d_model=16 model.vocab_size=32 model.seq_len=8
      train.steps=2 train.micro_batch=2 train.global_batch=12 sample.tokens=0 log.peak_gflops=10)
run() { timeout 120 "$MPIEXEC" -n "$@"; }
expect_error 2 "train.global_batch = 12 is not a multiple of train.micro_batch = 2 x 4 data-parallel ranks" -- \
    run 4 "$SHARDLM" train "${args[@]}"
[ "$(grep -c 'shardlm: error' "$WORK/err")" = 1 ] || { cat "$WORK/err"; fail "the error was not printed exactly once"; }
expect_error 2 "parallel.zero_stage" "between 0 and 3" -- run 3 "$SHARDLM" train "${args[@]}" parallel.zero_stage=5
# a Llama whose key/value heads tensor parallelism cannot split
expect_error 2 "parallel.tp = 2 does not divide model.n_kv_head = 1" -- \
    run 2 "$SHARDLM" train "${args[@]}" train.global_batch=2 model.arch=llama model.n_kv_head=1 parallel.tp=2
[ "$(grep -c 'shardlm: error' "$WORK/err")" = 1 ] || { cat "$WORK/err"; fail "the error was not printed exactly once"; }
expect_error 2 "unknown key parallel.dp" -- run 2 "$SHARDLM" train "${args[@]}" parallel.dp=2
# data that only one rank cannot open: no hang; every rank stops with that rank's message
ok=(model.n_layer=1 model.n_head=2 model.d_model=16 model.vocab_size=32 model.seq_len=8
    train.steps=2 train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10)
expect_error 1 "shardlm: error: rank 1: data: no token shard matches '$WORK/only1.bin'" -- \
    run 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then d="data.train=$0/only1.bin"; else d=data.train=synthetic; fi
                 exec "$SHARDLM" train "$d" "$@"' "$WORK" "${ok[@]}"
[ "$(grep -c 'shardlm: error' "$WORK/err")" = 1 ] || { cat "$WORK/err"; fail "the error was not printed exactly once"; }
