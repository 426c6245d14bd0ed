/* dataset.c - token sources (mapped llm.c shards or the synthetic corpus) and the
 * mapping from a global sample index to a window of T+1 tokens.
 *
 * Window w of a shard starts at token w*T, so consecutive windows share one token (the last
 * target of one is the first input of the next, as in llm.c); windows never cross a shard
 * boundary. Sample g falls in epoch g / windows; within an epoch the windows come in a
 * pseudorandom order keyed by the seed and the epoch (or in file order), so the stream
 * of samples is a function of g alone: the same for any rank count, and a resumed run
 * continues with the next sample it has not seen. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "data_impl.h"
#include "shardlm/bpe.h"
#include "shardlm/data.h"
#include "shardlm/rng.h"

typedef struct {
    const void *tokens; /* into a mapping or the synthetic buffer */
    int width;          /* bytes per token: 2 (uint16) or 4 (uint32 / int32) */
    size_t ntok, nwin;
    void *map, *map2;   /* map2: an indexed dataset's .idx */
    size_t map_len, map2_len;
} segment;

static inline uint32_t seg_tok(const segment *s, size_t i)
{
    return s->width == 2 ? ((const uint16_t *)s->tokens)[i] : ((const uint32_t *)s->tokens)[i];
}

/* Every token below vocab_size, else an error naming the file and the byte offset. */
static slm_status check_tokens(const segment *s, const char *path, size_t data_offset, int vocab_size)
{
    for (size_t i = 0; i < s->ntok; i++)
        SLM_CHECK(seg_tok(s, i) < (uint32_t)vocab_size, SLM_ERR_FORMAT,
                  "%s: token %u at byte offset %zu (token %zu) is not below model.vocab_size = %d", path,
                  seg_tok(s, i), data_offset + (size_t)s->width * i, i, vocab_size);
    return SLM_OK;
}

static void unmap_segment(segment *s)
{
    if (s->map) munmap(s->map, s->map_len);
    if (s->map2) munmap(s->map2, s->map2_len);
    s->map = s->map2 = NULL;
}

slm_status slm_map_file(const char *path, void **map, size_t *len)
{
    int fd = open(path, O_RDONLY);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return SLM_ERROR(SLM_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    }
    *len = (size_t)st.st_size;
    *map = *len ? mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    SLM_CHECK(*map != MAP_FAILED, SLM_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    return SLM_OK;
}

struct slm_dataset {
    int vocab_size, T;
    int synthetic;
    int shuffle;
    uint64_t seed;
    slm_synth_codec codec;
    slm_bpe_t bpe;   /* the text codec of token shards, if known */
    uint16_t *owned; /* synthetic tokens */
    segment *segs;
    int nsegs;
    size_t *win_start; /* (nsegs+1) prefix sums of windows */
    size_t ntok;
    char desc[512];
};

/* Map one llm.c shard and check everything about it once: header, size, every token.
 * Version 1 holds uint16 tokens (llm.c's); version 2, uint32 (vocabularies past 65535). */
static slm_status map_shard(const char *path, int vocab_size, segment *s)
{
    memset(s, 0, sizeof *s);
    SLM_CALL(slm_map_file(path, &s->map, &s->map_len));
    const size_t len = s->map_len;
    const int32_t *h = s->map;
    slm_status st = SLM_OK;
    if (len < SLM_SHARD_HEADER_BYTES)
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: %zu bytes is shorter than the %d-byte shard header", path, len,
                       SLM_SHARD_HEADER_BYTES);
    else if (h[0] != SLM_SHARD_MAGIC)
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: bad magic %d at offset 0 (expected %d, an llm.c token shard)",
                       path, h[0], SLM_SHARD_MAGIC);
    else if (h[1] != SLM_SHARD_VERSION && h[1] != SLM_SHARD_VERSION_U32)
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: unsupported version %d at offset 4 (expected %d: uint16 tokens, or %d: "
                       "uint32)", path, h[1], SLM_SHARD_VERSION, SLM_SHARD_VERSION_U32);
    else {
        s->width = h[1] == SLM_SHARD_VERSION ? 2 : 4;
        if (h[2] < 0 || (size_t)SLM_SHARD_HEADER_BYTES + (size_t)s->width * (size_t)h[2] != len)
            st = SLM_ERROR(SLM_ERR_FORMAT, "%s: header at offset 8 says %d tokens (%zu bytes), but the file has %zu "
                           "bytes", path, h[2],
                           (size_t)SLM_SHARD_HEADER_BYTES + (size_t)s->width * (size_t)(h[2] < 0 ? 0 : h[2]), len);
    }
    if (st == SLM_OK) {
        s->ntok = (size_t)h[2];
        s->tokens = (const char *)s->map + SLM_SHARD_HEADER_BYTES;
        st = check_tokens(s, path, SLM_SHARD_HEADER_BYTES, vocab_size);
    }
    if (st != SLM_OK) unmap_segment(s);
    return st;
}

