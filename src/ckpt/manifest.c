/* manifest.c - a checkpoint's tensor list and the digest over its metadata.
 *
 * The manifest is what the three tensor groups hold - every dataset's name, shape and
 * type - read from the file's metadata without reading tensor data. verify compares it
 * with the caller's tensor table (exactly those tensors, at those shapes, float32), and
 * a version-2 file carries meta_digest, a CRC-32 over the metadata attributes and the
 * manifest written out in one canonical text form (docs/checkpoint-format.md). The
 * writer computes it from the table it writes, a reader from what it reads back, so any
 * change to an attribute's value or to a tensor's name, shape or type since the file was
 * written shows as a different digest, whatever HDF5's own checksums cover. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320); crc32(0, "", 0) = 0 and
 * calls chain: crc = ckpt_crc32(crc, next, len). Bitwise: the digest covers a few kB. */
static uint32_t ckpt_crc32(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t add_text(uint32_t crc, const char *key, const char *value)
{
    char head[96];
    size_t len = strlen(value);
    int n = snprintf(head, sizeof head, "%s=%zu:", key, len);
    crc = ckpt_crc32(crc, head, (size_t)n);
    crc = ckpt_crc32(crc, value, len);
    return ckpt_crc32(crc, "\n", 1);
}

static uint32_t add_int(uint32_t crc, const char *key, long long value)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%s=%lld\n", key, value);
    return ckpt_crc32(crc, line, (size_t)n);
}

uint32_t ckpt_meta_digest(const slm_ckpt_meta *m, int version, const ckpt_manifest *man)
{
    uint32_t crc = 0;
    char line[96];
    crc = add_text(crc, "format", SLM_CKPT_FORMAT);
    crc = add_int(crc, "version", version);
    crc = add_int(crc, "step", m->step);
    crc = add_int(crc, "samples", m->samples);
    crc = add_int(crc, "tokens", m->tokens);
    crc = add_int(crc, "adam_t", m->adam_t);
    int n = snprintf(line, sizeof line, "seed=%llu\n", (unsigned long long)m->seed);
    crc = ckpt_crc32(crc, line, (size_t)n);
    crc = add_int(crc, "n_layer", m->model.n_layer);
    crc = add_int(crc, "n_head", m->model.n_head);
    crc = add_int(crc, "d_model", m->model.d_model);
    crc = add_int(crc, "vocab_size", m->model.vocab_size);
    crc = add_int(crc, "seq_len", m->model.seq_len);
    if (version >= 3) { /* the architecture and its configuration, as stored */
        char json[2048] = "";
        slm_model_config_to_json(&m->model, json, sizeof json);
        crc = add_text(crc, "arch", m->model.arch);
        crc = add_text(crc, "model_config", json);
    }
    crc = add_text(crc, "layout", m->layout);
    crc = add_text(crc, "config", m->config);
    crc = add_text(crc, "matmul", m->matmul);
    for (int i = 0; i < man->n; i++) {
        const ckpt_entry *e = &man->e[i];
        size_t len = strlen(ckpt_group_names[e->group]) + 1 + strlen(e->name);
        n = snprintf(line, sizeof line, "tensor=%zu:%s/", len, ckpt_group_names[e->group]);
        crc = ckpt_crc32(crc, line, (size_t)n);
        crc = ckpt_crc32(crc, e->name, strlen(e->name));
        crc = ckpt_crc32(crc, "\nshape=", 7);
        for (int d = 0; d < e->ndim; d++) {
            n = snprintf(line, sizeof line, d ? ",%llu" : "%llu", (unsigned long long)e->dims[d]);
            crc = ckpt_crc32(crc, line, (size_t)n);
        }
        n = snprintf(line, sizeof line, "\ndtype=%s\n", e->f32 ? "float32" : "other");
        crc = ckpt_crc32(crc, line, (size_t)n);
    }
    return crc;
}

static int cmp_entry(const void *a, const void *b)
{
    const ckpt_entry *x = a, *y = b;
    return x->group != y->group ? (x->group < y->group ? -1 : 1) : strcmp(x->name, y->name);
}

