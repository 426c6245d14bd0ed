/* attention.c - causal multi-head self-attention, forward and backward, blocked by
 * query rows.
 *
 * For each (batch, head), queries are taken SLM_ATTN_TILE rows at a time. A tile of rows
 * [i0, i1) attends to keys [0, i1) only, so the scores are a tile x i1 block: one sgemm
 * for them, an exact row softmax (every row's keys are all there, no running rescale),
 * one sgemm with V. Nothing of size T x T exists, the blocks above the diagonal are never
 * computed (half the work of a full T x T product at long T), and the block is reused
 * while it is in cache. Backward recomputes each tile's probabilities from q and k
 * instead of keeping them: the forward keeps no (B, NH, T, T) tensor at all. */
#include <math.h>
#include <cblas.h>
#include "kclock.h"

size_t slm_attention_scratch_floats(int T)
{
    const size_t tile = (size_t)(T < SLM_ATTN_TILE ? T : SLM_ATTN_TILE);
    return 2 * tile * (size_t)T;
}

/* Scores of query rows [i0, i1) against keys [0, i1) into s (rows x i1, row-major), then
 * each row's causal softmax in place: row i keeps columns 0..i, the rest become 0. */
static void tile_probabilities(float *s, const float *q, const float *k, int ld, int i0, int i1, int hs,
                               float scale)
{
    const int rows = i1 - i0, L = i1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, L, hs, scale, q + (size_t)i0 * ld, ld, k, ld, 0.0f,
                s, L);
#pragma omp parallel for if ((size_t)rows * L > 65536)
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * L;
        const int last = i0 + r; /* the query's own position */
        float mx = row[0];
        for (int j = 1; j <= last; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j <= last; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= last; j++) row[j] *= inv;
        for (int j = last + 1; j < L; j++) row[j] = 0.0f;
    }
}

void slm_attention_forward(float *out, float *scratch, const float *qkv, int B, int T, int C, int NH)
{
    KCLOCK_START;
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *y = out + (size_t)b * T * C + (size_t)h * hs;
            for (int i0 = 0; i0 < T; i0 += SLM_ATTN_TILE) {
                const int i1 = i0 + SLM_ATTN_TILE < T ? i0 + SLM_ATTN_TILE : T;
                tile_probabilities(scratch, q, k, C3, i0, i1, hs, scale);
                slm_kernel_clock.attention_flop += 4.0 * (i1 - i0) * i1 * hs; /* two products */
                /* y rows [i0, i1) (rows, hs) = p (rows, i1) @ v[0:i1] (i1, hs) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hs, i1, 1.0f, scratch, i1, v, C3,
                            0.0f, y + (size_t)i0 * C, C);
            }
        }
    KCLOCK_STOP(attention_s);
}

void slm_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, int B, int T, int C,
                            int NH)
{
    KCLOCK_START;
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t tile_floats = slm_attention_scratch_floats(T) / 2;
    float *p = scratch, *dp = scratch + tile_floats;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const size_t off = (size_t)b * T * C3 + (size_t)h * hs;
            const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
            const float *dy = dout + (size_t)b * T * C + (size_t)h * hs;
            for (int i0 = 0; i0 < T; i0 += SLM_ATTN_TILE) {
                const int i1 = i0 + SLM_ATTN_TILE < T ? i0 + SLM_ATTN_TILE : T, rows = i1 - i0, L = i1;
                const float *dyt = dy + (size_t)i0 * C;
                tile_probabilities(p, q, k, C3, i0, i1, hs, scale);
                slm_kernel_clock.attention_flop += 10.0 * rows * L * hs; /* five products */
                /* dp (rows, L) = dy_t (rows, hs) @ v[0:L]^T ; dv[0:L] += p^T @ dy_t */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, L, hs, 1.0f, dyt, C, v, C3, 0.0f, dp, L);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, hs, rows, 1.0f, p, L, dyt, C, 1.0f, dv, C3);
                /* softmax backward, folded with the score scale: ds = p * (dp - <p, dp>) * scale */
#pragma omp parallel for if ((size_t)rows * L > 65536)
                for (int r = 0; r < rows; r++) {
                    const float *pr = p + (size_t)r * L;
                    float *dr = dp + (size_t)r * L;
                    const int last = i0 + r;
                    float dot = 0.0f;
                    for (int j = 0; j <= last; j++) dot += pr[j] * dr[j];
                    for (int j = 0; j <= last; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                    for (int j = last + 1; j < L; j++) dr[j] = 0.0f;
                }
                /* dq_t += ds @ k[0:L] ; dk[0:L] += ds^T @ q_t */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, L, 1.0f, dp, L, k, C3, 1.0f,
                            dq + (size_t)i0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, hs, rows, 1.0f, dp, L, q + (size_t)i0 * C3,
                            C3, 1.0f, dk, C3);
            }
        }
    KCLOCK_STOP(attention_s);
}
