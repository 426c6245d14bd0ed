/* adafactor.c - Adafactor (Shazeer & Stern 2018, with the choices of fairseq's
 * implementation): the second moment of a matrix is kept factored, as exponential averages
 * of its row means and column means of g^2 + eps1, and rebuilt as
 * V_ij = R_i C_j / mean(R); other tensors keep it whole. Step t decays the averages by
 * beta2_t = 1 - t^decay_rate. The update g / sqrt(V) is divided by max(1, RMS/clip), scaled
 * by the step size (the run's schedule, or min(1e-2, 1/sqrt(t)) with relative_step)
 * times max(eps2, RMS(p)) (scale_parameter), optionally averaged into a first moment, and
 * weight decay moves p by wd x that step size.
 *
 * Every statistic is of a whole tensor: each rank sums what it holds into slots of the
 * tensor's global rows and columns, the reducer combines them, and every rank that holds
 * part of a matrix keeps its whole R and C (a few floats per row and column), so the result
 * does not depend on how ZeRO or tensor parallelism cut the tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "optim_impl.h"

typedef struct {
    int row, col, vec, mom; /* group indices (-1: absent) */
    size_t *start1, *start2; /* statistics: sum p^2 [, g^2 row sums, column sums]; sum u^2 */
    double *stats1, *stats2;
    float *rfac, *cfac;      /* this step's 1/sqrt(R_i/mean R) and 1/sqrt(C_j), as R and C */
    double *step, *denom;    /* per tensor: the step size and the clip divisor */
    double beta2t;
} ada_state;

static size_t slots1(const slm_tensor_info *t)
{
    return 1 + (opt_is_matrix(t) ? (size_t)(t->shape[0] + t->shape[1]) : 0);
}
static size_t slots2(const slm_tensor_info *t)
{
    (void)t;
    return 1;
}

static slm_status ada_setup(slm_optimizer_t o)
{
    ada_state *s = o->impl = calloc(1, sizeof *s);
    SLM_CHECK(s, SLM_ERR_NOMEM, "cannot allocate Adafactor's state");
    const size_t nt = (size_t)o->ntensors + 1;
    s->start1 = malloc(nt * sizeof(size_t));
    s->start2 = malloc(nt * sizeof(size_t));
    s->step = calloc(nt, sizeof(double));
    s->denom = calloc(nt, sizeof(double));
    SLM_CHECK(s->start1 && s->start2 && s->step && s->denom, SLM_ERR_NOMEM, "cannot allocate Adafactor's state");
    const size_t n1 = opt_slots(o, slots1, s->start1), n2 = opt_slots(o, slots2, s->start2);
    s->stats1 = malloc((n1 + 1) * sizeof(double));
    s->stats2 = malloc((n2 + 1) * sizeof(double));
    SLM_CHECK(s->stats1 && s->stats2, SLM_ERR_NOMEM, "cannot allocate Adafactor's statistics");
    s->row = s->col = s->vec = s->mom = -1;
    /* every rank declares the same groups (a checkpoint creates them collectively), even
     * one whose stage happened to hold no matrix */
    s->row = o->ngroups;
    if (!opt_add_group(o, "adafactor_row", OPT_GROUP_ROWS)) goto nomem;
    s->col = o->ngroups;
    if (!opt_add_group(o, "adafactor_col", OPT_GROUP_COLS)) goto nomem;
    s->rfac = malloc((o->groups[s->row].n + 1) * sizeof(float));
    s->cfac = malloc((o->groups[s->col].n + 1) * sizeof(float));
    if (!s->rfac || !s->cfac) goto nomem;
    s->vec = o->ngroups;
    if (!opt_add_group(o, "adafactor_v", OPT_GROUP_1D)) goto nomem;
    if (o->cfg.adafactor.beta1 > 0) {
        s->mom = o->ngroups;
        if (!opt_add_group(o, "adafactor_m", OPT_GROUP_ALL)) goto nomem;
    }
    const double nfact = (double)(o->groups[s->row].n + o->groups[s->col].n);
    o->extra_bytes = 8.0 * (double)(n1 + n2) + 4.0 * nfact + 32.0 * (double)nt;
    return SLM_OK;
nomem:
    return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate Adafactor's state for %zu parameters", o->nelem);
}

static void ada_teardown(slm_optimizer_t o)
{
    ada_state *s = o->impl;
    if (!s) return;
    free(s->start1);
    free(s->start2);
    free(s->stats1);
    free(s->stats2);
    free(s->rfac);
    free(s->cfac);
    free(s->step);
    free(s->denom);
    free(s);
}

