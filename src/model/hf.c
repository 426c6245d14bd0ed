/* hf.c - the weights of a Hugging Face model directory: read into the part of the model
 * one rank holds, and written from a whole model, tensor by tensor.
 *
 * The architecture says what each tensor of its table is called in Hugging Face's files,
 * whether it is stored transposed (GPT-2's Conv1D) and whether its rows are rotary heads
 * (Llama's q and k, reordered when the files pair dimensions interleaved); the rest is the
 * same for every architecture.
 *
 * Reading fills ranges of the parameter index space, as the sharded layer hands them out:
 * a range may start and end inside a tensor, and a rank holds only some rows (a row run
 * per part of a tensor split by rows) or some columns of a tensor split by tensor
 * parallelism. Each tensor's range is read a block of whole local rows at a time (at most
 * BLOCK_FLOATS, and whole heads where rows are permuted), only this rank's columns, then
 * transposed or permuted in a scratch buffer and copied into place: no rank ever reads or
 * holds a whole tensor it holds part of. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hf_impl.h"
#include "shardlm/kernels.h"
#include "shardlm/safetensors.h"
#include "shardlm/writable.h"

#define BLOCK_FLOATS ((size_t)1 << 20) /* a read's target size: 4 MB of fp32 */

/* Table tensor t's entry in the architecture's names, and its Hugging Face name. */
static const hf_name *name_of(const slm_hf_arch *a, const slm_tensor_info *t, char *out, size_t len)
{
    for (int k = 0; k < a->nnames; k++) {
        char ours[sizeof t->name];
        snprintf(ours, sizeof ours, a->names[k].name, t->block);
        if (strcmp(ours, t->name)) continue;
        snprintf(out, len, a->names[k].hf, t->block);
        return &a->names[k];
    }
    return NULL;
}

static const slm_hf_arch *hf_arch(const slm_model_config *c)
{
    const slm_arch *a = slm_arch_find(c->arch);
    return a ? a->hf : NULL;
}

