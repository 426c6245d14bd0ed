/* safetensors_write.c - writing a model as safetensors files the way Hugging Face lays
 * out a model directory, one tensor at a time.
 *
 * Each added tensor is converted to the file's dtype and appended to a spool: a temporary
 * file in the target directory, unlinked as soon as it is created, so it holds the data
 * without a name and vanishes with the process whatever happens. Only the table of
 * names, shapes and spool offsets stays in memory. finish() sorts the table by name,
 * cuts it into shards of at most max_shard_bytes of data, and writes each shard (header,
 * then its tensors copied from the spool in bounded pieces) under a temporary name; only
 * when every shard is written and synced are they renamed into place, and the index,
 * which is what makes a sharded directory a model, comes last. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "shardlm/kernels.h"
#include "shardlm/writable.h"
#include "safetensors_impl.h"

#define COPY_BYTES (1u << 20) /* spool -> shard copies and bf16 conversion go in pieces of this */

typedef struct wt {
    char *name;
    int ndim;
    size_t shape[SLM_ST_MAX_DIMS];
    uint64_t spool_off, nbytes;
    size_t shard;
} wt;

struct slm_st_writer {
    char *dir;
    char *file;          /* slm_st_writer_create_file: the one file's name in dir, else NULL */
    slm_st_dtype dtype;
    size_t max_shard;
    int spool;           /* descriptor of the unlinked spool file */
    uint64_t spool_size;
    wt *t;
    size_t n, cap;
    json_t *names;       /* the names added (as keys), to refuse a name twice */
    void *buf;           /* COPY_BYTES of scratch */
    int state;           /* 0 open, 1 finished, -1 failed */
    char **tmp;          /* files finish() created, to remove if it fails */
    size_t ntmp;
};

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r, n -= (size_t)r;
    }
    return 0;
}

static char *path_in(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s/%s", dir, name);
    return p;
}

static int exists_in(const char *dir, const char *name)
{
    char *p = path_in(dir, name);
    struct stat sb;
    int yes = p && stat(p, &sb) == 0;
    free(p);
    return yes;
}

