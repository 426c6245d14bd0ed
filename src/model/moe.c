/* moe.c - mixture-of-experts MLP blocks for every architecture: a router in fp32, top-k
 * routing with renormalised weights, optional capacity, the load-balancing and z losses,
 * the selection bias of auxiliary-loss-free balancing, and the experts, each the
 * architecture's own MLP (slm_arch's mlp_* entries).
 *
 * One micro-batch of N tokens through MoE block l (docs/moe.md has the formulas):
 *   logits = x Wr^T, p = softmax(logits); the top k of p + bias (ties to the lower
 *   expert) with weights p / (sum of the chosen p); an expert over capacity drops its
 *   least probable assignments (ties: the later token); the kept assignments are laid
 *   out expert after expert, in token order within an expert ("rows"), each expert runs
 *   as GEMMs over its contiguous rows, and a token's output sums its slots in slot order.
 * Nothing depends on timing or on the thread count, so the result is the same every run.
 *
 * Tensor parallelism splits every expert like the dense MLP (column-parallel in,
 * row-parallel out); the router is whole on every rank. Forward sums the combined
 * output over the group once; backward sums the slot weights' gradients (N k floats),
 * since the expert outputs are partial sums there. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_impl.h"
#include "shardlm/kernels.h"

/* The activations of one MoE block for one micro-batch. Integers live in float-sized
 * slots of the activation block. */
typedef struct {
    float *logits, *probs; /* (N,E) */
    float *lse;            /* (N) log-sum-exp of the logits */
    int *sel;              /* (N,k) the chosen experts, best first */
    float *w;              /* (N,k) their combine weights */
    int *row;              /* (N,k) the slot's row, or -1 when capacity dropped it */
    int *routed;           /* (E) slots that chose each expert (before drops) */
    int *start;            /* (E+1) each expert's first row; start[E] rows in all */
    int *tok;              /* (rows) the token of each row */
    float *yl;             /* (rows,C) the experts' outputs for this rank's rows (partial sums
                            * under tensor parallelism); y itself without expert parallelism */
    /* this rank's experts, over the rows the expert-parallel group sent them: */
    int *from;             /* (ep, local experts) rows from each rank for each local expert */
    float *xin;            /* (in,C) their inputs, expert after expert, ranks in order within */
    float *h1, *h2;        /* (in,W1), (in,W2) hidden activations */
    float *y;              /* (in,C) outputs */
} moe_views;

struct moe_state {
    int E, k, FL;           /* experts, top-k, this rank's expert width */
    int per;                /* tensors per expert */
    int ep, el, e0;         /* expert-parallel ranks; this rank's experts: el from e0 */
    size_t W1, W2;          /* floats per row of h1 and h2 */
    int nmoe;               /* MoE blocks of the whole model */
    int *index;             /* (n_layer) block -> its MoE number, or -1 */
    moe_views *v;           /* (n_layer) views of the selected slot (or the shared set) */
    double *stats;          /* (nmoe, SLM_MOE_STAT_LEN(E)) since the last take */
    float *bias;            /* (nmoe, E) selection biases */
};

void slm_moe_run_defaults(slm_moe_run *r)
{
    *r = (slm_moe_run){0.0, 0.01, 0.0, SLM_MOE_BALANCE_LOSS, 1e-3};
}

int slm_model_is_moe_block(const slm_model_config *c, int l)
{
    return c->n_experts > 0 && c->moe_every > 0 && (l + 1) % c->moe_every == 0;
}

int slm_model_num_moe_layers(const slm_model_config *c)
{
    return c->n_experts > 0 && c->moe_every > 0 ? c->n_layer / c->moe_every : 0;
}

size_t slm_model_moe_stats_len(const slm_model_config *c)
{
    return (size_t)slm_model_num_moe_layers(c) * SLM_MOE_STAT_LEN(c->n_experts);
}

/* ---- the table ----------------------------------------------------------------------- */

