/* manifest.c - a checkpoint's tensor list: which groups its root holds and every
 * dataset's group, name, shape and type, read from the file's metadata without reading
 * tensor data (or, for a writer, from the groups it is about to store). verify.c checks
 * it against what the caller expects (expect.c) and digests it (digest.c).
 *
 * Which groups belong at the root depends on the version: versions 1-3 hold exactly
 * /params, /adam_m and /adam_v (AdamW's state); version 4 holds /params and the state
 * groups of whichever optimizer wrote it, so any group with a valid name is accepted
 * here, and whether they are the ones a run needs is for the caller's expectation. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

static const char *const v3_groups[3] = {"params", "adam_m", "adam_v"};

static int cmp_entry(const void *a, const void *b)
{
    const ckpt_entry *x = a, *y = b;
    int c = ckpt_group_cmp(x->group, y->group);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_group(const void *a, const void *b)
{
    return ckpt_group_cmp(*(char *const *)a, *(char *const *)b);
}

void ckpt_manifest_free(ckpt_manifest *man)
{
    for (int i = 0; i < man->n; i++) free(man->e[i].name);
    for (int g = 0; g < man->ngroups; g++) free(man->groups[g]);
    free(man->e);
    free(man->groups);
    *man = (ckpt_manifest){NULL, 0, NULL, 0};
}

int ckpt_manifest_group(const ckpt_manifest *man, const char *name)
{
    for (int g = 0; g < man->ngroups; g++)
        if (!strcmp(man->groups[g], name)) return g;
    return -1;
}

int ckpt_manifest_entries(const ckpt_manifest *man, int g, int *first)
{
    int i = 0, n = 0;
    while (i < man->n && man->e[i].group != man->groups[g]) i++;
    while (i + n < man->n && man->e[i + n].group == man->groups[g]) n++;
    *first = i;
    return n;
}

/* Append a group name (the manifest owns the copy). */
static int add_group(ckpt_manifest *man, const char *name)
{
    char **g = realloc(man->groups, ((size_t)man->ngroups + 1) * sizeof *g);
    if (!g) return 0;
    man->groups = g;
    if (!(g[man->ngroups] = strdup(name))) return 0;
    man->ngroups++;
    return 1;
}

slm_status ckpt_manifest_of(const slm_ckpt_group *groups, int ngroups, ckpt_manifest *man)
{
    *man = (ckpt_manifest){NULL, 0, NULL, 0};
    size_t total = 1;
    for (int g = 0; g < ngroups; g++) total += (size_t)groups[g].ntensors;
    man->e = calloc(total, sizeof *man->e);
    int ok = man->e != NULL;
    for (int g = 0; g < ngroups && ok; g++) ok = add_group(man, groups[g].name);
    for (int g = 0; g < ngroups && ok; g++)
        for (int i = 0; i < groups[g].ntensors && ok; i++) {
            const slm_tensor_info *t = &groups[g].tensors[i];
            ckpt_entry *e = &man->e[man->n];
            e->group = man->groups[g];
            e->ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++) e->dims[d] = (hsize_t)t->shape[d];
            e->f32 = 1;
            ok = (e->name = strdup(t->name)) != NULL;
            man->n += ok;
        }
    if (!ok) {
        ckpt_manifest_free(man);
        return SLM_ERROR(SLM_ERR_NOMEM, "checkpoint: out of memory for the list of tensors");
    }
    qsort(man->groups, (size_t)man->ngroups, sizeof *man->groups, cmp_group);
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

/* Listing a group: the names of its links, and whether any is not a hard link. */
typedef struct {
    ckpt_manifest *man;
    const char *group; /* datasets of this group are listed; NULL: the root's groups */
    int cap, failed;
    char odd[256]; /* the root: the first link that is not a hard one */
} list_ctx;

