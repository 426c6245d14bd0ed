/* shape.c - a model shape (layers, width, heads) of a given parameter count, for any
 * architecture: the parameters come from the model interface. */
#include <math.h>
#include "shardlm/plan.h"

/* base with n_layer L and width C = heads x head_size, its key/value heads in the same
 * ratio to the query heads as base's, and the architecture's default MLP width. */
static slm_model_config shaped(const slm_model_config *base, int L, int heads, int head_size)
{
    slm_model_config c = *base;
    const int group = base->n_kv_head > 0 && base->n_head % base->n_kv_head == 0 ? base->n_head / base->n_kv_head : 1;
    c.n_layer = L;
    c.n_head = heads;
    c.n_kv_head = heads / group > 0 ? heads / group : 1;
    c.d_model = heads * head_size;
    c.ffn_hidden = 0;
    c.max_pos = 0;
    slm_model_config_defaults(&c);
    return c;
}

static double params_at(const slm_model_config *base, int L, int heads, int head_size)
{
    const slm_model_config c = shaped(base, L, heads, head_size);
    return slm_model_params_of(&c);
}

slm_status slm_plan_shape_for(double params, const slm_model_config *base, int head_size, double aspect,
                              slm_plan_shape *out)
{
    SLM_CHECK(params > 0 && base->vocab_size > 1 && base->seq_len > 0 && head_size > 0 && aspect > 0, SLM_ERR_ARG,
              "a shape needs positive parameters (%g), vocab (%d), seq_len (%d), head size (%d) and aspect (%g)",
              params, base->vocab_size, base->seq_len, head_size, aspect);
    /* widths step by the query heads per key/value head, so the grouping stays whole */
    const int group = base->n_kv_head > 0 && base->n_head % base->n_kv_head == 0 ? base->n_head / base->n_kv_head : 1;
    const double smallest = params_at(base, 1, group, head_size);
    SLM_CHECK(smallest <= params * 1.1, SLM_ERR_ARG,
              "%.4g parameters is less than the smallest %s of vocab %d, seq_len %d and head size %d "
              "(1 layer of d_model %d: %.4g parameters, most of them the embeddings)",
              params, base->arch, base->vocab_size, base->seq_len, head_size, group * head_size, smallest);
    slm_plan_shape best = {0};
    double best_size = INFINITY, best_aspect = INFINITY;
    int best_within = 0;
    for (int L = 1; L <= 256; L++) {
        /* each layer count's width nearest the target, among multiples of the head size */
        int heads = group;
        double err = fabs(log(params_at(base, L, heads, head_size) / params));
        for (int h = 2 * group; h <= 4096; h += group) {
            double e = fabs(log(params_at(base, L, h, head_size) / params));
            if (e > err) break; /* the count grows with the width: past the target it only gets worse */
            err = e, heads = h;
        }
        const slm_model_config c = shaped(base, L, heads, head_size);
        const double n = slm_model_params_of(&c);
        const int within = fabs(n / params - 1.0) <= 0.10;
        const double asp = fabs(log((double)c.d_model / L / aspect));
        const int better = within ? (!best_within || asp < best_aspect) : (!best_within && err < best_size);
        if (better) {
            best = (slm_plan_shape){c, n};
            best_within = within, best_size = err, best_aspect = asp;
        }
        if (params_at(base, L, group, head_size) > params * 1.1) break; /* deeper is too big */
    }
    *out = best;
    return SLM_OK;
}