void ckpt_manifest_free(ckpt_manifest *man)
{
    for (int i = 0; i < man->n; i++) free(man->e[i].name);
    free(man->e);
    man->e = NULL;
    man->n = 0;
}

slm_status ckpt_manifest_of(const slm_tensor_info *tensors, int ntensors, ckpt_manifest *man)
{
    man->n = 0;
    man->e = calloc((size_t)(CK_NGROUPS * ntensors) + 1, sizeof *man->e);
    SLM_CHECK(man->e, SLM_ERR_NOMEM, "out of memory");
    for (int g = 0; g < CK_NGROUPS; g++)
        for (int i = 0; i < ntensors; i++) {
            ckpt_entry *e = &man->e[man->n++];
            e->group = g;
            e->ndim = tensors[i].ndim;
            for (int d = 0; d < tensors[i].ndim; d++) e->dims[d] = (hsize_t)tensors[i].shape[d];
            e->f32 = 1;
            if (!(e->name = strdup(tensors[i].name))) {
                ckpt_manifest_free(man);
                return SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
            }
        }
    qsort(man->e, (size_t)man->n, sizeof *man->e, cmp_entry);
    return SLM_OK;
}

const char *ckpt_printable(const char *name, char *buf, size_t len)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < len; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\\') buf[o++] = (char)*p;
        else o += (size_t)snprintf(buf + o, len - o, "\\x%02x", *p);
    }
    buf[o] = '\0';
    return buf;
}

typedef struct {
    ckpt_manifest *man;
    int group, cap, failed;
} list_ctx;

static herr_t add_link(hid_t grp, const char *name, const H5L_info_t *info, void *arg)
{
    (void)grp;
    (void)info;
    list_ctx *c = arg;
    if (c->man->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        ckpt_entry *e = realloc(c->man->e, (size_t)cap * sizeof *e);
        if (!e) return c->failed = 1, -1;
        c->man->e = e;
        c->cap = cap;
    }
    ckpt_entry *e = &c->man->e[c->man->n];
    memset(e, 0, sizeof *e);
    e->group = c->group;
    if (!(e->name = strdup(name))) return c->failed = 1, -1;
    c->man->n++;
    return 0;
}

/* Shape and type of entry e of group grp; 0 if it is not a dataset HDF5 can open. */
static int describe(hid_t grp, ckpt_entry *e)
{
    hid_t ds = H5Dopen2(grp, e->name, H5P_DEFAULT);
    if (ds < 0) return 0;
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    int ok = sp >= 0 && ty >= 0 && H5Sget_simple_extent_type(sp) != H5S_NO_CLASS;
    if (ok) {
        e->ndim = H5Sget_simple_extent_dims(sp, e->dims, NULL);
        e->f32 = H5Tequal(ty, H5T_IEEE_F32LE) > 0;
        ok = e->ndim >= 0;
    }
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return ok;
}

slm_status ckpt_manifest_read(hid_t f, const char *path, ckpt_manifest *man)
{
    list_ctx c = {man, 0, 0, 0};
    man->e = NULL;
    man->n = 0;
    slm_status st = SLM_OK;
    for (int g = 0; g < CK_NGROUPS && st == SLM_OK; g++) {
        const char *gname = ckpt_group_names[g];
        hid_t grp = H5Gopen2(f, gname, H5P_DEFAULT);
        if (grp < 0) {
            st = SLM_ERROR(SLM_ERR_FORMAT, "%s: group /%s is missing or unreadable", path, gname);
            break;
        }
        const int first = man->n;
        c.group = g;
        if (H5Literate(grp, H5_INDEX_NAME, H5_ITER_INC, NULL, add_link, &c) < 0)
            st = c.failed ? SLM_ERROR(SLM_ERR_NOMEM, "out of memory")
                          : SLM_ERROR(SLM_ERR_FORMAT, "%s: the list of tensors in /%s cannot be read (corrupt "
                                      "metadata)", path, gname);
        for (int i = first; i < man->n && st == SLM_OK; i++) {
            char shown[256];
            if (!describe(grp, &man->e[i]))
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: /%s/%s cannot be opened as a dataset (corrupt metadata)", path,
                               gname, ckpt_printable(man->e[i].name, shown, sizeof shown));
        }
        H5Gclose(grp);
    }
    if (st != SLM_OK) {
        ckpt_manifest_free(man);
        return st;
    }
    qsort(man->e, (size_t)man->n, sizeof *man->e, cmp_entry);
    return SLM_OK;
}

