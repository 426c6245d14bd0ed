/* encoder.c - token + position embedding, forward and backward. */
#include <string.h>
#include "shardlm/kernels.h"

void slm_encoder_forward(float *out, const int32_t *tok, const float *wte, const float *wpe,
                         int B, int T, int C)
{
#pragma omp parallel for collapse(2) if ((size_t)B * T * C > 65536)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *we = wte + (size_t)tok[b * T + t] * C;
            const float *pe = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
        }
}

void slm_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                          int B, int T, int C)
{
    /* Serial on purpose: several positions may hit the same token row. */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *dwe = dwte + (size_t)tok[b * T + t] * C;
            float *dpe = dwpe + (size_t)t * C;
            for (int c = 0; c < C; c++) {
                dwe[c] += d[c];
                dpe[c] += d[c];
            }
        }
}