void slm_moe_build(slm_model_t m, int l)
{
    const slm_model_config *c = &m->cfg;
    const tensor_spec router = {"moe.router.weight", c->n_experts, c->d_model, SLM_SPLIT_NONE, 1, NULL,
                                SLM_INIT_NORMAL, 0.02, 1};
    slm_model_add_tensor(m, l, HELD_BLOCK, &router);
    slm_model_end_unit(m, m->block_first[l]);
    tensor_spec mlp[8];
    const int n = m->arch->mlp_tensors(c, c->expert_hidden, mlp);
    const int first = m->ntensors;
    for (int e = 0; e < c->n_experts; e++) {
        m->adding_expert = e;
        for (int k = 0; k < n; k++) {
            char name[48];
            snprintf(name, sizeof name, "moe.experts.%d.%s", e, mlp[k].name);
            tensor_spec s = mlp[k];
            s.name = name;
            slm_model_add_tensor(m, l, HELD_BLOCK, &s);
        }
    }
    m->adding_expert = -1;
    slm_model_end_unit(m, first);
}

/* ---- sizes and views ------------------------------------------------------------------ */

static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

/* Rows of this rank's micro-batch for the experts (every slot), and rows its experts may
 * get from the expert-parallel group: with dropless routing, each rank's every token for
 * as many of them as it chose. */
static size_t local_rows(const slm_model_t m, size_t N) { return N * (size_t)m->cfg.expert_top_k; }
static size_t expert_rows(const slm_model_t m, size_t N)
{
    const size_t ep = (size_t)m->ep.size, el = (size_t)m->cfg.n_experts / ep, k = (size_t)m->cfg.expert_top_k;
    return ep == 1 ? local_rows(m, N) : ep * N * (k < el ? k : el);
}

static void hidden_widths(const slm_model_t m, size_t *w1, size_t *w2)
{
    m->arch->mlp_hidden(m->cfg.expert_hidden / m->tp.size, w1, w2);
}

size_t slm_moe_act_floats(const slm_model_t m, size_t N)
{
    const size_t E = (size_t)m->cfg.n_experts, k = (size_t)m->cfg.expert_top_k, C = (size_t)m->cfg.d_model;
    const size_t R = local_rows(m, N), X = expert_rows(m, N), ep = (size_t)m->ep.size;
    size_t w1, w2;
    hidden_widths(m, &w1, &w2);
    return 2 * up16(N * E) + up16(N) + 3 * up16(N * k) + up16(E) + up16(E + 1) + up16(R) +
           (ep > 1 ? up16(R * C) : 0) + up16(E) + up16(X * C) + up16(X * w1) + up16(X * w2) + up16(X * C);
}

void slm_moe_layout(slm_model_t m, int l, float *base, size_t N)
{
    struct moe_state *s = m->moe;
    if (!s) return;
    moe_views *v = &s->v[l];
    if (!base) {
        memset(v, 0, sizeof *v);
        return;
    }
    const size_t E = (size_t)s->E, k = (size_t)s->k, C = (size_t)m->cfg.d_model;
    const size_t R = local_rows(m, N), X = expert_rows(m, N);
    float *p = base;
#define TAKE(n) (p += up16(n), p - up16(n))
    v->logits = TAKE(N * E);
    v->probs = TAKE(N * E);
    v->lse = TAKE(N);
    v->sel = (int *)TAKE(N * k);
    v->w = TAKE(N * k);
    v->row = (int *)TAKE(N * k);
    v->routed = (int *)TAKE(E);
    v->start = (int *)TAKE(E + 1);
    v->tok = (int *)TAKE(R);
    v->yl = s->ep > 1 ? TAKE(R * C) : NULL;
    v->from = (int *)TAKE(E);
    v->xin = TAKE(X * C);
    v->h1 = TAKE(X * s->W1);
    v->h2 = TAKE(X * s->W2);
    v->y = TAKE(X * C);
    if (s->ep == 1) v->yl = v->y;
#undef TAKE
}

/* The scratch of forward and backward: rows in this rank's order (R,C) twice, rows in
 * the exchange's order (X,C), rows of this rank's experts (X,C) twice, d(h1), d(h2),
 * d(logits) (N,E) and the slot weights' gradients (N,k). */
size_t slm_moe_scratch_floats(const slm_model_t m, size_t N)
{
    const size_t E = (size_t)m->cfg.n_experts, k = (size_t)m->cfg.expert_top_k, C = (size_t)m->cfg.d_model;
    const size_t R = local_rows(m, N), X = expert_rows(m, N);
    size_t w1, w2;
    hidden_widths(m, &w1, &w2);
    return 2 * up16(R * C) + 3 * up16(X * C) + up16(X * w1) + up16(X * w2) + up16(N * E) + up16(N * k);
}

