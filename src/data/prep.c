/* prep.c - `shardlm prep`: each rank walks its byte range of the input stream document
 * by document, encodes, and writes its tokens into the shared shard files (see
 * shardlm/prep.h for the contract). */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "prep_impl.h"
#include "shardlm/data.h"
#include "shardlm/agree.h"

#define CHUNK_BYTES (1u << 20) /* encode at most about this much at once (progress, scratch) */
#define WRITE_TOKENS (1u << 20)

static const char *split_names[2] = {"train", "val"};

typedef struct {
    uint32_t *v;
    size_t n, cap;
} tokvec;

typedef struct {
    slm_prep_inputs in;
    const char *sep;
    size_t seplen;
} stream;

static int printable(unsigned char c) { return c > ' ' && c < 0x7f; }

/* May the text d[0..n) be cut before d[p] without changing a token or a document? After
 * "X\n" and before "Y", X and Y printable ASCII, GPT-2's pattern ends a match at X and
 * makes the line feed a pre-token of its own whether or not Y follows; and no separator
 * may start in the L bytes before p, so a scan for separators started at p finds what
 * a scan from the document's start finds. */
static int cut_ok(const unsigned char *d, uint64_t n, uint64_t p, const char *sep, size_t L)
{
    if (p < 2 || p >= n || d[p - 1] != '\n' || !printable(d[p - 2]) || !printable(d[p])) return 0;
    for (uint64_t q = p >= L ? p - L : 0; L && q < p; q++)
        if (q + L <= n && !memcmp(d + q, sep, L)) return 0;
    return 1;
}

/* The first cut at or after p in d[0..n), or n. */
static uint64_t next_cut(const unsigned char *d, uint64_t n, uint64_t p, const char *sep, size_t L)
{
    for (uint64_t q = p ? p - 1 : 0; q < n;) {
        const unsigned char *nl = memchr(d + q, '\n', n - q);
        if (!nl) break;
        q = (uint64_t)(nl - d) + 1;
        if (q >= p && cut_ok(d, n, q, sep, L)) return q;
    }
    return n;
}

/* Where a rank whose equal share starts at pos really starts: pos itself at a file start,
 * else the next cut in its file, else the next file. */
static slm_status range_start(stream *st, uint64_t pos, uint64_t *out)
{
    slm_prep_inputs *in = &st->in;
    *out = in->start[in->n];
    if (pos >= *out) return SLM_OK;
    int f = slm_prep_file_of(in, pos);
    uint64_t o = pos - in->start[f];
    const unsigned char *d;
    SLM_CALL(slm_prep_map(in, f, &d));
    *out = in->start[f] + (o ? next_cut(d, slm_prep_file_size(in, f), o, st->sep, st->seplen) : 0);
    return SLM_OK;
}

/* Hand every non-empty piece of a document in stream bytes [a, b) to fn, in order;
 * starts says whether the piece begins a document (a range may begin inside one). */
typedef slm_status (*piece_fn)(void *ctx, int starts, const unsigned char *s, size_t n);

static slm_status walk(stream *st, uint64_t a, uint64_t b, piece_fn fn, void *ctx)
{
    slm_prep_inputs *in = &st->in;
    if (a >= b) return SLM_OK;
    for (int f = slm_prep_file_of(in, a); f < in->n && in->start[f] < b; f++) {
        uint64_t lo = (a > in->start[f] ? a : in->start[f]) - in->start[f];
        uint64_t hi = (b < in->start[f + 1] ? b : in->start[f + 1]) - in->start[f];
        if (hi <= lo) continue;
        const unsigned char *d;
        SLM_CALL(slm_prep_map(in, f, &d));
        for (int starts = lo == 0;; starts = 1) {
            const unsigned char *e = st->seplen ? memmem(d + lo, hi - lo, st->sep, st->seplen) : NULL;
            uint64_t end = e ? (uint64_t)(e - d) : hi;
            if (end > lo) SLM_CALL(fn(ctx, starts, d + lo, end - lo));
            if (!e) break;
            lo = end + st->seplen;
        }
    }
    return SLM_OK;
}

static slm_status count_doc(void *ctx, int starts, const unsigned char *s, size_t n)
{
    (void)s, (void)n;
    *(uint64_t *)ctx += (uint64_t)starts;
    return SLM_OK;
}

