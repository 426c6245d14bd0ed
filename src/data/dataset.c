/* dataset.c - token sources (mapped llm.c shards or the synthetic corpus) and the
 * mapping from a global sample index to a window of T+1 tokens.
 *
 * Windows do not overlap and never cross a shard boundary: window w of a shard starts at
 * token w*T. Sample g falls in epoch g / windows; within an epoch the windows come in a
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
#include "shardlm/data.h"
#include "shardlm/rng.h"

typedef struct {
    const uint16_t *tokens; /* into a mapping or the synthetic buffer */
    size_t ntok, nwin;
    void *map;
    size_t map_len;
} segment;

struct slm_dataset {
    int vocab_size, T;
    int synthetic;
    int shuffle;
    uint64_t seed;
    slm_synth_codec codec;
    uint16_t *owned; /* synthetic tokens */
    segment *segs;
    int nsegs;
    size_t *win_start; /* (nsegs+1) prefix sums of windows */
    size_t ntok;
    char desc[512];
};

/* Map one shard and check everything about it once: header, size, every token. */
static slm_status map_shard(const char *path, int vocab_size, segment *s)
{
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "cannot open token shard %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return SLM_ERROR(SLM_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    }
    size_t len = (size_t)st.st_size;
    if (len < SLM_SHARD_HEADER_BYTES) {
        close(fd);
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: %zu bytes is shorter than the %d-byte shard header",
                         path, len, SLM_SHARD_HEADER_BYTES);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    SLM_CHECK(map != MAP_FAILED, SLM_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    s->map = map;
    s->map_len = len;
    const int32_t *h = map;
    slm_status st_ = SLM_OK;
    if (h[0] != SLM_SHARD_MAGIC)
        st_ = SLM_ERROR(SLM_ERR_FORMAT, "%s: bad magic %d at offset 0 (expected %d, an llm.c token shard)",
                        path, h[0], SLM_SHARD_MAGIC);
    else if (h[1] != SLM_SHARD_VERSION)
        st_ = SLM_ERROR(SLM_ERR_FORMAT, "%s: unsupported version %d at offset 4 (expected %d: uint16 tokens)",
                        path, h[1], SLM_SHARD_VERSION);
    else if (h[2] < 0 || (size_t)SLM_SHARD_HEADER_BYTES + 2 * (size_t)h[2] != len)
        st_ = SLM_ERROR(SLM_ERR_FORMAT, "%s: header at offset 8 says %d tokens (%zu bytes), but the file has %zu bytes",
                        path, h[2], (size_t)SLM_SHARD_HEADER_BYTES + 2 * (size_t)(h[2] < 0 ? 0 : h[2]), len);
    if (st_ != SLM_OK) {
        munmap(map, len);
        s->map = NULL;
        return st_;
    }
    s->ntok = (size_t)h[2];
    s->tokens = (const uint16_t *)((const char *)map + SLM_SHARD_HEADER_BYTES);
    for (size_t i = 0; i < s->ntok; i++)
        if (s->tokens[i] >= vocab_size) {
            slm_status e = SLM_ERROR(SLM_ERR_FORMAT,
                                     "%s: token %u at byte offset %zu (token %zu) is not below "
                                     "model.vocab_size = %d", path, s->tokens[i],
                                     (size_t)SLM_SHARD_HEADER_BYTES + 2 * i, i, vocab_size);
            munmap(map, len);
            s->map = NULL;
            return e;
        }
    return SLM_OK;
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
    ds->segs[0].ntok = cap;
    ds->synthetic = 1;
    return SLM_OK;
}

static slm_status open_shards(slm_dataset_t ds, const char *pattern)
{
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);
    SLM_CHECK(rc == 0 && g.gl_pathc > 0, SLM_ERR_IO,
              "data: no token shard matches '%s' (use a glob of llm.c .bin shards, or `synthetic`)",
              pattern);
    ds->segs = calloc(g.gl_pathc, sizeof *ds->segs);
    if (!ds->segs) {
        globfree(&g);
        return SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        slm_status s = map_shard(g.gl_pathv[i], ds->vocab_size, &ds->segs[i]);
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
        if (ds->segs[i].map) munmap(ds->segs[i].map, ds->segs[i].map_len);
    free(ds->segs);
    free(ds->win_start);
    free(ds->owned);
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
    const uint16_t *src = ds->segs[lo].tokens + (w - ds->win_start[lo]) * (size_t)ds->T;
    for (int t = 0; t <= ds->T; t++) out[t] = src[t];
}

double slm_dataset_entropy_floor(slm_dataset_t ds)
{
    return ds->synthetic ? slm_synth_entropy_per_char() / ds->codec.digits : NAN;
}

void slm_dataset_decode(slm_dataset_t ds, const int32_t *tok, size_t n, char *out, size_t cap)
{
    if (ds->synthetic) {
        slm_synth_decode(&ds->codec, tok, n, out, cap);
        return;
    }
    size_t w = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && w + 16 < cap; i++)
        w += (size_t)snprintf(out + w, cap - w, "%s%d", i ? " " : "", tok[i]);
}

long slm_dataset_encode(slm_dataset_t ds, const char *text, int32_t *out, size_t cap)
{
    if (!ds->synthetic) return -1;
    return slm_synth_encode(&ds->codec, text, strlen(text), out, cap);
}
