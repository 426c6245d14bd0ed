/* expect.c - a checkpoint's manifest against what the caller expects of it: the optimizer
 * that wrote its state, which groups it holds, and each group's datasets - exactly the
 * tensors of the group's table, at their global shapes, as float32. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

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

/* The datasets of group g of the manifest are exactly the tensors of want's table. */
static slm_status check_group(const ckpt_manifest *man, int g, const slm_ckpt_group *want, const char *path,
                              slm_status code)
{
    const slm_tensor_info **sorted = malloc(((size_t)want->ntensors + 1) * sizeof *sorted);
    SLM_CHECK(sorted, SLM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < want->ntensors; i++) sorted[i] = &want->tensors[i];
    qsort(sorted, (size_t)want->ntensors, sizeof *sorted, cmp_tensor_name);
    int first;
    const int n = ckpt_manifest_entries(man, g, &first);
    const group_diff d = diff_group(man->e + first, n, sorted, want->ntensors);
    free(sorted);
    const char *gname = want->name;
    char shown[256], a[160], b[160];
    if (d.missing && d.extra)
        return SLM_ERROR(code, "%s: /%s/%s is missing, and /%s/%s is not a tensor of this model (renamed?)", path,
                         gname, d.missing->name, gname, ckpt_printable(d.extra->name, shown, sizeof shown));
    SLM_CHECK(!d.missing, code, "%s: /%s/%s is missing", path, gname, d.missing->name);
    SLM_CHECK(!d.extra, code, "%s: /%s/%s is not a tensor of this model", path, gname,
              ckpt_printable(d.extra->name, shown, sizeof shown));
    SLM_CHECK(!d.wrong || d.wrong_entry->f32, code, "%s: /%s/%s is not stored as float32 (little-endian IEEE)", path,
              gname, d.wrong->name);
    if (d.wrong) {
        hsize_t dims[2] = {(hsize_t)d.wrong->shape[0], (hsize_t)d.wrong->shape[1]};
        shape_text(a, sizeof a, d.wrong_entry->ndim, d.wrong_entry->dims);
        shape_text(b, sizeof b, d.wrong->ndim, dims);
        return SLM_ERROR(code, "%s: /%s/%s has shape %s, this model's is %s", path, gname, d.wrong->name, a, b);
    }
    return SLM_OK;
}

#define RESET_HINT "set ckpt.reset_optimizer = true to resume its parameters with a fresh optimizer state"

/* The file's groups are exactly the expected ones. Another set is another optimizer's
 * state, or the same optimizer's with other settings (with or without a first moment,
 * say): intact, but not this run's. */
static slm_status check_group_set(const ckpt_manifest *man, const slm_ckpt_meta *meta, const slm_ckpt_expect *x,
                                  const char *path)
{
    for (int k = 0; k < x->ngroups; k++)
        SLM_CHECK(ckpt_manifest_group(man, x->groups[k].name) >= 0, SLM_ERR_CONFIG,
                  "%s: no group /%s: the optimizer state was written with other settings of train.optimizer = %s "
                  "than this run's; " RESET_HINT, path, x->groups[k].name, meta->optimizer);
    for (int g = 0; g < man->ngroups; g++) {
        int k = 0;
        while (k < x->ngroups && strcmp(x->groups[k].name, man->groups[g])) k++;
        SLM_CHECK(k < x->ngroups, SLM_ERR_CONFIG,
                  "%s: a group /%s this run's optimizer does not keep: the optimizer state was written with other "
                  "settings of train.optimizer = %s than this run's; " RESET_HINT, path, man->groups[g],
                  meta->optimizer);
    }
    return SLM_OK;
}

slm_status ckpt_expect_check(const ckpt_manifest *man, const slm_ckpt_meta *meta, const slm_ckpt_expect *x,
                             const char *path, slm_status code)
{
    if (x->shape && !x->params_only)
        SLM_CHECK(!strcmp(meta->optimizer, x->shape->optimizer), SLM_ERR_CONFIG,
                  "%s was written with train.optimizer = %s, this run has %s: " RESET_HINT, path, meta->optimizer,
                  x->shape->optimizer);
    if (!x->groups) return SLM_OK;
    if (!x->params_only) SLM_CALL(check_group_set(man, meta, x, path));
    for (int k = 0; k < x->ngroups; k++) {
        if (x->params_only && strcmp(x->groups[k].name, "params")) continue;
        const int g = ckpt_manifest_group(man, x->groups[k].name);
        SLM_CHECK(g >= 0, SLM_ERR_FORMAT, "%s: group /%s is missing", path, x->groups[k].name);
        SLM_CALL(check_group(man, g, &x->groups[k], path, code));
    }
    return SLM_OK;
}
