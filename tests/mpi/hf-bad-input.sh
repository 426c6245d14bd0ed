#!/bin/bash
# A bad Hugging Face model.init_from stops the job before training on every rank. The
# directories are tests/reference/hf_dir.py's `write-bad` set, each broken one way (a
# missing tensor, a wrong shape, a GPT-2 Conv1D weight stored as nn.Linear, an unknown
# model_type, a truncated file, a header cut short, offsets past the end of the data, a
# missing shard, an index that misplaces a tensor, an unsupported rotary scaling,
# key/value heads that do not divide the heads), with the names each error must mention;
# the intact one they break must load. Then run settings that contradict config.json.
# On 2 ranks each case ends both ranks within 30 s with the same exit status (2: the
# configuration; 1: the weights), each rank's recorded on its own, one error message
# naming what is wrong, and no training step.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import numpy' 2>/dev/null || skip "numpy missing for $PYTHON3"
run=(train.steps=2 train.micro_batch=1 train.global_batch=2 sample.tokens=0 log.peak_gflops=10 train.threads=1
     train.matmul=openblas)
B=$WORK/bad
"$PYTHON3" "$SLM_SRCDIR/tests/reference/hf_dir.py" write-bad "$B" >/dev/null || fail "writing the broken directories"

# expect STATUS MENTIONS SETTINGS...: both ranks exit STATUS, the error names every
# |-separated MENTION, no step ran
expect() {
    local want=$1 mentions=$2
    shift 2
    local what="${*#model.init_from=$B/}"
    rm -f "$WORK"/rc.* "$WORK"/err.* "$WORK"/out.*
    timeout 30 "$MPIEXEC" -n 2 sh -c '"$@" >"$0/out.$OMPI_COMM_WORLD_RANK" 2>"$0/err.$OMPI_COMM_WORLD_RANK"
                                      echo $? >"$0/rc.$OMPI_COMM_WORLD_RANK"' "$WORK" \
        "$SHARDLM" train "$@" "${run[@]}" || true
    for r in 0 1; do
        [ -f "$WORK/rc.$r" ] || fail "$what: rank $r did not finish within 30 s (a hang)"
        [ "$(cat "$WORK/rc.$r")" = "$want" ] || { cat "$WORK"/err.*; fail "$what: rank $r exited $(cat "$WORK/rc.$r"), expected $want"; }
        grep -q '^step ' "$WORK/out.$r" && [ "$want" != 0 ] && fail "$what: a training step ran on rank $r"
    done
    [ "$want" = 0 ] && { echo "ok: $what trains"; return; }
    local IFS='|'
    for m in $mentions; do
        grep -qF -- "$m" "$WORK/err.0" || { cat "$WORK"/err.*; fail "$what: the error does not mention '$m'"; }
    done
    n=$(cat "$WORK"/err.* | grep -c 'shardlm: error')
    [ "$n" = 1 ] || { cat "$WORK"/err.*; fail "$what: $n error messages, expected one"; }
    echo "ok: $what -> both ranks exit $want: $(grep 'shardlm: error' "$WORK/err.0" | cut -c1-170)"
}

# dir|status|mentions, from the manifest; a bad config.json is a configuration error
"$PYTHON3" - "$B/manifest.json" >"$WORK/cases" <<'PY' || fail "reading the manifest"
import json, sys
for c in json.load(open(sys.argv[1])):
    status = 0 if not c["mentions"] else 2 if c["dir"] in ("unknown-model-type", "rope-yarn", "kv-heads") else 1
    print("%s|%d|%s" % (c["dir"], status, "|".join(c["mentions"])))
PY
[ "$(wc -l <"$WORK/cases")" -ge 12 ] || fail "the manifest lists $(wc -l <"$WORK/cases") directories"
while IFS='|' read -r dir status mentions; do
    expect "$status" "$mentions" "model.init_from=$B/$dir" model.seq_len=16 </dev/null
done <"$WORK/cases"

G=$B/good-llama
expect 2 "model.n_layer = 4 (set on the command line) contradicts config.json's num_hidden_layers = 2 in $G" \
    "model.init_from=$G" model.n_layer=4
expect 2 "model.seq_len = 65 (set on the command line) is longer than config.json's max_position_embeddings = 64 in $G" \
    "model.init_from=$G" model.seq_len=65
printf '[model]\nn_kv_head = 4\n' >"$WORK/run.ini"
expect 2 "model.n_kv_head = 4 (set in $WORK/run.ini) contradicts config.json's num_key_value_heads = 2 in $G" \
    "$WORK/run.ini" "model.init_from=$G"
exit 0
