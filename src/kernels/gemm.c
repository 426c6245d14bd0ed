/* gemm.c - the matrix-product backend: OpenBLAS, or oneDNN when selected (and built in),
 * the GEMM rate probe MFU is measured against, and the kernels' recorded failure. */
#include "config.h"
#include <cblas.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm_impl.h"
#include "shardlm/kernels.h"
#include "shardlm/timer.h"

static slm_gemm_backend backend = SLM_GEMM_OPENBLAS;
static int linear_bf16;
/* Tests only: SLM_TEST_GEMM_CORRUPT=openblas|dnnl makes that backend's products wrong (one
 * element off by 1), as a CPU whose kernels compute wrong results would; the check must
 * refuse it and nothing may use it. */
static int corrupt = -1;

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
    const char *c = getenv("SLM_TEST_GEMM_CORRUPT");
    corrupt = !c ? -1 : !strcmp(c, "openblas") ? SLM_GEMM_OPENBLAS : !strcmp(c, "dnnl") ? SLM_GEMM_DNNL : -1;
    return 0;
}

slm_gemm_backend slm_gemm_selected(void) { return backend; }

const slm_gemm_candidate slm_gemm_candidates[SLM_GEMM_NCANDIDATES] = {
    {SLM_GEMM_OPENBLAS, 0}, {SLM_GEMM_DNNL, 0}, {SLM_GEMM_DNNL, 1}};

const char *slm_gemm_candidate_name(slm_gemm_candidate c)
{
    if (c.backend == SLM_GEMM_OPENBLAS) return "openblas sgemm";
    return c.bf16 ? "onednn bf16 matmul" : "onednn sgemm";
}

const char *slm_gemm_name(void) { return slm_gemm_candidate_name((slm_gemm_candidate){backend, linear_bf16}); }

int slm_gemm_linear_bf16(void) { return linear_bf16; }

/* --- the recorded failure ------------------------------------------------------------ */

static atomic_int failed;
static slm_status failure_code;
static char failure[512];

void slm_kernel_fail(slm_status code, const char *fmt, ...)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&failed, &expected, 1)) return; /* the first one is kept */
    failure_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
    atomic_store(&failed, 2); /* the message is complete */
}

int slm_kernel_failure_take(char *msg, size_t len)
{
    if (atomic_load(&failed) != 2) return 0;
    snprintf(msg, len, "%s", failure);
    atomic_store(&failed, 0);
    return 1;
}

slm_status slm_kernels_status(void)
{
    if (atomic_load(&failed) != 2) return SLM_OK;
    return SLM_ERROR(failure_code, "%s", failure);
}

/* --- products ------------------------------------------------------------------------- */

void slm_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                  int ldb, float beta, float *C, int ldc)
{
#ifdef SLM_HAVE_DNNL
    if (backend == SLM_GEMM_DNNL) slm_dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
#endif
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                    A, lda, B, ldb, beta, C, ldc);
    if (corrupt == (int)backend && M > 0 && N > 0) C[0] += 1.0f;
}

void slm_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                   float beta, float *C, int ldc)
{
    if (!A || !B) return; /* an operand could not be allocated: recorded, the step fails */
#ifdef SLM_HAVE_DNNL
    slm_dnnl_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    if (corrupt == (int)backend && M > 0 && N > 0) C[0] += 1.0f;
#else
    (void)ta, (void)tb, (void)lda, (void)ldb, (void)beta, (void)ldc;
    (void)M, (void)N, (void)K, (void)C;
    slm_kernel_fail(SLM_ERR_UNSUPPORTED, "bf16 products need oneDNN, which this shardlm was built without");
#endif
}

const uint16_t *slm_gemm_bf16_operand(int slot, const float *x, size_t n)
{
    static uint16_t *buf[SLM_GEMM_SLOTS];
    static size_t cap[SLM_GEMM_SLOTS];
    if (n > cap[slot]) {
        free(buf[slot]);
        buf[slot] = malloc(n * sizeof *buf[slot]);
        cap[slot] = buf[slot] ? n : 0;
        if (!buf[slot]) {
            slm_kernel_fail(SLM_ERR_NOMEM, "out of memory for a %zu-element bf16 matmul operand", n);
            return NULL;
        }
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
