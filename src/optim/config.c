/* config.c - optimizer settings: defaults, checks naming the key, and the state bytes an
 * optimizer would hold (for the planner). */
#include <stdio.h>
#include <string.h>
#include "optim_impl.h"

const char *const slm_optimizer_names[] = {"adamw", "adafactor", "lamb", "sgd", NULL};

void slm_optim_config_defaults(slm_optim_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->name, "adamw");
    c->weight_decay = 0.1;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->adafactor.eps1 = 1e-30;
    c->adafactor.eps2 = 1e-3;
    c->adafactor.clip_threshold = 1.0;
    c->adafactor.decay_rate = -0.8;
    c->adafactor.scale_parameter = 1;
    c->adafactor.relative_step = 1;
}

slm_status slm_optim_config_check(const slm_optim_config *c)
{
    int known = 0;
    for (int i = 0; slm_optimizer_names[i]; i++) known |= !strcmp(c->name, slm_optimizer_names[i]);
    SLM_CHECK(known, SLM_ERR_CONFIG, "train.optimizer = %s: unknown (adamw, adafactor, lamb, sgd)", c->name);
    if (!strcmp(c->name, "adafactor")) {
        /* beta2 of step t is 1 - t^decay_rate: in [0, 1) for every t only when decay_rate <= 0 */
        SLM_CHECK(c->adafactor.decay_rate <= 0, SLM_ERR_CONFIG,
                  "adafactor.decay_rate = %g: must be <= 0 (the second moment's decay is 1 - t^decay_rate)",
                  c->adafactor.decay_rate);
        SLM_CHECK(c->adafactor.clip_threshold > 0, SLM_ERR_CONFIG, "adafactor.clip_threshold = %g: must be > 0",
                  c->adafactor.clip_threshold);
        SLM_CHECK(!c->adafactor.warmup_init || c->adafactor.relative_step, SLM_ERR_CONFIG,
                  "adafactor.warmup_init = true needs adafactor.relative_step = true (it shapes the relative step)");
        SLM_CHECK(c->adafactor.beta1 >= 0 && c->adafactor.beta1 < 1, SLM_ERR_CONFIG,
                  "adafactor.beta1 = %g: must be in [0, 1) (0: no first moment)", c->adafactor.beta1);
    }
    if (!strcmp(c->name, "lamb"))
        SLM_CHECK(c->lamb.max_trust == 0 || c->lamb.max_trust >= c->lamb.min_trust, SLM_ERR_CONFIG,
                  "lamb.max_trust = %g is below lamb.min_trust = %g", c->lamb.max_trust, c->lamb.min_trust);
    if (!strcmp(c->name, "sgd") && c->sgd.nesterov) /* the conditions PyTorch's SGD sets */
        SLM_CHECK(c->sgd.momentum > 0 && c->sgd.dampening == 0, SLM_ERR_CONFIG,
                  "sgd.nesterov = true needs sgd.momentum > 0 and sgd.dampening = 0 (they are %g and %g)",
                  c->sgd.momentum, c->sgd.dampening);
    return SLM_OK;
}

double slm_optim_bytes_for(const slm_optim_config *c, const slm_tensor_info *tensors, int ntensors,
                           const slm_optim_segment *segs, int nsegs)
{
    double all = 0, vec = 0, fact = 0, ntens = 0;
    for (int s = 0; s < nsegs; s++) all += (double)segs[s].count;
    for (int i = 0; i < ntensors; i++) {
        const slm_tensor_info *t = &tensors[i];
        if (!t->count) continue;
        ntens++;
        if (opt_is_matrix(t)) {
            fact += (double)(t->shape[0] + t->shape[1]);
            continue;
        }
        for (int s = 0; s < nsegs; s++) { /* the tensor's elements inside the segments */
            size_t lo, hi;
            if (slm_tensor_overlap(t, segs[s].offset, segs[s].count, &lo, &hi)) vec += (double)(hi - lo);
        }
    }
    /* the same sums as the methods' setup (groups, then scratch) */
    const double tables = (double)ntensors + 1;
    if (!strcmp(c->name, "adamw")) return 8.0 * all;
    if (!strcmp(c->name, "lamb")) return 8.0 * all + 16.0 * ntens + 16.0 * tables;
    if (!strcmp(c->name, "sgd")) return c->sgd.momentum != 0 ? 4.0 * all : 0.0;
    /* Adafactor: the factored moments, the unfactored one, the first moment if any, and
     * its scratch: statistics in double, the row and column factors, per-tensor tables */
    const double state = 4.0 * fact + 4.0 * vec + (c->adafactor.beta1 > 0 ? 4.0 * all : 0.0);
    return state + 8.0 * (2.0 * ntens + fact) + 4.0 * fact + 32.0 * tables;
}
