#!/bin/bash
# The safetensors reader and writer against files written and read with numpy from the
# format description (tests/reference/safetensors_write.py): F32, BF16 (every bit
# pattern) and F16 (every bit pattern) files, one of all three dtypes with an indented
# header not padded to 8 bytes, and a sharded directory with an index, each read back by
# tests/unit/st_tool in ranges and 2-D blocks and compared value for value with numpy's
# own decoding; the C writer's F32 and BF16 output, in one file and in shards, read by the
# Python reader (file names, index, header layout, tensor order, bf16 rounding); and two
# broken inputs refused with messages naming the file and the tensor.
. "$(dirname "$0")/../e2e/common.sh"
"$PYTHON3" -c 'import numpy' 2>/dev/null || skip "numpy missing (apt-get install python3-numpy)"
PY="$SLM_SRCDIR/tests/reference/safetensors_write.py"
TOOL="$SLM_BUILDDIR/tests/unit/st_tool"
[ -x "$TOOL" ] || fail "$TOOL is not built (make check builds it)"

mkdir "$WORK/py"
"$PYTHON3" "$PY" write "$WORK/py" || fail "writing the numpy files"
for case in f32.safetensors bf16.safetensors f16.safetensors mixed.safetensors sharded; do
    "$TOOL" dump "$WORK/py/$case" format source >"$WORK/$case.jsonl" || fail "st_tool could not read $case"
    "$PYTHON3" "$PY" compare "$WORK/py" "$case" "$WORK/$case.jsonl" || fail "$case read back wrong"
done
# the index named directly, not through its directory
"$TOOL" dump "$WORK/py/sharded/model.safetensors.index.json" format source >"$WORK/index.jsonl" || fail "reading the index"
"$PYTHON3" "$PY" compare "$WORK/py" sharded "$WORK/index.jsonl" || fail "the index read back wrong"

# the writer: one file and shards (limits of 300, 148 and 100 bytes of data: several
# files, the first exactly full at 148, and tensors larger than the limit alone in theirs)
for args in "F32 0" "BF16 0" "F32 300" "F32 148" "BF16 100" "F32 1"; do
    set -- $args
    dir="$WORK/c-$1-$2"
    "$TOOL" write "$dir" "$1" "$2" || fail "st_tool write $args"
    "$PYTHON3" "$PY" check-written "$dir" "$1" "$2" || fail "the $args output, read by numpy"
done
n=$(ls "$WORK/c-F32-300" | wc -l)
[ "$n" -ge 4 ] || fail "F32 with 300-byte shards wrote $n files, expected 3 or more shards and an index"

# broken inputs, named
mkdir "$WORK/bad"
"$PYTHON3" "$PY" write-bad "$WORK/bad" || fail "writing the broken files"
expect_error 1 "cut.safetensors: tensor" "run past the end of the data" -- "$TOOL" dump "$WORK/bad/cut.safetensors"
expect_error 1 "model.safetensors.index.json: weight_map puts tensor \"b\" in" "model-00002-of-00002.safetensors, which cannot be opened" \
    -- "$TOOL" dump "$WORK/bad/lost-shard"
echo "safetensors: numpy's files read back, the writer's files read by numpy"
