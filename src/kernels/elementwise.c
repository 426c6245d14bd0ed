/* elementwise.c - GELU (tanh approximation), SwiGLU, residual add, norms and scaling. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kclock.h"
#include "vecmath.h"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* GELU in its sigmoid form: 0.5 x (1 + tanh(u)) = x sigmoid(2u), which has no
 * cancellation for negative x. Both passes are compiled for AVX-512, AVX2 and the
 * baseline, and the loader picks the widest this CPU runs. */
SLM_VECTOR_CLONES void slm_gelu_forward(float *out, const float *inp, size_t n)
{
    KCLOCK_START;
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        const float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + exp_vec(-2.0f * u));
    }
    KCLOCK_STOP(elementwise_s);
}

/* d/dx: s + x * 2 s (1 - s) * du/dx with s = sigmoid(2u) (1 + tanh u = 2s, sech^2 u =
 * 4 s (1 - s)). */
SLM_VECTOR_CLONES void slm_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    KCLOCK_START;
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        const float u = GELU_K * (x + GELU_A * x * x * x);
        const float s = 1.0f / (1.0f + exp_vec(-2.0f * u));
        const float local = s + 2.0f * x * s * (1.0f - s) * GELU_K * (1.0f + 3.0f * GELU_A * x * x);
        dinp[i] += local * dout[i];
    }
    KCLOCK_STOP(elementwise_s);
}

/* SwiGLU with silu(x) = x sigmoid(x), sigmoid from sigmoid_vec: right to float accuracy
 * for large |x| of either sign (silu(-1e30) is 0, not inf/inf or 0 * inf). */
SLM_VECTOR_CLONES void slm_swiglu_forward(float *out, const float *gu, int N, int F)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * F > 65536)
    for (int r = 0; r < N; r++) {
        const float *g = gu + (size_t)r * 2 * F, *u = g + F;
        float *o = out + (size_t)r * F;
#pragma omp simd
        for (int j = 0; j < F; j++) {
            const float x = g[j];
            float s, sc;
            sigmoid_vec(x, &s, &sc);
            o[j] = x * s * u[j];
        }
    }
    KCLOCK_STOP(elementwise_s);
}

/* silu'(x) = s (1 + x (1 - s)), with 1 - s from sigmoid_vec (no cancellation). */
SLM_VECTOR_CLONES void slm_swiglu_backward(float *dgu, const float *gu, const float *dout, int N, int F)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * F > 65536)
    for (int r = 0; r < N; r++) {
        const float *g = gu + (size_t)r * 2 * F, *u = g + F, *dy = dout + (size_t)r * F;
        float *dg = dgu + (size_t)r * 2 * F, *du = dg + F;
#pragma omp simd
        for (int j = 0; j < F; j++) {
            const float x = g[j];
            float s, sc;
            sigmoid_vec(x, &s, &sc);
            dg[j] = dy[j] * u[j] * (s * (1.0f + x * sc));
            du[j] = dy[j] * (x * s);
        }
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_residual_forward(float *out, const float *a, const float *b, size_t n)
{
    KCLOCK_START;
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
    KCLOCK_STOP(elementwise_s);
}

double slm_sumsq(const float *x, size_t n)
{
    /* Fixed-size chunks, each summed by one thread, then the chunk sums added in order:
     * the result does not depend on the thread count. */
    enum { CHUNK = 4096, GROUP = 1024 };
    const size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double part[GROUP], total = 0.0;
    for (size_t g0 = 0; g0 < nchunks; g0 += GROUP) { /* GROUP chunks at a time: no allocation */
        const size_t g1 = g0 + GROUP < nchunks ? g0 + GROUP : nchunks;
#pragma omp parallel for if ((g1 - g0) * CHUNK > 65536)
        for (size_t c = g0; c < g1; c++) {
            const size_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
            double s = 0.0;
            for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
            part[c - g0] = s;
        }
        for (size_t c = g0; c < g1; c++) total += part[c - g0];
    }
    return total;
}

void slm_scale(float *x, float s, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
