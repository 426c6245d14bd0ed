/* attention.c - causal grouped-query self-attention, forward and backward, blocked by
 * query rows.
 *
 * For each (batch, query head), queries are taken SLM_ATTN_TILE rows at a time. A tile of
 * rows [i0, i1) attends to keys [0, i1) only, so the scores are a tile x i1 block: one
 * sgemm for them, an exact row softmax (every row's keys are all there, no running
 * rescale), one sgemm with V. Nothing of size T x T exists, the blocks above the diagonal
 * are never computed (half the work of a full T x T product at long T), and the block is
 * reused while it is in cache. Backward recomputes each tile's probabilities from q and k
 * instead of keeping them: the forward keeps no (B, NH, T, T) tensor at all.
 *
 * Grouped-query attention (NKV key/value heads shared by NH query heads, NH/NKV each)
 * reads a query head's k and v in place, at its group's columns: no repeated copy of k
 * and v. In forward every query head writes its own output columns, so the (batch, query
 * head) pairs are dealt out to the OpenMP threads. In backward the dk and dv of a
 * key/value head collect a term from each query head of its group; rather than each
 * thread keeping its own copy to sum afterwards, the (batch, key/value head) groups are
 * dealt out, and one thread runs a group's query heads in order. No two threads write the
 * same element, and the order of the terms is fixed, so the result does not depend on how
 * many threads share the units (with a single unit, the products get the threads
 * instead, and a threaded BLAS product may round differently). With NKV = NH every group
 * is one head and this is plain multi-head attention, operation for operation.
 *
 * Each worker has its own part of the scratch, and each product runs single-threaded
 * meanwhile (OpenBLAS is told so; oneDNN sees it is inside a parallel region): the
 * products are too small (K = head size) to split well, and the softmax runs in the same
 * threads. */
#include <math.h>
#include <omp.h>
#include <cblas.h>
#include "gemm_impl.h"
#include "kclock.h"
#include "vecmath.h"

static size_t tile_rows(int T) { return (size_t)(T < SLM_ATTN_TILE ? T : SLM_ATTN_TILE); }

size_t slm_attention_scratch_floats(int T, int threads)
{
    return (size_t)(threads > 0 ? threads : 1) * 2 * tile_rows(T) * (size_t)T;
}

/* Threads the kernels use: OpenMP's, no more than the scratch has room for, nor than
 * there are units of work to deal out. */
static int worker_count(size_t scratch_floats, int T, int units)
{
    int n = omp_get_max_threads();
    const size_t per = slm_attention_scratch_floats(T, 1);
    if ((size_t)n * per > scratch_floats) n = (int)(scratch_floats / per);
    if (n > units) n = units;
    return n > 0 ? n : 1;
}

/* Scores of query rows [i0, i1) against keys [0, i1) into s (rows x i1, row-major), then
 * each row's causal softmax in place: row i keeps columns 0..i, the rest become 0. */
SLM_VECTOR_CLONES static void tile_probabilities(float *s, const float *q, const float *k, int ld, int i0, int i1,
                                                 int hs, float scale)
{
    const int rows = i1 - i0, L = i1;
    slm_gemm_f32(0, 1, rows, L, hs, scale, q + (size_t)i0 * ld, ld, k, ld, 0.0f, s, L);
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * L;
        const int n = i0 + r + 1; /* the query sees keys 0 .. its own position */
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            row[j] = exp_vec(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < L; j++) row[j] = 0.0f;
    }
}

/* Softmax backward in place over a tile, folded with the score scale:
 * ds = p * (dp - <p, dp>) * scale, row by row over the keys each query sees. */
SLM_VECTOR_CLONES static void tile_softmax_backward(float *dp, const float *p, int i0, int rows, int L, float scale)
{
    for (int r = 0; r < rows; r++) {
        const float *pr = p + (size_t)r * L;
        float *dr = dp + (size_t)r * L;
        const int n = i0 + r + 1;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < n; j++) dot += pr[j] * dr[j];
#pragma omp simd
        for (int j = 0; j < n; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
        for (int j = n; j < L; j++) dr[j] = 0.0f;
    }
}

/* The row strides of the packed layout: ld floats from one row of qkv (or dqkv) to the
 * next, ldy from one row of the output (or its gradient) to the next. A head's q, k, v
 * and y are pointers to their columns of the batch's first row. */
typedef struct head_view {
    int ld, ldy;
} head_view;

static void head_forward(float *y, float *scratch, const float *q, const float *k, const float *v, head_view g,
                         int T, int hs, float scale)
{
    for (int i0 = 0; i0 < T; i0 += SLM_ATTN_TILE) {
        const int i1 = i0 + SLM_ATTN_TILE < T ? i0 + SLM_ATTN_TILE : T;
        tile_probabilities(scratch, q, k, g.ld, i0, i1, hs, scale);
        /* y rows [i0, i1) (rows, hs) = p (rows, i1) @ v[0:i1] (i1, hs) */
        slm_gemm_f32(0, 0, i1 - i0, hs, i1, 1.0f, scratch, i1, v, g.ld, 0.0f, y + (size_t)i0 * g.ldy, g.ldy);
    }
}