/* A Megatron-LM indexed dataset: PREFIX.idx (header "MMIDIDX\0\0", version 1, dtype
 * code, sequence and document counts, then int32 sequence lengths, int64 byte offsets
 * into PREFIX.bin, int64 document boundaries) and PREFIX.bin (the tokens). Its sequences,
 * in order and back to back, are one token stream; uint16 (code 8) and int32 (code 4)
 * tokens are read. */
static slm_status map_indexed(const char *idx_path, int vocab_size, segment *s)
{
    memset(s, 0, sizeof *s);
    SLM_CALL(slm_map_file(idx_path, &s->map2, &s->map2_len));
    const unsigned char *p = s->map2;
    const size_t ilen = s->map2_len, head = 9 + 8 + 1 + 8 + 8;
    uint64_t version = 0, nseq = 0, ndoc = 0;
    uint8_t code = 0;
    slm_status st = SLM_OK;
    if (ilen < head || memcmp(p, "MMIDIDX\0\0", 9))
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: not a Megatron index (no MMIDIDX header in its first 9 bytes)", idx_path);
    else {
        memcpy(&version, p + 9, 8);
        code = p[17];
        memcpy(&nseq, p + 18, 8);
        memcpy(&ndoc, p + 26, 8);
        if (version != 1) st = SLM_ERROR(SLM_ERR_FORMAT, "%s: index version %llu at offset 9 (expected 1)", idx_path,
                                         (unsigned long long)version);
        else if (code != 8 && code != 4)
            st = SLM_ERROR(SLM_ERR_FORMAT, "%s: token type code %u at offset 17 (8: uint16 and 4: int32 are read)",
                           idx_path, code);
        else if (nseq == 0 || nseq > (ilen - head) / 12 || head + 12 * nseq + 8 * ndoc > ilen)
            st = SLM_ERROR(SLM_ERR_FORMAT, "%s: %llu sequences and %llu documents do not fit its %zu bytes", idx_path,
                           (unsigned long long)nseq, (unsigned long long)ndoc, ilen);
    }
    char bin_path[4096];
    const size_t plen = strlen(idx_path) - 4; /* without ".idx" */
    snprintf(bin_path, sizeof bin_path, "%.*s.bin", (int)plen, idx_path);
    if (st == SLM_OK) st = slm_map_file(bin_path, &s->map, &s->map_len);
    if (st == SLM_OK) {
        s->width = code == 8 ? 2 : 4;
        const unsigned char *sizes = p + head, *ptrs = p + head + 4 * nseq;
        int64_t expect = 0, first = 0;
        for (uint64_t i = 0; i < nseq && st == SLM_OK; i++) {
            int32_t n;
            int64_t at;
            memcpy(&n, sizes + 4 * i, 4);
            memcpy(&at, ptrs + 8 * i, 8);
            if (i == 0) first = expect = at;
            if (at < 0 || (uint64_t)at > s->map_len) /* checked first: the sums below cannot overflow */
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: sequence %llu starts at byte %lld, outside %s (%zu bytes)",
                               idx_path, (unsigned long long)i, (long long)at, bin_path, s->map_len);
            else if (at % s->width) /* tokens are read in place: they must be aligned */
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: sequence %llu starts at byte %lld, not a multiple of the %d-byte "
                               "token size", idx_path, (unsigned long long)i, (long long)at, s->width);
            else if (n < 0 || at != expect)
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: sequence %llu (length %d at byte %lld) does not follow the one "
                               "before it (expected byte %lld): only sequences stored back to back are read",
                               idx_path, (unsigned long long)i, n, (long long)at, (long long)expect);
            else if ((uint64_t)at + (uint64_t)s->width * (uint64_t)n > s->map_len)
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: sequence %llu ends at byte %llu, past the end of %s (%zu bytes)",
                               idx_path, (unsigned long long)i, (unsigned long long)at + (uint64_t)s->width * n,
                               bin_path, s->map_len);
            if (st == SLM_OK) expect = at + (int64_t)s->width * n;
        }
        if (st == SLM_OK) {
            s->tokens = s->map ? (const char *)s->map + first : NULL; /* an empty .bin maps nothing */
            s->ntok = (size_t)(expect - first) / (size_t)s->width;
            st = check_tokens(s, bin_path, (size_t)first, vocab_size);
        }
    }
    if (st != SLM_OK) unmap_segment(s);
    return st;
}

