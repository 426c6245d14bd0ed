/* schedule.c - learning-rate schedule and gradient clipping. */
#include <math.h>
#include "shardlm/kernels.h"
#include "shardlm/optim.h"

double slm_lr_at(long step, long steps, long warmup, double lr, double min_lr)
{
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    long span = steps - warmup > 1 ? steps - warmup : 1;
    double r = (double)(step - warmup) / (double)span;
    if (r > 1.0) r = 1.0;
    return min_lr + 0.5 * (1.0 + cos(3.14159265358979323846 * r)) * (lr - min_lr);
}

float slm_clip_factor(double norm, double max_norm)
{
    if (max_norm <= 0.0) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

void slm_clip_grads(float *grads, size_t n, double norm, double max_norm)
{
    const float coef = slm_clip_factor(norm, max_norm);
    if (coef != 1.0f) slm_scale(grads, coef, n);
}
