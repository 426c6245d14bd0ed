/* compute.c - thread settings and the sgemm peak probe that MFU is measured against. */
#include <cblas.h>
#include <stdlib.h>
#include <omp.h>
#include "shardlm/runtime.h"
#include "shardlm/timer.h"

void slm_set_threads(int threads)
{
    if (threads <= 0) return;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
}

int slm_get_threads(void) { return openblas_get_num_threads(); }

double slm_sgemm_gflops(int n, double seconds)
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
    /* one warm-up product, then the best of timed repetitions */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 0.0, start = slm_now();
    do {
        double t0 = slm_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = slm_now() - t0;
        double rate = 2.0 * n * (double)n * n / dt / 1e9;
        if (rate > best) best = rate;
    } while (slm_now() - start < seconds);
    free(a);
    free(b);
    free(c);
    return best;
}
