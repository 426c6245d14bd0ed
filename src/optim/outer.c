/* outer.c - the islands' outer optimizer (docs/islands.md): the parameters every island
 * started the round from (the anchor), the pseudo-gradient Δ = anchor − θ of this island,
 * and an SGD step on the anchor with the islands' mean Δ as its gradient - PyTorch's SGD
 * with momentum and Nesterov, the same method train.optimizer = sgd runs, here over the
 * anchor instead of the parameters. After the step the parameters become the anchor. */
#include <stdlib.h>
#include <string.h>
#include "shardlm/optim.h"

struct slm_outer {
    slm_outer_config cfg;
    slm_optim_segment *chunks; /* the live parameters (copied from the caller) */
    int nchunks;
    size_t *pos;               /* chunk c's anchor and Δ start at pos[c] (nchunks + 1 entries) */
    float *anchor, *delta, *error; /* error: with error feedback, else NULL */
    slm_optimizer_t sgd;       /* over {chunk offset, count, anchor, delta} */
    const slm_tensor_info *tensors;
    int ntensors;
};

static int chunk_of(const struct slm_outer *o, size_t offset)
{
    for (int c = 0; c < o->nchunks; c++)
        if (offset >= o->chunks[c].offset && offset < o->chunks[c].offset + o->chunks[c].count) return c;
    return -1;
}

slm_status slm_outer_create(const slm_outer_config *cfg, const slm_tensor_info *tensors, int ntensors,
                            const slm_optim_segment *chunks, int nchunks, slm_outer_t *out)
{
    *out = NULL;
    slm_outer_t o = calloc(1, sizeof *o);
    SLM_CHECK(o, SLM_ERR_NOMEM, "cannot allocate the outer optimizer");
    o->cfg = *cfg;
    o->tensors = tensors;
    o->ntensors = ntensors;
    o->nchunks = nchunks;
    o->chunks = malloc(((size_t)nchunks + 1) * sizeof *o->chunks);
    o->pos = malloc(((size_t)nchunks + 1) * sizeof *o->pos);
    slm_optim_segment *segs = malloc(((size_t)nchunks + 1) * sizeof *segs);
    size_t n = 0;
    for (int c = 0; o->pos && c < nchunks; c++) {
        o->pos[c] = n;
        n += chunks[c].count;
    }
    if (o->pos) o->pos[nchunks] = n;
    o->anchor = malloc((n ? n : 1) * sizeof(float));
    o->delta = malloc((n ? n : 1) * sizeof(float));
    if (cfg->error_feedback) o->error = calloc(n ? n : 1, sizeof(float));
    slm_status st = o->chunks && o->pos && segs && o->anchor && o->delta && (o->error || !cfg->error_feedback)
                        ? SLM_OK
                        : SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the outer optimizer's state (%.1f MB)",
                                    8.0 * (double)n / 1e6);
    if (st == SLM_OK) {
        memcpy(o->chunks, chunks, (size_t)nchunks * sizeof *chunks);
        for (int c = 0; c < nchunks; c++)
            segs[c] = (slm_optim_segment){chunks[c].offset, chunks[c].count, o->anchor + o->pos[c], o->delta + o->pos[c]};
        slm_optim_config oc;
        slm_optim_config_defaults(&oc);
        strcpy(oc.name, "sgd");
        oc.weight_decay = 0.0;
        oc.sgd.momentum = cfg->momentum;
        oc.sgd.dampening = 0.0;
        oc.sgd.nesterov = cfg->nesterov;
        st = slm_optimizer_create(&oc, tensors, ntensors, segs, nchunks, &o->sgd);
    }
    free(segs);
    if (st != SLM_OK) {
        slm_outer_destroy(&o);
        return slm_error_push(st, __FILE__, __LINE__, __func__);
    }
    slm_outer_reset(o);
    *out = o;
    return SLM_OK;
}

void slm_outer_destroy(slm_outer_t *op)
{
    slm_outer_t o = *op;
    if (!o) return;
    slm_optimizer_destroy(&o->sgd);
    free(o->chunks);
    free(o->pos);
    free(o->anchor);
    free(o->delta);
    free(o->error);
    free(o);
    *op = NULL;
}

void slm_outer_reset(slm_outer_t o)
{
    for (int c = 0; c < o->nchunks; c++)
        memcpy(o->anchor + o->pos[c], o->chunks[c].params, o->chunks[c].count * sizeof(float));
    /* the momentum needs no zeroing: SGD's first step sets it to the gradient */
    if (o->error) memset(o->error, 0, o->pos[o->nchunks] * sizeof(float));
    slm_optimizer_set_steps(o->sgd, 0);
}

int slm_outer_num_chunks(slm_outer_t o) { return o->nchunks; }
const slm_optim_segment *slm_outer_chunk(slm_outer_t o, int c) { return &o->chunks[c]; }

float *slm_outer_delta(slm_outer_t o, int c)
{
    const float *p = o->chunks[c].params, *a = o->anchor + o->pos[c];
    float *d = o->delta + o->pos[c];
    for (size_t k = 0; k < o->chunks[c].count; k++) d[k] = a[k] - p[k];
    return d;
}

float *slm_outer_error(slm_outer_t o, int c) { return o->error ? o->error + o->pos[c] : NULL; }

void slm_outer_begin(slm_outer_t o, float delta_scale)
{
    slm_optimizer_begin_step(o->sgd, o->cfg.lr, delta_scale, NULL);
}

void slm_outer_apply(slm_outer_t o, int c, double *sumsq)
{
    float *a = o->anchor + o->pos[c], *p = o->chunks[c].params;
    const slm_optim_segment *ch = &o->chunks[c];
    memcpy(p, a, ch->count * sizeof(float)); /* the old anchor, to measure the step by */
    slm_optimizer_update(o->sgd, c);
    for (int i = 0; sumsq && i < o->ntensors; i++) {
        size_t lo, hi;
        if (!slm_tensor_overlap(&o->tensors[i], ch->offset, ch->count, &lo, &hi)) continue;
        double s = 0.0;
        for (size_t k = lo - ch->offset; k < hi - ch->offset; k++) s += ((double)a[k] - p[k]) * ((double)a[k] - p[k]);
        sumsq[i] += s;
    }
    memcpy(p, a, ch->count * sizeof(float));
}

long slm_outer_steps(slm_outer_t o) { return slm_optimizer_steps(o->sgd); }
void slm_outer_set_steps(slm_outer_t o, long t) { slm_optimizer_set_steps(o->sgd, t); }

int slm_outer_group_names(const slm_outer_config *cfg, const char **names)
{
    int n = 0;
    names[n++] = "outer_anchor";
    if (cfg->momentum != 0.0) names[n++] = "outer_momentum";
    if (cfg->error_feedback) names[n++] = "outer_error";
    return n;
}

int slm_outer_num_groups(slm_outer_t o) { return 1 + slm_optimizer_num_groups(o->sgd) + (o->error != NULL); }

float *slm_outer_state_at(slm_outer_t o, int g, size_t offset)
{
    const int nm = slm_optimizer_num_groups(o->sgd);
    if (g > 0 && g <= nm) return slm_optimizer_state_at(o->sgd, g - 1, offset);
    const int c = chunk_of(o, offset);
    float *base = g == 0 ? o->anchor : o->error;
    return c < 0 || !base ? NULL : base + o->pos[c] + (offset - o->chunks[c].offset);
}
