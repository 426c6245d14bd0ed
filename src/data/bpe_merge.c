/* bpe_merge.c - the merge stage of the GPT-2 tokenizer, its cache, and encode().
 *
 * The reference merges a pre-token by rounds: find the lowest-ranked adjacent pair, merge
 * every occurrence of it left to right, repeat. Rescanning the word every round is
 * quadratic, which a long run of spaces or of invalid bytes would feel. Here the symbols
 * are a linked list and the candidate pairs sit in a min-heap keyed by (rank, position):
 * popping all entries of the lowest rank visits that pair's occurrences left to right.
 * An entry is checked when popped (both symbols alive and still forming a pair of that
 * rank; a rank names one pair), so stale entries are skipped. Pairs created during a
 * round wait in `pending` until it ends, as in the reference, even if their rank is lower.
 *
 * The cache maps a pre-token's bytes to its tokens (pre-tokens up to CACHE_KEY_MAX bytes),
 * and is emptied when it reaches CACHE_SLOTS_MAX slots or CACHE_ARENA_MAX bytes. */
#include <stdlib.h>
#include <string.h>
#include "bpe_impl.h"

#define CACHE_KEY_MAX 255
#define CACHE_SLOTS_MAX ((uint64_t)1 << 21)
#define CACHE_ARENA_MAX ((size_t)128 << 20)

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0, c;
    while ((c = 2 * i + 1) < *n) {
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

static slm_status grow_scratch(struct slm_bpe *b, size_t n)
{
    if (n <= b->scratch_cap) return SLM_OK;
    size_t cap = b->scratch_cap ? b->scratch_cap : 64;
    while (cap < n) cap *= 2;
    int32_t **p[3] = {&b->sym, &b->prev, &b->next};
    for (int i = 0; i < 3; i++) {
        void *q = realloc(*p[i], cap * sizeof(int32_t));
        SLM_CHECK(q, SLM_ERR_NOMEM, "cannot allocate BPE scratch for a %zu-byte pre-token", n);
        *p[i] = q;
    }
    /* n - 1 initial pairs, then at most two new ones per merge (of at most n - 1) */
    uint64_t *h = realloc(b->heap, 3 * cap * sizeof *h);
    SLM_CHECK(h, SLM_ERR_NOMEM, "cannot allocate BPE scratch for a %zu-byte pre-token", n);
    b->heap = h;
    h = realloc(b->pending, 2 * cap * sizeof *h);
    SLM_CHECK(h, SLM_ERR_NOMEM, "cannot allocate BPE scratch for a %zu-byte pre-token", n);
    b->pending = h;
    b->scratch_cap = cap;
    return SLM_OK;
}

/* BPE of one pre-token of n >= 2 bytes (n < 2^31); the tokens end up in b->sym[0..ret). */
static size_t merge_piece(struct slm_bpe *b, const unsigned char *p, size_t n)
{
    int32_t *sym = b->sym, *prev = b->prev, *next = b->next;
    uint64_t *heap = b->heap, *pending = b->pending;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = b->byte_tok[p[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const slm_bpe_merge *m = slm_bpe_find_merge(b, sym[i], sym[i + 1]);
        if (m) heap_push(heap, &nh, (uint64_t)m->rank << 32 | i);
    }
    while (nh) {
        uint64_t rank = heap[0] >> 32;
        size_t np = 0;
        while (nh && heap[0] >> 32 == rank) {
            int32_t i = (int32_t)(uint32_t)heap_pop(heap, &nh), j = next[i];
            if (sym[i] < 0 || j < 0) continue;
            const slm_bpe_merge *m = slm_bpe_find_merge(b, sym[i], sym[j]);
            if (!m || (uint64_t)m->rank != rank) continue;
            sym[i] = m->merged;
            sym[j] = -1;
            next[i] = next[j];
            if (next[i] >= 0) prev[next[i]] = i;
            if (prev[i] >= 0 && (m = slm_bpe_find_merge(b, sym[prev[i]], sym[i])))
                pending[np++] = (uint64_t)m->rank << 32 | (uint32_t)prev[i];
            if (next[i] >= 0 && (m = slm_bpe_find_merge(b, sym[i], sym[next[i]])))
                pending[np++] = (uint64_t)m->rank << 32 | (uint32_t)i;
        }
        for (size_t k = 0; k < np; k++) heap_push(heap, &nh, pending[k]);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[k++] = sym[i]; /* symbol 0 is never merged away */
    return k;
}

/* Eight bytes per multiply (FNV-1a takes one): a typical pre-token is one or two steps. */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = n * 0x9E3779B97F4A7C15ull, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h | 1; /* 0 marks an empty slot */
}

static const int32_t *cache_tokens(const struct slm_bpe *b, const slm_bpe_cache_slot *c)
{
    return (const int32_t *)(b->cache_arena + ((c->off + c->klen + 3) & ~(size_t)3));
}

static const slm_bpe_cache_slot *cache_find(const struct slm_bpe *b, const unsigned char *p, size_t n,
                                            uint64_t h)
{
    if (!b->cache) return NULL;
    for (uint64_t i = h & b->cache_mask;; i = (i + 1) & b->cache_mask) {
        const slm_bpe_cache_slot *c = &b->cache[i];
        if (!c->hash) return NULL;
        if (c->hash == h && c->klen == n && !memcmp(b->cache_arena + c->off, p, n)) return c;
    }
}

static void cache_put(struct slm_bpe *b, uint64_t h, uint32_t off, uint16_t klen, uint16_t ntok)
{
    uint64_t i = h & b->cache_mask;
    while (b->cache[i].hash) i = (i + 1) & b->cache_mask;
    b->cache[i] = (slm_bpe_cache_slot){h, off, klen, ntok};
    b->cache_used++;
}

/* Make room for one more entry of `bytes` arena bytes; 0 if memory is short (the entry
 * is then simply not cached). */
static int cache_reserve(struct slm_bpe *b, size_t bytes)
{
    uint64_t slots = b->cache ? b->cache_mask + 1 : 0;
    int full = (b->cache_used + 1) * 2 > slots && slots >= CACHE_SLOTS_MAX;
    if (b->cache && (full || b->arena_used + bytes > CACHE_ARENA_MAX)) { /* start afresh */
        memset(b->cache, 0, slots * sizeof *b->cache);
        b->cache_used = 0;
        b->arena_used = 0;
    }
    if ((b->cache_used + 1) * 2 > slots) {
        uint64_t ns = slots ? 2 * slots : 4096;
        slm_bpe_cache_slot *old = b->cache, *c = calloc(ns, sizeof *c);
        if (!c) return 0;
        b->cache = c;
        b->cache_mask = ns - 1;
        b->cache_used = 0;
        for (uint64_t i = 0; i < slots; i++)
            if (old[i].hash) cache_put(b, old[i].hash, old[i].off, old[i].klen, old[i].ntok);
        free(old);
    }
    if (b->arena_used + bytes > b->arena_cap) {
        size_t cap = b->arena_cap ? 2 * b->arena_cap : (size_t)1 << 16;
        while (cap < b->arena_used + bytes) cap *= 2;
        unsigned char *a = realloc(b->cache_arena, cap);
        if (!a) return 0;
        b->cache_arena = a;
        b->arena_cap = cap;
    }
    return 1;
}

static void cache_insert(struct slm_bpe *b, const unsigned char *p, size_t n, uint64_t h,
                         const int32_t *tok, size_t k)
{
    size_t at = b->arena_used, tok_at = (at + n + 3) & ~(size_t)3;
    if (!cache_reserve(b, tok_at - at + k * sizeof *tok)) return;
    at = b->arena_used; /* reserve may have emptied the cache */
    tok_at = (at + n + 3) & ~(size_t)3;
    memcpy(b->cache_arena + at, p, n);
    memcpy(b->cache_arena + tok_at, tok, k * sizeof *tok);
    b->arena_used = tok_at + k * sizeof *tok;
    cache_put(b, h, (uint32_t)at, (uint16_t)n, (uint16_t)k);
}

void slm_bpe_merge_free(struct slm_bpe *b)
{
    free(b->cache);
    free(b->cache_arena);
    free(b->sym);
    free(b->prev);
    free(b->next);
    free(b->heap);
    free(b->pending);
}

typedef struct {
    struct slm_bpe *b;
    int32_t *out;
    size_t cap, n;
} sink;

static slm_status emit(sink *s, const int32_t *tok, size_t k)
{
    SLM_CHECK(k <= s->cap - s->n, SLM_ERR_ARG,
              "the output holds %zu tokens and the text needs more (cap >= its length in bytes always suffices)",
              s->cap);
    memcpy(s->out + s->n, tok, k * sizeof *tok);
    s->n += k;
    return SLM_OK;
}

static slm_status encode_piece(void *ctx, const unsigned char *p, size_t n)
{
    sink *s = ctx;
    struct slm_bpe *b = s->b;
    if (n == 1) return emit(s, &b->byte_tok[p[0]], 1);
    uint64_t h = 0;
    if (n <= CACHE_KEY_MAX) {
        h = hash_bytes(p, n);
        const slm_bpe_cache_slot *c = cache_find(b, p, n, h);
        if (c) return emit(s, cache_tokens(b, c), c->ntok);
    }
    SLM_CHECK(n < ((size_t)1 << 31), SLM_ERR_UNSUPPORTED, "a pre-token of %zu bytes (2^31 is the limit)", n);
    SLM_CALL(grow_scratch(b, n));
    size_t k = merge_piece(b, p, n);
    if (h) cache_insert(b, p, n, h, b->sym, k);
    return emit(s, b->sym, k);
}

long slm_bpe_encode(slm_bpe_t b, const char *bytes, size_t len, int32_t *out, size_t cap)
{
    sink s = {b, out, cap, 0};
    if (slm_bpe_pretokenize(b, (const unsigned char *)bytes, len, encode_piece, &s) != SLM_OK) return -1;
    return (long)s.n;
}
