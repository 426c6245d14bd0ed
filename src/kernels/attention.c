/* attention.c - causal multi-head self-attention, forward and backward.
 *
 * Each (batch, head) pair is two sgemm calls around a row-wise causal softmax. The
 * probabilities are kept (B,NH,T,T) for backward; a fused, cache-blocked kernel that
 * never holds T x T per head is the planned replacement for long sequences. */
#include <math.h>
#include <cblas.h>
#include "shardlm/kernels.h"

/* Row-wise causal softmax of a T x T score block, in place: row i uses columns 0..i. */
static void causal_softmax_rows(float *s, int T)
{
#pragma omp parallel for if ((size_t)T * T > 65536)
    for (int i = 0; i < T; i++) {
        float *row = s + (size_t)i * T;
        float mx = row[0];
        for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j <= i; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

void slm_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                           int NH)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *a = att + ((size_t)b * NH + h) * T * T;
            /* scores (T,T) = scale * q (T,hs) @ k^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3,
                        0.0f, a, T);
            causal_softmax_rows(a, T);
            /* out_h (T,hs) = att (T,T) @ v (T,hs) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, v, C3,
                        0.0f, out + (size_t)b * T * C + (size_t)h * hs, C);
        }
}

void slm_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const size_t off = (size_t)b * T * C3 + (size_t)h * hs;
            const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + ((size_t)b * NH + h) * T * T;
            const float *dy = dout + (size_t)b * T * C + (size_t)h * hs;
            /* datt (T,T) = dy (T,hs) @ v^T ; dv += att^T @ dy */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dy, C, v, C3,
                        0.0f, scratch, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, dy, C,
                        1.0f, dv, C3);
            /* softmax backward, folded with the score scale: dscore = a*(datt - <a,datt>) */
#pragma omp parallel for if ((size_t)T * T > 65536)
            for (int i = 0; i < T; i++) {
                const float *ar = a + (size_t)i * T;
                float *dr = scratch + (size_t)i * T;
                float dot = 0.0f;
                for (int j = 0; j <= i; j++) dot += ar[j] * dr[j];
                for (int j = 0; j <= i; j++) dr[j] = ar[j] * (dr[j] - dot) * scale;
                for (int j = i + 1; j < T; j++) dr[j] = 0.0f;
            }
            /* dq += dscore @ k ; dk += dscore^T @ q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, scratch, T, k,
                        C3, 1.0f, dq, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, scratch, T, q,
                        C3, 1.0f, dk, C3);
        }
}
