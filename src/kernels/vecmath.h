/* vecmath.h - math the compiler can vectorize, for the kernels' hot loops. */
#ifndef SHARDLM_VECMATH_H
#define SHARDLM_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Several builds of a hot loop, chosen at load time by the CPU (GCC's function
 * multiversioning); one plain build where the toolchain has none. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SLM_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SLM_VECTOR_CLONES
#endif

/* e^x for |x| <= 87, written so the compiler vectorizes it (the C library's expf and
 * tanhf are calls it will not): x = n ln 2 + r with |r| <= ln2/2, a polynomial for e^r
 * (Cephes' coefficients, relative error about 1e-7), and 2^n built in the exponent bits.
 * Larger |x| is clamped to 87 (e^-87 is 1.6e-38, e^87 6e37). The clamp works on the bits,
 * an integer minimum of the magnitude: a float comparison there would keep GCC from
 * vectorizing the loop in the AVX clones. */
static inline float exp_vec(float x)
{
    int32_t xb;
    memcpy(&xb, &x, sizeof xb);
    int32_t mag = xb & 0x7fffffff;
    mag = mag < 0x42ae0000 ? mag : 0x42ae0000; /* the bits of 87.0f */
    xb = (int32_t)((uint32_t)xb & 0x80000000u) | mag;
    memcpy(&x, &xb, sizeof x);
    const float t = x * 1.44269504088896341f;
    const int32_t n = (int32_t)(t + copysignf(0.5f, t)); /* round to nearest */
    const float nf = (float)n;
    const float r = x - nf * 0.693359375f + nf * 2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* sigmoid(x) = 1 / (1 + e^-x) into *s and 1 - sigmoid(x) into *sc, each to float accuracy
 * for every finite x. Both are formed from e = e^-|x| <= 1, as 1 / (1 + e) and e / (1 + e)
 * (the sign of x says which is which): nothing overflows, and 1 - s is not a difference,
 * which for large x would round to 0 and lose x e^-x in silu's derivative. Past |x| = 87
 * e is flushed to 0, since exp_vec would clamp it to e^-87 and leave a silu of about
 * x e^-87 (order 1 for x near -FLT_MAX) where the answer is 0. The tests on x and the
 * choices work on bits, as integer masks, which keeps the loops vectorized in every clone
 * (see exp_vec). */
static inline void sigmoid_vec(float x, float *s, float *sc)
{
    int32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const int32_t mag = xb & 0x7fffffff;
    float ax;
    memcpy(&ax, &mag, sizeof ax);
    const float e0 = exp_vec(-ax);
    int32_t eb;
    memcpy(&eb, &e0, sizeof eb);
    eb &= mag < 0x42ae0000 ? -1 : 0; /* the bits of 87.0f */
    float e;
    memcpy(&e, &eb, sizeof e);
    const float big = 1.0f / (1.0f + e), small = e * big;
    int32_t bb, sb;
    memcpy(&bb, &big, sizeof bb);
    memcpy(&sb, &small, sizeof sb);
    const int32_t neg = xb >> 31; /* all ones when x < 0: a mask, not a branch */
    const int32_t sbits = (sb & neg) | (bb & ~neg), scbits = (bb & neg) | (sb & ~neg);
    memcpy(s, &sbits, sizeof *s);
    memcpy(sc, &scbits, sizeof *sc);
}

#endif
