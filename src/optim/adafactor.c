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

enum { ROW, COL, VEC, MOM };

static int ada_declare(const slm_optim_config *cfg, opt_group_decl *out)
{
    /* every rank declares the same groups (a checkpoint creates them collectively), even
     * one whose stage happened to hold no matrix */
    out[ROW] = (opt_group_decl){"adafactor_row", OPT_GROUP_ROWS};
    out[COL] = (opt_group_decl){"adafactor_col", OPT_GROUP_COLS};
    out[VEC] = (opt_group_decl){"adafactor_v", OPT_GROUP_1D};
    if (cfg->adafactor.beta1 <= 0) return 3;
    out[MOM] = (opt_group_decl){"adafactor_m", OPT_GROUP_ALL};
    return 4;
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
    s->row = ROW, s->col = COL, s->vec = VEC, s->mom = o->ngroups > MOM ? MOM : -1;
    s->rfac = malloc((o->groups[ROW].n + 1) * sizeof(float));
    s->cfac = malloc((o->groups[COL].n + 1) * sizeof(float));
    SLM_CHECK(s->rfac && s->cfac, SLM_ERR_NOMEM, "cannot allocate Adafactor's factors");
    const double nfact = (double)(o->groups[s->row].n + o->groups[s->col].n);
    o->extra_bytes = 8.0 * (double)(n1 + n2) + 4.0 * nfact + 32.0 * (double)nt;
    return SLM_OK;
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

/* One piece as the block functions below see it. */
typedef struct {
    slm_optimizer_t o;
    const ada_state *s;
    const slm_tensor_info *t;
    const opt_piece *pc;
    float *p;
    const float *g;
    float *v, *m;      /* the piece's unfactored and first moments (or NULL) */
    size_t rb, cb;     /* where the matrix's factors start in rfac, cfac */
} ada_piece;

static ada_piece piece_of(slm_optimizer_t o, const ada_state *s, const opt_piece *pc)
{
    ada_piece c = {o, s, &o->tensors[pc->tensor], pc, opt_piece_params(o, pc), opt_piece_grads(o, pc),
                   NULL, NULL, 0, 0};
    if (opt_is_matrix(c.t)) {
        c.rb = opt_vector_offset(o, s->row, pc->tensor);
        c.cb = opt_vector_offset(o, s->col, pc->tensor);
    } else {
        c.v = o->groups[s->vec].data + pc->elem1d;
    }
    if (s->mom >= 0) c.m = o->groups[s->mom].data + pc->elem;
    return c;
}

static void sumsq_block(void *ctx, size_t lo, size_t hi, double *out)
{
    const ada_piece *c = ctx;
    double pp = 0.0;
#pragma omp simd reduction(+ : pp)
    for (size_t i = lo; i < hi; i++) pp += (double)c->p[i] * c->p[i];
    out[0] = pp;
}

/* The columns [c0, c1) of local row r that the piece holds, as offsets from its start. */
static int row_span(const ada_piece *c, size_t r, size_t *a, size_t *b)
{
    const size_t cols = (size_t)c->t->cols, j0 = c->pc->j0, j1 = j0 + c->pc->n;
    size_t lo = r * cols > j0 ? r * cols : j0, hi = (r + 1) * cols < j1 ? (r + 1) * cols : j1;
    *a = lo - j0;
    *b = hi - j0;
    return lo < hi;
}

/* Phase 1: sum p^2 and the row and column sums of g^2 + eps1. Rows are summed in
 * parallel over rows, columns in parallel over blocks of columns, each in a fixed order:
 * the same bits whatever the number of threads. */
static void gather_moments(slm_optimizer_t o, ada_state *s)
{
    const double eps1 = o->cfg.adafactor.eps1;
    const float scale = o->grad_scale;
    memset(s->stats1, 0, s->start1[o->ntensors] * sizeof(double));
    for (int k = 0; k < o->npieces; k++) {
        const opt_piece *pc = &o->pieces[k];
        const slm_tensor_info *t = &o->tensors[pc->tensor];
        if (!t->trainable) continue;
        ada_piece c = piece_of(o, s, pc);
        double *st = s->stats1 + s->start1[pc->tensor], pp;
        opt_blocked_sums(pc->n, 1, sumsq_block, &c, &pp);
        st[0] += pp;
        if (!opt_is_matrix(t)) continue;
        double *rows = st + 1, *cols = st + 1 + t->shape[0];
        const size_t C = (size_t)t->cols, r0 = pc->j0 / C, r1 = (pc->j0 + pc->n - 1) / C;
        const int par = pc->n > 65536;
#pragma omp parallel for if (par)
        for (size_t r = r0; r <= r1; r++) {
            size_t a, b;
            if (!row_span(&c, r, &a, &b)) continue;
            double rs = 0.0;
#pragma omp simd reduction(+ : rs)
            for (size_t i = a; i < b; i++) {
                const float gi = c.g[i] * scale;
                rs += (double)gi * gi + eps1;
            }
            rows[opt_global_row(t, (int64_t)r)] += rs;
        }
        const size_t W = 64, nblk = (C + W - 1) / W;
#pragma omp parallel for if (par)
        for (size_t cbk = 0; cbk < nblk; cbk++) {
            for (size_t r = r0; r <= r1; r++) { /* element indices within the tensor's local part */
                const size_t base = r * C;
                size_t lo = base + cbk * W, hi = base + ((cbk + 1) * W < C ? (cbk + 1) * W : C);
                if (lo < pc->j0) lo = pc->j0;
                if (hi > pc->j0 + pc->n) hi = pc->j0 + pc->n;
                for (size_t e = lo; e < hi; e++) {
                    const float gi = c.g[e - pc->j0] * scale;
                    cols[t->col0 + (int64_t)(e - base)] += (double)gi * gi + eps1;
                }
            }
        }
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

/* Phase 2, a block of one piece: the unfactored moments, and sum u^2 of the unscaled
 * update. */
static void update_rms_block(void *ctx, size_t lo, size_t hi, double *out)
{
    const ada_piece *c = ctx;
    const ada_state *s = c->s;
    const float scale = c->o->grad_scale, b = (float)s->beta2t, eps1 = (float)c->o->cfg.adafactor.eps1;
    const float *g = c->g + lo;
    double uu = 0.0;
    if (!c->v) {
        FOR_ROW_RUNS(c->t, c->pc->j0 + lo, hi - lo, {
            _Pragma("omp simd reduction(+ : uu)")
            for (size_t k = 0; k < len; k++) {
                const float u = factored(s, c->rb, c->cb, grow, gcol + (int64_t)k, g[at + k] * scale);
                uu += (double)u * u;
            }
        });
    } else {
#pragma omp simd reduction(+ : uu)
        for (size_t i = lo; i < hi; i++) {
            const float gi = c->g[i] * scale;
            c->v[i] = b * c->v[i] + (1.0f - b) * (gi * gi + eps1);
            const float u = gi / sqrtf(c->v[i]);
            uu += (double)u * u;
        }
    }
    out[0] = uu;
}

static void gather_update_rms(slm_optimizer_t o, ada_state *s)
{
    memset(s->stats2, 0, s->start2[o->ntensors] * sizeof(double));
    for (int k = 0; k < o->npieces; k++) {
        const opt_piece *pc = &o->pieces[k];
        if (!o->tensors[pc->tensor].trainable) continue;
        ada_piece c = piece_of(o, s, pc);
        double uu;
        opt_blocked_sums(pc->n, 1, update_rms_block, &c, &uu);
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

/* Phase 3, a block of one piece: clip, scale, the first moment, weight decay and the step. */
static void apply_block(void *ctx, size_t lo, size_t hi, double *out)
{
    (void)out;
    const ada_piece *c = ctx;
    const ada_state *s = c->s;
    const slm_optim_config *cfg = &c->o->cfg;
    const int i = c->pc->tensor;
    const float scale = c->o->grad_scale, b1 = (float)cfg->adafactor.beta1;
    const float denom = (float)s->denom[i], step = (float)s->step[i];
    const float keep = c->t->decay && cfg->weight_decay != 0 ? 1.0f - (float)(cfg->weight_decay * s->step[i]) : 1.0f;
    float *p = c->p + lo, *m = c->m ? c->m + lo : NULL;
    const float *g = c->g + lo;
#define APPLY(j, u_)                                                                                   \
    do {                                                                                               \
        float u = (u_) / denom * step;                                                                 \
        if (m) u = m[j] = b1 * m[j] + (1.0f - b1) * u;                                                 \
        p[j] = p[j] * keep - u;                                                                        \
    } while (0)
    if (!c->v) {
        FOR_ROW_RUNS(c->t, c->pc->j0 + lo, hi - lo, {
            for (size_t k = 0; k < len; k++)
                APPLY(at + k, factored(s, c->rb, c->cb, grow, gcol + (int64_t)k, g[at + k] * scale));
        });
    } else {
        const float *v = c->v + lo;
        for (size_t j = 0; j < hi - lo; j++) APPLY(j, g[j] * scale / sqrtf(v[j]));
    }
#undef APPLY
}

static void ada_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    (void)p, (void)g; /* piece_of finds them (opt_piece_params, opt_piece_grads) */
    ada_piece c = piece_of(o, o->impl, pc);
    opt_blocked_sums(pc->n, 0, apply_block, &c, NULL);
}

const opt_method opt_adafactor = {"adafactor", ada_declare, ada_setup, ada_teardown, ada_begin_step, ada_update};