static slm_status open_synthetic(slm_dataset_t ds, uint64_t seed, int split, size_t min_tokens)
{
    slm_synth_codec_init(&ds->codec, ds->vocab_size);
    size_t nchars = min_tokens / (size_t)ds->codec.digits + 1;
    size_t len = 0;
    char *text = slm_synth_text(slm_rng_key(seed, SLM_RNG_DATA, (uint64_t)split), nchars, &len);
    SLM_CHECK(text, SLM_ERR_NOMEM, "cannot allocate %zu characters of synthetic text", nchars);
    size_t cap = len * (size_t)ds->codec.digits;
    int32_t *tmp = malloc(cap * sizeof *tmp);
    ds->owned = malloc(cap * sizeof *ds->owned);
    if (!tmp || !ds->owned) {
        free(text);
        free(tmp);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate %zu synthetic tokens", cap);
    }
    long n = slm_synth_encode(&ds->codec, text, len, tmp, cap);
    free(text);
    SLM_CHECK(n == (long)cap, SLM_ERR_INTERNAL, "synthetic text did not encode (%ld of %zu tokens)", n, cap);
    for (size_t i = 0; i < cap; i++) ds->owned[i] = (uint16_t)tmp[i];
    free(tmp);
    ds->segs = calloc(1, sizeof *ds->segs);
    SLM_CHECK(ds->segs, SLM_ERR_NOMEM, "out of memory");
    ds->nsegs = 1;
    ds->segs[0].tokens = ds->owned;
    ds->segs[0].width = 2;
    ds->segs[0].ntok = cap;
    ds->synthetic = 1;
    return SLM_OK;
}

static slm_status open_shards(slm_dataset_t ds, const char *pattern)
{
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH) { /* a Megatron dataset is named by its prefix: PREFIX.idx */
        char idx[4096];
        snprintf(idx, sizeof idx, "%s.idx", pattern);
        rc = glob(idx, GLOB_ERR, NULL, &g);
    }
    SLM_CHECK(rc == 0 && g.gl_pathc > 0, SLM_ERR_IO,
              "data: no token shard matches '%s' (use a glob of llm.c .bin shards or Megatron .idx files, "
              "or `synthetic`)", pattern);
    ds->segs = calloc(g.gl_pathc, sizeof *ds->segs);
    if (!ds->segs) {
        globfree(&g);
        return SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *path = g.gl_pathv[i];
        const size_t n = strlen(path);
        slm_status s = n > 4 && !strcmp(path + n - 4, ".idx") ? map_indexed(path, ds->vocab_size, &ds->segs[i])
                                                               : map_shard(path, ds->vocab_size, &ds->segs[i]);
        if (s != SLM_OK) {
            globfree(&g);
            return slm_error_push(s, __FILE__, __LINE__, __func__);
        }
        ds->nsegs++;
    }
    snprintf(ds->desc, sizeof ds->desc, "%d shard%s matching %s", ds->nsegs, ds->nsegs > 1 ? "s" : "",
             pattern);
    globfree(&g);
    return SLM_OK;
}

slm_status slm_dataset_open(const char *spec, int vocab_size, int seq_len, uint64_t seed, int split,
                            size_t min_tokens, slm_dataset_t *out)
{
    *out = NULL;
    slm_dataset_t ds = calloc(1, sizeof *ds);
    SLM_CHECK(ds, SLM_ERR_NOMEM, "out of memory");
    ds->vocab_size = vocab_size;
    ds->T = seq_len;
    ds->seed = seed;
    slm_status s;
    if (!strcmp(spec, "synthetic")) s = open_synthetic(ds, seed, split, min_tokens);
    else s = open_shards(ds, spec);
    if (s == SLM_OK) {
        ds->win_start = calloc((size_t)ds->nsegs + 1, sizeof *ds->win_start);
        if (!ds->win_start) s = SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    }
    if (s != SLM_OK) {
        slm_dataset_destroy(&ds);
        return slm_error_push(s, __FILE__, __LINE__, __func__);
    }
    for (int i = 0; i < ds->nsegs; i++) {
        segment *sg = &ds->segs[i];
        sg->nwin = sg->ntok > (size_t)seq_len ? (sg->ntok - 1) / (size_t)seq_len : 0;
        ds->win_start[i + 1] = ds->win_start[i] + sg->nwin;
        ds->ntok += sg->ntok;
    }
    if (ds->win_start[ds->nsegs] == 0) {
        slm_dataset_destroy(&ds);
        return SLM_ERROR(SLM_ERR_FORMAT, "data '%s': no shard holds model.seq_len + 1 = %d tokens",
                         spec, seq_len + 1);
    }
    if (ds->synthetic)
        snprintf(ds->desc, sizeof ds->desc,
                 "synthetic grammar, %zu tokens, %d token%s per character, entropy rate %.4f nats/token",
                 ds->ntok, ds->codec.digits, ds->codec.digits > 1 ? "s" : "",
                 slm_dataset_entropy_floor(ds));
    *out = ds;
    return SLM_OK;
}