typedef struct {
    float *a, *b;        /* (R,C) rows in this rank's order */
    float *xchg;         /* (X,C) rows as the exchange packs them: by rank, then expert */
    float *c, *d;        /* (X,C) rows of this rank's experts */
    float *dh1, *dh2;    /* (X,W1), (X,W2) */
    float *dlogits, *dw; /* (N,E), (N,k) */
} moe_scratch;

static moe_scratch scratch_of(const slm_model_t m, int N)
{
    const struct moe_state *s = m->moe;
    const size_t C = (size_t)m->cfg.d_model, R = local_rows(m, (size_t)N), X = expert_rows(m, (size_t)N);
    moe_scratch k;
    float *p = m->moe_scratch;
#define TAKE(n) (p += up16(n), p - up16(n))
    k.a = TAKE(R * C);
    k.b = TAKE(R * C);
    k.xchg = TAKE(X * C);
    k.c = TAKE(X * C);
    k.d = TAKE(X * C);
    k.dh1 = TAKE(X * s->W1);
    k.dh2 = TAKE(X * s->W2);
    k.dlogits = TAKE((size_t)N * s->E);
    k.dw = TAKE((size_t)N * s->k);
#undef TAKE
    return k;
}

/* ---- the exchange between expert-parallel ranks ------------------------------------------------ */

/* Rows of local expert j from rank q, and where they start in the exchange's order (by
 * rank, then expert) and in the experts' order (by expert, then rank). */
static int from_rows(const moe_views *v, const struct moe_state *s, int q, int j) { return v->from[q * s->el + j]; }
static void expert_starts(const moe_views *v, const struct moe_state *s, int *estart)
{
    estart[0] = 0;
    for (int j = 0; j < s->el; j++) {
        estart[j + 1] = estart[j];
        for (int q = 0; q < s->ep; q++) estart[j + 1] += from_rows(v, s, q, j);
    }
}

/* Copy rows of width C between the exchange's order and the experts' order. */
static void reorder(const moe_views *v, const struct moe_state *s, const float *src, float *dst, int C, int to_experts)
{
    int estart[s->el + 1], at = 0;
    expert_starts(v, s, estart);
    int fill[s->el];
    for (int j = 0; j < s->el; j++) fill[j] = estart[j];
    for (int q = 0; q < s->ep; q++)
        for (int j = 0; j < s->el; j++) {
            const size_t n = (size_t)from_rows(v, s, q, j) * C;
            const float *from = to_experts ? src + (size_t)at * C : src + (size_t)fill[j] * C;
            float *to = to_experts ? dst + (size_t)fill[j] * C : dst + (size_t)at * C;
            memcpy(to, from, n * sizeof(float));
            at += from_rows(v, s, q, j);
            fill[j] += from_rows(v, s, q, j);
        }
}

/* Rows this rank sends to each rank (its experts' rows, in expert order), and receives. */
static void exchange_rows(const moe_views *v, const struct moe_state *s, int *send, int *recv)
{
    for (int q = 0; q < s->ep; q++) {
        send[q] = v->start[(q + 1) * s->el] - v->start[q * s->el];
        recv[q] = 0;
        for (int j = 0; j < s->el; j++) recv[q] += from_rows(v, s, q, j);
    }
}

slm_status slm_moe_setup(slm_model_t m)
{
    const slm_model_config *c = &m->cfg;
    if (c->n_experts <= 0) return SLM_OK;
    struct moe_state *s = calloc(1, sizeof *s);
    m->moe = s;
    SLM_CHECK(s, SLM_ERR_NOMEM, "cannot allocate the MoE state");
    s->E = c->n_experts;
    s->k = c->expert_top_k;
    s->FL = c->expert_hidden / m->tp.size;
    s->ep = m->ep.size;
    s->el = s->E / s->ep;
    s->e0 = m->ep.rank * s->el;
    tensor_spec mlp[8];
    s->per = m->arch->mlp_tensors(c, c->expert_hidden, mlp);
    hidden_widths(m, &s->W1, &s->W2);
    s->nmoe = slm_model_num_moe_layers(c);
    s->index = malloc((size_t)c->n_layer * sizeof(int));
    s->v = calloc((size_t)c->n_layer, sizeof *s->v);
    s->stats = calloc(slm_model_moe_stats_len(c), sizeof(double));
    s->bias = calloc((size_t)s->nmoe * (size_t)s->E, sizeof(float));
    SLM_CHECK(s->index && s->v && s->stats && s->bias, SLM_ERR_NOMEM, "cannot allocate the MoE state");
    for (int l = 0, i = 0; l < c->n_layer; l++) s->index[l] = slm_model_is_moe_block(c, l) ? i++ : -1;
    return SLM_OK;
}

