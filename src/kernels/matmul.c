/* matmul.c - the linear layer, y = x W^T + b, through OpenBLAS sgemm. */
#include <cblas.h>
#include "kclock.h"

slm_kernel_time slm_kernel_clock;

void slm_matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                        int N, int IC, int OC)
{
    KCLOCK_START;
    if (bias) {
        /* Seed the output with the bias so sgemm can accumulate onto it (beta = 1). */
#pragma omp parallel for if ((size_t)N * OC > 65536)
        for (int i = 0; i < N; i++) {
            float *o = out + (size_t)i * OC;
            for (int j = 0; j < OC; j++) o[j] = bias[j];
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w, IC,
                bias ? 1.0f : 0.0f, out, OC);
    KCLOCK_STOP(matmul_s);
    slm_kernel_clock.matmul_flop += 2.0 * N * IC * OC;
}

void slm_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, int N, int IC, int OC)
{
    KCLOCK_START;
    if (dinp) /* dinp (N,IC) += dout (N,OC) @ w (OC,IC) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, w,
                    IC, 1.0f, dinp, IC);
    /* dw (OC,IC) += dout^T (OC,N) @ inp (N,IC) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC,
                1.0f, dw, IC);
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