/* Heads whose rows a tensor's rotary entry permutes (0 for none). */
static int rope_heads(const slm_model_config *c, const hf_name *e)
{
    return e->rope == HF_ROPE_Q ? c->n_head : e->rope == HF_ROPE_KV ? c->n_kv_head : 0;
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct {
    char name[160];             /* in the files */
    const slm_st_info *info;
    const hf_name *e;
    int heads;                  /* > 0: rows are this many rotary heads stored interleaved */
} hf_map;

struct slm_hf {
    slm_st_t st;
    slm_model_t model;
    hf_map *map;                /* (tensors of the table) */
    int unused;
    char first_unused[160];
    float *scratch[2];          /* two blocks: as read, and as the model lays it out */
    size_t cap;                 /* floats in each */
    char describe[160];
};

void slm_hf_close(slm_hf_t *hp)
{
    slm_hf_t h = *hp;
    if (!h) return;
    slm_st_close(&h->st);
    free(h->map);
    free(h->scratch[0]);
    free(h->scratch[1]);
    free(h);
    *hp = NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* "[a, b]" */
static void shape_text(int ndim, const size_t *shape, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++) used += (size_t)snprintf(buf + used, len - used, "%s%zu", d ? ", " : "", shape[d]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

/* Check tensor i of the table against the files and map it. */
static slm_status map_tensor(slm_hf_t h, const char *dir, const slm_hf_arch *a, const char *prefix, int i)
{
    const slm_tensor_info *t = slm_model_tensor(h->model, i);
    const slm_model_config *c = slm_model_config_of(h->model);
    hf_map *m = &h->map[i];
    char base[sizeof m->name - 16];
    m->e = name_of(a, t, base, sizeof base);
    SLM_CHECK(m->e, SLM_ERR_INTERNAL, "model.arch = %s: tensor %s has no Hugging Face name", c->arch, t->name);
    snprintf(m->name, sizeof m->name, "%s%s", prefix, base);
    m->info = slm_st_find(h->st, m->name);
    SLM_CHECK(m->info, SLM_ERR_FORMAT, "%s: tensor %s is missing (shardlm's %s; the model config.json describes has it)",
              dir, m->name, t->name);
    size_t want[2] = {(size_t)t->shape[0], (size_t)t->shape[1]};
    if (m->e->transposed) want[0] = (size_t)t->shape[1], want[1] = (size_t)t->shape[0];
    const slm_st_info *f = m->info;
    const int same = f->ndim == t->ndim && f->shape[0] == want[0] && (t->ndim == 1 || f->shape[1] == want[1]);
    if (!same) {
        char got[96], need[64];
        shape_text(f->ndim, f->shape, got, sizeof got);
        shape_text(t->ndim, want, need, sizeof need);
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: tensor %s has shape %s in %s; the model config.json describes needs %s%s",
                         dir, m->name, got, f->file, need, m->e->transposed ? " (stored (in, out), as Conv1D does)" : "");
    }
    return SLM_OK;
}

/* The description for the log, and the tensors of the files the model leaves unused. */
static slm_status survey(slm_hf_t h, const slm_hf_arch *a)
{
    const int n = slm_model_num_tensors(h->model);
    const slm_model_config *c = slm_model_config_of(h->model);
    char **used = malloc((size_t)n * sizeof *used);
    const char **files = malloc((size_t)n * sizeof *files);
    if (!used || !files) {
        free(used);
        free(files);
        return SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    }
    unsigned dtypes = 0;
    int nfiles = 0;
    for (int i = 0; i < n; i++) {
        used[i] = h->map[i].name;
        dtypes |= 1u << h->map[i].info->dtype;
        int seen = 0;
        for (int k = 0; k < nfiles && !seen; k++) seen = !strcmp(files[k], h->map[i].info->file);
        if (!seen) files[nfiles++] = h->map[i].info->file;
    }
    qsort(used, (size_t)n, sizeof *used, cmp_str);
    for (size_t k = 0; k < slm_st_num_tensors(h->st); k++) {
        const char *name = slm_st_tensor(h->st, k)->name;
        if (bsearch(&name, used, (size_t)n, sizeof *used, cmp_str)) continue;
        if (c->tie_embeddings && !strcmp(name, a->tied_head)) continue; /* the tied head again */
        if (!h->unused++) snprintf(h->first_unused, sizeof h->first_unused, "%s", name);
    }
    char dt[32] = "";
    for (int d = SLM_ST_DTYPE_F32; d <= SLM_ST_DTYPE_F16; d++)
        if (dtypes & (1u << d)) snprintf(dt + strlen(dt), sizeof dt - strlen(dt), "%s%s", dt[0] ? "+" : "", slm_st_dtype_name(d));
    snprintf(h->describe, sizeof h->describe, "Hugging Face %s, %s, %d file%s", a->model_type, dt, nfiles,
             nfiles > 1 ? "s" : "");
    free(used);
    free(files);
    return SLM_OK;
}

static slm_status hf_setup(slm_hf_t h, const char *dir, slm_rope_pairing pairing)
{
    const slm_model_config *c = slm_model_config_of(h->model);
    const slm_hf_arch *a = hf_arch(c);
    SLM_CHECK(a, SLM_ERR_UNSUPPORTED, "model.arch = %s has no Hugging Face form", c->arch);
    SLM_CALL(slm_st_open(dir, &h->st));
    const int n = slm_model_num_tensors(h->model);
    h->map = calloc((size_t)n, sizeof *h->map);
    SLM_CHECK(h->map, SLM_ERR_NOMEM, "out of memory");
    /* the prefix the files use, if any: the one the first tensor is found under */
    const char *prefix = "";
    char first[160], with[200];
    if (a->read_prefix && name_of(a, slm_model_tensor(h->model, 0), first, sizeof first) && !slm_st_find(h->st, first)) {
        snprintf(with, sizeof with, "%s%s", a->read_prefix, first);
        if (slm_st_find(h->st, with)) prefix = a->read_prefix;
    }
    for (int i = 0; i < n; i++) {
        SLM_CALL(map_tensor(h, dir, a, prefix, i));
        if (pairing == SLM_ROPE_PAIRING_INTERLEAVED) h->map[i].heads = rope_heads(c, h->map[i].e);
    }
    SLM_CALL(survey(h, a));
    return SLM_OK;
}

slm_status slm_hf_open(const char *dir, slm_model_t model, slm_rope_pairing pairing, slm_hf_t *out)
{
    *out = NULL;
    slm_hf_t h = calloc(1, sizeof *h);
    SLM_CHECK(h, SLM_ERR_NOMEM, "out of memory");
    h->model = model;
    slm_status s = hf_setup(h, dir, pairing);
    if (s != SLM_OK) {
        slm_hf_close(&h);
        SLM_CALL(s);
    }
    *out = h;
    return SLM_OK;
}

const char *slm_hf_describe(slm_hf_t h) { return h->describe; }

int slm_hf_unused(slm_hf_t h, const char **first)
{
    if (first) *first = h->unused ? h->first_unused : NULL;
    return h->unused;
}

static slm_status reserve(slm_hf_t h, size_t n)
{
    if (n <= h->cap) return SLM_OK;
    for (int k = 0; k < 2; k++) {
        free(h->scratch[k]);
        h->scratch[k] = malloc(n * sizeof(float));
    }
    h->cap = h->scratch[0] && h->scratch[1] ? n : 0;
    SLM_CHECK(h->cap, SLM_ERR_NOMEM, "out of memory for a %.1f MB read buffer", 4e-6 * (double)n);
    return SLM_OK;
}

/* Global rows [g0, g0 + nr) of tensor i, this rank's columns, as the model lays them out:
 * (nr, cols) into dst. Uses scratch[0] for what must be transposed or permuted. */
static slm_status read_rows(slm_hf_t h, int i, size_t g0, size_t nr, float *dst)
{
    const slm_tensor_info *t = slm_model_tensor(h->model, i);
    const hf_map *m = &h->map[i];
    const size_t cols = (size_t)t->cols, c0 = (size_t)t->col0;
    if (t->ndim == 1) return slm_st_read(h->st, m->name, g0, nr, dst);
    if (m->e->transposed) { /* stored (in, out): our columns are its rows */
        float *tmp = h->scratch[0];
        SLM_CALL(slm_st_read_block(h->st, m->name, c0, cols, g0, nr, tmp));
        for (size_t r = 0; r < nr; r++)
            for (size_t k = 0; k < cols; k++) dst[r * cols + k] = tmp[k * nr + r];
        return SLM_OK;
    }
    if (m->heads) { /* whole heads, interleaved in the file */
        const int hs = (int)(t->shape[0] / m->heads);
        SLM_CALL(slm_st_read_block(h->st, m->name, g0, nr, c0, cols, h->scratch[0]));
        slm_rope_permute_rows(dst, h->scratch[0], (int)(nr / (size_t)hs), hs, (int)cols, 1);
        return SLM_OK;
    }
    return slm_st_read_block(h->st, m->name, g0, nr, c0, cols, dst);
}

/* Local elements [a, b) of tensor i into out. */
static slm_status fill_tensor(slm_hf_t h, int i, size_t a, size_t b, float *out)
{
    const slm_tensor_info *t = slm_model_tensor(h->model, i);
    const size_t cols = (size_t)t->cols;
    /* rows go together in groups: whole heads where they are permuted */
    const size_t group = h->map[i].heads ? (size_t)(t->shape[0] / h->map[i].heads) : 1;
    size_t chunk = BLOCK_FLOATS / cols / group * group;
    if (chunk < group) chunk = group;
    SLM_CALL(reserve(h, chunk * cols));
    const size_t r0 = a / cols, r1 = (b + cols - 1) / cols; /* local rows touched */
    for (int k = 0; k < t->nruns; k++) {
        const slm_row_run *run = &t->runs[k];
        const size_t lo = (size_t)run->lrow0, hi = lo + (size_t)run->n;
        if (r1 <= lo || r0 >= hi) continue;
        const size_t ra = lo + ((r0 > lo ? r0 : lo) - lo) / group * group;
        const size_t rb = r1 < hi ? lo + (r1 - lo + group - 1) / group * group : hi;
        for (size_t r = ra; r < rb; r += chunk) {
            const size_t nr = rb - r < chunk ? rb - r : chunk;
            SLM_CALL(read_rows(h, i, (size_t)run->grow0 + (r - lo), nr, h->scratch[1]));
            /* the part of these rows' elements [r cols, (r + nr) cols) inside [a, b) */
            const size_t e0 = r * cols > a ? r * cols : a, e1 = (r + nr) * cols < b ? (r + nr) * cols : b;
            if (e0 < e1) memcpy(out + (e0 - a), h->scratch[1] + (e0 - r * cols), (e1 - e0) * sizeof(float));
        }
    }
    return SLM_OK;
}

slm_status slm_hf_fill(slm_hf_t h, size_t offset, size_t count, float *dst)
{
    const size_t end = offset + count;
    for (int i = 0; i < slm_model_num_tensors(h->model); i++) {
        const slm_tensor_info *t = slm_model_tensor(h->model, i);
        const size_t lo = t->offset > offset ? t->offset : offset;
        const size_t hi = t->offset + t->count < end ? t->offset + t->count : end;
        if (lo < hi) SLM_CALL(fill_tensor(h, i, lo - t->offset, hi - t->offset, dst + (lo - offset)));
    }
    return SLM_OK;
}

/* ---- writing ------------------------------------------------------------------------ */

struct slm_hf_writer {
    char *dir;
    slm_model_t model;          /* the whole model's table */
    const slm_hf_arch *arch;
    slm_rope_pairing pairing;
    int bf16;
    slm_st_writer_t st;
    unsigned char *added;       /* (tensors of the table) */
    float *buf;                 /* one tensor, transposed or permuted */
    size_t cap;
};

void slm_hf_writer_destroy(slm_hf_writer_t *wp)
{
    slm_hf_writer_t w = *wp;
    if (!w) return;
    slm_st_writer_destroy(&w->st);
    slm_model_destroy(&w->model);
    free(w->added);
    free(w->buf);
    free(w->dir);
    free(w);
    *wp = NULL;
}

static slm_status writer_setup(slm_hf_writer_t w, const char *dir, const slm_model_config *cfg, const char *dtype,
                               size_t max_shard_bytes)
{
    w->arch = hf_arch(cfg);
    SLM_CHECK(w->arch, SLM_ERR_UNSUPPORTED, "model.arch = %s has no Hugging Face form", cfg->arch);
    SLM_CHECK(!strcmp(dtype, "F32") || !strcmp(dtype, "BF16"), SLM_ERR_ARG, "dtype %s: F32 or BF16 is written", dtype);
    w->bf16 = !strcmp(dtype, "BF16");
    w->dir = strdup(dir);
    SLM_CHECK(w->dir, SLM_ERR_NOMEM, "out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    SLM_CHECK(access(path, F_OK) != 0, SLM_ERR_ARG, "%s: already holds a config.json; a model is not written over another",
              dir);
    SLM_CALL(slm_model_describe(cfg, &w->model));
    w->added = calloc((size_t)slm_model_num_tensors(w->model), 1);
    SLM_CHECK(w->added, SLM_ERR_NOMEM, "out of memory");
    SLM_CALL(slm_st_writer_create(dir, dtype, max_shard_bytes, &w->st));
    return SLM_OK;
}

slm_status slm_hf_writer_create(const char *dir, const slm_model_config *cfg, const char *dtype, size_t max_shard_bytes,
                                slm_rope_pairing pairing, slm_hf_writer_t *out)
{
    *out = NULL;
    slm_hf_writer_t w = calloc(1, sizeof *w);
    SLM_CHECK(w, SLM_ERR_NOMEM, "out of memory");
    w->pairing = pairing;
    slm_status s = writer_setup(w, dir, cfg, dtype, max_shard_bytes);
    if (s != SLM_OK) {
        slm_hf_writer_destroy(&w);
        SLM_CALL(s);
    }
    *out = w;
    return SLM_OK;
}

slm_status slm_hf_writer_add(slm_hf_writer_t w, const char *name, const float *data)
{
    const slm_tensor_info *t = slm_model_find_tensor(w->model, name);
    SLM_CHECK(t, SLM_ERR_ARG, "%s: tensor %s is not one of the model's", w->dir, name);
    const int i = (int)(t - slm_model_tensor(w->model, 0));
    SLM_CHECK(!w->added[i], SLM_ERR_ARG, "%s: tensor %s added twice", w->dir, name);
    char hf[160];
    const hf_name *e = name_of(w->arch, t, hf, sizeof hf);
    SLM_CHECK(e, SLM_ERR_INTERNAL, "tensor %s has no Hugging Face name", name);
    const size_t n = slm_tensor_global_count(t), rows = (size_t)t->shape[0], cols = t->ndim == 2 ? (size_t)t->shape[1] : 1;
    size_t shape[2] = {rows, cols};
    const int heads = w->pairing == SLM_ROPE_PAIRING_INTERLEAVED ? rope_heads(slm_model_config_of(w->model), e) : 0;
    const float *src = data;
    if (e->transposed || heads) {
        if (n > w->cap) {
            free(w->buf);
            w->buf = malloc(n * sizeof(float));
            w->cap = w->buf ? n : 0;
            SLM_CHECK(w->buf, SLM_ERR_NOMEM, "out of memory for tensor %s (%.1f MB)", name, 4e-6 * (double)n);
        }
        if (e->transposed) {
            for (size_t r = 0; r < rows; r++)
                for (size_t k = 0; k < cols; k++) w->buf[k * rows + r] = data[r * cols + k];
            shape[0] = cols, shape[1] = rows;
        } else {
            slm_rope_permute_rows(w->buf, data, heads, (int)(rows / (size_t)heads), (int)cols, 0);
        }
        src = w->buf;
    }
    SLM_CALL(slm_st_writer_add(w->st, hf, t->ndim, shape, src));
    w->added[i] = 1;
    return SLM_OK;
}

/* Write text to the file tmp and sync it. */
static slm_status write_synced(const char *tmp, const char *text)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    const int err = errno;
    ok = close(fd) == 0 && ok;
    SLM_CHECK(ok, SLM_ERR_IO, "%s: cannot write: %s", tmp, strerror(err ? err : errno));
    return SLM_OK;
}

/* config.json is written and synced first under a temporary name, then the weights, and
 * it is renamed into place last: a directory with a config.json is a whole model. */
slm_status slm_hf_writer_finish(slm_hf_writer_t w)
{
    for (int i = 0; i < slm_model_num_tensors(w->model); i++)
        SLM_CHECK(w->added[i], SLM_ERR_ARG, "%s: tensor %s was not added", w->dir, slm_model_tensor(w->model, i)->name);
    char *text = NULL;
    SLM_CALL(hf_config_text(slm_model_config_of(w->model), w->bf16 ? "bfloat16" : "float32", w->pairing, &text));
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/config.json", w->dir);
    snprintf(tmp, sizeof tmp, "%s/.config.json.tmp", w->dir);
    static const char *const meta[] = {"format", "pt", NULL};
    slm_status s = write_synced(tmp, text);
    free(text);
    if (s == SLM_OK) s = slm_st_writer_finish(w->st, meta);
    if (s == SLM_OK && rename(tmp, path) != 0) s = SLM_ERROR(SLM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (s != SLM_OK) unlink(tmp);
    SLM_CALL(s);
    return SLM_OK;
}