void slm_moe_teardown(slm_model_t m)
{
    struct moe_state *s = m->moe;
    if (!s) return;
    free(s->index);
    free(s->v);
    free(s->stats);
    free(s->bias);
    free(s);
    m->moe = NULL;
}

/* ---- forward --------------------------------------------------------------------------- */

/* Softmax, log-sum-exp and the top k of p + bias of one token. */
static void route_token(const float *logit, const float *bias, int E, int k, float *p, float *lse, int *sel,
                        float *w)
{
    float mx = logit[0];
    for (int i = 1; i < E; i++) mx = logit[i] > mx ? logit[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < E; i++) sum += exp((double)logit[i] - mx);
    for (int i = 0; i < E; i++) p[i] = (float)(exp((double)logit[i] - mx) / sum);
    *lse = (float)(mx + log(sum));
    double chosen = 0.0;
    for (int j = 0; j < k; j++) { /* the best not yet chosen; a strict > keeps the lower index on a tie */
        int best = -1;
        float bs = 0.0f;
        for (int i = 0; i < E; i++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= sel[q] == i;
            const float score = p[i] + (bias ? bias[i] : 0.0f);
            if (!taken && (best < 0 || score > bs)) best = i, bs = score;
        }
        sel[j] = best;
        chosen += p[best];
    }
    for (int j = 0; j < k; j++) w[j] = (float)(p[sel[j]] / chosen);
}

/* An assignment competing for an expert's capacity. */
typedef struct {
    float p;
    int t, j;
} claim;

