/* gpt.c - GPT-2 parameter layout, allocation and initialization.
 *
 * Sizes are worked out first from the tensor table, then each region (parameters,
 * gradients, activations, activation gradients) is allocated once, aligned, and named
 * views point into it. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gpt_impl.h"
#include "shardlm/kernels.h"
#include "shardlm/rng.h"

#define ALIGN_BYTES 64

static void *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES;
    void *p = aligned_alloc(ALIGN_BYTES, bytes ? bytes : ALIGN_BYTES);
    if (p) memset(p, 0, bytes);
    return p;
}

slm_status slm_gpt_config_check(const slm_gpt_config *c)
{
    SLM_CHECK(c->n_layer > 0, SLM_ERR_CONFIG, "model.n_layer = %d must be positive", c->n_layer);
    SLM_CHECK(c->n_head > 0, SLM_ERR_CONFIG, "model.n_head = %d must be positive", c->n_head);
    SLM_CHECK(c->d_model > 0, SLM_ERR_CONFIG, "model.d_model = %d must be positive", c->d_model);
    SLM_CHECK(c->vocab_size > 1, SLM_ERR_CONFIG, "model.vocab_size = %d must be at least 2", c->vocab_size);
    SLM_CHECK(c->seq_len > 0, SLM_ERR_CONFIG, "model.seq_len = %d must be positive", c->seq_len);
    SLM_CHECK(c->d_model % c->n_head == 0, SLM_ERR_CONFIG,
              "model.n_head = %d does not divide model.d_model = %d", c->n_head, c->d_model);
    return SLM_OK;
}

double slm_gpt_flops_per_token(const slm_gpt_config *c)
{
    double L = c->n_layer, C = c->d_model, V = c->vocab_size, T = c->seq_len;
    return 6.0 * (12.0 * L * C * C + V * C) + 12.0 * L * C * T;
}

/* A linear layer (N,IC) -> (N,OC), `times` per micro-batch: forward, input gradient,
 * weight gradient (slm_matmul_forward / _backward). */
static int add_linear(slm_gemm_shape *out, int n, int max, int N, int IC, int OC, double times)
{
    const slm_gemm_shape three[3] = {{0, 1, N, OC, IC, 1, 0, times}, {0, 0, N, IC, OC, 1, 0, times},
                                     {1, 0, OC, IC, N, 1, 2, times}};
    for (int k = 0; k < 3 && n < max; k++) out[n++] = three[k];
    return n;
}

int slm_gpt_gemm_shapes(slm_gpt_t m, int B, slm_gemm_shape *out, int max)
{
    const int T = m->cfg.seq_len, N = B * T, C = m->cfg.d_model, CL = C / m->tp.size;
    const int NH = m->cfg.n_head / m->tp.size, hs = C / m->cfg.n_head, L = m->stage.n_layers;
    int n = 0;
    if (L > 0) {
        n = add_linear(out, n, max, N, C, 3 * CL, L);
        n = add_linear(out, n, max, N, CL, C, L);
        n = add_linear(out, n, max, N, C, 4 * CL, L);
        n = add_linear(out, n, max, N, 4 * CL, C, L);
        /* attention, per (sequence, head) and query tile of up to 128 rows against the keys
         * before it (on average about half of them): scores, then the values' product;
         * backward recomputes the scores and runs four more */
        const int rows = T < 128 ? T : 128, keys = (T + rows) / 2;
        const double tiles = (double)B * NH * L * ((T + rows - 1) / rows);
        const slm_gemm_shape att[6] = {
            {0, 1, rows, keys, hs, 0, 0, 2 * tiles}, {0, 0, rows, hs, keys, 0, 0, tiles},
            {0, 1, rows, keys, hs, 0, 0, tiles},     {1, 0, keys, hs, rows, 0, 2, tiles},
            {0, 0, rows, hs, keys, 0, 0, tiles},     {1, 0, keys, hs, rows, 0, 2, tiles}};
        for (int k = 0; k < 6 && n < max; k++) out[n++] = att[k];
    }
    if (m->stage.last) n = add_linear(out, n, max, N, C, m->vl, 1); /* the LM head, this rank's vocabulary */
    return n;
}

