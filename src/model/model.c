/* model.c - the model object every architecture shares: tensor table, units, storage
 * views, activation slots, initialization, and the queries the runtime makes.
 *
 * Sizes are worked out first from the tensor table, then each region (parameters,
 * gradients, activations, activation gradients) is allocated once, aligned, and views
 * point into it. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hf_impl.h"
#include "model_impl.h"
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

const char *const slm_model_archs[] = {"gpt2", "llama", NULL};

static const slm_arch *const all_archs[] = {&slm_arch_gpt2, &slm_arch_llama};
#define NARCHS (sizeof all_archs / sizeof all_archs[0])

const slm_arch *slm_arch_find(const char *name)
{
    for (size_t i = 0; i < NARCHS; i++)
        if (!strcmp(all_archs[i]->name, name)) return all_archs[i];
    return NULL;
}

const slm_arch *slm_arch_find_hf(const char *model_type)
{
    for (size_t i = 0; i < NARCHS; i++)
        if (all_archs[i]->hf && !strcmp(all_archs[i]->hf->model_type, model_type)) return all_archs[i];
    return NULL;
}

void slm_model_config_defaults(slm_model_config *cfg)
{
    const slm_arch *a = slm_arch_find(cfg->arch);
    if (a) a->defaults(cfg);
    if (cfg->max_pos <= 0) cfg->max_pos = cfg->seq_len;
    if (cfg->rope.kind == SLM_ROPE_NONE) cfg->rope = (slm_rope_scaling){0}; /* its parameters mean nothing */
    if (cfg->n_experts > 0) {
        if (cfg->expert_top_k <= 0) cfg->expert_top_k = 2;
        if (cfg->moe_every <= 0) cfg->moe_every = 1;
        if (cfg->expert_hidden <= 0) cfg->expert_hidden = cfg->ffn_hidden;
    } else { /* dense: they mean nothing */
        cfg->n_experts = cfg->expert_top_k = cfg->moe_every = cfg->expert_hidden = 0;
    }
}

slm_status slm_model_config_check(const slm_model_config *c, int tp_size)
{
    const slm_arch *a = slm_arch_find(c->arch);
    SLM_CHECK(a, SLM_ERR_CONFIG, "model.arch = '%s' is not an architecture shardlm has (gpt2, llama)", c->arch);
    SLM_CHECK(c->n_layer > 0, SLM_ERR_CONFIG, "model.n_layer = %d must be positive", c->n_layer);
    SLM_CHECK(c->n_head > 0, SLM_ERR_CONFIG, "model.n_head = %d must be positive", c->n_head);
    SLM_CHECK(c->d_model > 0, SLM_ERR_CONFIG, "model.d_model = %d must be positive", c->d_model);
    SLM_CHECK(c->vocab_size > 1, SLM_ERR_CONFIG, "model.vocab_size = %d must be at least 2", c->vocab_size);
    SLM_CHECK(c->seq_len > 0, SLM_ERR_CONFIG, "model.seq_len = %d must be positive", c->seq_len);
    SLM_CHECK(c->d_model % c->n_head == 0, SLM_ERR_CONFIG, "model.n_head = %d does not divide model.d_model = %d",
              c->n_head, c->d_model);
    SLM_CHECK(c->ffn_hidden > 0, SLM_ERR_CONFIG, "model.ffn_hidden = %d must be positive", c->ffn_hidden);
    SLM_CHECK(c->max_pos >= c->seq_len, SLM_ERR_CONFIG,
              "model.seq_len = %d is longer than the %d positions the model has (model.max_pos)", c->seq_len,
              c->max_pos);
    SLM_CHECK(tp_size >= 1 && c->n_head % tp_size == 0, SLM_ERR_CONFIG,
              "parallel.tp = %d does not divide model.n_head = %d", tp_size, c->n_head);
    SLM_CHECK(c->vocab_size >= tp_size, SLM_ERR_CONFIG, "model.vocab_size = %d is smaller than parallel.tp = %d",
              c->vocab_size, tp_size);
    if (c->n_experts > 0) {
        SLM_CHECK(c->n_experts <= SLM_MOE_MAX_EXPERTS, SLM_ERR_CONFIG, "model.n_experts = %d: at most %d",
                  c->n_experts, SLM_MOE_MAX_EXPERTS);
        SLM_CHECK(c->expert_top_k >= 1 && c->expert_top_k <= c->n_experts, SLM_ERR_CONFIG,
                  "model.expert_top_k = %d: each token goes to between 1 and model.n_experts = %d experts",
                  c->expert_top_k, c->n_experts);
        SLM_CHECK(c->moe_every >= 1 && c->moe_every <= c->n_layer, SLM_ERR_CONFIG,
                  "model.moe_every = %d: between 1 (every block) and model.n_layer = %d (one MoE block)", c->moe_every,
                  c->n_layer);
        SLM_CHECK(c->expert_hidden > 0 && c->expert_hidden % tp_size == 0, SLM_ERR_CONFIG,
                  "model.expert_hidden = %d: must be positive and a multiple of parallel.tp = %d", c->expert_hidden,
                  tp_size);
        SLM_CHECK(c->moe.capacity >= 0, SLM_ERR_CONFIG, "train.moe_capacity = %g must be 0 (dropless) or positive",
                  c->moe.capacity);
    }
    return a->check ? a->check(c, tp_size) : SLM_OK;
}