static int by_probability(const void *a, const void *b)
{
    const claim *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

/* Mark the slots past each expert's capacity dropped (row = -1), the others 0; returns
 * the number dropped. */
static long apply_capacity(const moe_views *v, int N, int E, int k, double factor)
{
    for (int i = 0; i < N * k; i++) v->row[i] = 0;
    if (factor <= 0) return 0;
    const long cap = (long)ceil(factor * N * k / E);
    long dropped = 0;
    claim *c = NULL;
    for (int e = 0; e < E; e++) {
        if (v->routed[e] <= cap) continue;
        if (!c && !(c = malloc((size_t)N * (size_t)k * sizeof *c))) abort();
        int n = 0;
        for (int t = 0; t < N; t++)
            for (int j = 0; j < k; j++)
                if (v->sel[t * k + j] == e) c[n++] = (claim){v->probs[(size_t)t * E + e], t, j};
        qsort(c, (size_t)n, sizeof *c, by_probability);
        for (int q = (int)cap; q < n; q++) v->row[c[q].t * k + c[q].j] = -1;
        dropped += n - cap;
    }
    free(c);
    return dropped;
}

/* The weights of expert e (its first tensor's views). */
static int expert_tensor(const slm_model_t m, int l, int e)
{
    return slm_block_tensor(m, l, m->arch->mlp_first + 1 + e * m->moe->per);
}
static int router_tensor(const slm_model_t m, int l) { return slm_block_tensor(m, l, m->arch->mlp_first); }

/* Rows of x to their experts and the experts' outputs back into v->yl: without expert
 * parallelism in place; with it, this rank's rows go to the ranks of their experts (the
 * counts first), its experts run over what every rank sent, expert after expert, and the
 * outputs go back to the ranks the rows came from. */
static void run_experts(slm_model_t m, int l, const float *x, int N)
{
    struct moe_state *s = m->moe;
    const moe_views *v = &s->v[l];
    const int C = m->cfg.d_model, R = v->start[s->E];
    const moe_scratch k = scratch_of(m, N);
    float *rows = s->ep == 1 ? v->xin : k.a; /* this rank's rows, expert after expert */
#pragma omp parallel for
    for (int r = 0; r < R; r++) memcpy(rows + (size_t)r * C, x + (size_t)v->tok[r] * C, (size_t)C * sizeof(float));
    int send[s->ep], recv[s->ep];
    if (s->ep == 1) {
        for (int j = 0; j < s->el; j++) v->from[j] = v->start[j + 1] - v->start[j];
    } else {
        int counts[s->E];
        for (int e = 0; e < s->E; e++) counts[e] = v->start[e + 1] - v->start[e];
        m->ep.counts(m->ep.ctx, counts, v->from, s->el, l); /* agreed before any row moves */
        exchange_rows(v, s, send, recv);
        m->ep.rows(m->ep.ctx, rows, send, k.xchg, recv, C, l, 0);
        reorder(v, s, k.xchg, v->xin, C, 1);
    }
    int estart[s->el + 1];
    expert_starts(v, s, estart);
    for (int j = 0; j < s->el; j++) {
        const int r0 = estart[j], n = estart[j + 1] - r0;
        if (n == 0) continue;
        m->arch->mlp_forward(m, &m->pv[expert_tensor(m, l, s->e0 + j)], v->xin + (size_t)r0 * C, n, s->FL,
                             v->h1 + (size_t)r0 * s->W1, v->h2 + (size_t)r0 * s->W2, v->y + (size_t)r0 * C);
        slm_model_poll(m);
    }
    if (s->ep > 1) {
        reorder(v, s, v->y, k.xchg, C, 0);
        m->ep.rows(m->ep.ctx, k.xchg, recv, v->yl, send, C, l, 0);
    }
}

void slm_moe_forward(slm_model_t m, int l, const float *x, float *out, int N, int count)
{
    struct moe_state *s = m->moe;
    const moe_views *v = &s->v[l];
    const int E = s->E, k = s->k, C = m->cfg.d_model, li = s->index[l];
    const slm_moe_run *run = &m->cfg.moe;
    const float *bias = run->balance == SLM_MOE_BALANCE_BIAS ? s->bias + (size_t)li * E : NULL;
    slm_matmul_forward(v->logits, x, PV(m, router_tensor(m, l)), NULL, N, C, E);
#pragma omp parallel for
    for (int t = 0; t < N; t++)
        route_token(v->logits + (size_t)t * E, bias, E, k, v->probs + (size_t)t * E, &v->lse[t], v->sel + t * k,
                    v->w + t * k);
    for (int e = 0; e < E; e++) v->routed[e] = 0;
    for (int i = 0; i < N * k; i++) v->routed[v->sel[i]]++;
    const long dropped = apply_capacity(v, N, E, k, run->capacity);
    /* rows: expert after expert, tokens in order within each */
    int *fill = calloc((size_t)E, sizeof(int));
    if (!fill) abort();
    for (int i = 0; i < N * k; i++)
        if (v->row[i] >= 0) fill[v->sel[i]]++;
    v->start[0] = 0;
    for (int e = 0; e < E; e++) v->start[e + 1] = v->start[e] + fill[e], fill[e] = 0;
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            int *r = &v->row[t * k + j];
            if (*r < 0) continue;
            const int e = v->sel[t * k + j];
            *r = v->start[e] + fill[e]++;
            v->tok[*r] = t;
        }
    free(fill);
    run_experts(m, l, x, N);
    if (!out) return; /* recompute: backward has all it reads */
#pragma omp parallel for
    for (int t = 0; t < N; t++) { /* slot order, so the sum is the same on every run */
        float *o = out + (size_t)t * C;
        memset(o, 0, (size_t)C * sizeof(float));
        for (int j = 0; j < k; j++) {
            const int r = v->row[t * k + j];
            if (r < 0) continue;
            const float wj = v->w[t * k + j], *y = v->yl + (size_t)r * C;
            for (int c = 0; c < C; c++) o[c] += wj * y[c];
        }
    }
    slm_model_tp_allreduce(m, out, (size_t)N * C);
    if (!count) return;
    /* statistics: the losses as defined in docs/moe.md, in double */
    double *st = s->stats + (size_t)li * SLM_MOE_STAT_LEN(E);
    double aux = 0.0, z = 0.0;
    for (int e = 0; e < E; e++) {
        double P = 0.0;
        for (int t = 0; t < N; t++) P += v->probs[(size_t)t * E + e];
        aux += (double)v->routed[e] / ((double)N * k) * (P / N);
        st[e] += v->routed[e];
    }
    for (int t = 0; t < N; t++) z += (double)v->lse[t] * v->lse[t];
    st[E + SLM_MOE_STAT_DROPPED] += (double)dropped;
    st[E + SLM_MOE_STAT_AUX] += run->aux_loss * E * aux;
    st[E + SLM_MOE_STAT_Z] += run->z_loss * z / N;
    st[E + SLM_MOE_STAT_MICRO] += 1.0;
}