/* How a tensor is split across the tensor-parallel ranks. */
typedef enum {
    WHOLE,    /* replicated */
    ROWS,     /* column-parallel: a contiguous block of rows (output features) */
    QKV_ROWS, /* column-parallel QKV: the same block of rows in each of the q, k, v thirds */
    COLS      /* row-parallel: a block of columns (input features) of every row */
} split_kind;

/* Append one tensor to the table, with the part of it this rank holds. */
static void add_tensor(slm_gpt_t m, int *i, size_t *off, int block, const char *name, int decay, split_kind split,
                       int64_t d0, int64_t d1)
{
    const int64_t r = m->tp.rank, p = m->tp.size;
    slm_tensor_info *t = &m->tensors[(*i)++];
    if (block >= 0) snprintf(t->name, sizeof t->name, "blocks.%d.%s", block, name);
    else snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->rows = d0;
    t->cols = d1 ? d1 : 1;
    t->col0 = 0;
    t->nruns = 1;
    t->runs[0] = (slm_row_run){0, 0, d0};
    if (p > 1 && split == ROWS) { /* rows [r*d0/p, (r+1)*d0/p): even, or within one row */
        const int64_t lo = r * d0 / p, hi = (r + 1) * d0 / p;
        t->rows = hi - lo;
        t->runs[0] = (slm_row_run){0, lo, t->rows};
    } else if (p > 1 && split == QKV_ROWS) {
        const int64_t third = d0 / 3, part = third / p;
        t->rows = 3 * part;
        t->nruns = 3;
        for (int k = 0; k < 3; k++) t->runs[k] = (slm_row_run){k * part, k * third + r * part, part};
    } else if (p > 1 && split == COLS) {
        t->cols = d1 / p;
        t->col0 = r * t->cols;
    }
    t->tp_split = p > 1 && split != WHOLE;
    const int here = block >= 0 ? block >= m->stage.first_layer && block < m->stage.first_layer + m->stage.n_layers
                     : !strncmp(name, "lnf", 3) ? m->stage.last
                                                 : m->has_embed;
    if (!here) t->rows = 0; /* another pipeline stage's */
    t->count = (size_t)t->rows * (size_t)t->cols;
    t->offset = *off;
    t->goffset = m->gparams;
    t->decay = decay;
    t->block = block;
    *off += t->count;
    m->gparams += slm_tensor_global_count(t);
}

/* The tensor table, in memory order. Weight decay on matrices only. The token embedding
 * (the tied LM head) is split by vocabulary rows; the position embedding stays whole. */
static void build_table(slm_gpt_t m)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size, T = m->cfg.seq_len;
    int i = 0;
    size_t off = 0;
    add_tensor(m, &i, &off, -1, "wte", 1, ROWS, V, C);
    m->v0 = (int)m->tensors[0].runs[0].grow0;
    m->vl = (int)m->tensors[0].rows;
    add_tensor(m, &i, &off, -1, "wpe", 1, WHOLE, T, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        add_tensor(m, &i, &off, l, "ln1.weight", 0, WHOLE, C, 0);
        add_tensor(m, &i, &off, l, "ln1.bias", 0, WHOLE, C, 0);
        add_tensor(m, &i, &off, l, "attn.qkv.weight", 1, QKV_ROWS, 3 * C, C);
        add_tensor(m, &i, &off, l, "attn.qkv.bias", 0, QKV_ROWS, 3 * C, 0);
        add_tensor(m, &i, &off, l, "attn.proj.weight", 1, COLS, C, C);
        add_tensor(m, &i, &off, l, "attn.proj.bias", 0, WHOLE, C, 0);
        add_tensor(m, &i, &off, l, "ln2.weight", 0, WHOLE, C, 0);
        add_tensor(m, &i, &off, l, "ln2.bias", 0, WHOLE, C, 0);
        add_tensor(m, &i, &off, l, "mlp.fc.weight", 1, ROWS, 4 * C, C);
        add_tensor(m, &i, &off, l, "mlp.fc.bias", 0, ROWS, 4 * C, 0);
        add_tensor(m, &i, &off, l, "mlp.proj.weight", 1, COLS, C, 4 * C);
        add_tensor(m, &i, &off, l, "mlp.proj.bias", 0, WHOLE, C, 0);
    }
    add_tensor(m, &i, &off, -1, "lnf.weight", 0, WHOLE, C, 0);
    add_tensor(m, &i, &off, -1, "lnf.bias", 0, WHOLE, C, 0);
    m->ntensors = i;
    m->nparams = off;
    /* this stage's units: the embeddings, its blocks, the final norm */
    int k = 0;
    if (m->has_embed) m->unit_first[k] = 0, m->unit_count[k++] = 2;
    for (int l = m->stage.first_layer; l < m->stage.first_layer + m->stage.n_layers; l++)
        m->unit_first[k] = 2 + 12 * l, m->unit_count[k++] = 12;
    if (m->stage.last) m->unit_first[k] = 2 + 12 * m->cfg.n_layer, m->unit_count[k++] = 2;
    m->nunits = k;
}

