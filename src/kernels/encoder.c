/* encoder.c - token + position embedding, forward and backward. */
#include <stdint.h>
#include <string.h>
#include "kclock.h"

void slm_encoder_forward_rows(float *out, const int32_t *tok, const float *wte, int v0, int v1,
                              const float *wpe, int B, int T, int C)
{
    KCLOCK_START;
#pragma omp parallel for collapse(2) if ((size_t)B * T * C > 65536)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const int32_t v = tok[b * T + t];
            const float *we = v >= v0 && v < v1 ? wte + (size_t)(v - v0) * C : NULL;
            const float *pe = wpe ? wpe + (size_t)t * C : NULL;
            for (int c = 0; c < C; c++) o[c] = (we ? we[c] : 0.0f) + (pe ? pe[c] : 0.0f);
        }
    KCLOCK_STOP(elementwise_s);
}

void slm_encoder_backward_rows(float *dwte, int v0, int v1, float *dwpe, const float *dout,
                               const int32_t *tok, int B, int T, int C)
{
    KCLOCK_START;
    for (int b = 0; b < B; b++) /* serial, as slm_encoder_backward */
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            const int32_t v = tok[b * T + t];
            if (v >= v0 && v < v1) {
                float *dwe = dwte + (size_t)(v - v0) * C;
                for (int c = 0; c < C; c++) dwe[c] += d[c];
            }
            if (dwpe) {
                float *dpe = dwpe + (size_t)t * C;
                for (int c = 0; c < C; c++) dpe[c] += d[c];
            }
        }
    KCLOCK_STOP(elementwise_s);
}

void slm_encoder_forward(float *out, const int32_t *tok, const float *wte, const float *wpe,
                         int B, int T, int C)
{
    slm_encoder_forward_rows(out, tok, wte, 0, INT32_MAX, wpe, B, T, C);
}

void slm_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                          int B, int T, int C)
{
    slm_encoder_backward_rows(dwte, 0, INT32_MAX, dwpe, dout, tok, B, T, C);
}