/* ---- backward -------------------------------------------------------------------------- */

void slm_moe_backward(slm_model_t m, int l, const float *x, const float *dout, float *dx, int N)
{
    struct moe_state *s = m->moe;
    const moe_views *v = &s->v[l];
    const int E = s->E, k = s->k, C = m->cfg.d_model;
    const slm_moe_run *run = &m->cfg.moe;
    /* the micro-batch's weight in the objective: loss_scale is 1 / (its tokens x micro-batches) */
    const double mb_weight = (double)m->loss_scale * N;
    const moe_scratch sc = scratch_of(m, N);
    float *dy = sc.a, *dxl = sc.b, *dlogits = sc.dlogits, *dw = sc.dw;
#pragma omp parallel for
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            const int r = v->row[t * k + j];
            float *d = dw + t * k + j;
            *d = 0.0f;
            if (r < 0) continue;
            const float *y = v->yl + (size_t)r * C, *g = dout + (size_t)t * C;
            float *dyr = dy + (size_t)r * C;
            const float wj = v->w[t * k + j];
            double acc = 0.0;
            for (int c = 0; c < C; c++) acc += (double)g[c] * y[c], dyr[c] = wj * g[c];
            *d = (float)acc;
        }
    slm_model_tp_allreduce(m, dw, (size_t)N * k); /* the outputs were partial sums */
    /* the experts' gradients: d(rows) to the experts' ranks, d(inputs) back */
    int send[s->ep], recv[s->ep], estart[s->el + 1];
    float *dye = dy, *dxe = dxl;
    if (s->ep > 1) {
        exchange_rows(v, s, send, recv);
        m->ep.rows(m->ep.ctx, dy, send, sc.xchg, recv, C, l, 1);
        reorder(v, s, sc.xchg, sc.c, C, 1);
        dye = sc.c;
        dxe = sc.d;
    }
    expert_starts(v, s, estart);
    memset(dxe, 0, (size_t)estart[s->el] * C * sizeof(float));
    for (int j = s->el - 1; j >= 0; j--) {
        const int r0 = estart[j], n = estart[j + 1] - r0, e = s->e0 + j;
        if (n == 0) continue;
        m->arch->mlp_backward(m, &m->pv[expert_tensor(m, l, e)], &m->gv[expert_tensor(m, l, e)], v->xin + (size_t)r0 * C,
                              v->h1 + (size_t)r0 * s->W1, v->h2 + (size_t)r0 * s->W2, dye + (size_t)r0 * C, n, s->FL,
                              dxe + (size_t)r0 * C, sc.dh1, sc.dh2);
        slm_model_poll(m);
    }
    if (s->ep > 1) {
        reorder(v, s, dxe, sc.xchg, C, 0);
        m->ep.rows(m->ep.ctx, sc.xchg, recv, dxl, send, C, l, 1);
    }
    /* the router: through the renormalised weights, the auxiliary loss and the z-loss */
    const double aux_c = run->aux_loss * E / ((double)N * k * N) * mb_weight, z_c = run->z_loss * 2.0 / N * mb_weight;
