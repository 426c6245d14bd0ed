/* crossentropy.c - fused softmax + cross-entropy over the vocabulary.
 * Forward keeps only the row log-sum-exp; backward rebuilds the softmax from it and
 * overwrites the logits with their gradient, so no (N,V) probability buffer exists. */
#include <math.h>
#include "kclock.h"

void slm_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx = z[0];
        for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += expf(z[j] - mx);
        float l = mx + (float)log(sum);
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

void slm_rowmax(float *rowmax, const float *logits, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        rowmax[i] = mx;
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_crossentropy_part(float *part, const float *logits, const float *rowmax, const int32_t *targets,
                           int v0, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += expf(z[j] - rowmax[i]);
        const int32_t t = targets[i] - v0;
        part[2 * i] = (float)sum;
        part[2 * i + 1] = t >= 0 && t < V ? z[t] : 0.0f;
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_crossentropy_backward_part(float *logits, const float *lse, const int32_t *targets, int v0,
                                    float scale, int N, int V)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        float l = lse[i];
        for (int j = 0; j < V; j++) z[j] = expf(z[j] - l) * scale;
        const int32_t t = targets[i] - v0;
        if (t >= 0 && t < V) z[t] -= scale;
    }
    KCLOCK_STOP(elementwise_s);
}
