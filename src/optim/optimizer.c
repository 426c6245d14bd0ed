/* optimizer.c - the object every optimizer method shares: segments cut into per-tensor
 * pieces, state groups, the step driver and the checkpoint view of the state. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optim_impl.h"

static const opt_method *const methods[] = {&opt_adamw, &opt_adafactor, &opt_lamb, &opt_sgd};
#define NMETHODS (sizeof methods / sizeof methods[0])

static const opt_method *method_named(const char *name)
{
    for (size_t i = 0; i < NMETHODS; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

static int cmp_piece(const void *a, const void *b)
{
    const opt_piece *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Cut the segments into pieces, one per (segment, tensor) overlap, in index order, and
 * give each its place in the elementwise groups. */
static slm_status cut_pieces(slm_optimizer_t o)
{
    const size_t cap = (size_t)o->nsegs * (size_t)o->ntensors; /* at most one piece per pair */
    o->pieces = malloc((cap + 1) * sizeof *o->pieces);
    o->seg_first = malloc(((size_t)o->nsegs + 1) * sizeof *o->seg_first);
    SLM_CHECK(o->pieces && o->seg_first, SLM_ERR_NOMEM, "cannot allocate the optimizer's index");
    size_t base = 0;
    for (int s = 0; s < o->nsegs; s++) {
        const slm_optim_segment *sg = &o->segs[s];
        o->seg_first[s] = o->npieces;
        for (int i = 0; i < o->ntensors; i++) {
            const slm_tensor_info *t = &o->tensors[i];
            size_t lo, hi;
            if (t->count == 0 || !slm_tensor_overlap(t, sg->offset, sg->count, &lo, &hi)) continue;
            o->pieces[o->npieces++] =
                (opt_piece){s, i, lo, hi - lo, lo - t->offset, base + (lo - sg->offset), SIZE_MAX};
        }
        qsort(o->pieces + o->seg_first[s], (size_t)(o->npieces - o->seg_first[s]), sizeof *o->pieces, cmp_piece);
        base += sg->count;
    }
    o->seg_first[o->nsegs] = o->npieces;
    o->nelem = base;
    for (int k = 0; k < o->npieces; k++) {
        opt_piece *pc = &o->pieces[k];
        if (opt_is_matrix(&o->tensors[pc->tensor])) continue;
        pc->elem1d = o->nelem1d;
        o->nelem1d += pc->n;
    }
    return SLM_OK;
}

int64_t opt_global_row(const slm_tensor_info *t, int64_t r)
{
    int k = 0;
    while (k + 1 < t->nruns && r >= t->runs[k + 1].lrow0) k++;
    return t->runs[k].grow0 + r - t->runs[k].lrow0;
}

/* The datasets of a group as checkpoints see them. */
static slm_status describe_group(const slm_tensor_info *tensors, int ntensors, opt_group *g)
{
    g->datasets = calloc((size_t)ntensors + 1, sizeof *g->datasets);
    SLM_CHECK(g->datasets, SLM_ERR_NOMEM, "cannot allocate the optimizer's state table");
    size_t off = 0;
    for (int i = 0; i < ntensors; i++) {
        const slm_tensor_info *t = &tensors[i];
        if (g->kind == OPT_GROUP_ALL || (g->kind == OPT_GROUP_1D && !opt_is_matrix(t))) {
            g->datasets[g->ndatasets++] = *t;
            continue;
        }
        if (g->kind == OPT_GROUP_1D || !opt_is_matrix(t)) continue;
        slm_tensor_info *d = &g->datasets[g->ndatasets++];
        const int64_t len = t->shape[g->kind == OPT_GROUP_ROWS ? 0 : 1];
        memset(d, 0, sizeof *d);
        snprintf(d->name, sizeof d->name, "%s", t->name);
        d->ndim = 1;
        d->shape[0] = len;
        d->shape[1] = 1;
        d->offset = off;
        d->count = t->count ? (size_t)len : 0;
        d->goffset = off;
        d->block = t->block;
        d->unit = t->unit;
        d->tied = t->tied;
        d->trainable = t->trainable;
        d->reduce = t->reduce;
        d->rows = len;
        d->cols = 1;
        d->nruns = 1;
        d->runs[0] = (slm_row_run){0, 0, len};
        off += d->count;
    }
    return SLM_OK;
}

/* The groups m declares for cfg with their dataset tables, no storage; *n of them. */
static slm_status declare_groups(const opt_method *m, const slm_optim_config *cfg, const slm_tensor_info *tensors,
                                 int ntensors, opt_group *groups, int *n)
{
    opt_group_decl decl[OPT_MAX_GROUPS];
    const int nd = m->declare(cfg, decl);
    for (*n = 0; *n < nd; (*n)++) {
        opt_group *g = &groups[*n];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, "%s", decl[*n].name);
        g->kind = decl[*n].kind;
        SLM_CALL(describe_group(tensors, ntensors, g));
    }
    return SLM_OK;
}

