/* layernorm.c - LayerNorm forward/backward over the channel dimension (eps 1e-5). */
#include <math.h>
#include "kclock.h"

void slm_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, int N, int C)
{
    KCLOCK_START;
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        double m = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        double v = 0.0;
        for (int c = 0; c < C; c++) {
            double d = x[c] - m;
            v += d * d;
        }
        v /= C;
        float s = (float)(1.0 / sqrt(v + 1e-5));
        float mf = (float)m;
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - mf) * s * w[c] + b[c];
        mean[i] = mf;
        rstd[i] = s;
    }
    KCLOCK_STOP(elementwise_s);
}

void slm_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean,
                            const float *rstd, int N, int C)
{
    KCLOCK_START;
    /* dinp rows are independent; dw/db are reduced serially to keep the sum order fixed
     * (bitwise reproducible whatever the thread count). */
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        double dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            float dnorm = w[c] * dy[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += (double)dnorm * xhat;
        }
        float a = (float)(dnorm_mean / C), bcoef = (float)(dnorm_norm_mean / C);
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            dx[c] += (w[c] * dy[c] - a - xhat * bcoef) * s;
        }
    }
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        for (int c = 0; c < C; c++) {
            dw[c] += (x[c] - m) * s * dy[c];
            db[c] += dy[c];
        }
    }
    KCLOCK_STOP(elementwise_s);
}
