/* shardlm/rng.h - counter-based random numbers.
 *
 * A value is a pure function of (key, counter), with the key derived from
 * (seed, purpose, ...). Nothing depends on which rank draws it or in which order, so
 * initialization, data order and sampling are the same in every parallel layout and a
 * resumed run continues exactly. */
#ifndef SHARDLM_RNG_H
#define SHARDLM_RNG_H

#include <stdint.h>

enum slm_rng_purpose {
    SLM_RNG_INIT = 1,   /* parameter initialization; a = tensor index */
    SLM_RNG_DATA = 2,   /* synthetic corpus */
    SLM_RNG_SAMPLE = 3, /* text sampling */
    SLM_RNG_ORDER = 4,  /* the order of training samples; a = epoch */
    SLM_RNG_TEST = 99
};

/* 64 well-mixed bits from (key, counter). */
uint64_t slm_rng_bits(uint64_t key, uint64_t counter);
/* A key for (seed, purpose, a): independent streams for distinct arguments. */
uint64_t slm_rng_key(uint64_t seed, uint64_t purpose, uint64_t a);
/* Uniform in [0, 1) with 53 random bits. */
double slm_rng_uniform(uint64_t key, uint64_t counter);
/* Standard normal (Box-Muller on the counter's two uniforms). */
double slm_rng_normal(uint64_t key, uint64_t counter);

/* A pseudorandom permutation of [0, n) (n >= 1), keyed: position i -> element. A
 * four-round Feistel network on the next power of two, walking the cycle back into
 * [0, n); O(1) memory, so a shuffled epoch of any size costs nothing to hold. */
uint64_t slm_rng_permute(uint64_t key, uint64_t n, uint64_t i);

/* A sequential stream over one key, for code that draws in a fixed order. */
typedef struct {
    uint64_t key, counter;
} slm_rng_stream;
static inline double slm_rng_next_uniform(slm_rng_stream *s)
{
    return slm_rng_uniform(s->key, s->counter++);
}

#endif
