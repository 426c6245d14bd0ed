/* matmul.c - the linear layer, y = x W^T + b, through the selected GEMM backend. */
#include "gemm_impl.h"
#include "kclock.h"

slm_kernel_time slm_kernel_clock;

void slm_matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                        int N, int IC, int OC)
{
    KCLOCK_START;
    if (bias) {
        /* Seed the output with the bias so the product can accumulate onto it (beta = 1). */
#pragma omp parallel for if ((size_t)N * OC > 65536)
        for (int i = 0; i < N; i++) {
            float *o = out + (size_t)i * OC;
            for (int j = 0; j < OC; j++) o[j] = bias[j];
        }
    }
    const float beta = bias ? 1.0f : 0.0f;
    if (slm_gemm_linear_bf16()) {
        const uint16_t *x = slm_gemm_bf16_operand(0, inp, (size_t)N * IC);
        const uint16_t *wb = slm_gemm_bf16_operand(1, w, (size_t)OC * IC);
        slm_gemm_bf16(0, 1, N, OC, IC, x, IC, wb, IC, beta, out, OC);
    } else {
        slm_gemm_f32(0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
    }
    KCLOCK_STOP(matmul_s);
    slm_kernel_clock.matmul_flop += 2.0 * N * IC * OC;
}

void slm_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, int N, int IC, int OC)
{
    KCLOCK_START;
    /* dinp (N,IC) += dout (N,OC) @ w (OC,IC);  dw (OC,IC) += dout^T (OC,N) @ inp (N,IC) */
    if (slm_gemm_linear_bf16()) {
        const uint16_t *d = slm_gemm_bf16_operand(0, dout, (size_t)N * OC);
        if (dinp) slm_gemm_bf16(0, 0, N, IC, OC, d, OC, slm_gemm_bf16_operand(1, w, (size_t)OC * IC), IC, 1.0f,
                                dinp, IC);
        slm_gemm_bf16(1, 0, OC, IC, N, d, OC, slm_gemm_bf16_operand(2, inp, (size_t)N * IC), IC, 1.0f, dw, IC);
    } else {
        if (dinp) slm_gemm_f32(0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, 1.0f, dinp, IC);
        slm_gemm_f32(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
    }
    if (dbias) {
        /* Column blocks keep the row walk contiguous; each block sums rows in order. */
        enum { JB = 128 };
#pragma omp parallel for if ((size_t)N * OC > 65536)
        for (int j0 = 0; j0 < OC; j0 += JB) {
            int j1 = j0 + JB < OC ? j0 + JB : OC;
            float acc[JB] = {0};
            for (int i = 0; i < N; i++) {
                const float *d = dout + (size_t)i * OC;
                for (int j = j0; j < j1; j++) acc[j - j0] += d[j];
            }
            for (int j = j0; j < j1; j++) dbias[j] += acc[j - j0];
        }
    }
    KCLOCK_STOP(matmul_s);
    slm_kernel_clock.matmul_flop += (dinp ? 4.0 : 2.0) * N * IC * OC;
}
