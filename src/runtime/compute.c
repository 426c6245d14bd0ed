/* compute.c - thread settings. */
#include <cblas.h>
#include <omp.h>
#include "shardlm/runtime.h"

void slm_set_threads(int threads)
{
    if (threads <= 0) return;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
}

int slm_get_threads(void) { return openblas_get_num_threads(); }
