# layouts.sh - shared by the layout tests (sourced): a small model whose every unit size is
# indivisible by 2, 3 and 4 ranks (d_model 24, vocab 37), a global batch of 24 micro-batches
# of 2 (12, 6, 4 and 3 accumulation steps on 1-4 ranks), the fp32 one-rank reference run,
# and a runner for one layout. The learning rate is 3e-3: at 1e-2 training amplifies the
# rounding differences between layouts enough that a 4-layer model ends 1e-5 apart in
# gradient norm after 20 steps even on plain dp3, which says nothing about correctness.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
NPS=${SLM_TEST_NPS:-"1 2 3 4"}
args=(model.n_layer=2 model.n_head=3 model.d_model=24 model.vocab_size=37 model.seq_len=9
      train.steps=20 train.micro_batch=2 train.global_batch=24 train.lr=3e-3 train.warmup_steps=4
      train.min_lr=1e-3 train.grad_clip=1.0 sample.tokens=0 log.peak_gflops=10 train.threads=1 log.every=20
      ${own_settings[@]+"${own_settings[@]}"}) # a test may set own_settings=(key=value ...) first
"$SHARDLM" train "${args[@]}" "log.dump=$WORK/ref.h5" >/dev/null || fail "fp32 one-rank reference run"
# run_layout NP DUMP [key=value ...]: train on NP ranks, dump to DUMP; a hang fails after 300 s
run_layout() {
    local np=$1 dump=$2
    shift 2
    timeout 300 "$MPIEXEC" -n "$np" "$SHARDLM" train "${args[@]}" "log.dump=$dump" "$@" >"$WORK/out" 2>&1 \
        || { cat "$WORK/out"; fail "np $np $* did not finish"; }
}
compare() { "$PYTHON3" "$(dirname "$0")/compare_dumps.py" "$WORK/ref.h5" "$@"; }
