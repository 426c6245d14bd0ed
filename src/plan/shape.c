/* shape.c - a GPT-2 shape (layers, width, heads) of a given parameter count. */
#include <math.h>
#include "shardlm/plan.h"

double slm_plan_gpt2_params(int n_layer, int d_model, int vocab, int seq_len)
{
    const double L = n_layer, C = d_model;
    return (double)vocab * C + (double)seq_len * C + L * (12.0 * C * C + 13.0 * C) + 2.0 * C;
}

slm_status slm_plan_shape_for(double params, int vocab, int seq_len, int head_size, double aspect,
                              slm_plan_shape *out)
{
    SLM_CHECK(params > 0 && vocab > 1 && seq_len > 0 && head_size > 0 && aspect > 0, SLM_ERR_ARG,
              "a shape needs positive parameters (%g), vocab (%d), seq_len (%d), head size (%d) and aspect (%g)",
              params, vocab, seq_len, head_size, aspect);
    const double smallest = slm_plan_gpt2_params(1, head_size, vocab, seq_len);
    SLM_CHECK(smallest <= params * 1.1, SLM_ERR_ARG,
              "%.4g parameters is less than the smallest GPT-2 of vocab %d, seq_len %d and head size %d "
              "(1 layer of d_model %d: %.4g parameters, most of them the embeddings)",
              params, vocab, seq_len, head_size, head_size, smallest);
    slm_plan_shape best = {0, 0, 0, 0};
    double best_size = INFINITY, best_aspect = INFINITY;
    int best_within = 0;
    for (int L = 1; L <= 256; L++) {
        /* each layer count's width nearest the target, among multiples of the head size */
        int heads = 1;
        double err = fabs(log(slm_plan_gpt2_params(L, head_size, vocab, seq_len) / params));
        for (int h = 2; h <= 4096; h++) {
            double e = fabs(log(slm_plan_gpt2_params(L, h * head_size, vocab, seq_len) / params));
            if (e > err) break; /* the count grows with the width: past the target it only gets worse */
            err = e, heads = h;
        }
        const int C = heads * head_size;
        const double n = slm_plan_gpt2_params(L, C, vocab, seq_len);
        const int within = fabs(n / params - 1.0) <= 0.10;
        const double asp = fabs(log((double)C / L / aspect));
        const int better = within ? (!best_within || asp < best_aspect) : (!best_within && err < best_size);
        if (better) {
            best = (slm_plan_shape){L, heads, C, n};
            best_within = within, best_size = err, best_aspect = asp;
        }
        if (slm_plan_gpt2_params(L, head_size, vocab, seq_len) > params * 1.1) break; /* deeper is too big */
    }
    *out = best;
    return SLM_OK;
}