/* Run the statements that follow for the elements [j0, j0+n) of matrix t's local part,
 * one run within a row at a time, with grow (its global row), gcol (the global column of
 * its first element), at (its offset from j0) and len. */
#define FOR_ROW_RUNS(t, j0, n, ...)                                                                   \
    do {                                                                                               \
        const size_t cols_ = (size_t)(t)->cols;                                                        \
        for (size_t j_ = (j0); j_ < (j0) + (n);) {                                                     \
            const size_t r_ = j_ / cols_, c_ = j_ % cols_;                                             \
            const size_t len_ = cols_ - c_ < (j0) + (n) - j_ ? cols_ - c_ : (j0) + (n) - j_;           \
            const int64_t grow = opt_global_row((t), (int64_t)r_);                                     \
            const int64_t gcol = (t)->col0 + (int64_t)c_;                                              \
            const size_t at = j_ - (j0), len = len_;                                                   \
            __VA_ARGS__                                                                                \
            j_ += len_;                                                                                \
        }                                                                                              \
    } while (0)

static void piece_data(slm_optimizer_t o, const opt_piece *pc, const float **p, const float **g)
{
    const slm_optim_segment *sg = &o->segs[pc->seg];
    *p = sg->params + (pc->offset - sg->offset);
    *g = sg->grads + (pc->offset - sg->offset);
}

/* Phase 1: sum p^2 and the row and column sums of g^2 + eps1. */
static void gather_moments(slm_optimizer_t o, ada_state *s)
{
    const double eps1 = o->cfg.adafactor.eps1;
    const float scale = o->grad_scale;
    memset(s->stats1, 0, s->start1[o->ntensors] * sizeof(double));
    for (int k = 0; k < o->npieces; k++) {
        const opt_piece *pc = &o->pieces[k];
        const slm_tensor_info *t = &o->tensors[pc->tensor];
        if (!t->trainable) continue;
        const float *p, *g;
        piece_data(o, pc, &p, &g);
        double *st = s->stats1 + s->start1[pc->tensor];
        double pp = 0.0;
        for (size_t i = 0; i < pc->n; i++) pp += (double)p[i] * p[i];
        st[0] += pp;
        if (!opt_is_matrix(t)) continue;
        double *rows = st + 1, *cols = st + 1 + t->shape[0];
        FOR_ROW_RUNS(t, pc->j0, pc->n, {
            double rs = 0.0;
            for (size_t c = 0; c < len; c++) {
                const float gi = g[at + c] * scale;
                const double u = (double)gi * gi + eps1;
                rs += u;
                cols[gcol + (int64_t)c] += u;
            }
            rows[grow] += rs;
        });
    }
}

/* After the first reduction: the step size of every tensor, and the factored moments and
 * the factors the update multiplies by. */
static void update_factors(slm_optimizer_t o, ada_state *s)
{
    const slm_optim_config *c = &o->cfg;
    const double t = (double)o->t, b = s->beta2t;
    double rel = o->lr;
    if (c->adafactor.relative_step) {
        const double cap = c->adafactor.warmup_init ? 1e-6 * t : 1e-2;
        rel = cap < 1.0 / sqrt(t) ? cap : 1.0 / sqrt(t);
    }
    o->step_size = rel;
    for (int i = 0; i < o->ntensors; i++) {
        const slm_tensor_info *t = &o->tensors[i];
        if (!t->count || !t->trainable) continue;
        const double *st = s->stats1 + s->start1[i];
        const double rms = sqrt(st[0] / (double)slm_tensor_global_count(t));
        s->step[i] = rel * (c->adafactor.scale_parameter ? (rms > c->adafactor.eps2 ? rms : c->adafactor.eps2) : 1.0);
        if (!opt_is_matrix(t)) continue;
        const int64_t R = t->shape[0], C = t->shape[1];
        float *rv = o->groups[s->row].data + opt_vector_offset(o, s->row, i);
        float *cv = o->groups[s->col].data + opt_vector_offset(o, s->col, i);
        float *rf = s->rfac + opt_vector_offset(o, s->row, i), *cf = s->cfac + opt_vector_offset(o, s->col, i);
        double mean = 0.0;
        for (int64_t r = 0; r < R; r++) {
            rv[r] = (float)(b * rv[r] + (1.0 - b) * st[1 + r] / (double)C);
            mean += rv[r];
        }
        mean /= (double)R;
        for (int64_t r = 0; r < R; r++) rf[r] = (float)(1.0 / sqrt(rv[r] / mean));
        for (int64_t j = 0; j < C; j++) {
            cv[j] = (float)(b * cv[j] + (1.0 - b) * st[1 + R + j] / (double)R);
            cf[j] = (float)(1.0 / sqrt((double)cv[j]));
        }
    }
}

