/* rng.c - counter-based generator: a SplitMix64-style finalizer applied to key and
 * counter. Statistically sound for initialization, data synthesis and sampling; not
 * for cryptography. */
#include <math.h>
#include "shardlm/rng.h"

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t slm_rng_bits(uint64_t key, uint64_t counter)
{
    return mix64(mix64(key) ^ (counter * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

uint64_t slm_rng_key(uint64_t seed, uint64_t purpose, uint64_t a)
{
    return mix64(mix64(mix64(seed) + purpose) + a * 0xd1b54a32d192ed03ULL);
}

double slm_rng_uniform(uint64_t key, uint64_t counter)
{
    return (double)(slm_rng_bits(key, counter) >> 11) * 0x1.0p-53;
}

double slm_rng_normal(uint64_t key, uint64_t counter)
{
    double u1 = slm_rng_uniform(key, 2 * counter), u2 = slm_rng_uniform(key, 2 * counter + 1);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t slm_rng_permute(uint64_t key, uint64_t n, uint64_t i)
{
    if (n <= 1) return 0;
    int bits = 1;
    while (bits < 64 && (UINT64_C(1) << bits) < n) bits++;
    if (bits % 2) bits++; /* two equal halves */
    const int half = bits / 2;
    const uint64_t mask = (UINT64_C(1) << half) - 1;
    uint64_t x = i;
    do { /* cycle walking: an element outside [0, n) is mapped again until it lands inside */
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = slm_rng_bits(key, ((uint64_t)round << 58) ^ r) & mask;
            uint64_t t = r;
            r = l ^ f;
            l = t;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}
