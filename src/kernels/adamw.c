/* adamw.c - the AdamW update on one contiguous range of parameters. */
#include <math.h>
#include "shardlm/kernels.h"
#include "vecmath.h"

SLM_VECTOR_CLONES void slm_adamw_update(float *p, const float *g, float gscale, float *m, float *v, size_t n,
                                               float lr, float beta1, float beta2, float eps, float weight_decay, int t)
{
    /* Bias corrections in double: beta^t for large t loses precision in float. */
    const float bc1 = (float)(1.0 - pow(beta1, t));
    const float rbc2 = (float)(1.0 / sqrt(1.0 - pow(beta2, t)));
    const float step = lr / bc1, decay = 1.0f - lr * weight_decay;
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}