/* The unscaled update g / sqrt(V) of one element of a matrix. */
static inline float factored(const ada_state *s, size_t rbase, size_t cbase, int64_t grow, int64_t gcol, float g)
{
    return g * s->rfac[rbase + (size_t)grow] * s->cfac[cbase + (size_t)gcol];
}

/* Phase 2: the unfactored moments, and sum u^2 of every tensor's unscaled update. */
static void gather_update_rms(slm_optimizer_t o, ada_state *s)
{
    const float scale = o->grad_scale, b = (float)s->beta2t, eps1 = (float)o->cfg.adafactor.eps1;
    memset(s->stats2, 0, s->start2[o->ntensors] * sizeof(double));
    for (int k = 0; k < o->npieces; k++) {
        const opt_piece *pc = &o->pieces[k];
        const slm_tensor_info *t = &o->tensors[pc->tensor];
        if (!t->trainable) continue;
        const float *p, *g;
        piece_data(o, pc, &p, &g);
        double uu = 0.0;
        if (opt_is_matrix(t)) {
            const size_t rb = opt_vector_offset(o, s->row, pc->tensor), cb = opt_vector_offset(o, s->col, pc->tensor);
            FOR_ROW_RUNS(t, pc->j0, pc->n, {
                for (size_t c = 0; c < len; c++) {
                    const float u = factored(s, rb, cb, grow, gcol + (int64_t)c, g[at + c] * scale);
                    uu += (double)u * u;
                }
            });
        } else {
            float *v = o->groups[s->vec].data + pc->elem1d;
            for (size_t i = 0; i < pc->n; i++) {
                const float gi = g[i] * scale;
                v[i] = b * v[i] + (1.0f - b) * (gi * gi + eps1);
                const float u = gi / sqrtf(v[i]);
                uu += (double)u * u;
            }
        }
        s->stats2[s->start2[pc->tensor]] += uu;
    }
}

static void ada_begin_step(slm_optimizer_t o, const slm_optim_reducer *red)
{
    ada_state *s = o->impl;
    s->beta2t = 1.0 - pow((double)o->t, o->cfg.adafactor.decay_rate);
    gather_moments(o, s);
    if (red) red->sum(red->ctx, s->stats1, s->start1, o->ntensors);
    update_factors(o, s);
    gather_update_rms(o, s);
    if (red) red->sum(red->ctx, s->stats2, s->start2, o->ntensors);
    for (int i = 0; i < o->ntensors; i++) {
        if (s->start2[i + 1] == s->start2[i]) continue;
        const double rms = sqrt(s->stats2[s->start2[i]] / (double)slm_tensor_global_count(&o->tensors[i]));
        const double d = rms / o->cfg.adafactor.clip_threshold;
        s->denom[i] = d > 1.0 ? d : 1.0;
    }
}

/* Phase 3: clip, scale, the first moment, weight decay and the step. */
static void ada_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    const ada_state *s = o->impl;
    const slm_optim_config *c = &o->cfg;
    const slm_tensor_info *t = &o->tensors[pc->tensor];
    const float scale = o->grad_scale, b1 = (float)c->adafactor.beta1;
    const float denom = (float)s->denom[pc->tensor], step = (float)s->step[pc->tensor];
    const float keep = t->decay && c->weight_decay != 0 ? 1.0f - (float)(c->weight_decay * s->step[pc->tensor]) : 1.0f;
    float *m = s->mom >= 0 ? o->groups[s->mom].data + pc->elem : NULL;
#define APPLY(i, u_)                                                                                   \
    do {                                                                                               \
        float u = (u_) / denom * step;                                                                 \
        if (m) u = m[i] = b1 * m[i] + (1.0f - b1) * u;                                                 \
        p[i] = p[i] * keep - u;                                                                        \
    } while (0)
    if (opt_is_matrix(t)) {
        const size_t rb = opt_vector_offset(o, s->row, pc->tensor), cb = opt_vector_offset(o, s->col, pc->tensor);
        FOR_ROW_RUNS(t, pc->j0, pc->n, {
            for (size_t c = 0; c < len; c++) APPLY(at + c, factored(s, rb, cb, grow, gcol + (int64_t)c, g[at + c] * scale));
        });
    } else {
        const float *v = o->groups[s->vec].data + pc->elem1d;
        for (size_t i = 0; i < pc->n; i++) APPLY(i, g[i] * scale / sqrtf(v[i]));
    }
#undef APPLY
}

const opt_method opt_adafactor = {"adafactor", ada_setup, ada_teardown, ada_begin_step, ada_update};