int slm_gpt_num_units(slm_gpt_t m) { return m->nunits; }

/* Tensors [first, first+n) of unit u in the table. */
static void unit_tensors(slm_gpt_t m, int u, int *first, int *n)
{
    *first = m->unit_first[u];
    *n = m->unit_count[u];
}

void slm_gpt_unit_range(slm_gpt_t m, int u, size_t *offset, size_t *count)
{
    int first, n;
    unit_tensors(m, u, &first, &n);
    *offset = m->tensors[first].offset;
    *count = m->tensors[first + n - 1].offset + m->tensors[first + n - 1].count - *offset;
}

/* Point the views of unit u inside v at base (which holds the unit's first element). */
static void point_unit(slm_gpt_t m, int u, float *base, gpt_views *v)
{
    int first, n;
    unit_tensors(m, u, &first, &n);
    const slm_tensor_info *t = &m->tensors[first];
    const size_t off0 = t[0].offset;
    if (first == 0) {
        v->wte = base + (t[0].offset - off0);
        v->wpe = base + (t[1].offset - off0);
    } else if (t[0].block >= 0) {
        gpt_block_views *bv = &v->blocks[t[0].block];
        float **slot[12] = {&bv->ln1w, &bv->ln1b, &bv->qkvw, &bv->qkvb, &bv->attprojw,
                            &bv->attprojb, &bv->ln2w, &bv->ln2b, &bv->fcw, &bv->fcb,
                            &bv->fcprojw, &bv->fcprojb};
        for (int k = 0; k < 12; k++) *slot[k] = base + (t[k].offset - off0);
    } else {
        v->lnfw = base + (t[0].offset - off0);
        v->lnfb = base + (t[1].offset - off0);
    }
}

void slm_gpt_bind_unit(slm_gpt_t m, int u, float *params, float *grads)
{
    if (params) point_unit(m, u, params, &m->p);
    if (grads) point_unit(m, u, grads, &m->g);
}

void slm_gpt_set_hooks(slm_gpt_t m, const slm_gpt_hooks *hooks)
{
    if (hooks) m->hooks = *hooks;
    else memset(&m->hooks, 0, sizeof m->hooks);
}

/* Carve n floats (rounded up to 64 bytes) from base at *off; NULL when only counting. */
static float *take(float *base, size_t *off, size_t n)
{
    float *p = base ? base + *off : NULL;
    *off += (n + 15) / 16 * 16;
    return p;
}

/* Lay out one block's activations at base from *off (or only count them); with
 * with_output false, all but the output res3. */
static void layout_block(float *base, size_t *off, gpt_block_acts *a, size_t N, size_t C, size_t CL, int with_output)
{
    a->ln1 = take(base, off, N * C);
    a->ln1_mean = take(base, off, N);
    a->ln1_rstd = take(base, off, N);
    a->qkv = take(base, off, 3 * N * CL);
    a->atty = take(base, off, N * CL);
    a->res2 = take(base, off, N * C);
    a->ln2 = take(base, off, N * C);
    a->ln2_mean = take(base, off, N);
    a->ln2_rstd = take(base, off, N);
    a->fch = take(base, off, 4 * N * CL);
    a->fch_gelu = take(base, off, 4 * N * CL);
    a->res3 = with_output ? take(base, off, N * C) : NULL;
}

/* Lay out the activations at base (or only count them, when base is NULL; the views are
 * then left NULL). With recompute a block keeps only its output here and its other views
 * point into the shared work set. Returns the floats used. */
