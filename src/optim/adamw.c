/* adamw.c - AdamW optimizer state and step over a model's tensor table. */
#include <stdlib.h>
#include "shardlm/kernels.h"
#include "shardlm/optim.h"

struct slm_adamw {
    size_t n;
    float *m, *v; /* first and second moments, (n) each, one allocation */
    double beta1, beta2, eps, weight_decay;
    long t;
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

void slm_adamw_step(slm_adamw_t o, float *params, const float *grads,
                    const slm_tensor_info *tensors, int ntensors, double lr)
{
    o->t++;
    for (int i = 0; i < ntensors; i++) {
        const slm_tensor_info *t = &tensors[i];
        size_t off = t->offset;
        slm_adamw_update(params + off, grads + off, o->m + off, o->v + off, t->count, (float)lr,
                         (float)o->beta1, (float)o->beta2, (float)o->eps,
                         t->decay ? (float)o->weight_decay : 0.0f, (int)o->t);
    }
}

long slm_adamw_steps(slm_adamw_t o) { return o->t; }