/* Storage for the declared groups: elementwise over the segments' pieces, replicated
 * over the datasets this rank's stage holds. */
static slm_status allocate_groups(slm_optimizer_t o)
{
    for (int i = 0; i < o->ngroups; i++) {
        opt_group *g = &o->groups[i];
        if (g->kind == OPT_GROUP_ALL) g->n = o->nelem;
        else if (g->kind == OPT_GROUP_1D) g->n = o->nelem1d;
        else
            for (int d = 0; d < g->ndatasets; d++) g->n += g->datasets[d].count;
        g->data = calloc(g->n + 1, sizeof(float));
        SLM_CHECK(g->data, SLM_ERR_NOMEM, "cannot allocate %s's state %s: %.2f GiB", o->m->name, g->name,
                  4.0 * (double)g->n / (1 << 30));
    }
    return SLM_OK;
}

size_t opt_vector_offset(slm_optimizer_t o, int g, int tensor)
{
    const opt_group *gr = &o->groups[g];
    int d = 0; /* the datasets are the matrices in table order */
    for (int i = 0; i < tensor; i++) d += opt_is_matrix(&o->tensors[i]);
    return gr->datasets[d].offset;
}

void opt_blocked_sums(size_t n, int k, opt_block_fn fn, void *ctx, double *sums)
{
    const size_t nb = (n + OPT_BLOCK - 1) / OPT_BLOCK;
    for (int j = 0; j < k; j++) sums[j] = 0.0;
    double stack[64 * OPT_MAX_SUMS], *part = nb <= 64 ? stack : malloc(nb * OPT_MAX_SUMS * sizeof *part);
    const int parallel = part != NULL && nb > 1;
    if (!part) part = stack; /* no room for every block's sums: the blocks one after another */
#pragma omp parallel for schedule(static) if (parallel)
    for (size_t b = 0; b < nb; b++) {
        double *out = part + (parallel ? b : 0) * OPT_MAX_SUMS;
        for (int j = 0; j < k; j++) out[j] = 0.0;
        fn(ctx, b * OPT_BLOCK, b + 1 < nb ? (b + 1) * OPT_BLOCK : n, out);
        if (!parallel)
            for (int j = 0; j < k; j++) sums[j] += out[j];
    }
    if (parallel)
        for (size_t b = 0; b < nb; b++)
            for (int j = 0; j < k; j++) sums[j] += part[b * OPT_MAX_SUMS + j];
    if (part != stack) free(part);
}

size_t opt_slots(slm_optimizer_t o, size_t (*per_tensor)(const slm_tensor_info *t), size_t *start)
{
    start[0] = 0;
    for (int i = 0; i < o->ntensors; i++)
        start[i + 1] = start[i] + (o->tensors[i].count ? per_tensor(&o->tensors[i]) : 0);
    return start[o->ntensors];
}

slm_status slm_optimizer_create(const slm_optim_config *cfg, const slm_tensor_info *tensors, int ntensors,
                                const slm_optim_segment *segs, int nsegs, slm_optimizer_t *out)
{
    *out = NULL;
    const opt_method *m = method_named(cfg->name);
    SLM_CHECK(m, SLM_ERR_CONFIG, "train.optimizer = %s: unknown (adamw, adafactor, lamb, sgd)", cfg->name);
    slm_optimizer_t o = calloc(1, sizeof *o);
    SLM_CHECK(o, SLM_ERR_NOMEM, "cannot allocate the optimizer");
    o->m = m;
    o->cfg = *cfg;
    o->tensors = tensors;
    o->ntensors = ntensors;
    o->segs = malloc(((size_t)nsegs + 1) * sizeof *segs);
    slm_status st = o->segs ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the optimizer");
    if (st == SLM_OK) {
        memcpy(o->segs, segs, (size_t)nsegs * sizeof *segs);
        o->nsegs = nsegs;
        st = cut_pieces(o);
    }
    if (st == SLM_OK) st = declare_groups(m, cfg, tensors, ntensors, o->groups, &o->ngroups);
    if (st == SLM_OK) st = allocate_groups(o);
    if (st == SLM_OK && m->setup) st = m->setup(o);
    if (st != SLM_OK) {
        slm_optimizer_destroy(&o);
        return slm_error_push(st, __FILE__, __LINE__, __func__);
    }
    *out = o;
    return SLM_OK;
}