static size_t layout_acts(slm_gpt_t m, float *base)
{
    const size_t B = (size_t)m->max_batch, T = (size_t)m->cfg.seq_len, C = (size_t)m->cfg.d_model;
    const size_t V = (size_t)m->vl, N = B * T; /* this rank's vocabulary columns */
    const size_t CL = C / (size_t)m->tp.size; /* this rank's share of the heads' width */
    size_t off = 0;
    m->encoded = take(base, &off, N * C);
    for (int l = m->stage.first_layer; l < m->stage.first_layer + m->stage.n_layers; l++) {
        gpt_block_acts *a = &m->blocks[l];
        if (m->cfg.recompute) {
            *a = m->work;
            a->res3 = take(base, &off, N * C);
        } else {
            layout_block(base, &off, a, N, C, CL, 1);
        }
    }
    m->lnf = take(base, &off, N * C);
    m->lnf_mean = take(base, &off, N);
    m->lnf_rstd = take(base, &off, N);
    m->logits = take(base, &off, N * V);
    m->lse = take(base, &off, N);
    m->losses = take(base, &off, N);
    m->ce_part = take(base, &off, 2 * N);
    return off;
}

/* The model object with its tensor table and every region's size worked out, nothing big
 * allocated yet: what slm_gpt_create fills in and slm_gpt_measure reports. threads sizes
 * attention's scratch. */
static slm_status model_shell(const slm_gpt_config *cfg, int max_batch, const slm_gpt_tp *tp,
                              const slm_gpt_stage *stage, int threads, slm_gpt_t *out)
{
    *out = NULL;
    SLM_CALL(slm_gpt_config_check(cfg));
    SLM_CHECK(max_batch > 0, SLM_ERR_ARG, "micro-batch size %d must be positive", max_batch);
    const int tp_size = tp ? tp->size : 1;
    const slm_gpt_stage whole = {0, cfg->n_layer, 1, 1, 1};
    const slm_gpt_stage *st = stage ? stage : &whole;
    SLM_CHECK(st->n_layers >= 1 && st->first_layer >= 0 && st->first_layer + st->n_layers <= cfg->n_layer &&
                  st->slots >= 1, SLM_ERR_ARG, "a pipeline stage needs at least one of the model's layers");
    SLM_CHECK(tp_size >= 1 && cfg->n_head % tp_size == 0, SLM_ERR_CONFIG,
              "parallel.tp = %d does not divide model.n_head = %d", tp_size, cfg->n_head);
    SLM_CHECK(cfg->vocab_size >= tp_size, SLM_ERR_CONFIG, "model.vocab_size = %d is smaller than parallel.tp = %d",
              cfg->vocab_size, tp_size);
    slm_gpt_t m = calloc(1, sizeof *m);
    SLM_CHECK(m, SLM_ERR_NOMEM, "cannot allocate the model object");
    m->cfg = *cfg;
    m->max_batch = max_batch;
    m->tp = tp ? *tp : (slm_gpt_tp){0, 1, NULL, NULL, NULL};
    m->stage = *st;
    m->has_embed = st->first || st->last;
    m->tensors = calloc((size_t)(4 + 12 * cfg->n_layer), sizeof *m->tensors);
    m->p.blocks = calloc((size_t)cfg->n_layer, sizeof *m->p.blocks);
    m->g.blocks = calloc((size_t)cfg->n_layer, sizeof *m->g.blocks);
    m->blocks = calloc((size_t)cfg->n_layer, sizeof *m->blocks);
    m->unit_first = calloc((size_t)cfg->n_layer + 2, sizeof(int));
    m->unit_count = calloc((size_t)cfg->n_layer + 2, sizeof(int));
    if (!m->tensors || !m->p.blocks || !m->g.blocks || !m->blocks || !m->unit_first || !m->unit_count) {
        slm_gpt_destroy(&m);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the model's tables");
    }
    build_table(m);
    const size_t N = (size_t)max_batch * cfg->seq_len, C = (size_t)cfg->d_model;
    const size_t wide = 4 * C / (size_t)tp_size; /* this rank's MLP width, also >= its QKV width */
    if (cfg->recompute) layout_block(NULL, &m->work_floats, &m->work, N, C, C / (size_t)tp_size, 0);
    m->acts_floats = layout_acts(m, NULL);
    m->datt_floats = slm_attention_scratch_floats(cfg->seq_len, threads);
    m->dacts_floats = 2 * N * C + 2 * N * wide + m->datt_floats;
    *out = m;
    return SLM_OK;
}