/* Accumulates one query head's share into dq, and into its group's dk and dv. */
static void head_backward(float *dq, float *dk, float *dv, float *p, float *dp, const float *dy, const float *q,
                          const float *k, const float *v, head_view g, int T, int hs, float scale)
{
    for (int i0 = 0; i0 < T; i0 += SLM_ATTN_TILE) {
        const int i1 = i0 + SLM_ATTN_TILE < T ? i0 + SLM_ATTN_TILE : T, rows = i1 - i0, L = i1;
        const float *dyt = dy + (size_t)i0 * g.ldy;
        tile_probabilities(p, q, k, g.ld, i0, i1, hs, scale);
        /* dp (rows, L) = dy_t (rows, hs) @ v[0:L]^T ; dv[0:L] += p^T @ dy_t */
        slm_gemm_f32(0, 1, rows, L, hs, 1.0f, dyt, g.ldy, v, g.ld, 0.0f, dp, L);
        slm_gemm_f32(1, 0, L, hs, rows, 1.0f, p, L, dyt, g.ldy, 1.0f, dv, g.ld);
        tile_softmax_backward(dp, p, i0, rows, L, scale);
        /* dq_t += ds @ k[0:L] ; dk[0:L] += ds^T @ q_t */
        slm_gemm_f32(0, 0, rows, hs, L, 1.0f, dp, L, k, g.ld, 1.0f, dq + (size_t)i0 * g.ld, g.ld);
        slm_gemm_f32(1, 0, L, hs, rows, 1.0f, dp, L, q + (size_t)i0 * g.ld, g.ld, 1.0f, dk, g.ld);
    }
}

/* Floating-point operations of the tiles' products: 2 * sum over tiles of rows * L * hs,
 * times the number of products per tile. */
static double tile_flop(int T, int hs, int products)
{
    double f = 0;
    for (int i0 = 0; i0 < T; i0 += SLM_ATTN_TILE) {
        const int i1 = i0 + SLM_ATTN_TILE < T ? i0 + SLM_ATTN_TILE : T;
        f += 2.0 * (i1 - i0) * i1 * hs * products;
    }
    return f;
}

/* The column of the first packed row where query head h's q, and its group's k and v,
 * start. */
static size_t q_col(int h, int hs) { return (size_t)h * hs; }
static size_t k_col(int h, int NH, int NKV, int hs) { return (size_t)(NH + h / (NH / NKV)) * hs; }
static size_t v_col(int h, int NH, int NKV, int hs) { return k_col(h, NH, NKV, hs) + (size_t)NKV * hs; }

/* One pass: forward writes y (out); backward accumulates dqkv (out) from dy. The units
 * dealt to the threads, each with its part of the scratch, are (batch, query head) pairs
 * in forward, and (batch, key/value head) groups in backward, a group's query heads run
 * in order by one thread. */
static void attention_pass(int backward, float *out, float *scratch, size_t scratch_floats, const float *dy,
                           const float *qkv, int B, int T, int NH, int NKV, int hs)
{
    KCLOCK_START;
    const int span = backward ? NH / NKV : 1, per_batch = NH / span, units = B * per_batch;
    const int workers = worker_count(scratch_floats, T, units);
    const head_view g = {(NH + 2 * NKV) * hs, NH * hs};
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t per = slm_attention_scratch_floats(T, 1);
    const int blas_threads = openblas_get_num_threads();
    if (workers > 1) openblas_set_num_threads(1);
#pragma omp parallel for num_threads(workers) schedule(static) if (workers > 1)
    for (int u = 0; u < units; u++) {
        const int b = u / per_batch, h0 = u % per_batch * span;
        const float *row = qkv + (size_t)b * T * g.ld;
        float *own = scratch + (size_t)omp_get_thread_num() * per;
        for (int h = h0; h < h0 + span; h++) {
            const size_t qc = q_col(h, hs), kc = k_col(h, NH, NKV, hs), vc = v_col(h, NH, NKV, hs);
            if (backward) {
                float *drow = out + (size_t)b * T * g.ld;
                head_backward(drow + qc, drow + kc, drow + vc, own, own + per / 2, dy + (size_t)b * T * g.ldy + qc,
                              row + qc, row + kc, row + vc, g, T, hs, scale);
            } else {
                head_forward(out + (size_t)b * T * g.ldy + qc, own, row + qc, row + kc, row + vc, g, T, hs, scale);
            }
        }
    }
    if (workers > 1) openblas_set_num_threads(blas_threads);
    slm_kernel_clock.attention_flop += B * NH * tile_flop(T, hs, backward ? 5 : 2);
    KCLOCK_STOP(attention_s);
}

void slm_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv, int B, int T, int NH,
                           int NKV, int hs)
{
    attention_pass(0, out, scratch, scratch_floats, NULL, qkv, B, T, NH, NKV, hs);
}

void slm_attention_backward(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *qkv,
                            int B, int T, int NH, int NKV, int hs)
{
    attention_pass(1, dqkv, scratch, scratch_floats, dout, qkv, B, T, NH, NKV, hs);
}