void slm_optimizer_destroy(slm_optimizer_t *op)
{
    slm_optimizer_t o = *op;
    if (!o) return;
    if (o->m && o->m->teardown) o->m->teardown(o);
    for (int g = 0; g < o->ngroups; g++) {
        free(o->groups[g].data);
        free(o->groups[g].datasets);
    }
    free(o->pieces);
    free(o->seg_first);
    free(o->segs);
    free(o);
    *op = NULL;
}

const char *slm_optimizer_name(slm_optimizer_t o) { return o->m->name; }

void slm_optimizer_begin_step(slm_optimizer_t o, double lr, float grad_scale, const slm_optim_reducer *red)
{
    o->t++;
    o->lr = o->step_size = lr;
    o->grad_scale = grad_scale;
    if (o->m->begin_step) o->m->begin_step(o, red);
}

void slm_optimizer_update(slm_optimizer_t o, int s)
{
    for (int k = o->seg_first[s]; k < o->seg_first[s + 1]; k++) {
        const opt_piece *pc = &o->pieces[k];
        if (o->tensors[pc->tensor].trainable) o->m->update(o, pc, opt_piece_params(o, pc), opt_piece_grads(o, pc));
    }
}

void slm_optimizer_step(slm_optimizer_t o, double lr, float grad_scale)
{
    slm_optimizer_begin_step(o, lr, grad_scale, NULL);
    for (int s = 0; s < o->nsegs; s++) slm_optimizer_update(o, s);
}

double slm_optimizer_step_size(slm_optimizer_t o) { return o->step_size; }
long slm_optimizer_steps(slm_optimizer_t o) { return o->t; }
void slm_optimizer_set_steps(slm_optimizer_t o, long t) { o->t = t; }

double slm_optimizer_bytes(slm_optimizer_t o)
{
    double b = o->extra_bytes;
    for (int g = 0; g < o->ngroups; g++) b += 4.0 * (double)o->groups[g].n;
    return b;
}

int slm_optimizer_num_groups(slm_optimizer_t o) { return o->ngroups; }

const char *slm_optimizer_group(slm_optimizer_t o, int g, slm_optim_state_kind *kind,
                                const slm_tensor_info **datasets, int *ndatasets)
{
    const opt_group *gr = &o->groups[g];
    if (kind)
        *kind = gr->kind == OPT_GROUP_ALL || gr->kind == OPT_GROUP_1D ? SLM_OPT_STATE_ELEMENTS
                                                                      : SLM_OPT_STATE_REPLICATED;
    if (datasets) *datasets = gr->datasets;
    if (ndatasets) *ndatasets = gr->ndatasets;
    return gr->name;
}

float *slm_optimizer_state_at(slm_optimizer_t o, int g, size_t offset)
{
    const opt_group *gr = &o->groups[g];
    int lo = 0, hi = o->npieces; /* the piece holding offset: pieces are in index order */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (o->pieces[mid].offset + o->pieces[mid].n <= offset) lo = mid + 1;
        else hi = mid;
    }
    if (lo == o->npieces || o->pieces[lo].offset > offset) return NULL;
    const opt_piece *pc = &o->pieces[lo];
    const size_t d = offset - pc->offset;
    if (gr->kind == OPT_GROUP_ALL) return gr->data + pc->elem + d;
    if (gr->kind == OPT_GROUP_1D && pc->elem1d != SIZE_MAX) return gr->data + pc->elem1d + d;
    return NULL;
}

int slm_optim_describe_groups(const slm_optim_config *cfg, const slm_tensor_info *tensors, int ntensors,
                              slm_optim_group_info *out)
{
    const opt_method *m = method_named(cfg->name);
    opt_group g[OPT_MAX_GROUPS];
    int n = 0;
    if (!m || declare_groups(m, cfg, tensors, ntensors, g, &n) != SLM_OK) {
        for (int i = 0; i < n; i++) free(g[i].datasets);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        memcpy(out[i].name, g[i].name, sizeof out[i].name);
        out[i].kind = g[i].kind == OPT_GROUP_ALL || g[i].kind == OPT_GROUP_1D ? SLM_OPT_STATE_ELEMENTS
                                                                             : SLM_OPT_STATE_REPLICATED;
        out[i].datasets = g[i].datasets;
        out[i].ndatasets = g[i].ndatasets;
    }
    return n;
}

void slm_optim_groups_free(slm_optim_group_info *g, int n)
{
    for (int i = 0; i < n; i++) {
        free(g[i].datasets);
        g[i].datasets = NULL;
    }
}

float *slm_optimizer_replicated(slm_optimizer_t o, int g, size_t *n)
{
    *n = o->groups[g].n;
    return o->groups[g].data;
}