static slm_status writer_setup(struct slm_st_writer *w, const char *dir, const char *dtype)
{
    SLM_CHECK(dtype && st_dtype_parse(dtype, &w->dtype) && w->dtype != SLM_ST_DTYPE_F16, SLM_ERR_ARG,
              "safetensors writer: dtype %s; F32 or BF16 is written", dtype ? dtype : "(null)");
    if (!w->file) {
        SLM_CHECK(slm_mkdir_p(dir) == 0, SLM_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
        SLM_CHECK(!exists_in(dir, "model.safetensors") && !exists_in(dir, "model.safetensors.index.json"), SLM_ERR_ARG,
                  "%s: already holds a model (model.safetensors or model.safetensors.index.json); a model is not "
                  "written over another", dir);
    }
    w->dir = strdup(dir);
    w->names = json_object();
    w->buf = malloc(COPY_BYTES);
    char *spool = path_in(dir, ".slm-st-spool.XXXXXX");
    SLM_CHECK(w->dir && w->names && w->buf && spool, SLM_ERR_NOMEM, "%s: out of memory", dir);
    w->spool = mkstemp(spool);
    const int err = errno;
    if (w->spool >= 0) unlink(spool);
    free(spool);
    SLM_CHECK(w->spool >= 0, SLM_ERR_IO, "%s: cannot create a temporary file there: %s", dir, strerror(err));
    return SLM_OK;
}

/* A writer into dir: of a model (file NULL) or of one file of that name. */
static slm_status writer_open(const char *dir, const char *file, const char *dtype, size_t max_shard_bytes,
                              slm_st_writer_t *out)
{
    *out = NULL;
    struct slm_st_writer *w = calloc(1, sizeof *w);
    SLM_CHECK(w, SLM_ERR_NOMEM, "%s: out of memory", dir);
    w->spool = -1;
    w->max_shard = max_shard_bytes;
    w->file = file ? strdup(file) : NULL;
    slm_status s = file && !w->file ? SLM_ERROR(SLM_ERR_NOMEM, "%s: out of memory", dir) : writer_setup(w, dir, dtype);
    if (s != SLM_OK) {
        slm_st_writer_destroy(&w);
        SLM_CALL(s);
    }
    *out = w;
    return SLM_OK;
}

slm_status slm_st_writer_create(const char *dir, const char *dtype, size_t max_shard_bytes, slm_st_writer_t *out)
{
    return writer_open(dir, NULL, dtype, max_shard_bytes, out);
}

slm_status slm_st_writer_create_file(const char *path, const char *dtype, slm_st_writer_t *out)
{
    *out = NULL;
    const char *slash = strrchr(path, '/');
    SLM_CHECK(!slash || slash[1], SLM_ERR_ARG, "%s: names a directory, not a file", path);
    SLM_CHECK(path[0], SLM_ERR_ARG, "an empty file name");
    char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    SLM_CHECK(dir, SLM_ERR_NOMEM, "%s: out of memory", path);
    slm_status s = writer_open(dir, slash ? slash + 1 : path, dtype, 0, out);
    free(dir);
    SLM_CALL(s);
    return SLM_OK;
}

/* Append count floats to the spool as the writer's dtype. */
static slm_status spool_data(struct slm_st_writer *w, const char *name, const float *data, size_t count)
{
    int ok = 1;
    if (w->dtype == SLM_ST_DTYPE_F32) {
        ok = write_all(w->spool, data, count * sizeof(float)) == 0;
    } else {
        const size_t piece = COPY_BYTES / sizeof(uint16_t);
        for (size_t i = 0; ok && i < count; i += piece) {
            const size_t m = count - i < piece ? count - i : piece;
            slm_bf16_from_f32(w->buf, data + i, m);
            ok = write_all(w->spool, w->buf, m * sizeof(uint16_t)) == 0;
        }
    }
    SLM_CHECK(ok, SLM_ERR_IO, "%s: writing tensor \"%s\" to the temporary file: %s", w->dir, name, strerror(errno));
    return SLM_OK;
}

slm_status slm_st_writer_add(slm_st_writer_t w, const char *name, int ndim, const size_t *shape, const float *data)
{
    SLM_CHECK(w->state == 0, SLM_ERR_ARG, "%s: tensor \"%s\" added to a writer that is %s", w->dir, name ? name : "",
              w->state > 0 ? "finished" : "failed");
    SLM_CHECK(name && *name && strcmp(name, "__metadata__"), SLM_ERR_ARG, "%s: a tensor name \"%s\" is not written",
              w->dir, name ? name : "(null)");
    json_t *probe = json_string(name);
    json_decref(probe);
    SLM_CHECK(probe, SLM_ERR_ARG, "%s: tensor name \"%s\" is not UTF-8", w->dir, name);
    SLM_CHECK(!json_object_get(w->names, name), SLM_ERR_ARG, "%s: tensor \"%s\" added twice", w->dir, name);
    SLM_CHECK(ndim >= 0 && ndim <= SLM_ST_MAX_DIMS, SLM_ERR_ARG, "%s: tensor \"%s\": %d dimensions; 0 to %d are written",
              w->dir, name, ndim, SLM_ST_MAX_DIMS);
    size_t numel = 1;
    uint64_t nbytes = 0;
    int overflow = 0;
    for (int d = 0; d < ndim; d++) overflow |= __builtin_mul_overflow(numel, shape[d], &numel);
    overflow |= __builtin_mul_overflow((uint64_t)numel, (uint64_t)st_dtype_size(w->dtype), &nbytes);
    SLM_CHECK(!overflow, SLM_ERR_ARG, "%s: tensor \"%s\": its shape holds more elements than can be addressed", w->dir,
              name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        wt *t = realloc(w->t, cap * sizeof *t);
        SLM_CHECK(t, SLM_ERR_NOMEM, "%s: out of memory for %zu tensors", w->dir, cap);
        w->t = t, w->cap = cap;
    }
    wt *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    SLM_CHECK(t->name && json_object_set_new(w->names, name, json_true()) == 0, SLM_ERR_NOMEM,
              "%s: out of memory", w->dir);
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->spool_off = w->spool_size;
    t->nbytes = nbytes;
    w->n++;
    slm_status s = spool_data(w, name, data, numel);
    if (s != SLM_OK) {
        w->state = -1;
        SLM_CALL(s);
    }
    w->spool_size += nbytes;
    return SLM_OK;
}

/* ---- finish ------------------------------------------------------------------------ */

static int cmp_wt(const void *a, const void *b) { return strcmp(((const wt *)a)->name, ((const wt *)b)->name); }

/* The header of the shard holding t[lo..hi): JSON padded with spaces to a multiple of 8. */
static slm_status shard_header(struct slm_st_writer *w, json_t *meta, size_t lo, size_t hi, char **out, size_t *len)
{
    json_t *h = json_object();
    int bad = !h;
    if (!bad && meta) bad = json_object_set(h, "__metadata__", meta) != 0;
    uint64_t off = 0;
    for (size_t i = lo; !bad && i < hi; i++) {
        json_t *shape = json_array();
        for (int d = 0; shape && d < w->t[i].ndim; d++)
            if (json_array_append_new(shape, json_integer((json_int_t)w->t[i].shape[d]))) json_decref(shape), shape = NULL;
        json_t *e = shape ? json_pack("{s:s, s:o, s:[I,I]}", "dtype", slm_st_dtype_name(w->dtype), "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + w->t[i].nbytes))
                          : NULL;
        bad = !e || json_object_set_new(h, w->t[i].name, e) != 0;
        off += w->t[i].nbytes;
    }
    char *text = bad ? NULL : json_dumps(h, JSON_COMPACT);
    json_decref(h);
    SLM_CHECK(text, SLM_ERR_NOMEM, "%s: out of memory for a header", w->dir);
    size_t n = strlen(text);
    char *padded = realloc(text, n + 8);
    if (!padded) free(text);
    SLM_CHECK(padded, SLM_ERR_NOMEM, "%s: out of memory for a header", w->dir);
    while (n % 8) padded[n++] = ' ';
    *out = padded, *len = n;
    return SLM_OK;
}

/* Remember a file finish() creates, so that a failure removes it. */
static slm_status track(struct slm_st_writer *w, const char *name)
{
    char **tmp = realloc(w->tmp, (w->ntmp + 1) * sizeof *tmp);
    SLM_CHECK(tmp, SLM_ERR_NOMEM, "%s: out of memory", w->dir);
    w->tmp = tmp;
    w->tmp[w->ntmp] = path_in(w->dir, name);
    SLM_CHECK(w->tmp[w->ntmp], SLM_ERR_NOMEM, "%s: out of memory", w->dir);
    w->ntmp++;
    return SLM_OK;
}

/* Write `text` or (text NULL) shard t[lo..hi) with its header to the temporary file
 * tmp[ntmp-1], and sync it. */
static slm_status write_tmp(struct slm_st_writer *w, json_t *meta, size_t lo, size_t hi, const char *text)
{
    const char *path = w->tmp[w->ntmp - 1];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = 1;
    if (text) {
        ok = write_all(fd, text, strlen(text)) == 0;
    } else {
        char *header = NULL;
        size_t len = 0;
        slm_status s = shard_header(w, meta, lo, hi, &header, &len);
        if (s != SLM_OK) {
            close(fd);
            SLM_CALL(s);
        }
        unsigned char len8[8];
        for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)len >> (8 * b));
        ok = write_all(fd, len8, 8) == 0 && write_all(fd, header, len) == 0;
        free(header);
        for (size_t i = lo; ok && i < hi; i++)
            for (uint64_t done = 0; ok && done < w->t[i].nbytes;) {
                size_t m = w->t[i].nbytes - done < COPY_BYTES ? (size_t)(w->t[i].nbytes - done) : COPY_BYTES;
                ssize_t r = pread(w->spool, w->buf, m, (off_t)(w->t[i].spool_off + done));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) {
                    if (r == 0) errno = EIO;
                    ok = 0;
                    break;
                }
                ok = write_all(fd, w->buf, (size_t)r) == 0;
                done += (uint64_t)r;
            }
    }
    ok = ok && fsync(fd) == 0;
    const int err = errno;
    ok = close(fd) == 0 && ok;
    SLM_CHECK(ok, SLM_ERR_IO, "%s: cannot write: %s", path, strerror(err ? err : errno));
    return SLM_OK;
}

