/* gemm.c - the matrix-product backend: OpenBLAS by default, oneDNN when selected (and
 * built in), and the GEMM rate probe MFU is measured against. */
#include "config.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include "gemm_impl.h"
#include "shardlm/kernels.h"
#include "shardlm/timer.h"

static slm_gemm_backend backend = SLM_GEMM_OPENBLAS;
static int linear_bf16;

int slm_gemm_available(slm_gemm_backend b)
{
#ifdef SLM_HAVE_DNNL
    if (b == SLM_GEMM_DNNL) return 1;
#endif
    return b == SLM_GEMM_OPENBLAS;
}

int slm_gemm_select(slm_gemm_backend b, int bf16)
{
    if (!slm_gemm_available(b) || (bf16 && b != SLM_GEMM_DNNL)) return -1;
    backend = b;
    linear_bf16 = bf16;
    return 0;
}

const char *slm_gemm_name(void)
{
    if (backend == SLM_GEMM_OPENBLAS) return "openblas sgemm";
    return linear_bf16 ? "onednn bf16 matmul" : "onednn sgemm";
}

int slm_gemm_linear_bf16(void) { return linear_bf16; }

void slm_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                  int ldb, float beta, float *C, int ldc)
{
#ifdef SLM_HAVE_DNNL
    if (backend == SLM_GEMM_DNNL) {
        slm_dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                lda, B, ldb, beta, C, ldc);
}

void slm_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                   float beta, float *C, int ldc)
{
#ifdef SLM_HAVE_DNNL
    slm_dnnl_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
#else
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C,
        (void)ldc;
    abort(); /* slm_gemm_select refuses bf16 without oneDNN */
#endif
}

const uint16_t *slm_gemm_bf16_operand(int slot, const float *x, size_t n)
{
    static uint16_t *buf[SLM_GEMM_SLOTS];
    static size_t cap[SLM_GEMM_SLOTS];
    if (n > cap[slot]) {
        free(buf[slot]);
        buf[slot] = malloc(n * sizeof *buf[slot]);
        if (!buf[slot]) {
            fprintf(stderr, "shardlm: out of memory for a %zu-element bf16 matmul operand\n", n);
            abort();
        }
        cap[slot] = n;
    }
    slm_bf16_from_f32(buf[slot], x, n);
    return buf[slot];
}

double slm_gemm_peak_gflops(int n, double seconds)
{
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0.0;
    }
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
        b[i] = (float)((i * 5 % 11) - 5) * 0.01f;
    }
    const uint16_t *ah = NULL, *bh = NULL;
    if (linear_bf16) {
        ah = slm_gemm_bf16_operand(0, a, nn);
        bh = slm_gemm_bf16_operand(1, b, nn);
    }
    /* one warm-up product, then the best of timed repetitions */
    double best = 0.0, start = 0.0;
    for (int rep = 0; rep == 0 || slm_now() - start < seconds; rep++) {
        double t0 = slm_now();
        if (linear_bf16) slm_gemm_bf16(0, 0, n, n, n, ah, n, bh, n, 0.0f, c, n);
        else slm_gemm_f32(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = slm_now() - t0, rate = 2.0 * n * (double)n * n / dt / 1e9;
        if (rep == 0) start = slm_now();
        else if (rate > best) best = rate;
    }
    free(a);
    free(b);
    free(c);
    return best;
}
