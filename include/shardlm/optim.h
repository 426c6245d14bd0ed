/* shardlm/optim.h - AdamW over the model's tensors, the learning-rate schedule and
 * global gradient-norm clipping. */
#ifndef SHARDLM_OPTIM_H
#define SHARDLM_OPTIM_H

#include <stddef.h>
#include "shardlm/model.h"
#include "shardlm/status.h"

/* Learning rate at 0-based step: linear warmup over warmup steps to lr, then cosine
 * decay to min_lr at the last step:
 *   step < warmup:  lr * (step+1) / warmup
 *   otherwise:      min_lr + 0.5*(1 + cos(pi * r)) * (lr - min_lr),
 *                   r = (step - warmup) / max(1, steps - warmup), clamped to [0,1]. */
double slm_lr_at(long step, long steps, long warmup, double lr, double min_lr);

/* Scale grads so their global L2 norm is at most max_norm (no-op if max_norm <= 0),
 * as torch.nn.utils.clip_grad_norm_: factor max_norm / (norm + 1e-6) when below 1.
 * norm is the norm before clipping. */
void slm_clip_grads(float *grads, size_t n, double norm, double max_norm);
/* The factor slm_clip_grads multiplies by (1 when it leaves the gradients alone). */
float slm_clip_factor(double norm, double max_norm);

typedef struct slm_adamw *slm_adamw_t;

/* Optimizer state (two fp32 moments) for n parameters. Local. */
slm_status slm_adamw_create(size_t n, double beta1, double beta2, double eps,
                            double weight_decay, slm_adamw_t *opt);
void slm_adamw_destroy(slm_adamw_t *opt);
/* One step over the tensors of a model: decay only where tensors[i].decay is set.
 * Same as slm_adamw_begin_step followed by one slm_adamw_update_range over everything. */
void slm_adamw_step(slm_adamw_t opt, float *params, const float *grads,
                    const slm_tensor_info *tensors, int ntensors, double lr);
/* For sharded state: count the step once, then update each owned range. */
void slm_adamw_begin_step(slm_adamw_t opt);
/* Multiply the gradients by scale as this step's updates read them (begin_step resets it
 * to 1): clipping folded into the update, which saves a pass over the gradients. The
 * result is bitwise that of scaling the gradients first. */
void slm_adamw_set_grad_scale(slm_adamw_t opt, float scale);
/* Update count parameters whose first element is global_offset in the model's
 * parameter index space (which tensor, hence whether to decay) and state_offset in this
 * optimizer's moments. */
void slm_adamw_update_range(slm_adamw_t opt, float *params, const float *grads,
                            size_t state_offset, size_t global_offset, size_t count,
                            const slm_tensor_info *tensors, int ntensors, double lr);
/* Steps taken so far, and setting them when state is restored from a checkpoint. */
long slm_adamw_steps(slm_adamw_t opt);
void slm_adamw_set_steps(slm_adamw_t opt, long t);
/* The first and second moments (n floats each), for checkpoints. */
void slm_adamw_moments(slm_adamw_t opt, float **m, float **v);

#endif