void slm_dataset_destroy(slm_dataset_t *dsp)
{
    slm_dataset_t ds = *dsp;
    if (!ds) return;
    for (int i = 0; i < ds->nsegs; i++)
        unmap_segment(&ds->segs[i]);
    free(ds->segs);
    free(ds->win_start);
    free(ds->owned);
    slm_bpe_close(&ds->bpe);
    free(ds);
    *dsp = NULL;
}

size_t slm_dataset_num_windows(slm_dataset_t ds) { return ds->win_start[ds->nsegs]; }
size_t slm_dataset_num_tokens(slm_dataset_t ds) { return ds->ntok; }
const char *slm_dataset_describe(slm_dataset_t ds) { return ds->desc; }

void slm_dataset_set_shuffle(slm_dataset_t ds, int on) { ds->shuffle = on; }

void slm_dataset_sample(slm_dataset_t ds, uint64_t g, int32_t *out)
{
    const uint64_t nw = slm_dataset_num_windows(ds);
    size_t w = (size_t)(g % nw);
    if (ds->shuffle) w = (size_t)slm_rng_permute(slm_rng_key(ds->seed, SLM_RNG_ORDER, g / nw), nw, w);
    int lo = 0, hi = ds->nsegs - 1; /* last segment whose first window is <= w */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ds->win_start[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    const segment *sg = &ds->segs[lo];
    const size_t at = (w - ds->win_start[lo]) * (size_t)ds->T;
    for (int t = 0; t <= ds->T; t++) out[t] = (int32_t)seg_tok(sg, at + (size_t)t);
}

double slm_dataset_entropy_floor(slm_dataset_t ds)
{
    return ds->synthetic ? slm_synth_entropy_per_char() / ds->codec.digits : NAN;
}

slm_status slm_dataset_set_tokenizer(slm_dataset_t ds, const char *dir)
{
    SLM_CHECK(!ds->synthetic, SLM_ERR_CONFIG,
              "data.tokenizer = %s: the synthetic corpus has its own code; leave data.tokenizer empty", dir);
    slm_bpe_t bpe;
    if (slm_bpe_open_dir(dir, &bpe) != SLM_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", slm_error_message());
        return SLM_ERROR(SLM_ERR_CONFIG, "data.tokenizer = %s: %s", dir, why);
    }
    int n = slm_bpe_vocab_size(bpe);
    if (n > ds->vocab_size) {
        slm_bpe_close(&bpe);
        return SLM_ERROR(SLM_ERR_CONFIG, "data.tokenizer = %s has %d tokens, more than model.vocab_size = %d", dir, n,
                         ds->vocab_size);
    }
    slm_bpe_close(&ds->bpe);
    ds->bpe = bpe;
    return SLM_OK;
}

void slm_dataset_decode(slm_dataset_t ds, const int32_t *tok, size_t n, char *out, size_t cap)
{
    if (ds->synthetic) {
        slm_synth_decode(&ds->codec, tok, n, out, cap);
        return;
    }
    if (ds->bpe && cap) {
        size_t len = slm_bpe_decode(ds->bpe, tok, n, out, cap - 1);
        if (len != (size_t)-1) {
            out[len < cap - 1 ? len : cap - 1] = '\0';
            return;
        }
        slm_error_clear(); /* an id past the tokenizer's vocabulary: show ids instead */
    }
    size_t w = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && w + 16 < cap; i++)
        w += (size_t)snprintf(out + w, cap - w, "%s%d", i ? " " : "", tok[i]);
}

long slm_dataset_encode(slm_dataset_t ds, const char *text, int32_t *out, size_t cap)
{
    if (ds->bpe) return slm_bpe_encode(ds->bpe, text, strlen(text), out, cap);
    if (!ds->synthetic) return -1;
    return slm_synth_encode(&ds->codec, text, strlen(text), out, cap);
}