int slm_model_has_tied(const slm_model_config *cfg) { return cfg->tie_embeddings != 0; }

/* Append one tensor to the table, with the part of it this rank holds. */
void slm_model_add_tensor(slm_model_t m, int block, tensor_home home, const tensor_spec *s)
{
    const int64_t r = m->tp.rank, p = m->tp.size, d0 = s->d0, d1 = s->d1;
    slm_tensor_info *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    if (block >= 0) snprintf(t->name, sizeof t->name, "blocks.%d.%s", block, s->name);
    else snprintf(t->name, sizeof t->name, "%s", s->name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->rows = d0;
    t->cols = d1 ? d1 : 1;
    t->nruns = 1;
    t->runs[0] = (slm_row_run){0, 0, d0};
    t->split = s->split;
    if (p > 1 && s->split == SLM_SPLIT_ROWS) {
        /* each part's rows [r*h/p, (r+1)*h/p): even, or within one row for a single part */
        const int parts = s->nparts > 1 ? s->nparts : 1;
        int64_t g0 = 0, l0 = 0;
        t->nruns = parts;
        for (int k = 0; k < parts; k++) {
            const int64_t h = s->part_rows ? s->part_rows[k] : d0 / parts;
            const int64_t lo = r * h / p, hi = (r + 1) * h / p;
            t->runs[k] = (slm_row_run){l0, g0 + lo, hi - lo};
            l0 += hi - lo;
            g0 += h;
        }
        t->rows = l0;
    } else if (p > 1 && s->split == SLM_SPLIT_COLS) {
        t->cols = d1 / p;
        t->col0 = r * t->cols;
    }
    t->tp_split = p > 1 && s->split != SLM_SPLIT_NONE;
    t->init = s->init;
    t->init_std = s->init_std;
    t->decay = s->decay;
    t->block = block;
    t->trainable = 1;
    t->reduce = m->adding_expert >= 0 ? SLM_REDUCE_EXPERT_DATA : SLM_REDUCE_DATA;
    t->tied = home == HELD_EMBED && m->cfg.tie_embeddings;
    if (block >= 0 && m->block_first[block] < 0) m->block_first[block] = m->ntensors - 1;
    if (home == HELD_HEAD && m->after_blocks < 0) m->after_blocks = m->ntensors - 1;
    int here = home == HELD_BLOCK ? block >= m->stage.first_layer &&
                                              block < m->stage.first_layer + m->stage.n_layers
                     : home == HELD_HEAD ? m->stage.last
                                         : m->has_embed;
    if (m->adding_expert >= 0) { /* an expert of another expert-parallel rank is not here */
        const int per = m->cfg.n_experts / m->ep.size;
        here &= m->adding_expert / per == m->ep.rank;
    }
    t->unit = -1;
    if (!here) t->rows = 0; /* another pipeline stage's or expert-parallel rank's */
    t->count = (size_t)t->rows * (size_t)t->cols;
    t->offset = m->nparams;
    t->goffset = m->gparams;
    m->nparams += t->count;
    m->gparams += slm_tensor_global_count(t);
}

void slm_model_end_unit(slm_model_t m, int first_tensor)
{
    int held = 0; /* an expert unit may start with another expert-parallel rank's experts */
    for (int i = first_tensor; i < m->ntensors; i++) held |= m->tensors[i].rows > 0;
    if (!held) return; /* another stage's */
    const int u = m->nunits++;
    m->unit_first[u] = first_tensor;
    m->unit_count[u] = m->ntensors - first_tensor;
    for (int i = first_tensor; i < m->ntensors; i++) m->tensors[i].unit = u;
    const int b = m->tensors[first_tensor].block;
    if (b >= 0) *(m->block_first[b] == first_tensor ? &m->block_unit[b] : &m->expert_unit[b]) = u;
    if (m->tensors[first_tensor].tied && !(m->stage.first && m->stage.last)) m->tied_unit = u;
}

void slm_model_add_block_mlp(slm_model_t m, int l)
{
    if (slm_model_is_moe_block(&m->cfg, l)) {
        slm_moe_build(m, l);
        return;
    }
    tensor_spec mlp[8];
    const int n = m->arch->mlp_tensors(&m->cfg, m->cfg.ffn_hidden, mlp);
    for (int k = 0; k < n; k++) {
        char name[48];
        snprintf(name, sizeof name, "mlp.%s", mlp[k].name);
        mlp[k].name = name;
        slm_model_add_tensor(m, l, HELD_BLOCK, &mlp[k]);
    }
    slm_model_end_unit(m, m->block_first[l]);
}

int slm_model_num_units(slm_model_t m) { return m->nunits; }

slm_reduce_group slm_model_unit_reduce(slm_model_t m, int u) { return m->tensors[m->unit_first[u]].reduce; }
int slm_model_tied_unit(slm_model_t m) { return m->tied_unit; }

void slm_model_unit_range(slm_model_t m, int u, size_t *offset, size_t *count)
{
    const int first = m->unit_first[u], n = m->unit_count[u];
    *offset = m->tensors[first].offset;
    *count = m->tensors[first + n - 1].offset + m->tensors[first + n - 1].count - *offset;
}

void slm_model_bind_unit(slm_model_t m, int u, float *params, float *grads)
{
    const int first = m->unit_first[u], n = m->unit_count[u];
    const size_t off0 = m->tensors[first].offset;
    for (int i = first; i < first + n; i++) {
        if (params) m->pv[i] = params + (m->tensors[i].offset - off0);
        if (grads) m->gv[i] = grads + (m->tensors[i].offset - off0);
    }
}

void slm_model_set_hooks(slm_model_t m, const slm_model_hooks *hooks)
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

/* Lay out the activations at base (or only count them, when base is NULL; the views are
 * then left NULL). With recompute a block keeps only its output here and its other views
 * point into the shared work set. Returns the floats used. */
static size_t layout_acts(slm_model_t m, float *base)
{
    const size_t N = (size_t)m->max_batch * (size_t)m->cfg.seq_len, C = (size_t)m->cfg.d_model;
    size_t off = 0;
    m->encoded = take(base, &off, N * C);
    for (int l = m->stage.first_layer; l < m->stage.first_layer + m->stage.n_layers; l++) {
        float **v = &m->bacts[(size_t)l * m->nacts];
        const int moe = slm_model_is_moe_block(&m->cfg, l);
        for (int k = 0; k < m->nacts; k++)
            v[k] = moe && (m->arch->mlp_acts >> k & 1u) ? NULL /* the experts have their own */
                   : m->cfg.recompute && k < m->nacts - 1 ? m->work[k]
                                                           : take(base, &off, N * m->act_width[k]);
        if (moe) slm_moe_layout(m, l, m->cfg.recompute ? m->moe_work : take(base, &off, slm_moe_act_floats(m, N)), N);
    }
    m->fnorm = take(base, &off, N * C);
    m->fstat1 = take(base, &off, N);
    m->fstat2 = take(base, &off, N);
    m->logits = take(base, &off, N * (size_t)m->vl);
    m->lse = take(base, &off, N);
    m->losses = take(base, &off, N);
    m->ce_part = take(base, &off, 2 * N);
    return off;
}

/* The inner activations shared by all blocks under recompute (or only their size). */
static size_t layout_work(slm_model_t m, float *base)
{
    const size_t N = (size_t)m->max_batch * (size_t)m->cfg.seq_len;
    size_t off = 0;
    for (int k = 0; k < m->nacts - 1; k++) m->work[k] = take(base, &off, N * m->act_width[k]);
    if (m->cfg.n_experts > 0) m->moe_work = take(base, &off, slm_moe_act_floats(m, N));
    return off;
}

/* The model object with its tensor table and every region's size worked out, nothing big
 * allocated yet: what slm_model_create fills in and slm_model_measure reports. threads
 * sizes attention's scratch. */
static slm_status model_shell(const slm_model_config *cfg_in, int max_batch, const slm_model_tp *tp,
                              const slm_model_ep *ep, const slm_model_stage *stage, int threads, slm_model_t *out)
{
    *out = NULL;
    slm_model_config cfg = *cfg_in;
    slm_model_config_defaults(&cfg);
    const int tp_size = tp ? tp->size : 1;
    SLM_CALL(slm_model_config_check(&cfg, tp_size));
    SLM_CHECK(max_batch > 0, SLM_ERR_ARG, "micro-batch size %d must be positive", max_batch);
    const int ep_size = ep ? ep->size : 1;
    SLM_CHECK(ep_size == 1 || (cfg.n_experts > 0 && cfg.n_experts % ep_size == 0), SLM_ERR_CONFIG,
              "parallel.ep = %d does not divide model.n_experts = %d", ep_size, cfg.n_experts);
    const slm_model_stage whole = {0, cfg.n_layer, 1, 1, 1};
    const slm_model_stage *st = stage ? stage : &whole;
    SLM_CHECK(st->n_layers >= 1 && st->first_layer >= 0 && st->first_layer + st->n_layers <= cfg.n_layer &&
                  st->slots >= 1, SLM_ERR_ARG, "a pipeline stage needs at least one of the model's layers");
    slm_model_t m = calloc(1, sizeof *m);
    SLM_CHECK(m, SLM_ERR_NOMEM, "cannot allocate the model object");
    m->arch = slm_arch_find(cfg.arch);
    m->cfg = cfg;
    m->max_batch = max_batch;
    m->tp = tp ? *tp : (slm_model_tp){0, 1, NULL, NULL, NULL};
    m->ep = ep ? *ep : (slm_model_ep){0, 1, NULL, NULL, NULL};
    m->adding_expert = -1;
    m->stage = *st;
    m->has_embed = st->first || (st->last && cfg.tie_embeddings);
    m->tied_unit = -1;
    if (m->has_embed || st->last) { /* this rank's vocabulary rows of the embedding and head */
        m->v0 = (int)((int64_t)m->tp.rank * cfg.vocab_size / m->tp.size);
        m->vl = (int)((int64_t)(m->tp.rank + 1) * cfg.vocab_size / m->tp.size) - m->v0;
    }
    /* the architectures' tables stay below this: 16 per block, plus a router and the experts */
    m->cap_tensors = 8 + 16 * cfg.n_layer + (1 + 8 * cfg.n_experts) * slm_model_num_moe_layers(&cfg);
    m->tensors = calloc((size_t)m->cap_tensors, sizeof *m->tensors);
    m->unit_first = calloc(2 * (size_t)cfg.n_layer + 2, sizeof(int)); /* an MoE block has two */
    m->unit_count = calloc(2 * (size_t)cfg.n_layer + 2, sizeof(int));
    m->block_first = malloc((size_t)cfg.n_layer * sizeof(int));
    m->block_unit = malloc((size_t)cfg.n_layer * sizeof(int));
    m->expert_unit = malloc((size_t)cfg.n_layer * sizeof(int));
    m->after_blocks = -1;
    for (int l = 0; m->block_first && m->block_unit && m->expert_unit && l < cfg.n_layer; l++)
        m->block_first[l] = m->block_unit[l] = m->expert_unit[l] = -1;
    m->nacts = m->arch->block_acts(m, m->act_width);
    m->bacts = calloc((size_t)cfg.n_layer * (size_t)m->nacts, sizeof(float *));
    if (!m->tensors || !m->unit_first || !m->unit_count || !m->bacts || !m->block_first || !m->block_unit ||
        !m->expert_unit || slm_moe_setup(m) != SLM_OK) {
        slm_model_destroy(&m);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the model's tables");
    }
    m->arch->build(m);
    m->pv = calloc((size_t)m->ntensors, sizeof(float *));
    m->gv = calloc((size_t)m->ntensors, sizeof(float *));
    if (!m->pv || !m->gv) {
        slm_model_destroy(&m);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the model's tables");
    }
    const size_t N = (size_t)max_batch * cfg.seq_len, C = (size_t)cfg.d_model;
    m->wide = m->arch->grad_width(m);
    if (cfg.recompute) m->work_floats = layout_work(m, NULL);
    m->acts_floats = layout_acts(m, NULL);
    m->datt_floats = slm_attention_scratch_floats(cfg.seq_len, threads);
    m->dacts_floats = 2 * N * C + 2 * N * m->wide + m->datt_floats;
    if (cfg.n_experts > 0) m->dacts_floats += slm_moe_scratch_floats(m, N);
    *out = m;
    return SLM_OK;
}

slm_status slm_model_measure(const slm_model_config *cfg, int max_batch, int tp_size, int ep_size,
                             const slm_model_stage *stage, int threads, slm_model_footprint *out)
{
    const slm_model_tp tp = {0, tp_size, NULL, NULL, NULL};
    const slm_model_ep ep = {0, ep_size, NULL, NULL, NULL};
    slm_model_t m;
    SLM_CALL(model_shell(cfg, max_batch, &tp, &ep, stage, threads, &m));
    *out = (slm_model_footprint){m->nparams, 0, 0, 0, m->nunits, slm_model_activation_bytes(m)};
    for (int u = 0; u < m->nunits; u++) {
        size_t off, n;
        slm_model_unit_range(m, u, &off, &n);
        if (u == 0) out->unit0 = n;
        else if (n > out->max_unit) out->max_unit = n;
        out->unit_last = n;
    }
    slm_model_destroy(&m);
    return SLM_OK;
}

slm_status slm_model_describe(const slm_model_config *cfg, slm_model_t *model)
{
    return model_shell(cfg, 1, NULL, NULL, NULL, 1, model);
}

slm_status slm_model_describe_part(const slm_model_config *cfg, int tp_size, int ep_size, const slm_model_stage *stage,
                                   slm_model_t *model)
{
    const slm_model_tp tp = {0, tp_size, NULL, NULL, NULL};
    const slm_model_ep ep = {0, ep_size, NULL, NULL, NULL};
    return model_shell(cfg, 1, &tp, &ep, stage, 1, model);
}

slm_status slm_model_create(const slm_model_config *cfg, int max_batch, int own_storage, const slm_model_tp *tp,
                            const slm_model_ep *ep, const slm_model_stage *stage, slm_model_t *out)
{
    *out = NULL;
    SLM_CHECK(!tp || tp->size == 1 || (tp->allreduce && tp->allreduce_max), SLM_ERR_ARG,
              "tensor parallelism without its all-reduces");
    slm_model_t m;
    SLM_CHECK(!ep || ep->size == 1 || (ep->counts && ep->rows), SLM_ERR_ARG, "expert parallelism without its exchanges");
    SLM_CALL(model_shell(cfg, max_batch, tp, ep, stage, omp_get_max_threads(), &m));
    const slm_model_stage *st = &m->stage;
    if (own_storage) {
        m->params = alloc_floats(m->nparams);
        m->grads = alloc_floats(m->nparams);
        if (!m->params || !m->grads) goto nomem;
    }
    const size_t N = (size_t)max_batch * m->cfg.seq_len, C = (size_t)m->cfg.d_model;
    if (m->cfg.recompute) { /* allocate, then lay out the shared inner activations */
        if (!(m->work_mem = alloc_floats(m->work_floats))) goto nomem;
        layout_work(m, m->work_mem);
    }
    m->acts = alloc_floats(m->acts_floats * (size_t)st->slots);
    m->dacts = alloc_floats(m->dacts_floats);
    m->inputs_all = calloc(N * (size_t)st->slots, sizeof(int32_t));
    m->targets_all = calloc(N * (size_t)st->slots, sizeof(int32_t));
    m->slot_B = calloc((size_t)st->slots, sizeof(int));
    m->slot_T = calloc((size_t)st->slots, sizeof(int));
    if (!m->acts || !m->dacts || !m->inputs_all || !m->targets_all || !m->slot_B || !m->slot_T) goto nomem;
    if (own_storage)
        for (int u = 0; u < m->nunits; u++) {
            size_t off, n;
            slm_model_unit_range(m, u, &off, &n);
            slm_model_bind_unit(m, u, m->params + off, m->grads + off);
        }
    slm_model_select_slot(m, 0);
    m->dres = m->dacts;
    m->dnarrow = m->dres + N * C;
    m->dwide1 = m->dnarrow + N * C;
    m->dwide2 = m->dwide1 + N * m->wide;
    m->datt = m->dwide2 + N * m->wide;
    m->moe_scratch = m->datt + m->datt_floats;
    if (m->arch->setup) {
        slm_status s = m->arch->setup(m);
        if (s != SLM_OK) {
            slm_model_destroy(&m);
            return s;
        }
    }
    *out = m;
    return SLM_OK;
nomem:;
    double gib = ((double)m->nparams * 2 + (double)m->acts_floats * st->slots + (double)m->dacts_floats) * 4 /
                 (1 << 30);
    slm_model_destroy(&m);
    return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the model (about %.2f GiB for parameters, "
                     "gradients and activations)", gib);
}

void slm_model_destroy(slm_model_t *model)
{
    slm_model_t m = *model;
    if (!m) return;
    if (m->arch && m->arch->teardown) m->arch->teardown(m);
    slm_moe_teardown(m);
    free(m->tensors);
    free(m->block_first);
    free(m->block_unit);
    free(m->expert_unit);
    free(m->unit_first);
    free(m->unit_count);
    free(m->pv);
    free(m->gv);
    free(m->bacts);
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

void slm_model_init_range(slm_model_t m, uint64_t seed, size_t offset, size_t count, float *dst)
{
    const size_t end = offset + count;
    for (int i = 0; i < m->ntensors; i++) {
        const slm_tensor_info *t = &m->tensors[i];
        size_t lo = t->offset > offset ? t->offset : offset;
        size_t hi = t->offset + t->count < end ? t->offset + t->count : end;
        if (lo >= hi) continue;
        float *p = dst + (lo - offset);
        const size_t j0 = lo - t->offset, n = hi - lo;
        if (t->init != SLM_INIT_NORMAL) {
            const float v = t->init == SLM_INIT_ONES ? 1.0f : 0.0f;
            for (size_t j = 0; j < n; j++) p[j] = v;
            continue;
        }
        const double s = t->init_std;
        const uint64_t key = slm_rng_key(seed, SLM_RNG_INIT, (uint64_t)i);
        /* keyed by the global element, so every layout draws the same value for it */
#pragma omp parallel for if (n > 65536)
        for (size_t j = 0; j < n; j++) p[j] = (float)(s * slm_rng_normal(key, slm_tensor_global_index(t, j0 + j)));
    }
}

void slm_model_init_params(slm_model_t m, uint64_t seed) { slm_model_init_range(m, seed, 0, m->nparams, m->params); }

const slm_model_config *slm_model_config_of(slm_model_t m) { return &m->cfg; }
size_t slm_model_num_params(slm_model_t m) { return m->nparams; }
size_t slm_model_num_global_params(slm_model_t m) { return m->gparams; }
float *slm_model_params(slm_model_t m) { return m->params; }
float *slm_model_grads(slm_model_t m) { return m->grads; }
int slm_model_num_tensors(slm_model_t m) { return m->ntensors; }
const slm_tensor_info *slm_model_tensor(slm_model_t m, int i) { return &m->tensors[i]; }
const float *slm_model_logits(slm_model_t m) { return m->logits; }
int slm_model_head_tensor(slm_model_t m) { return m->arch->head_tensor(m); }

void slm_model_vocab_rows(slm_model_t m, int *v0, int *vl)
{
    *v0 = m->v0;
    *vl = m->vl;
}

const slm_tensor_info *slm_model_find_tensor(slm_model_t m, const char *name)
{
    for (int i = 0; i < m->ntensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

double slm_model_flops_per_token(const slm_model_config *cfg)
{
    slm_model_config c = *cfg;
    slm_model_config_defaults(&c);
    const slm_arch *a = slm_arch_find(c.arch);
    return a ? a->flops_per_token(&c) + slm_moe_flops_delta(&c) : 0.0;
}

double slm_model_params_of(const slm_model_config *cfg)
{
    slm_model_config c = *cfg;
    slm_model_config_defaults(&c);
    const slm_arch *a = slm_arch_find(c.arch);
    return a ? a->params_of(&c) + slm_moe_params_delta(&c) : 0.0;
}

double slm_model_active_params_of(const slm_model_config *cfg)
{
    slm_model_config c = *cfg;
    slm_model_config_defaults(&c);
    const slm_arch *a = slm_arch_find(c.arch);
    return a ? a->params_of(&c) + slm_moe_active_delta(&c) : 0.0;
}

int slm_model_gemm_shapes(slm_model_t m, int B, slm_gemm_shape *out, int max)
{
    return m->arch->gemm_shapes(m, B, out, max);
}

void slm_model_select_slot(slm_model_t m, int slot)
{
    layout_acts(m, m->acts + (size_t)slot * m->acts_floats);
    const size_t N = (size_t)m->max_batch * (size_t)m->cfg.seq_len;
    m->inputs = m->inputs_all + (size_t)slot * N;
    m->targets = m->targets_all + (size_t)slot * N;
    m->B = m->slot_B[slot];
    m->T = m->slot_T[slot];
}

float *slm_model_stage_input(slm_model_t m, int slot)
{
    return m->acts + (size_t)slot * m->acts_floats; /* `encoded` is the slot's first view */
}

const float *slm_model_stage_output(slm_model_t m, int slot)
{
    slm_model_select_slot(m, slot);
    return slm_block_out(m, m->stage.first_layer + m->stage.n_layers - 1);
}

float *slm_model_stage_grad(slm_model_t m) { return m->dres; }

void slm_model_last_logits(slm_model_t m, int b, float *out)
{
    const float *z = m->logits + ((size_t)b * m->T + (size_t)(m->T - 1)) * (size_t)m->vl;
    if (m->tp.size > 1) memset(out, 0, (size_t)m->cfg.vocab_size * sizeof(float));
    memcpy(out + m->v0, z, (size_t)m->vl * sizeof(float));
    slm_model_tp_allreduce(m, out, (size_t)m->cfg.vocab_size); /* each column comes from one rank */
}

size_t slm_model_activation_bytes(slm_model_t m)
{
    return (m->acts_floats * (size_t)m->stage.slots + m->work_floats + m->dacts_floats) * sizeof(float);
}

void slm_model_zero_grad(slm_model_t m)
{
    if (m->grads) memset(m->grads, 0, m->nparams * sizeof(float));
}

void slm_model_row_parallel_forward(slm_model_t m, float *out, const float *inp, const float *w, const float *bias,
                                    int N, int IC, int OC)
{
    slm_matmul_forward(out, inp, w, m->tp.rank == 0 ? bias : NULL, N, IC, OC);
    slm_model_tp_allreduce(m, out, (size_t)N * OC);
}

int slm_gemm_add_linear(slm_gemm_shape *out, int n, int max, int N, int IC, int OC, double times)
{
    const slm_gemm_shape three[3] = {{0, 1, N, OC, IC, 1, 0, times}, {0, 0, N, IC, OC, 1, 0, times},
                                     {1, 0, OC, IC, N, 1, 2, times}};
    for (int k = 0; k < 3 && n < max; k++) out[n++] = three[k];
    return n;
}

int slm_gemm_add_attention(slm_gemm_shape *out, int n, int max, int B, int T, int heads, int hs, int L)
{
    /* per (sequence, head) and query tile of up to 128 rows against the keys before it (on
     * average about half of them): scores, then the values' product; backward recomputes
     * the scores and runs four more */
    const int rows = T < 128 ? T : 128, keys = (T + rows) / 2;
    const double tiles = (double)B * heads * L * ((T + rows - 1) / rows);
    const slm_gemm_shape att[6] = {
        {0, 1, rows, keys, hs, 0, 0, 2 * tiles}, {0, 0, rows, hs, keys, 0, 0, tiles},
        {0, 1, rows, keys, hs, 0, 0, tiles},     {1, 0, keys, hs, rows, 0, 2, tiles},
        {0, 0, rows, hs, keys, 0, 0, tiles},     {1, 0, keys, hs, rows, 0, 2, tiles}};
    for (int k = 0; k < 6 && n < max; k++) out[n++] = att[k];
    return n;
}
