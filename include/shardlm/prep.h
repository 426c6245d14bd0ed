/* shardlm/prep.h - text files to token shards, spread over MPI ranks (`shardlm prep`).
 *
 * The inputs are read as one stream of bytes (files in the order given, directories in
 * sorted order) cut into documents: every file is a document, and with a separator the
 * text between two separators is one too (the separator itself is dropped, empty
 * documents are skipped). Each document becomes the end-of-text token (if any) and the
 * document's GPT-2 tokens. Document i goes to the val split when floor((i+1) f) >
 * floor(i f), f the val fraction, which spreads floor(n f) of n documents evenly through
 * the corpus; the rest go to train. Each split is written as llm.c shards of at most
 * shard_tokens tokens, uint16 (version 1) or, for vocabularies past 65536 tokens, uint32
 * (version 2).
 *
 * Ranks take equal byte ranges of the stream, moved forward to the next point where a
 * cut cannot change a token: a file start, or just after a line feed that follows a
 * printable ASCII character and precedes one, away from any separator. The tokens are
 * therefore those of encoding every document whole, and the shards are byte for byte
 * the same whatever the rank count. Each rank writes its tokens into the shared shard
 * files with MPI-IO under temporary names; rank 0 renames them once every rank is done,
 * so a failed run leaves no half-written shard under a shard's name. */
#ifndef SHARDLM_PREP_H
#define SHARDLM_PREP_H

#include <mpi.h>
#include <stdint.h>
#include "shardlm/bpe.h"
#include "shardlm/status.h"

enum { SLM_PREP_TRAIN = 0, SLM_PREP_VAL = 1 };

typedef struct slm_prep_options {
    const char *out_dir;   /* created if missing */
    const char *name;      /* shards are OUT/NAME_train_000000.bin, OUT/NAME_val_000000.bin, ... */
    double val_fraction;   /* 0..1 */
    uint64_t shard_tokens; /* at most this many tokens per shard (1 .. 2^31-1) */
    const char *separator; /* documents also end at this text; NULL or "": at file ends only */
    int32_t eot;           /* token written before every document, or -1 for none */
    int force;             /* replace NAME_*.bin shards already in OUT (else refuse) */
    /* Called on rank 0 after each piece it encodes, with the bytes of the whole stream
     * estimated done (rank 0's share scaled up: ranks get equal shares) and the total. */
    void (*progress)(void *ctx, double bytes_done, double bytes_total);
    void *progress_ctx;
} slm_prep_options;

typedef struct slm_prep_result {
    uint64_t files, bytes;
    uint64_t docs[2], tokens[2]; /* per split: [SLM_PREP_TRAIN], [SLM_PREP_VAL] */
    int shards[2];
    int token_bytes;             /* 2 or 4 */
} slm_prep_result;

/* Refuse options out of range (local; slm_prep checks them too). */
slm_status slm_prep_check_options(const slm_prep_options *opt);

/* Collective over comm; every rank passes the same arguments and a tokenizer opened from
 * the same files. Errors (a missing input, no text, an unwritable directory, shards
 * already there) are the same on every rank and come before any shard is written. */
slm_status slm_prep(MPI_Comm comm, slm_bpe_t bpe, char *const *inputs, int n_inputs, const slm_prep_options *opt,
                    slm_prep_result *result);

#endif
