/* memory.c - the memory a layout needs per rank, from the model's and the sharded
 * training state's own accounting (slm_model_measure, slm_fsdp_memory_for). */
#include <stdlib.h>
#include <string.h>
#include "shardlm/parallel.h"
#include "shardlm/plan.h"

/* The stage's gradient buckets as the fsdp layer forms them, from the stage's units (the
 * embeddings where the stage has them, each block - an MoE block's experts a unit of
 * their own - and the final norm on the last stage), grouped by the layer's own rule. */
typedef struct stage_buckets {
    int n;
    size_t first, largest_rest;   /* parameters of bucket 0 and of the largest other one */
    size_t largest_expert, experts; /* under expert parallelism: the largest bucket of experts, and their parameters */
} stage_buckets;

static stage_buckets buckets_of(slm_model_t m, double bucket_mb, int ep)
{
    const int nu = slm_model_num_units(m);
    size_t sizes[nu], sum[nu], off;
    int of[nu], groups[nu];
    for (int u = 0; u < nu; u++) slm_model_unit_range(m, u, &off, &sizes[u]);
    const int *g = slm_fsdp_unit_groups(m, ep, groups);
    stage_buckets b = {slm_fsdp_group_units(sizes, g, nu, bucket_mb, of), 0, 0, 0, 0};
    int expert[nu];
    for (int i = 0; i < b.n; i++) sum[i] = 0;
    for (int u = 0; u < nu; u++) {
        sum[of[u]] += sizes[u];
        expert[of[u]] = g && g[u];
        if (g && g[u]) b.experts += sizes[u];
    }
    b.first = sum[0];
    for (int i = 1; i < b.n; i++) {
        size_t *largest = expert[i] ? &b.largest_expert : &b.largest_rest;
        if (sum[i] > *largest) *largest = sum[i];
    }
    return b;
}

/* The optimizer's state on a rank of stage st, from the stage's tensor table (Adafactor's
 * depends on the matrices' shapes, not only on the parameter count). */
static slm_status optimizer_bytes(slm_model_t m, const slm_plan_layout *lay, double *bytes)
{
    slm_optim_config adamw;
    slm_optim_config_defaults(&adamw);
    slm_optim_segment *seg = malloc((size_t)slm_model_num_units(m) * sizeof *seg);
    if (seg) { /* dp rank 0, whose memory line `shardlm train` prints */
        const int n = slm_fsdp_rank_segments(m, lay->bucket_mb, lay->dp, lay->ep > 1 ? lay->ep : 1, 0, lay->zero_stage,
                                             seg);
        *bytes = slm_optim_bytes_for(lay->optim.name[0] ? &lay->optim : &adamw, slm_model_tensor(m, 0),
                                     slm_model_num_tensors(m), seg, n);
    }
    free(seg);
    SLM_CHECK(seg, SLM_ERR_NOMEM, "out of memory");
    return SLM_OK;
}

slm_status slm_plan_memory_for(const slm_model_config *cfg, const slm_plan_layout *lay, slm_plan_memory *out)
{
    SLM_CHECK(lay->dp >= 1 && lay->tp >= 1 && lay->pp >= 1, SLM_ERR_ARG, "dp %d, tp %d, pp %d: each must be >= 1",
              lay->dp, lay->tp, lay->pp);
    SLM_CHECK(lay->zero_stage >= 0 && lay->zero_stage <= 3, SLM_ERR_ARG, "zero stage %d: expected 0-3",
              lay->zero_stage);
    SLM_CHECK(lay->pp <= cfg->n_layer, SLM_ERR_ARG, "pp %d is more stages than the model's %d layers", lay->pp,
              cfg->n_layer);
    SLM_CHECK(lay->micro_batch >= 1 && lay->global_batch % (lay->micro_batch * lay->dp) == 0, SLM_ERR_ARG,
              "global batch %d is not a multiple of micro_batch %d x dp %d", lay->global_batch, lay->micro_batch,
              lay->dp);
    const int ep = lay->ep > 1 ? lay->ep : 1;
    const int P = lay->pp, L = cfg->n_layer, accum = lay->global_batch / (lay->micro_batch * lay->dp);
    *out = (slm_plan_memory){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int s = 0; s < P; s++) { /* the layer split and micro-batches in flight of `shardlm train` */
        const int slots = P - s < accum ? P - s : accum;
        const slm_model_stage st = {s * L / P, (s + 1) * L / P - s * L / P, s == 0, s == P - 1, slots};
        slm_model_footprint fp;
        SLM_CALL(slm_model_measure(cfg, lay->micro_batch, lay->tp, ep, &st, lay->threads, &fp));
        slm_model_t part = NULL;
        SLM_CALL(slm_model_describe_part(cfg, lay->tp, ep, &st, &part));
        const stage_buckets b = buckets_of(part, lay->bucket_mb, ep);
        double opt_bytes = 0.0;
        const slm_status os = optimizer_bytes(part, lay, &opt_bytes);
        slm_model_destroy(&part);
        SLM_CALL(os);
        const slm_fsdp_memory m = slm_fsdp_memory_for(fp.params, b.experts, b.first, b.largest_rest, b.largest_expert,
                                                      b.n, lay->dp, ep, lay->zero_stage, lay->bf16, opt_bytes);
        const double total =
            m.params + m.grads + m.optimizer + m.gathered + m.grad_buckets + (double)fp.activation_bytes;
        if (total > out->total)
            *out = (slm_plan_memory){m.params,  m.grads, m.optimizer, m.gathered, m.grad_buckets,
                                     (double)fp.activation_bytes, total, s, (double)fp.params, b.n,
                                     st.first || st.last ? (double)fp.unit0 : 0};
    }
    return SLM_OK;
}

double slm_plan_expert_bytes(const slm_model_config *cfg, int tp, int ep, int pp)
{
    double most = 0.0;
    const int L = cfg->n_layer;
    for (int s = 0; s < pp; s++) { /* the stage that holds the most experts */
        const slm_model_stage st = {s * L / pp, (s + 1) * L / pp - s * L / pp, s == 0, s == pp - 1, 1};
        slm_model_t m = NULL;
        if (slm_model_describe_part(cfg, tp, ep, &st, &m) != SLM_OK) {
            slm_error_clear();
            continue;
        }
        double bytes = 0.0;
        for (int i = 0; i < slm_model_num_tensors(m); i++) {
            const slm_tensor_info *t = slm_model_tensor(m, i);
            if (strstr(t->name, ".moe.experts.")) bytes += (double)t->count * sizeof(float);
        }
        slm_model_destroy(&m);
        most = bytes > most ? bytes : most;
    }
    return most;
}
