/* rmsnorm.c - RMSNorm forward/backward over the channel dimension (Llama's norm: no mean
 * subtracted, no bias).
 *
 * The mean square is accumulated in double, as LayerNorm accumulates its moments: at
 * C in the thousands a float sum loses a few bits, and the row is read once either way.
 * Rows are independent and run in parallel. The weight gradient is a sum over rows; it is
 * split by columns instead, each column summed over the rows in row order by one thread,
 * so it is the serial sum whatever the thread count (bitwise reproducible) and still
 * runs in parallel. */
#include <math.h>
#include "kclock.h"

/* Columns of dw one thread sums at a time: wide enough for whole cache lines per row. */
enum { DW_COLUMNS = 64 };

void slm_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        const float s = (float)(1.0 / sqrt(ss / C + eps));
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * s * w[c];
        rstd[i] = s;
    }
    KCLOCK_STOP(elementwise_s);
}

/* With xhat = x * rstd: dx = rstd * (w dy - xhat * mean(w dy xhat)), dw += xhat dy. */
void slm_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                          const float *rstd, int N, int C)
{
    KCLOCK_START;
    const int par = (size_t)N * C > 65536;
#pragma omp parallel for if (par)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        const float s = rstd[i];
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)(w[c] * dy[c]) * (x[c] * s);
        const float a = (float)(dot / C);
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) dx[c] += (w[c] * dy[c] - x[c] * s * a) * s;
    }
    const int nblocks = (C + DW_COLUMNS - 1) / DW_COLUMNS;
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < nblocks; blk++) {
        const int c0 = blk * DW_COLUMNS, c1 = c0 + DW_COLUMNS < C ? c0 + DW_COLUMNS : C;
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            const float s = rstd[i];
            for (int c = c0; c < c1; c++) dw[c] += x[c] * s * dy[c];
        }
    }
    KCLOCK_STOP(elementwise_s);
}
