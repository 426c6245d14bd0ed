/* adamw.c - AdamW (Loshchilov & Hutter; PyTorch's AdamW): two moments per element, bias
 * corrected, decoupled weight decay. The update is the kernel slm_adamw_update. */
#include "shardlm/kernels.h"
#include "optim_impl.h"

enum { M, V };

static slm_status adamw_setup(slm_optimizer_t o)
{
    SLM_CHECK(opt_add_group(o, "adam_m", OPT_GROUP_ALL) && opt_add_group(o, "adam_v", OPT_GROUP_ALL), SLM_ERR_NOMEM,
              "cannot allocate AdamW moments for %zu parameters (%.2f GiB)", o->nelem,
              8.0 * (double)o->nelem / (1 << 30));
    return SLM_OK;
}

static void adamw_update(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g)
{
    const slm_optim_config *c = &o->cfg;
    const float wd = o->tensors[pc->tensor].decay ? (float)c->weight_decay : 0.0f;
    slm_adamw_update(p, g, o->grad_scale, o->groups[M].data + pc->elem, o->groups[V].data + pc->elem, pc->n,
                     (float)o->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, wd, (int)o->t);
}

const opt_method opt_adamw = {"adamw", adamw_setup, NULL, NULL, adamw_update};
