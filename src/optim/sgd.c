/* sgd.c - stochastic gradient descent with momentum, dampening and Nesterov momentum, as
 * PyTorch's SGD: d = g + wd p; b = d on the first step, else momentum b + (1 - dampening) d;
 * d = d + momentum b (Nesterov) or b; p -= lr d. Without momentum it keeps no state. */
#include "optim_impl.h"

static int sgd_declare(const slm_optim_config *cfg, opt_group_decl *out)
{
    if (cfg->sgd.momentum == 0) return 0;
    out[0] = (opt_group_decl){"sgd_momentum", OPT_GROUP_ALL};
    return 1;
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

const opt_method opt_sgd = {"sgd", sgd_declare, NULL, NULL, NULL, sgd_update};