static slm_status index_text(struct slm_st_writer *w, char **names, char **out)
{
    json_t *map = json_object();
    uint64_t total = 0;
    int bad = !map;
    for (size_t i = 0; !bad && i < w->n; i++) {
        bad = json_object_set_new(map, w->t[i].name, json_string(names[w->t[i].shard])) != 0;
        total += w->t[i].nbytes;
    }
    json_t *root = bad ? NULL : json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    if (!root) json_decref(map);
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    SLM_CHECK(text, SLM_ERR_NOMEM, "%s: out of memory for the index", w->dir);
    char *nl = realloc(text, strlen(text) + 2);
    if (!nl) free(text);
    SLM_CHECK(nl, SLM_ERR_NOMEM, "%s: out of memory for the index", w->dir);
    strcat(nl, "\n");
    *out = nl;
    return SLM_OK;
}

static slm_status metadata_object(struct slm_st_writer *w, const char *const *kv, json_t **out)
{
    *out = NULL;
    if (!kv) return SLM_OK;
    json_t *m = json_object();
    SLM_CHECK(m, SLM_ERR_NOMEM, "%s: out of memory", w->dir);
    *out = m;
    for (size_t i = 0; kv[i]; i += 2) {
        SLM_CHECK(kv[i + 1], SLM_ERR_ARG, "%s: metadata key \"%s\" has no value", w->dir, kv[i]);
        SLM_CHECK(!json_object_get(m, kv[i]), SLM_ERR_ARG, "%s: metadata key \"%s\" given twice", w->dir, kv[i]);
        json_t *v = json_string(kv[i + 1]);
        SLM_CHECK(v && json_object_set_new(m, kv[i], v) == 0, SLM_ERR_ARG,
                  "%s: metadata \"%s\" = \"%s\" is not UTF-8 text", w->dir, kv[i], kv[i + 1]);
    }
    return SLM_OK;
}