typedef struct {
    slm_bpe_t bpe;
    const slm_prep_options *opt;
    int64_t doc; /* global index of the document being encoded */
    int split;
    tokvec out[2];
    uint64_t docs[2];
    int32_t *scratch;
    size_t scratch_cap;
    uint64_t done, share, total; /* bytes of this rank's share encoded, the share, the stream */
} encoder;

static slm_status append(tokvec *t, const int32_t *tok, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->n + n) cap *= 2;
        uint32_t *v = realloc(t->v, cap * sizeof *v);
        SLM_CHECK(v, SLM_ERR_NOMEM, "prep: out of memory holding %zu tokens", cap);
        t->v = v;
        t->cap = cap;
    }
    for (size_t i = 0; i < n; i++) t->v[t->n + i] = (uint32_t)tok[i];
    t->n += n;
    return SLM_OK;
}

static int is_val(int64_t doc, double f) { return f > 0 && floor((double)(doc + 1) * f) > floor((double)doc * f); }

static slm_status encode_piece(void *ctx, int starts, const unsigned char *s, size_t n)
{
    encoder *e = ctx;
    if (starts) {
        e->split = is_val(++e->doc, e->opt->val_fraction) ? SLM_PREP_VAL : SLM_PREP_TRAIN;
        e->docs[e->split]++;
        if (e->opt->eot >= 0) SLM_CALL(append(&e->out[e->split], &e->opt->eot, 1));
    }
    while (n) {
        size_t len = n <= CHUNK_BYTES ? n : (size_t)next_cut(s, n, CHUNK_BYTES, NULL, 0);
        if (len > e->scratch_cap) {
            int32_t *p = realloc(e->scratch, len * sizeof *p);
            SLM_CHECK(p, SLM_ERR_NOMEM, "prep: out of memory encoding %zu bytes at once", len);
            e->scratch = p;
            e->scratch_cap = len;
        }
        long got = slm_bpe_encode(e->bpe, (const char *)s, len, e->scratch, e->scratch_cap);
        SLM_CHECK(got >= 0, SLM_ERR_INTERNAL, "prep: %s", slm_error_message());
        SLM_CALL(append(&e->out[e->split], e->scratch, (size_t)got));
        s += len;
        n -= len;
        e->done += len;
        if (e->opt->progress && e->share)
            e->opt->progress(e->opt->progress_ctx, (double)e->done / (double)e->share * (double)e->total,
                             (double)e->total);
    }
    return SLM_OK;
}

static void shard_path(char *buf, size_t cap, const slm_prep_options *o, int split, int k, const char *suffix)
{
    snprintf(buf, cap, "%s/%s_%s_%06d.bin%s", o->out_dir, o->name, split_names[split], k, suffix);
}

/* Shards named NAME_train_*.bin or NAME_val_*.bin in OUT (rank 0). */
static slm_status existing_shards(const slm_prep_options *o, glob_t *g)
{
    char pattern[4200];
    memset(g, 0, sizeof *g);
    for (int split = 0; split < 2; split++) {
        snprintf(pattern, sizeof pattern, "%s/%s_%s_*.bin", o->out_dir, o->name, split_names[split]);
        int rc = glob(pattern, split ? GLOB_APPEND : 0, NULL, g);
        SLM_CHECK(rc == 0 || rc == GLOB_NOMATCH, SLM_ERR_IO, "prep: cannot list %s", o->out_dir);
    }
    return SLM_OK;
}

/* Rank 0: OUT exists (made if needed), is writable, and holds no shards of this name
 * unless they may be replaced. */
static slm_status prepare_out_dir(const slm_prep_options *o)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", o->out_dir);
    for (char *p = path + 1; *p; p++) /* mkdir -p */
        if (*p == '/') {
            *p = '\0';
            SLM_CHECK(mkdir(path, 0777) == 0 || errno == EEXIST, SLM_ERR_IO, "prep: cannot create %s: %s", path,
                      strerror(errno));
            *p = '/';
        }
    SLM_CHECK(mkdir(path, 0777) == 0 || errno == EEXIST, SLM_ERR_IO, "prep: cannot create %s: %s", path,
              strerror(errno));
    SLM_CHECK(access(path, W_OK | X_OK) == 0, SLM_ERR_IO, "prep: cannot write in %s: %s", path, strerror(errno));
    glob_t g;
    SLM_CALL(existing_shards(o, &g));
    size_t found = g.gl_pathc;
    char first[4096] = "";
    if (found) snprintf(first, sizeof first, "%s", g.gl_pathv[0]);
    globfree(&g);
    SLM_CHECK(!found || o->force, SLM_ERR_ARG,
              "prep: %s already holds %zu shard%s named %s_*.bin (%s ...); remove them, choose another --name, "
              "or replace them with --force", o->out_dir, found, found == 1 ? "" : "s", o->name, first);
    return SLM_OK;
}

