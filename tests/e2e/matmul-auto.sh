#!/bin/bash
# train.matmul: every GEMM backend is checked for correct products before use and a wrong
# one is never used; auto picks among those that pass, agreed by all ranks, keeps a resumed
# run's backend unless another is clearly faster, and records the choice in the log, the
# metrics and the checkpoint; launch/run picks OpenBLAS kernels that fit the CPU.
# SLM_TEST_GEMM_CORRUPT=openblas|dnnl (a test hook) makes that backend's products wrong by
# one element, as a CPU whose old OpenBLAS kernels compute wrong results would.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c 'import h5py' 2>/dev/null || skip "h5py missing (apt-get install python3-h5py)"
S=$SHARDLM
args=(model.n_layer=2 model.n_head=2 model.d_model=16 model.vocab_size=64 model.seq_len=8 train.steps=4
      train.micro_batch=2 train.global_batch=4 sample.tokens=0 log.peak_gflops=10 train.threads=1)
chosen() { sed -n 's/^matmul .* -> \([a-z0-9 ]*\) (.*/\1/p' "$1"; }

# the default is auto: every candidate checked, the choice in the log, each metrics line and the checkpoint
"$S" train "${args[@]}" "log.metrics=$WORK/m.jsonl" "ckpt.dir=$WORK/ck" >"$WORK/out" || fail "default run"
grep -q '^| train.matmul *| auto' "$WORK/out" || fail "the default train.matmul is not auto"
grep -q '^matmul    auto: openblas sgemm .*-> ' "$WORK/out" || { cat "$WORK/out"; fail "no matmul line"; }
pick=$(chosen "$WORK/out")
[ -n "$pick" ] || fail "cannot read the choice from: $(grep ^matmul "$WORK/out")"
"$PYTHON3" - "$WORK/m.jsonl" "$pick" "$WORK/ck/step_000000004.h5" <<'PY' || fail "the choice is not recorded"
import json, sys, h5py
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 4 and all(r["matmul"] == sys.argv[2] for r in recs), [r.get("matmul") for r in recs]
with h5py.File(sys.argv[3], "r") as f:
    got = f.attrs["matmul"]
    got = got.decode() if isinstance(got, bytes) else str(got)
    assert got == sys.argv[2], (got, sys.argv[2])
PY
echo "ok: auto chose '$pick', recorded in the metrics and the checkpoint"

# a forced backend that fails its check is an error before any step, naming it
SLM_TEST_GEMM_CORRUPT=openblas expect_error 1 "train.matmul = openblas fails its check on this CPU" \
    "openblas sgemm on rank 0: a fp32" "wrong beyond rounding" -- "$S" train "${args[@]}" train.matmul=openblas
grep -q '^step' "$WORK/out" && fail "a step ran on a backend that failed its check"

if [ "$SLM_HAVE_DNNL" = yes ]; then
    # auto with a wrong OpenBLAS on one rank of two: refused on every rank, oneDNN used, and
    # the losses are those of a run forced onto oneDNN (so nothing used the wrong products)
    "$MPIEXEC" -n 2 "$S" train "${args[@]}" train.matmul=dnnl "log.metrics=$WORK/d.jsonl" >/dev/null \
        || fail "the oneDNN run"
    "$MPIEXEC" -n 1 "$S" train "${args[@]}" "log.metrics=$WORK/c.jsonl" : \
        -n 1 env SLM_TEST_GEMM_CORRUPT=openblas "$S" train "${args[@]}" >"$WORK/out" 2>"$WORK/err" \
        || { cat "$WORK/err"; fail "auto with one rank's OpenBLAS wrong"; }
    grep -q 'openblas sgemm failed its check (rank 1: a fp32 .* wrong beyond rounding' "$WORK/out" \
        || { grep ^matmul "$WORK/out"; fail "the wrong OpenBLAS on rank 1 was not reported"; }
    [ "$(chosen "$WORK/out")" = "onednn sgemm" ] || fail "auto did not fall back to oneDNN: $(grep ^matmul "$WORK/out")"
    "$PYTHON3" - "$WORK/c.jsonl" "$WORK/d.jsonl" <<'PY' || fail "the losses differ from the oneDNN run's"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 4 and all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(a, b)), (a, b)
