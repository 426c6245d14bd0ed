/* crossentropy.c - fused softmax + cross-entropy over the vocabulary.
 * Forward keeps only the row log-sum-exp; backward rebuilds the softmax from it and
 * overwrites the logits with their gradient, so no (N,V) probability buffer exists. */
#include <math.h>
#include "kclock.h"
#include "vecmath.h"

/* The largest of z[0..V). */
static inline float row_max(const float *z, int V)
{
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    return mx;
}

/* sum of e^(z[j] - shift), accumulated in double. */
static inline double row_sum_exp(const float *z, float shift, int V)
{
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < V; j++) sum += exp_vec(z[j] - shift);
    return sum;
}

SLM_VECTOR_CLONES void slm_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        const float mx = row_max(z, V);
        const float l = mx + (float)log(row_sum_exp(z, mx, V));
        lse[i] = l;
        losses[i] = l - z[targets[i]];
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                               float scale, int N, int V)
{
    KCLOCK_START;
    slm_crossentropy_backward_part(logits, lse, targets, 0, scale, N, V);
    KCLOCK_STOP(elementwise_s);
}

SLM_VECTOR_CLONES void slm_rowmax(float *rowmax, const float *logits, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) rowmax[i] = row_max(logits + (size_t)i * V, V);
    KCLOCK_STOP(elementwise_s);
}

SLM_VECTOR_CLONES void slm_crossentropy_part(float *part, const float *logits, const float *rowmax, const int32_t *targets,
                           int v0, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        const double sum = row_sum_exp(z, rowmax[i], V);
        const int32_t t = targets[i] - v0;
        part[2 * i] = (float)sum;
        part[2 * i + 1] = t >= 0 && t < V ? z[t] : 0.0f;
    }
    KCLOCK_STOP(elementwise_s);
}

SLM_VECTOR_CLONES void slm_crossentropy_backward_part(float *logits, const float *lse, const int32_t *targets, int v0,
                                    float scale, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        const float l = lse[i];
#pragma omp simd
        for (int j = 0; j < V; j++) z[j] = exp_vec(z[j] - l) * scale;
        const int32_t t = targets[i] - v0;
        if (t >= 0 && t < V) z[t] -= scale;
    }
    KCLOCK_STOP(elementwise_s);
}