static slm_status mpi_io(int rc, const char *what, const char *path)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (rc == MPI_SUCCESS) return SLM_OK;
    MPI_Error_string(rc, msg, &len);
    return SLM_ERROR(SLM_ERR_IO, "prep: cannot %s %s: %s", what, path, msg);
}

/* This rank's tokens [offset, offset + t->n) of a split of total tokens go into the
 * split's shards; each shard is one collective MPI-IO file under a temporary name. */
static slm_status write_split(MPI_Comm comm, const slm_prep_options *o, int split, const tokvec *t, uint64_t offset,
                              uint64_t total, int width, int *nshards)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    const uint64_t S = o->shard_tokens;
    *nshards = (int)((total + S - 1) / S);
    void *buf = malloc((size_t)WRITE_TOKENS * (size_t)width);
    SLM_CALL(slm_agree(comm, buf ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "prep: out of memory")));
    slm_status s = SLM_OK;
    for (int k = 0; k < *nshards && s == SLM_OK; k++) {
        const uint64_t lo = (uint64_t)k * S, hi = lo + S < total ? lo + S : total;
        char path[4200];
        shard_path(path, sizeof path, o, split, k, ".partial");
        MPI_File fh;
        s = slm_agree(comm, mpi_io(MPI_File_open(comm, path, MPI_MODE_CREATE | MPI_MODE_WRONLY, MPI_INFO_NULL, &fh),
                                   "create", path));
        if (s != SLM_OK) break;
        slm_status w = mpi_io(MPI_File_set_size(fh, (MPI_Offset)(SLM_SHARD_HEADER_BYTES + (hi - lo) * width)),
                              "size", path);
        if (rank == 0 && w == SLM_OK) {
            int32_t header[256] = {SLM_SHARD_MAGIC, width == 2 ? SLM_SHARD_VERSION : SLM_SHARD_VERSION_U32,
                                   (int32_t)(hi - lo)};
            w = mpi_io(MPI_File_write_at(fh, 0, header, sizeof header, MPI_BYTE, MPI_STATUS_IGNORE), "write", path);
        }
        uint64_t from = offset > lo ? offset : lo, to = offset + t->n < hi ? offset + t->n : hi;
        for (uint64_t i = from; i < to && w == SLM_OK; i += WRITE_TOKENS) {
            size_t m = to - i < WRITE_TOKENS ? (size_t)(to - i) : WRITE_TOKENS;
            const uint32_t *src = t->v + (i - offset);
            for (size_t j = 0; j < m; j++)
                if (width == 2) ((uint16_t *)buf)[j] = (uint16_t)src[j];
                else ((uint32_t *)buf)[j] = src[j];
            MPI_Offset at = (MPI_Offset)(SLM_SHARD_HEADER_BYTES + (i - lo) * (uint64_t)width);
            w = mpi_io(MPI_File_write_at(fh, at, buf, (int)(m * (size_t)width), MPI_BYTE, MPI_STATUS_IGNORE),
                       "write", path);
        }
        slm_status c = mpi_io(MPI_File_close(&fh), "close", path);
        s = slm_agree(comm, w != SLM_OK ? w : c);
    }
    free(buf);
    return s;
}

/* Rank 0, once every shard is complete: drop replaced shards, then give the new ones
 * their names. */
static slm_status commit(const slm_prep_options *o, const int nshards[2])
{
    char from[4200], to[4200];
    if (o->force) {
        glob_t g;
        SLM_CALL(existing_shards(o, &g));
        for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
        globfree(&g);
    }
    for (int split = 0; split < 2; split++)
        for (int k = 0; k < nshards[split]; k++) {
            shard_path(from, sizeof from, o, split, k, ".partial");
            shard_path(to, sizeof to, o, split, k, "");
            SLM_CHECK(rename(from, to) == 0, SLM_ERR_IO, "prep: cannot rename %s to %s: %s", from, to,
                      strerror(errno));
        }
    return SLM_OK;
}

