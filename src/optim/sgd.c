/* sgd.c - stochastic gradient descent with momentum, dampening and Nesterov momentum, as
 * PyTorch's SGD: d = g + wd p; b = d on the first step, else momentum b + (1 - dampening) d;
 * d = d + momentum b (Nesterov) or b; p -= lr d. Without momentum it keeps no state. */
#include "optim_impl.h"

static slm_status sgd_setup(slm_optimizer_t o)
{
    if (o->cfg.sgd.momentum == 0) return SLM_OK;
    SLM_CHECK(opt_add_group(o, "sgd_momentum", OPT_GROUP_ALL), SLM_ERR_NOMEM,
              "cannot allocate the SGD momentum for %zu parameters (%.2f GiB)", o->nelem,
              4.0 * (double)o->nelem / (1 << 30));
    return SLM_OK;
}

static void sgd_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    const slm_optim_config *c = &o->cfg;
    const float wd = o->tensors[pc->tensor].decay ? (float)c->weight_decay : 0.0f;
    const float lr = (float)o->lr, scale = o->grad_scale, mu = (float)c->sgd.momentum;
    const float keep = 1.0f - (float)c->sgd.dampening;
    const int first = o->t == 1, nesterov = c->sgd.nesterov;
    float *b = o->ngroups ? o->groups[0].data + pc->elem : NULL;
    for (size_t i = 0; i < pc->n; i++) {
        float d = g[i] * scale;
        if (wd != 0.0f) d += wd * p[i];
        if (b) {
            b[i] = first ? d : mu * b[i] + keep * d;
            d = nesterov ? d + mu * b[i] : b[i];
        }
        p[i] -= lr * d;
    }
}

const opt_method opt_sgd = {"sgd", sgd_setup, NULL, NULL, sgd_update};