PY
    echo "ok: a wrong OpenBLAS on one rank was refused on both, oneDNN used, losses as oneDNN's"
    # a resumed run keeps the backend its checkpoint was trained with unless another is
    # faster by 5 % and 1 ms per micro-batch, which this tiny model's products never are
    "$S" train "${args[@]}" train.matmul=dnnl train.stop_after=2 "ckpt.dir=$WORK/res" >/dev/null || fail "run to step 2"
    "$S" train "${args[@]}" "ckpt.dir=$WORK/res" >"$WORK/out" || fail "resume under auto"
    grep -q '^resume ' "$WORK/out" || fail "did not resume"
    [ "$(chosen "$WORK/out")" = "onednn sgemm" ] || fail "the resumed run left the checkpoint's backend: $(grep ^matmul "$WORK/out")"
    echo "ok: the resumed run kept the checkpoint's onednn sgemm"
    # bf16 products: used where oneDNN has them on this CPU, else refused by the check
    if "$S" bench blas | grep -q '^backend   onednn bf16 matmul *check ok'; then
        "$S" train "${args[@]}" train.precision=bf16 train.matmul=dnnl >"$WORK/out" || fail "bf16 oneDNN run"
        [ "$(chosen "$WORK/out")" = "onednn bf16 matmul" ] || fail "bf16 products not used: $(grep ^matmul "$WORK/out")"
        echo "ok: bf16 products used"
    else
        expect_error 1 "train.matmul = dnnl fails its check on this CPU" "onednn bf16 matmul on rank 0: oneDNN" -- \
            "$S" train "${args[@]}" train.precision=bf16 train.matmul=dnnl
        "$S" train "${args[@]}" train.precision=bf16 >"$WORK/out" || fail "bf16 under auto"
        grep -q 'onednn bf16 matmul failed its check' "$WORK/out" || fail "auto did not report the bf16 check"
        echo "ok: this CPU has no oneDNN bf16 matmul: refused when forced, passed over by auto"
    fi
else
    # only OpenBLAS is built in: when it is wrong, nothing passes
    SLM_TEST_GEMM_CORRUPT=openblas expect_error 1 "train.matmul = auto: no GEMM backend passes its check" -- \
        "$S" train "${args[@]}"
fi

# launch/run: when OPENBLAS_CORETYPE is unset it exports what `shardlm bench blas
# --coretype` says fits the CPU (here a stand-in program says SkylakeX); a caller's own
# setting stays
mkdir "$WORK/bin"
printf '#!/bin/sh\nif [ "$1 $2 $3" = "bench blas --coretype" ]; then echo SkylakeX; else echo "core=${OPENBLAS_CORETYPE:-unset}"; fi\n' \
    >"$WORK/bin/shardlm"
chmod +x "$WORK/bin/shardlm"
[ "$(env -u OPENBLAS_CORETYPE "$SLM_SRCDIR/launch/run" "$WORK/bin/shardlm" x)" = core=SkylakeX ] \
    || fail "launch/run did not set the suggested core"
[ "$(OPENBLAS_CORETYPE=Haswell "$SLM_SRCDIR/launch/run" "$WORK/bin/shardlm" x)" = core=Haswell ] \
    || fail "launch/run overrode the caller's OPENBLAS_CORETYPE"
# and the real program's advice matches what OpenBLAS reports on this machine
core=$(env -u OPENBLAS_CORETYPE "$S" bench blas | sed -n 's/^openblas  core \([A-Za-z0-9]*\).*/\1/p')
[ -n "$core" ] || fail "bench blas names no OpenBLAS core"
echo "ok: launch/run's core choice; OpenBLAS here runs $core, advice: '$(env -u OPENBLAS_CORETYPE "$S" bench blas --coretype)'"
