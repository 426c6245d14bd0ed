/* bpe_impl.h - inside the GPT-2 tokenizer handle, shared by bpe.c (files, decode),
 * bpe_pretok.c (UTF-8 runs and the pattern) and bpe_merge.c (BPE, cache, encode). */
#ifndef SHARDLM_BPE_IMPL_H
#define SHARDLM_BPE_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "shardlm/bpe.h"

typedef struct {
    uint64_t key; /* (a << 32) | b, the ids of the pair */
    int32_t rank; /* line order in vocab.bpe; -1 marks an empty slot */
    int32_t merged; /* id of a+b */
} slm_bpe_merge;

typedef struct {
    uint64_t hash; /* 0 marks an empty slot */
    uint32_t off;  /* into cache_arena: the key's bytes, then ntok int32 tokens (aligned) */
    uint16_t klen, ntok;
} slm_bpe_cache_slot;

struct slm_bpe {
    int32_t n_vocab;
    uint32_t *tok_off;       /* (n_vocab + 1): token i's bytes are tok_bytes[off[i]..off[i+1]) */
    unsigned char *tok_bytes;
    int32_t byte_tok[256];   /* the one-byte token of each byte */

    slm_bpe_merge *merges;   /* open addressing, merge_mask + 1 slots, at most half used */
    uint64_t merge_mask;
    int merge_shift;         /* 64 - log2(slots): a slot is the top bits of a product */

    pcre2_code *re;
    pcre2_match_data *md;
    int jit;

    slm_bpe_cache_slot *cache; /* cache_mask + 1 slots, at most half of them used */
    uint64_t cache_mask;
    size_t cache_used;
    unsigned char *cache_arena;
    size_t arena_used, arena_cap;

    /* scratch of one BPE run, grown as needed: the symbols of the pre-token as a linked
     * list, and a min-heap of (rank << 32 | position) candidate merges */
    int32_t *sym, *prev, *next;
    uint64_t *heap, *pending;
    size_t scratch_cap;
};

/* Look up the merge of the pair (a, b); NULL if there is none. */
static inline const slm_bpe_merge *slm_bpe_find_merge(const struct slm_bpe *b, int32_t x, int32_t y)
{
    uint64_t key = ((uint64_t)(uint32_t)x << 32) | (uint32_t)y;
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> b->merge_shift;; i = (i + 1) & b->merge_mask) {
        const slm_bpe_merge *m = &b->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
    }
}

/* Pre-tokenization (bpe_pretok.c). */
typedef slm_status (*slm_bpe_piece_fn)(void *ctx, const unsigned char *piece, size_t n);
slm_status slm_bpe_pretok_init(struct slm_bpe *b);
void slm_bpe_pretok_free(struct slm_bpe *b);
/* Call fn for each pre-token of s[0..n), in order; stops at the first error. */
slm_status slm_bpe_pretokenize(struct slm_bpe *b, const unsigned char *s, size_t n,
                               slm_bpe_piece_fn fn, void *ctx);

/* The merge stage's memory (bpe_merge.c). */
void slm_bpe_merge_free(struct slm_bpe *b);

#endif
