/* adamw.c - AdamW optimizer state and step over a model's tensor table. */
#include <stdlib.h>
#include "shardlm/kernels.h"
#include "shardlm/optim.h"

struct slm_adamw {
    size_t n;
    float *m, *v; /* first and second moments, (n) each, one allocation */
    double beta1, beta2, eps, weight_decay;
    long t;
    float grad_scale; /* this step's */
};

slm_status slm_adamw_create(size_t n, double beta1, double beta2, double eps,
                            double weight_decay, slm_adamw_t *out)
{
    *out = NULL;
    slm_adamw_t o = calloc(1, sizeof *o);
    SLM_CHECK(o, SLM_ERR_NOMEM, "cannot allocate the optimizer");
    o->m = calloc(2 * n + 1, sizeof(float));
    if (!o->m) {
        free(o);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate AdamW moments for %zu parameters (%.2f GiB)",
                         n, 8.0 * (double)n / (1 << 30));
    }
    o->v = o->m + n;
    o->n = n;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    *out = o;
    return SLM_OK;
}

void slm_adamw_destroy(slm_adamw_t *opt)
{
    if (!*opt) return;
    free((*opt)->m);
    free(*opt);
    *opt = NULL;
}

void slm_adamw_begin_step(slm_adamw_t o)
{
    o->t++;
    o->grad_scale = 1.0f;
}

void slm_adamw_set_grad_scale(slm_adamw_t o, float scale) { o->grad_scale = scale; }

void slm_adamw_update_range(slm_adamw_t o, float *params, const float *grads, size_t state_offset,
                            size_t global_offset, size_t count, const slm_tensor_info *tensors,
                            int ntensors, double lr)
{
    const size_t end = global_offset + count;
    for (int i = 0; i < ntensors; i++) { /* the pieces of each tensor inside the range */
        const slm_tensor_info *t = &tensors[i];
        size_t lo = t->offset > global_offset ? t->offset : global_offset;
        size_t hi = t->offset + t->count < end ? t->offset + t->count : end;
        if (lo >= hi) continue;
        size_t k = lo - global_offset;
        slm_adamw_update(params + k, grads + k, o->grad_scale, o->m + state_offset + k,
                                o->v + state_offset + k, hi - lo, (float)lr, (float)o->beta1, (float)o->beta2,
                                (float)o->eps, t->decay ? (float)o->weight_decay : 0.0f, (int)o->t);
    }
}

void slm_adamw_step(slm_adamw_t o, float *params, const float *grads,
                    const slm_tensor_info *tensors, int ntensors, double lr)
{
    slm_adamw_begin_step(o);
    slm_adamw_update_range(o, params, grads, 0, 0, o->n, tensors, ntensors, lr);
}

long slm_adamw_steps(slm_adamw_t o) { return o->t; }
void slm_adamw_set_steps(slm_adamw_t o, long t) { o->t = t; }

void slm_adamw_moments(slm_adamw_t o, float **m, float **v)
{
    *m = o->m;
    *v = o->v;
}
