#!/usr/bin/python3
"""Write token files from their format descriptions, not from shardlm's code:
  llm.c shard: 256 little-endian int32 (magic 20240520, version, token count, zeros),
    then the tokens (version 1: uint16; version 2, shardlm's extension: uint32);
  Megatron-LM indexed dataset: PREFIX.bin holds the tokens of every sequence back to back;
    PREFIX.idx holds b"MMIDIDX\\x00\\x00", uint64 version 1, uint8 dtype code (8 uint16,
    4 int32), uint64 sequence count, uint64 document count, int32 sequence lengths, int64
    byte offsets of the sequences in PREFIX.bin, int64 document boundaries (0, then the end
    of each document, in sequences).
usage: megatron_file.py llmc PATH VERSION TOKENS_FILE | megatron PREFIX CODE TOKENS_FILE [--corrupt past-end]
TOKENS_FILE: whitespace-separated token ids; a blank line ends a document (Megatron)."""
import struct, sys

kind, path, arg, tokens_file = sys.argv[1:5]
docs = [[int(t) for t in d.split()] for d in open(tokens_file).read().split("\n\n") if d.split()]
toks = [t for d in docs for t in d]
if kind == "llmc":
    version = int(arg)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, version, len(toks), *([0] * 253)))
        f.write(struct.pack("<%d%s" % (len(toks), "H" if version == 1 else "I"), *toks))
else:
    code = int(arg)
    fmt, size = {8: ("H", 2), 4: ("i", 4)}[code]
    # each document is split into sequences of at most 7 tokens, as a preprocessor might
    seqs, bounds = [], [0]
    for d in docs:
        for i in range(0, len(d), 7):
            seqs.append(d[i:i + 7])
        bounds.append(len(seqs))
    with open(path + ".bin", "wb") as f:
        for s in seqs:
            f.write(struct.pack("<%d%s" % (len(s), fmt), *s))
    offsets, at = [], 0
    for s in seqs:
        offsets.append(at)
        at += size * len(s)
    if "--corrupt" in sys.argv:  # the last sequence claims more tokens than the data file has
        last = len(seqs) - 1
        seqs[last] = seqs[last] + [0] * 1000
    with open(path + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<QBQQ", 1, code, len(seqs), len(bounds)))
        f.write(struct.pack("<%di" % len(seqs), *[len(s) for s in seqs]))
        f.write(struct.pack("<%dq" % len(seqs), *offsets))
        f.write(struct.pack("<%dq" % len(bounds), *bounds))
