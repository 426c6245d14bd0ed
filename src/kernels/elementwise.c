/* elementwise.c - GELU (tanh approximation), residual add, norms and scaling. */
#include <math.h>
#include "shardlm/kernels.h"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

void slm_gelu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

void slm_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float sech2 = 1.0f - th * th;
        float local = 0.5f * (1.0f + th) +
                      0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

void slm_residual_forward(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

double slm_sumsq(const float *x, size_t n)
{
    /* Fixed-size chunks summed in order: the result does not depend on thread count. */
    enum { CHUNK = 4096 };
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double total = 0.0;
    for (size_t c0 = 0; c0 < nchunks; c0++) {
        size_t lo = c0 * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        total += s;
    }
    return total;
}

void slm_scale(float *x, float s, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
