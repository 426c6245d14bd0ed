/* gemm_impl.h - the kernels' one way to a matrix product, through the backend chosen with
 * slm_gemm_select (shardlm/kernels.h): OpenBLAS, or oneDNN when built with it.
 *
 * All products are row-major, C (M,N) = alpha op(A) (M,K) op(B) (K,N) + beta C, with
 * leading dimensions as cblas takes them; ta / tb say A / B are stored transposed. */
#ifndef SHARDLM_GEMM_IMPL_H
#define SHARDLM_GEMM_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/status.h"

/* fp32 product: cblas_sgemm or dnnl_sgemm. Safe to call from several OpenMP threads at
 * once (attention does); inside a parallel region each call runs on its own thread. */
void slm_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                  int ldb, float beta, float *C, int ldc);

/* Whether the linear layers multiply in bf16 (oneDNN selected with bf16). */
int slm_gemm_linear_bf16(void);

/* bf16 operands, fp32 accumulation and output, alpha 1; beta is 0 or 1. Only when
 * slm_gemm_linear_bf16(). Called from one thread. */
void slm_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                   float beta, float *C, int ldc);

/* x (n floats) rounded to bf16 into operand buffer `slot` (0..2), which grows to the
 * largest n asked for and is then reused: the first step sizes them once. NULL (with the
 * failure recorded) out of memory; slm_gemm_bf16 skips a NULL operand. */
enum { SLM_GEMM_SLOTS = 3 };
const uint16_t *slm_gemm_bf16_operand(int slot, const float *x, size_t n);

/* Record a failure a kernel cannot report (slm_kernels_status); the first one is kept.
 * Thread-safe. */
void slm_kernel_fail(slm_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Take back a recorded failure (a backend's check or timing provoked it: it belongs to
 * that backend, not to the run): 1 and its message, or 0 when there is none. */
int slm_kernel_failure_take(char *msg, size_t len);

#ifdef SLM_HAVE_DNNL
/* gemm_dnnl.c: the oneDNN side. */
void slm_dnnl_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc);
void slm_dnnl_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc);
#endif

#endif
