/* bf16.c - conversion between fp32 and bfloat16, the wire format of bf16 runs. */
#include <string.h>
#include "shardlm/kernels.h"
#include "vecmath.h"

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* round to nearest, ties to even; a NaN stays a (quiet) NaN. A select, not a branch,
     * so the loops over arrays vectorize. */
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

static inline float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

SLM_VECTOR_CLONES void slm_bf16_from_f32(uint16_t *dst, const float *src, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = to_bf16(src[i]);
}

SLM_VECTOR_CLONES void slm_f32_from_bf16(float *dst, const uint16_t *src, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = from_bf16(src[i]);
}

SLM_VECTOR_CLONES void slm_bf16_round(float *x, size_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = from_bf16(to_bf16(x[i]));
}