slm_status slm_gpt_measure(const slm_gpt_config *cfg, int max_batch, int tp_size, const slm_gpt_stage *stage,
                           int threads, slm_gpt_footprint *out)
{
    const slm_gpt_tp tp = {0, tp_size, NULL, NULL, NULL};
    slm_gpt_t m;
    SLM_CALL(model_shell(cfg, max_batch, &tp, stage, threads, &m));
    *out = (slm_gpt_footprint){m->nparams, 0, 0, 0, m->nunits, slm_gpt_activation_bytes(m)};
    for (int u = 0; u < m->nunits; u++) {
        size_t off, n;
        slm_gpt_unit_range(m, u, &off, &n);
        if (u == 0) out->unit0 = n;
        else if (n > out->max_unit) out->max_unit = n;
        out->unit_last = n;
    }
    slm_gpt_destroy(&m);
    return SLM_OK;
}

slm_status slm_gpt_describe(const slm_gpt_config *cfg, slm_gpt_t *model)
{
    return model_shell(cfg, 1, NULL, NULL, 1, model);
}

slm_status slm_gpt_create(const slm_gpt_config *cfg, int max_batch, int own_storage, const slm_gpt_tp *tp,
                          const slm_gpt_stage *stage, slm_gpt_t *out)
{
    *out = NULL;
    SLM_CHECK(!tp || tp->size == 1 || (tp->allreduce && tp->allreduce_max), SLM_ERR_ARG,
              "tensor parallelism without its all-reduces");
    slm_gpt_t m;
    SLM_CALL(model_shell(cfg, max_batch, tp, stage, omp_get_max_threads(), &m));
    const slm_gpt_stage *st = &m->stage;
    if (own_storage) {
        m->params = alloc_floats(m->nparams);
        m->grads = alloc_floats(m->nparams);
        if (!m->params || !m->grads) goto nomem;
    }
    const size_t N = (size_t)max_batch * cfg->seq_len, C = (size_t)cfg->d_model;
    const size_t wide = 4 * C / (size_t)m->tp.size;
    if (cfg->recompute) { /* allocate, then lay out the shared inner activations */
        if (!(m->work_mem = alloc_floats(m->work_floats))) goto nomem;
        size_t off = 0;
        layout_block(m->work_mem, &off, &m->work, N, C, C / (size_t)m->tp.size, 0);
    }
    m->acts = alloc_floats(m->acts_floats * (size_t)st->slots);
    m->dacts = alloc_floats(m->dacts_floats);
    m->inputs_all = calloc(N * (size_t)st->slots, sizeof(int32_t));
    m->targets_all = calloc(N * (size_t)st->slots, sizeof(int32_t));
    m->slot_B = calloc((size_t)st->slots, sizeof(int));
    m->slot_T = calloc((size_t)st->slots, sizeof(int));
    if (!m->acts || !m->dacts || !m->inputs_all || !m->targets_all || !m->slot_B || !m->slot_T) goto nomem;
    if (own_storage)
        for (int u = 0; u < slm_gpt_num_units(m); u++) {
            size_t off, n;
            slm_gpt_unit_range(m, u, &off, &n);
            slm_gpt_bind_unit(m, u, m->params + off, m->grads + off);
        }
    gpt_select_slot(m, 0);
    m->dres = m->dacts;
    m->dnarrow = m->dres + N * C;
    m->dwide1 = m->dnarrow + N * C;
    m->dwide2 = m->dwide1 + N * wide;
    m->datt = m->dwide2 + N * wide;
    *out = m;
    return SLM_OK;
nomem:;
    double gib = m->blocks ? ((double)m->nparams * 2 + (double)layout_acts(m, NULL)) * 4 / (1 << 30) : 0;
    slm_gpt_destroy(&m);
    return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the model (about %.2f GiB for parameters, "
                     "gradients and activations)", gib);
}

void slm_gpt_destroy(slm_gpt_t *model)
{
    slm_gpt_t m = *model;
    if (!m) return;
    free(m->tensors);
    free(m->p.blocks);
    free(m->g.blocks);
    free(m->blocks);
    free(m->unit_first);
    free(m->unit_count);
    free(m->params);
    free(m->grads);
    free(m->acts);
    free(m->work_mem);
    free(m->dacts);
    free(m->inputs_all);
    free(m->targets_all);
    free(m->slot_B);
    free(m->slot_T);
    free(m);
    *model = NULL;
}

