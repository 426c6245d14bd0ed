# common.sh - helpers for the shell tests (sourced). Tests exit 0 pass, 1 fail, 77 skip.
set -u
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slm-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
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