slm_status slm_prep_check_options(const slm_prep_options *o)
{
    SLM_CHECK(o->out_dir && o->out_dir[0], SLM_ERR_ARG, "prep: where do the shards go? (--out DIR)");
    SLM_CHECK(o->name && o->name[0] && !strchr(o->name, '/'), SLM_ERR_ARG,
              "prep: --name '%s' must be a non-empty file name prefix without '/'", o->name ? o->name : "");
    SLM_CHECK(o->val_fraction >= 0 && o->val_fraction <= 1, SLM_ERR_ARG,
              "prep: the val fraction %g is not between 0 and 1", o->val_fraction);
    SLM_CHECK(o->shard_tokens >= 1 && o->shard_tokens <= 0x7fffffff, SLM_ERR_ARG,
              "prep: --shard-tokens %llu is not between 1 and 2^31-1 (the header's count is an int32)",
              (unsigned long long)o->shard_tokens);
    return SLM_OK;
}

static slm_status run(MPI_Comm comm, slm_bpe_t bpe, stream *st, encoder *e, const slm_prep_options *o,
                      slm_prep_result *r)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const uint64_t total = st->in.start[st->in.n];
    uint64_t a, b;
    slm_status s = range_start(st, (uint64_t)((unsigned __int128)total * (unsigned)rank / (unsigned)size), &a);
    if (s == SLM_OK)
        s = range_start(st, (uint64_t)((unsigned __int128)total * (unsigned)(rank + 1) / (unsigned)size), &b);
    uint64_t starts = 0, first_doc = 0;
    if (s == SLM_OK) s = walk(st, a, b, count_doc, &starts);
    SLM_CALL(slm_agree(comm, s));
    MPI_Exscan(&starts, &first_doc, 1, MPI_UINT64_T, MPI_SUM, comm);
    if (rank == 0) first_doc = 0; /* Exscan leaves rank 0's undefined */

    *e = (encoder){.bpe = bpe, .opt = o, .doc = (int64_t)first_doc - 1, .share = b - a, .total = total};
    e->split = e->doc >= 0 && is_val(e->doc, o->val_fraction); /* of a document begun on an earlier rank */
    SLM_CALL(slm_agree(comm, walk(st, a, b, encode_piece, e)));

    uint64_t mine[4] = {e->out[0].n, e->out[1].n, e->docs[0], e->docs[1]}, before[4] = {0}, all[4];
    MPI_Exscan(mine, before, 4, MPI_UINT64_T, MPI_SUM, comm);
    if (rank == 0) memset(before, 0, sizeof before);
    MPI_Allreduce(mine, all, 4, MPI_UINT64_T, MPI_SUM, comm);
    int vocab = slm_bpe_vocab_size(bpe);
    *r = (slm_prep_result){.files = (uint64_t)st->in.n, .bytes = total, .docs = {all[2], all[3]},
                           .tokens = {all[0], all[1]}, .token_bytes = vocab > 65536 ? 4 : 2};
    for (int split = 0; split < 2; split++)
        SLM_CALL(write_split(comm, o, split, &e->out[split], before[split], all[split], r->token_bytes,
                             &r->shards[split]));
    SLM_CALL(slm_agree(comm, rank == 0 ? commit(o, r->shards) : SLM_OK));
    return SLM_OK;
}

slm_status slm_prep(MPI_Comm comm, slm_bpe_t bpe, char *const *inputs, int n_inputs, const slm_prep_options *o,
                    slm_prep_result *r)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    SLM_CALL(slm_prep_check_options(o));
    SLM_CALL(slm_agree(comm, rank == 0 ? prepare_out_dir(o) : SLM_OK));
    stream st = {.sep = o->separator && o->separator[0] ? o->separator : NULL};
    st.seplen = st.sep ? strlen(st.sep) : 0;
    SLM_CALL(slm_prep_inputs_open(comm, inputs, n_inputs, &st.in));
    encoder e = {0};
    slm_status s = run(comm, bpe, &st, &e, o, r);
    free(e.out[0].v);
    free(e.out[1].v);
    free(e.scratch);
    slm_prep_inputs_close(&st.in);
    return s == SLM_OK ? SLM_OK : slm_error_push(s, __FILE__, __LINE__, __func__);
}