#pragma omp parallel for
    for (int t = 0; t < N; t++) {
        const float *p = v->probs + (size_t)t * E;
        const int *sel = v->sel + t * k;
        const float *w = v->w + t * k, *dwt = dw + t * k;
        double S = 0.0, wdw = 0.0;
        for (int j = 0; j < k; j++) S += p[sel[j]], wdw += (double)w[j] * dwt[j];
        double dp[E], pdp = 0.0; /* E <= SLM_MOE_MAX_EXPERTS */
        for (int i = 0; i < E; i++) dp[i] = aux_c * v->routed[i];
        for (int j = 0; j < k; j++) dp[sel[j]] += (dwt[j] - wdw) / S;
        for (int i = 0; i < E; i++) pdp += p[i] * dp[i];
        float *dl = dlogits + (size_t)t * E;
        for (int i = 0; i < E; i++) dl[i] = (float)(p[i] * (dp[i] - pdp) + z_c * v->lse[t] * p[i]);
    }
    slm_matmul_backward(m->tp.rank == 0 ? dx : NULL, GV(m, router_tensor(m, l)), NULL, dlogits, x,
                        PV(m, router_tensor(m, l)), N, C, E);
#pragma omp parallel for
    for (int t = 0; t < N; t++) { /* each token's slots, in slot order */
        float *d = dx + (size_t)t * C;
        for (int j = 0; j < k; j++) {
            const int r = v->row[t * k + j];
            if (r < 0) continue;
            const float *g = dxl + (size_t)r * C;
            for (int c = 0; c < C; c++) d[c] += g[c];
        }
    }
}

/* ---- statistics and the selection bias --------------------------------------------------- */

void slm_model_moe_take_stats(slm_model_t m, double *out)
{
    const size_t n = slm_model_moe_stats_len(&m->cfg);
    if (!m->moe || !n) return;
    memcpy(out, m->moe->stats, n * sizeof(double));
    memset(m->moe->stats, 0, n * sizeof(double));
}

/* 1 when MoE block number li is on this stage. */
static int here(const slm_model_t m, int li)
{
    for (int l = m->stage.first_layer; l < m->stage.first_layer + m->stage.n_layers; l++)
        if (m->moe->index[l] == li) return 1;
    return 0;
}

void slm_model_moe_get_bias(slm_model_t m, float *out)
{
    const struct moe_state *s = m->moe;
    if (!s) return;
    for (int li = 0; li < s->nmoe; li++)
        for (int e = 0; e < s->E; e++)
            out[(size_t)li * s->E + e] = here(m, li) ? s->bias[(size_t)li * s->E + e] : 0.0f;
}

void slm_model_moe_set_bias(slm_model_t m, const float *in)
{
    struct moe_state *s = m->moe;
    if (!s) return;
    for (int li = 0; li < s->nmoe; li++)
        if (here(m, li)) memcpy(s->bias + (size_t)li * s->E, in + (size_t)li * s->E, (size_t)s->E * sizeof(float));
}

void slm_model_moe_update_bias(slm_model_t m, const double *stats)
{
    struct moe_state *s = m->moe;
    if (!s || m->cfg.moe.balance != SLM_MOE_BALANCE_BIAS) return;
    const float rate = (float)m->cfg.moe.bias_rate;
    for (int li = 0; li < s->nmoe; li++) {
        if (!here(m, li)) continue;
        const double *c = stats + (size_t)li * SLM_MOE_STAT_LEN(s->E);
        double mean = 0.0;
        for (int e = 0; e < s->E; e++) mean += c[e];
        mean /= s->E;
        float *b = s->bias + (size_t)li * s->E;
        for (int e = 0; e < s->E; e++) b[e] += c[e] < mean ? rate : c[e] > mean ? -rate : 0.0f;
    }
}

/* ---- formulas ----------------------------------------------------------------------------- */

/* What MoE blocks change in a count of parameters: per block, `experts` MLPs of width
 * expert_hidden and the router instead of one MLP of width ffn_hidden. */
static double moe_delta(const slm_model_config *c, double experts, int with_vectors)
{
    const slm_arch *a = slm_arch_find(c->arch);
    if (!a || c->n_experts <= 0) return 0.0;
    const double per = experts * a->mlp_params(c, c->expert_hidden, with_vectors) +
                       (double)c->n_experts * c->d_model - a->mlp_params(c, c->ffn_hidden, with_vectors);
    return slm_model_num_moe_layers(c) * per;
}

double slm_moe_params_delta(const slm_model_config *c) { return moe_delta(c, c->n_experts, 1); }
double slm_moe_active_delta(const slm_model_config *c) { return moe_delta(c, c->expert_top_k, 1); }
double slm_moe_flops_delta(const slm_model_config *c) { return 6.0 * moe_delta(c, c->expert_top_k, 0); }