void slm_gpt_init_range(slm_gpt_t m, uint64_t seed, size_t offset, size_t count, float *dst)
{
    const double std = 0.02, std_proj = 0.02 / sqrt(2.0 * m->cfg.n_layer);
    const size_t end = offset + count;
    for (int i = 0; i < m->ntensors; i++) {
        const slm_tensor_info *t = &m->tensors[i];
        size_t lo = t->offset > offset ? t->offset : offset;
        size_t hi = t->offset + t->count < end ? t->offset + t->count : end;
        if (lo >= hi) continue;
        float *p = dst + (lo - offset);
        const size_t j0 = lo - t->offset, n = hi - lo;
        const char *leaf = strrchr(t->name, '.');
        if (t->ndim == 1) { /* biases 0, LayerNorm weights 1 */
            float v = (leaf && !strcmp(leaf, ".weight")) ? 1.0f : 0.0f;
            for (size_t j = 0; j < n; j++) p[j] = v;
            continue;
        }
        int residual_proj = strstr(t->name, "attn.proj.weight") || strstr(t->name, "mlp.proj.weight");
        double s = residual_proj ? std_proj : std;
        uint64_t key = slm_rng_key(seed, SLM_RNG_INIT, (uint64_t)i);
        /* keyed by the global element, so every layout draws the same value for it */
#pragma omp parallel for if (n > 65536)
        for (size_t j = 0; j < n; j++) p[j] = (float)(s * slm_rng_normal(key, slm_tensor_global_index(t, j0 + j)));
    }
}

void slm_gpt_init_params(slm_gpt_t m, uint64_t seed)
{
    slm_gpt_init_range(m, seed, 0, m->nparams, m->params);
}

const slm_gpt_config *slm_gpt_config_of(slm_gpt_t m) { return &m->cfg; }
size_t slm_gpt_num_params(slm_gpt_t m) { return m->nparams; }
size_t slm_gpt_num_global_params(slm_gpt_t m) { return m->gparams; }
float *slm_gpt_params(slm_gpt_t m) { return m->params; }
float *slm_gpt_grads(slm_gpt_t m) { return m->grads; }
int slm_gpt_num_tensors(slm_gpt_t m) { return m->ntensors; }
const slm_tensor_info *slm_gpt_tensor(slm_gpt_t m, int i) { return &m->tensors[i]; }
const float *slm_gpt_logits(slm_gpt_t m) { return m->logits; }

void gpt_select_slot(slm_gpt_t m, int slot)
{
    layout_acts(m, m->acts + (size_t)slot * m->acts_floats);
    const size_t N = (size_t)m->max_batch * (size_t)m->cfg.seq_len;
    m->inputs = m->inputs_all + (size_t)slot * N;
    m->targets = m->targets_all + (size_t)slot * N;
    m->B = m->slot_B[slot];
    m->T = m->slot_T[slot];
}

float *slm_gpt_stage_input(slm_gpt_t m, int slot)
{
    return m->acts + (size_t)slot * m->acts_floats; /* `encoded` is the slot's first view */
}

const float *slm_gpt_stage_output(slm_gpt_t m, int slot)
{
    gpt_select_slot(m, slot);
    return m->blocks[m->stage.first_layer + m->stage.n_layers - 1].res3;
}

float *slm_gpt_stage_grad(slm_gpt_t m) { return m->dres; }
void slm_gpt_last_logits(slm_gpt_t m, int b, float *out)
{
    const float *z = m->logits + ((size_t)b * m->T + (size_t)(m->T - 1)) * (size_t)m->vl;
    if (m->tp.size > 1) memset(out, 0, (size_t)m->cfg.vocab_size * sizeof(float));
    memcpy(out + m->v0, z, (size_t)m->vl * sizeof(float));
    gpt_tp_allreduce(m, out, (size_t)m->cfg.vocab_size); /* each column comes from one rank */
}
size_t slm_gpt_activation_bytes(slm_gpt_t m)
{
    return (m->acts_floats * (size_t)m->stage.slots + m->work_floats + m->dacts_floats) * sizeof(float);
}
void slm_gpt_zero_grad(slm_gpt_t m)
{
    if (m->grads) memset(m->grads, 0, m->nparams * sizeof(float));
}
