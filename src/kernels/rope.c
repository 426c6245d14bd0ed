/* rope.c - rotary position embeddings (RoPE) in the rotate-half convention, on the q and k
 * heads of the packed attention input.
 *
 * Dimension i of a head pairs with dimension i + hs/2 (Hugging Face's Llama; Meta's own
 * checkpoints pair 2i with 2i+1, which slm_rope_permute_rows converts by reordering the
 * projection's rows, so one kernel serves both). The pair is rotated by the angle
 * t * inv_freq[i] of the row's position t.
 *
 * The frequencies and the angles' cosines and sines are computed in double and rounded
 * once: at t in the thousands an angle formed in float is already off by some 1e-4 rad,
 * and the table is made once for a sequence length, not at every step. The rotation
 * itself is in float, in place, and costs as much as a copy; backward rotates the
 * gradient by the opposite angle (a rotation's transpose is its inverse), the same loop
 * with sin negated, which is exact. */
#include <math.h>
#include <string.h>
#include "kclock.h"
#include "vecmath.h"

#define TWO_PI 6.28318530717958647692

void slm_rope_freqs(double *inv_freq, int hs, double theta, const slm_rope_scaling *s)
{
    const int half = hs / 2;
    for (int i = 0; i < half; i++) inv_freq[i] = pow(theta, -2.0 * i / hs);
    if (!s || s->kind != SLM_ROPE_LLAMA3) return;
    /* Llama 3.1: wavelengths shorter than original_max_pos / high_freq_factor are kept,
     * those longer than original_max_pos / low_freq_factor stretched by factor, and the
     * band between blends the two linearly in original_max_pos / wavelength. */
    const double low_wavelen = s->original_max_pos / s->low_freq_factor;
    const double high_wavelen = s->original_max_pos / s->high_freq_factor;
    for (int i = 0; i < half; i++) {
        const double f = inv_freq[i], wavelen = TWO_PI / f;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
            inv_freq[i] = f / s->factor;
        } else {
            const double smooth = (s->original_max_pos / wavelen - s->low_freq_factor) /
                                  (s->high_freq_factor - s->low_freq_factor);
            inv_freq[i] = (1.0 - smooth) * f / s->factor + smooth * f;
        }
    }
}

void slm_rope_table(float *cos_tab, float *sin_tab, int T, int hs, const double *inv_freq)
{
    KCLOCK_START;
    const int half = hs / 2;
#pragma omp parallel for if ((size_t)T * half > 16384)
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            const double a = (double)t * inv_freq[i];
            cos_tab[(size_t)t * half + i] = (float)cos(a);
            sin_tab[(size_t)t * half + i] = (float)sin(a);
        }
    KCLOCK_STOP(elementwise_s);
}

/* The rotation of every q and k head of every row, by the row's angles, or by their
 * negatives when `inverse`. The q heads and the k heads are adjacent in a row, so they are
 * the row's first NH + NKV heads. */
SLM_VECTOR_CLONES static void rotate(float *qkv, int B, int T, int NH, int NKV, int hs, const float *cos_tab,
                                     const float *sin_tab, int inverse)
{
    KCLOCK_START;
    const int half = hs / 2, heads = NH + NKV, N = B * T;
    const float dir = inverse ? -1.0f : 1.0f; /* sin(-a) = -sin(a), and the negation is exact */
    const size_t ld = (size_t)(NH + 2 * NKV) * hs;
#pragma omp parallel for if ((size_t)N * heads * hs > 65536)
    for (int r = 0; r < N; r++) {
        const float *c = cos_tab + (size_t)(r % T) * half, *s = sin_tab + (size_t)(r % T) * half;
        for (int h = 0; h < heads; h++) {
            float *x = qkv + r * ld + (size_t)h * hs, *y = x + half;
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float x1 = x[i], x2 = y[i], sn = dir * s[i];
                x[i] = x1 * c[i] - x2 * sn;
                y[i] = x2 * c[i] + x1 * sn;
            }
        }
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_rope_forward(float *qkv, int B, int T, int NH, int NKV, int hs, const float *cos_tab, const float *sin_tab)
{
    rotate(qkv, B, T, NH, NKV, hs, cos_tab, sin_tab, 0);
}

void slm_rope_backward(float *dqkv, int B, int T, int NH, int NKV, int hs, const float *cos_tab,
                       const float *sin_tab)
{
    rotate(dqkv, B, T, NH, NKV, hs, cos_tab, sin_tab, 1);
}

void slm_rope_permute_rows(float *dst, const float *src, int n_heads, int hs, int cols, int to_half)
{
    const int half = hs / 2;
    const size_t row = (size_t)cols * sizeof(float);
    for (int h = 0; h < n_heads; h++) {
        const size_t base = (size_t)h * hs;
        for (int i = 0; i < half; i++) {
            /* row 2i pairs with 2i+1 when interleaved, row i with half + i when rotating halves */
            const size_t inter[2] = {base + 2 * (size_t)i, base + 2 * (size_t)i + 1};
            const size_t halves[2] = {base + (size_t)i, base + (size_t)(half + i)};
            for (int j = 0; j < 2; j++) {
                const size_t to = to_half ? halves[j] : inter[j], from = to_half ? inter[j] : halves[j];
                memcpy(dst + to * cols, src + from * cols, row);
            }
        }
    }
}