static void shape_text(char *buf, size_t len, int ndim, const hsize_t *dims)
{
    size_t o = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %llu" : "%llu", (unsigned long long)dims[d]);
    if (o < len) snprintf(buf + o, len - o, ")");
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const slm_tensor_info *const *)a)->name, (*(const slm_tensor_info *const *)b)->name);
}

/* One group's entries against the sorted table: the first tensor missing, the first
 * entry the table lacks, and the first present with another shape or type. */
typedef struct {
    const slm_tensor_info *missing, *wrong;
    const ckpt_entry *extra, *wrong_entry;
} group_diff;

static group_diff diff_group(const ckpt_entry *e, int ne, const slm_tensor_info *const *want, int nw)
{
    group_diff d = {NULL, NULL, NULL, NULL};
    int i = 0, k = 0;
    while (i < nw || k < ne) {
        int c = k == ne ? 1 : i == nw ? -1 : strcmp(e[k].name, want[i]->name);
        if (c < 0) {
            if (!d.extra) d.extra = &e[k];
            k++;
        } else if (c > 0) {
            if (!d.missing) d.missing = want[i];
            i++;
        } else {
            const slm_tensor_info *t = want[i];
            int same = e[k].ndim == t->ndim && e[k].f32;
            for (int j = 0; same && j < t->ndim; j++) same = e[k].dims[j] == (hsize_t)t->shape[j];
            if (!same && !d.wrong) d.wrong = t, d.wrong_entry = &e[k];
            i++;
            k++;
        }
    }
    return d;
}

slm_status ckpt_manifest_check(const ckpt_manifest *man, const slm_tensor_info *tensors, int ntensors,
                               const char *path, slm_status code)
{
    const slm_tensor_info **want = malloc(((size_t)ntensors + 1) * sizeof *want);
    SLM_CHECK(want, SLM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ntensors; i++) want[i] = &tensors[i];
    qsort(want, (size_t)ntensors, sizeof *want, cmp_tensor_name);
    slm_status st = SLM_OK;
    char shown[256], a[160], b[160];
    int k = 0; /* the manifest is in group order */
    for (int g = 0; g < CK_NGROUPS && st == SLM_OK; g++) {
        const char *gname = ckpt_group_names[g];
        int n = 0;
        while (k + n < man->n && man->e[k + n].group == g) n++;
        const group_diff d = diff_group(man->e + k, n, want, ntensors);
        k += n;
        if (d.missing && d.extra)
            st = SLM_ERROR(code, "%s: /%s/%s is missing, and /%s/%s is not a tensor of this model (renamed?)", path,
                           gname, d.missing->name, gname, ckpt_printable(d.extra->name, shown, sizeof shown));
        else if (d.missing)
            st = SLM_ERROR(code, "%s: /%s/%s is missing", path, gname, d.missing->name);
        else if (d.extra)
            st = SLM_ERROR(code, "%s: /%s/%s is not a tensor of this model", path, gname,
                           ckpt_printable(d.extra->name, shown, sizeof shown));
        else if (d.wrong && !d.wrong_entry->f32)
            st = SLM_ERROR(code, "%s: /%s/%s is not stored as float32 (little-endian IEEE)", path, gname,
                           d.wrong->name);
        else if (d.wrong) {
            hsize_t dims[2] = {(hsize_t)d.wrong->shape[0], (hsize_t)d.wrong->shape[1]};
            shape_text(a, sizeof a, d.wrong_entry->ndim, d.wrong_entry->dims);
            shape_text(b, sizeof b, d.wrong->ndim, dims);
            st = SLM_ERROR(code, "%s: /%s/%s has shape %s, this model's is %s", path, gname, d.wrong->name, a, b);
        }
    }
    free(want);
    return st;
}
