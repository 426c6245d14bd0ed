/* adamw.c - AdamW (Loshchilov & Hutter; PyTorch's AdamW): two moments per element, bias
 * corrected, decoupled weight decay. The update is the kernel slm_adamw_update. */
#include "shardlm/kernels.h"
#include "optim_impl.h"

enum { M, V };

static int adamw_declare(const slm_optim_config *cfg, opt_group_decl *out)
{
    (void)cfg;
    out[M] = (opt_group_decl){"adam_m", OPT_GROUP_ALL};
    out[V] = (opt_group_decl){"adam_v", OPT_GROUP_ALL};
    return 2;
}

static void adamw_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    const slm_optim_config *c = &o->cfg;
    const float wd = o->tensors[pc->tensor].decay ? (float)c->weight_decay : 0.0f;
    slm_adamw_update(p, g, o->grad_scale, o->groups[M].data + pc->elem, o->groups[V].data + pc->elem, pc->n,
                     (float)o->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, wd, (int)o->t);
}

const opt_method opt_adamw = {"adamw", adamw_declare, NULL, NULL, NULL, adamw_update};