static slm_status finish(struct slm_st_writer *w, const char *const *kv, json_t **meta, char ***names, size_t *nshards)
{
    SLM_CALL(metadata_object(w, kv, meta));
    qsort(w->t, w->n, sizeof *w->t, cmp_wt);
    /* shards in name order; a shard that holds a tensor closes when the next one would
     * take its data past the limit, so only a tensor larger than the limit makes a shard
     * exceed it, alone */
    size_t ns = 1, held = 0;
    uint64_t fill = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (w->max_shard && held && fill + w->t[i].nbytes > w->max_shard) ns++, fill = 0, held = 0;
        w->t[i].shard = ns - 1;
        fill += w->t[i].nbytes;
        held++;
    }
    *nshards = ns;
    *names = calloc(ns, sizeof **names);
    SLM_CHECK(*names, SLM_ERR_NOMEM, "%s: out of memory", w->dir);
    for (size_t s = 0; s < ns; s++) {
        char name[256];
        if (w->file) snprintf(name, sizeof name, "%s", w->file);
        else if (ns == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, ns);
        (*names)[s] = strdup(name);
        SLM_CHECK((*names)[s], SLM_ERR_NOMEM, "%s: out of memory", w->dir);
    }
    for (size_t s = 0, lo = 0; s < ns; s++) {
        size_t hi = lo;
        while (hi < w->n && w->t[hi].shard == s) hi++;
        char tmp[280];
        snprintf(tmp, sizeof tmp, ".%s.tmp", (*names)[s]);
        SLM_CALL(track(w, tmp));
        SLM_CALL(write_tmp(w, *meta, lo, hi, NULL));
        lo = hi;
    }
    char *index = NULL;
    if (ns > 1) {
        SLM_CALL(index_text(w, *names, &index));
        slm_status st = track(w, ".model.safetensors.index.json.tmp");
        if (st == SLM_OK) st = write_tmp(w, NULL, 0, 0, index);
        free(index);
        SLM_CALL(st);
    }
    /* everything is written and synced: into place, the index last. A rename that fails
     * leaves the earlier ones in place, and the caller's cleanup removes them. */
    for (size_t i = 0; i < w->ntmp; i++) {
        const char *final = i < ns ? (*names)[i] : "model.safetensors.index.json";
        char *to = path_in(w->dir, final);
        SLM_CHECK(to, SLM_ERR_NOMEM, "%s: out of memory", w->dir);
        int ok = rename(w->tmp[i], to) == 0;
        const int err = errno;
        if (ok) free(w->tmp[i]), w->tmp[i] = to;
        else free(to);
        SLM_CHECK(ok, SLM_ERR_IO, "%s: cannot rename to %s: %s", w->tmp[i], final, strerror(err));
    }
    int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) fsync(dfd), close(dfd);
    return SLM_OK;
}

slm_status slm_st_writer_finish(slm_st_writer_t w, const char *const *metadata)
{
    SLM_CHECK(w->state == 0, SLM_ERR_ARG, "%s: finish of a writer that is %s", w->dir,
              w->state > 0 ? "finished already" : "failed");
    json_t *meta = NULL;
    char **names = NULL;
    size_t ns = 0;
    slm_status s = finish(w, metadata, &meta, &names, &ns);
    json_decref(meta);
    for (size_t i = 0; names && i < ns; i++) free(names[i]);
    free(names);
    if (s != SLM_OK) {
        w->state = -1;
        for (size_t i = 0; i < w->ntmp; i++) unlink(w->tmp[i]);
        SLM_CALL(s);
    }
    w->state = 1;
    return SLM_OK;
}

void slm_st_writer_destroy(slm_st_writer_t *pw)
{
    if (!pw || !*pw) return;
    struct slm_st_writer *w = *pw;
    if (w->state != 1)
        for (size_t i = 0; i < w->ntmp; i++) unlink(w->tmp[i]);
    for (size_t i = 0; i < w->ntmp; i++) free(w->tmp[i]);
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    if (w->spool >= 0) close(w->spool);
    json_decref(w->names);
    free(w->tmp);
    free(w->t);
    free(w->buf);
    free(w->dir);
    free(w->file);
    free(w);
    *pw = NULL;
}