static herr_t add_link(hid_t grp, const char *name, const H5L_info_t *info, void *arg)
{
    (void)grp;
    list_ctx *c = arg;
    if (!c->group) {
        if (info->type != H5L_TYPE_HARD && !c->odd[0]) snprintf(c->odd, sizeof c->odd, "%s", name);
        return add_group(c->man, name) ? 0 : (c->failed = 1, -1);
    }
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

/* Is the object at name (a link of the root) a group? -1: it cannot be opened at all. */
static int is_group(hid_t f, const char *name)
{
    hid_t o = H5Oopen(f, name, H5P_DEFAULT);
    if (o < 0) return -1;
    int group = H5Iget_type(o) == H5I_GROUP;
    H5Oclose(o);
    return group;
}

/* The root's links into man->groups, checked against what version allows there. */
static slm_status list_root(hid_t f, const char *path, int version, ckpt_manifest *man)
{
    list_ctx c = {man, NULL, 0, 0, ""};
    char shown[256];
    if (H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, add_link, &c) < 0)
        return c.failed ? SLM_ERROR(SLM_ERR_NOMEM, "out of memory")
                        : SLM_ERROR(SLM_ERR_FORMAT, "%s: the root group cannot be listed (corrupt metadata)", path);
    if (version < 4) {
        for (int g = 0; g < man->ngroups; g++) {
            const char *name = man->groups[g];
            SLM_CHECK(!strcmp(name, v3_groups[0]) || !strcmp(name, v3_groups[1]) || !strcmp(name, v3_groups[2]),
                      SLM_ERR_FORMAT, "%s: unexpected object /%s at the root (only /params, /adam_m and /adam_v "
                      "belong there)", path, ckpt_printable(name, shown, sizeof shown));
        }
        for (int k = 0; k < 3; k++)
            SLM_CHECK(ckpt_manifest_group(man, v3_groups[k]) >= 0, SLM_ERR_FORMAT,
                      "%s: group /%s is missing or unreadable", path, v3_groups[k]);
        return SLM_OK;
    }
    SLM_CHECK(!c.odd[0], SLM_ERR_FORMAT, "%s: unexpected object /%s at the root (a link that is not a group of its "
              "own)", path, ckpt_printable(c.odd, shown, sizeof shown));
    for (int g = 0; g < man->ngroups; g++) {
        const char *name = man->groups[g];
        SLM_CHECK(ckpt_group_name_ok(name), SLM_ERR_FORMAT, "%s: unexpected object /%s at the root (groups are "
                  "named with 1 to 31 of a-z, 0-9 and _)", path, ckpt_printable(name, shown, sizeof shown));
        const int group = is_group(f, name);
        SLM_CHECK(group >= 0, SLM_ERR_FORMAT, "%s: /%s cannot be opened (corrupt metadata)", path, name);
        SLM_CHECK(group, SLM_ERR_FORMAT, "%s: unexpected object /%s at the root (only groups of tensors belong "
                  "there)", path, name);
    }
    SLM_CHECK(ckpt_manifest_group(man, "params") >= 0, SLM_ERR_FORMAT, "%s: group /params is missing", path);
    return SLM_OK;
}

/* The datasets of every group of man->groups. */
static slm_status list_groups(hid_t f, const char *path, ckpt_manifest *man)
{
    list_ctx c = {man, NULL, 0, 0, ""};
    for (int g = 0; g < man->ngroups; g++) {
        const char *gname = man->groups[g];
        hid_t grp = H5Gopen2(f, gname, H5P_DEFAULT);
        SLM_CHECK(grp >= 0, SLM_ERR_FORMAT, "%s: group /%s is missing or unreadable", path, gname);
        const int first = man->n;
        c.group = gname;
        slm_status st = SLM_OK;
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
        SLM_CALL(st);
    }
    return SLM_OK;
}

slm_status ckpt_manifest_read(hid_t f, const char *path, int version, ckpt_manifest *man)
{
    *man = (ckpt_manifest){NULL, 0, NULL, 0};
    slm_status st = list_root(f, path, version, man);
    if (st == SLM_OK) {
        /* groups in their order first: entries point at these strings */
        qsort(man->groups, (size_t)man->ngroups, sizeof *man->groups, cmp_group);
        st = list_groups(f, path, man);
    }
    if (st != SLM_OK) {
        ckpt_manifest_free(man);
        return slm_error_push(st, __FILE__, __LINE__, __func__);
    }
    qsort(man->e, (size_t)man->n, sizeof *man->e, cmp_entry);
    return SLM_OK;
}
