/* sample.c - autoregressive text sampling from a trained model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/rng.h"
#include "shardlm/runtime.h"

slm_status slm_sample_text(slm_next_logits_fn next_logits, void *ctx, slm_dataset_t ds, const char *prompt,
                           int ntokens, int seq_len, int vocab_size, double temperature, uint64_t seed, char *out,
                           size_t cap)
{
    const int T = seq_len, V = vocab_size;
    size_t total = strlen(prompt) * 8 + (size_t)ntokens + 1;
    int32_t *tok = malloc(total * sizeof *tok);
    double *prob = malloc((size_t)V * sizeof *prob);
    float *z = malloc((size_t)V * sizeof *z);
    if (!tok || !prob || !z) {
        free(tok);
        free(prob);
        free(z);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the sampling buffers");
    }
    long n = slm_dataset_encode(ds, prompt, tok, total);
    if (n <= 0) { /* no text codec, or an empty/unencodable prompt: start from token 0 */
        tok[0] = 0;
        n = 1;
    }
    uint64_t key = slm_rng_key(seed, SLM_RNG_SAMPLE, 0);
    for (int i = 0; i < ntokens; i++) {
        long len = n < T ? n : T; /* the context: the last seq_len tokens at most */
        next_logits(ctx, tok + n - len, (int)len, z);
        int next = 0;
        if (temperature <= 0.0) {
            for (int v = 1; v < V; v++) next = z[v] > z[next] ? v : next;
        } else {
            double mx = z[0], sum = 0.0;
            for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) sum += prob[v] = exp((z[v] - mx) / temperature);
            double u = slm_rng_uniform(key, (uint64_t)i) * sum;
            for (next = 0; next < V - 1 && u >= prob[next]; next++) u -= prob[next];
        }
        tok[n++] = next;
    }
    slm_dataset_decode(ds, tok, (size_t)n, out, cap);
    free(tok);
    free(prob);
    free(z);
    return SLM_OK;
}
