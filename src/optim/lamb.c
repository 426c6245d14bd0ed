/* lamb.c - LAMB (You et al., "Large Batch Optimization for Deep Learning"): Adam's moments
 * with bias correction give r = m^/(sqrt(v^) + eps) + wd p, and each tensor moves by
 * lr * trust * r with the trust ratio ||p|| / ||r|| (1 where either norm is 0), clamped to
 * [lamb.min_trust, lamb.max_trust]. The norms are of whole tensors: the sums of squares
 * over this rank's pieces are combined by the reducer. */
#include <math.h>
#include <stdlib.h>
#include "optim_impl.h"

enum { M, V };

typedef struct {
    size_t *start; /* two slots per tensor: sum p^2, sum r^2 */
    double *sums;
    double *trust;
    float ibc1, rbc2; /* this step's bias corrections */
} lamb_state;

static size_t two(const slm_tensor_info *t)
{
    (void)t;
    return 2;
}

static int lamb_declare(const slm_optim_config *cfg, opt_group_decl *out)
{
    (void)cfg;
    out[M] = (opt_group_decl){"lamb_m", OPT_GROUP_ALL};
    out[V] = (opt_group_decl){"lamb_v", OPT_GROUP_ALL};
    return 2;
}

static slm_status lamb_setup(slm_optimizer_t o)
{
    lamb_state *s = o->impl = calloc(1, sizeof *s);
    SLM_CHECK(s, SLM_ERR_NOMEM, "cannot allocate LAMB's state");
    s->start = malloc(((size_t)o->ntensors + 1) * sizeof *s->start);
    s->trust = malloc(((size_t)o->ntensors + 1) * sizeof *s->trust);
    SLM_CHECK(s->start && s->trust, SLM_ERR_NOMEM, "cannot allocate LAMB's state");
    const size_t n = opt_slots(o, two, s->start);
    s->sums = malloc((n + 1) * sizeof *s->sums);
    o->extra_bytes = 8.0 * (double)n + 16.0 * o->ntensors;
    SLM_CHECK(s->sums, SLM_ERR_NOMEM, "cannot allocate LAMB's statistics");
    return SLM_OK;
}

static void lamb_teardown(slm_optimizer_t o)
{
    lamb_state *s = o->impl;
    if (!s) return;
    free(s->start);
    free(s->sums);
    free(s->trust);
    free(s);
}

/* The update direction of one element (its moments already this step's). */
static inline float direction(const lamb_state *s, float m, float v, float p, float wd, float eps)
{
    return m * s->ibc1 / (sqrtf(v) * s->rbc2 + eps) + wd * p;
}

/* One piece's moments and sums of squares, a block at a time. */
typedef struct {
    const lamb_state *s;
    float *m, *v;
    const float *p, *g;
    float b1, b2, eps, wd, scale;
} lamb_piece;

static void moments_block(void *ctx, size_t lo, size_t hi, double *out)
{
    const lamb_piece *c = ctx;
    double pp = 0.0, rr = 0.0;
#pragma omp simd reduction(+ : pp, rr)
    for (size_t i = lo; i < hi; i++) {
        const float gi = c->g[i] * c->scale;
        c->m[i] = c->b1 * c->m[i] + (1.0f - c->b1) * gi;
        c->v[i] = c->b2 * c->v[i] + (1.0f - c->b2) * gi * gi;
        const float r = direction(c->s, c->m[i], c->v[i], c->p[i], c->wd, c->eps);
        pp += (double)c->p[i] * c->p[i];
        rr += (double)r * r;
    }
    out[0] = pp;
    out[1] = rr;
}

static void lamb_begin_step(slm_optimizer_t o, const slm_optim_reducer *red)
{
    lamb_state *s = o->impl;
    const slm_optim_config *c = &o->cfg;
    const float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps, scale = o->grad_scale;
    s->ibc1 = (float)(1.0 / (1.0 - pow(c->beta1, (double)o->t))); /* in double: beta^t loses precision in float */
    s->rbc2 = (float)(1.0 / sqrt(1.0 - pow(c->beta2, (double)o->t)));
    for (size_t k = 0; k < s->start[o->ntensors]; k++) s->sums[k] = 0.0;
    for (int k = 0; k < o->npieces; k++) {
        const opt_piece *pc = &o->pieces[k];
        const slm_tensor_info *t = &o->tensors[pc->tensor];
        if (!t->trainable) continue;
        lamb_piece ctx = {s, o->groups[M].data + pc->elem, o->groups[V].data + pc->elem,
                          opt_piece_params(o, pc), opt_piece_grads(o, pc),
                          b1, b2, eps, t->decay ? (float)c->weight_decay : 0.0f, scale};
        double sums[2];
        opt_blocked_sums(pc->n, 2, moments_block, &ctx, sums);
        s->sums[s->start[pc->tensor]] += sums[0];
        s->sums[s->start[pc->tensor] + 1] += sums[1];
    }
    if (red) red->sum(red->ctx, s->sums, s->start, o->ntensors);
    for (int i = 0; i < o->ntensors; i++) {
        if (s->start[i + 1] == s->start[i]) continue;
        const double pn = sqrt(s->sums[s->start[i]]), rn = sqrt(s->sums[s->start[i] + 1]);
        double trust = pn > 0 && rn > 0 ? pn / rn : 1.0;
        if (c->lamb.max_trust > 0 && trust > c->lamb.max_trust) trust = c->lamb.max_trust;
        if (trust < c->lamb.min_trust) trust = c->lamb.min_trust;
        s->trust[i] = trust;
    }
}

static void lamb_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    (void)g;
    const lamb_state *s = o->impl;
    const slm_optim_config *c = &o->cfg;
    const float *m = o->groups[M].data + pc->elem, *v = o->groups[V].data + pc->elem;
    const float wd = o->tensors[pc->tensor].decay ? (float)c->weight_decay : 0.0f, eps = (float)c->eps;
    const float step = (float)(o->lr * s->trust[pc->tensor]);
#pragma omp parallel for simd if (pc->n > 65536)
    for (size_t i = 0; i < pc->n; i++) p[i] -= step * direction(s, m[i], v[i], p[i], wd, eps);
}

const opt_method opt_lamb = {"lamb", lamb_declare, lamb_setup, lamb_teardown, lamb_begin_step, lamb_update};
