/* quant.c - 8-bit blockwise quantization, the wire format of islands.compress = int8: one
 * fp32 scale per block of SLM_Q8_BLOCK values (the block's largest magnitude / 127) and
 * each value rounded to the nearest multiple of it. */
#include <math.h>
#include "shardlm/kernels.h"

size_t slm_q8_blocks(size_t n) { return (n + SLM_Q8_BLOCK - 1) / SLM_Q8_BLOCK; }

void slm_q8_quantize(const float *x, size_t n, int8_t *q, float *scale)
{
#pragma omp parallel for if (n > 65536)
    for (size_t b = 0; b < slm_q8_blocks(n); b++) {
        const size_t lo = b * SLM_Q8_BLOCK, hi = lo + SLM_Q8_BLOCK < n ? lo + SLM_Q8_BLOCK : n;
        float amax = 0.0f;
        for (size_t i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
        scale[b] = s;
        for (size_t i = lo; i < hi; i++) {
            float v = nearbyintf(x[i] * inv);
            q[i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
    }
}

void slm_q8_dequantize_add(const int8_t *q, const float *scale, size_t n, float *acc)
{
#pragma omp parallel for if (n > 65536)
    for (size_t b = 0; b < slm_q8_blocks(n); b++) {
        const size_t lo = b * SLM_Q8_BLOCK, hi = lo + SLM_Q8_BLOCK < n ? lo + SLM_Q8_BLOCK : n;
        for (size_t i = lo; i < hi; i++) acc[i] += (float)q[i] * scale[b];
    }
}

void slm_bf16_add(const uint16_t *h, size_t n, float *acc)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        float f;
        __builtin_memcpy(&f, &u, sizeof f);
        acc[i] += f;
    }
}
