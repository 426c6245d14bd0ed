/* sample.c - autoregressive sampling from a trained model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/agree.h"
#include "shardlm/rng.h"
#include "shardlm/runtime.h"

static int descending(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Draw the next token from logits z (V): greedy at temperature 0, else from the softmax
 * at that temperature over the top_k largest logits (0: all; ties at the k-th kept). */
static int draw(const float *z, int V, double temperature, int top_k, double u, double *prob, float *sorted)
{
    int next = 0;
    if (temperature <= 0.0) {
        for (int v = 1; v < V; v++) next = z[v] > z[next] ? v : next;
        return next;
    }
    float floor_z = -INFINITY;
    if (top_k > 0 && top_k < V) {
        memcpy(sorted, z, (size_t)V * sizeof *sorted);
        qsort(sorted, (size_t)V, sizeof *sorted, descending);
        floor_z = sorted[top_k - 1];
    }
    double mx = z[0], sum = 0.0;
    for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    for (int v = 0; v < V; v++) sum += prob[v] = z[v] >= floor_z ? exp((z[v] - mx) / temperature) : 0.0;
    u *= sum;
    for (next = 0; next < V - 1 && (u >= prob[next] || prob[next] == 0.0); next++) u -= prob[next];
    return next;
}

long slm_sample_tokens(slm_next_logits_fn next_logits, void *ctx, MPI_Comm comm, int32_t *tok, long n, int ntokens,
                       int seq_len, int vocab_size, double temperature, int top_k, uint64_t seed)
{
    const int V = vocab_size;
    double *prob = malloc((size_t)V * sizeof *prob);
    float *z = malloc((size_t)V * sizeof *z), *sorted = malloc((size_t)V * sizeof *sorted);
    if (!slm_all_ok(comm, prob && z && sorted)) { /* next_logits is collective: all ranks go on, or none */
        free(prob);
        free(z);
        free(sorted);
        return -1;
    }
    if (n <= 0) tok[n++] = 0; /* nothing to start from: token 0 */
    const uint64_t key = slm_rng_key(seed, SLM_RNG_SAMPLE, 0);
    for (int i = 0; i < ntokens; i++) {
        long len = n < seq_len ? n : seq_len; /* the context: the last seq_len tokens at most */
        next_logits(ctx, tok + n - len, (int)len, z);
        tok[n++] = draw(z, V, temperature, top_k, slm_rng_uniform(key, (uint64_t)i), prob, sorted);
    }
    free(prob);
    free(z);
    free(sorted);
    return n;
}
