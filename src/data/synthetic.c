/* synthetic.c - the built-in corpus: a probabilistic grammar with a known entropy rate.
 *
 *   sentence := NP verb [NP] "."      object present with probability P_OBJECT
 *   NP       := det [adj] noun        adjective present with probability P_ADJ
 *
 * Word classes are disjoint and words are separated by spaces, so the text determines
 * every choice; sentences are independent, so the entropy rate of the character stream
 * is H(sentence) / E[chars per sentence] (renewal argument). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/data.h"
#include "shardlm/rng.h"

#define P_ADJ 0.4
#define P_OBJECT 0.6

typedef struct {
    const char *const *words;
    int n;
    double p[16]; /* Zipf-like probabilities 1/(k+1), normalized */
} word_class;

static const char *const dets[] = {"the", "a", "every", "some"};
static const char *const adjs[] = {"small", "red", "old", "quiet", "bright", "lazy", "clever", "green"};
static const char *const nouns[] = {"cat", "dog", "bird", "farmer", "river", "machine",
                                    "teacher", "child", "garden", "engine", "letter", "storm"};
static const char *const verbs[] = {"sees", "finds", "likes", "follows", "builds",
                                    "hears", "carries", "paints", "watches", "remembers"};

static word_class classes[4];
static int classes_ready;

static void init_classes(void)
{
    if (classes_ready) return;
    const char *const *lists[4] = {dets, adjs, nouns, verbs};
    int counts[4] = {4, 8, 12, 10};
    for (int c = 0; c < 4; c++) {
        double z = 0.0;
        classes[c].words = lists[c];
        classes[c].n = counts[c];
        for (int k = 0; k < counts[c]; k++) z += 1.0 / (k + 1);
        for (int k = 0; k < counts[c]; k++) classes[c].p[k] = 1.0 / (k + 1) / z;
    }
    classes_ready = 1;
}

static double class_entropy(const word_class *wc)
{
    double h = 0.0;
    for (int k = 0; k < wc->n; k++) h -= wc->p[k] * log(wc->p[k]);
    return h;
}

static double class_mean_len(const word_class *wc)
{
    double l = 0.0;
    for (int k = 0; k < wc->n; k++) l += wc->p[k] * (double)strlen(wc->words[k]);
    return l;
}

static double bernoulli_entropy(double p) { return -p * log(p) - (1 - p) * log(1 - p); }

double slm_synth_entropy_per_char(void)
{
    init_classes();
    const word_class *det = &classes[0], *adj = &classes[1], *noun = &classes[2], *verb = &classes[3];
    double h_np = class_entropy(det) + bernoulli_entropy(P_ADJ) + P_ADJ * class_entropy(adj) +
                  class_entropy(noun);
    /* NP length counts its words and the spaces between them. */
    double len_np = class_mean_len(det) + 1 + P_ADJ * (class_mean_len(adj) + 1) + class_mean_len(noun);
    double h = h_np + class_entropy(verb) + bernoulli_entropy(P_OBJECT) + P_OBJECT * h_np;
    /* NP " " verb [" " NP] "." " " */
    double len = len_np + 1 + class_mean_len(verb) + P_OBJECT * (1 + len_np) + 2;
    return h / len;
}

static int pick(const word_class *wc, double u)
{
    for (int k = 0; k < wc->n - 1; k++) {
        if (u < wc->p[k]) return k;
        u -= wc->p[k];
    }
    return wc->n - 1;
}

static size_t put_word(char *dst, size_t at, const char *w)
{
    size_t n = strlen(w);
    memcpy(dst + at, w, n);
    return at + n;
}

static size_t put_np(char *dst, size_t at, slm_rng_stream *rs)
{
    at = put_word(dst, at, dets[pick(&classes[0], slm_rng_next_uniform(rs))]);
    dst[at++] = ' ';
    if (slm_rng_next_uniform(rs) < P_ADJ) {
        at = put_word(dst, at, adjs[pick(&classes[1], slm_rng_next_uniform(rs))]);
        dst[at++] = ' ';
    }
    return put_word(dst, at, nouns[pick(&classes[2], slm_rng_next_uniform(rs))]);
}

char *slm_synth_text(uint64_t key, size_t nchars, size_t *len)
{
    init_classes();
    enum { MAX_SENTENCE = 128 }; /* longest possible sentence is well below this */
    char *buf = malloc(nchars + MAX_SENTENCE + 1);
    if (!buf) return NULL;
    slm_rng_stream rs = {key, 0};
    size_t at = 0;
    while (at < nchars) {
        at = put_np(buf, at, &rs);
        buf[at++] = ' ';
        at = put_word(buf, at, verbs[pick(&classes[3], slm_rng_next_uniform(&rs))]);
        if (slm_rng_next_uniform(&rs) < P_OBJECT) {
            buf[at++] = ' ';
            at = put_np(buf, at, &rs);
        }
        buf[at++] = '.';
        buf[at++] = ' ';
    }
    buf[at] = '\0';
    *len = at;
    return buf;
}

void slm_synth_codec_init(slm_synth_codec *c, int vocab_size)
{
    init_classes();
    memset(c, 0, sizeof *c);
    c->vocab_size = vocab_size;
    /* The alphabet: every character the grammar can emit, in ASCII order. */
    int used[128] = {0};
    used[' '] = used['.'] = 1;
    for (int k = 0; k < 4; k++)
        for (int w = 0; w < classes[k].n; w++)
            for (const char *s = classes[k].words[w]; *s; s++) used[(unsigned char)*s] = 1;
    for (int ch = 0; ch < 128; ch++)
        if (used[ch]) c->alphabet[c->alphabet_size++] = (char)ch;
    if (vocab_size >= 128) {
        c->bytes = 1;
        c->digits = 1;
        return;
    }
    c->digits = 1;
    for (long reach = vocab_size; reach < c->alphabet_size; reach *= vocab_size) c->digits++;
}

long slm_synth_encode(const slm_synth_codec *c, const char *text, size_t n, int32_t *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (w + (size_t)c->digits > cap) break;
        if (c->bytes) {
            if (ch >= 128) return -1;
            out[w++] = ch;
            continue;
        }
        const char *pos = memchr(c->alphabet, ch, (size_t)c->alphabet_size);
        if (!pos || !ch) return -1;
        int idx = (int)(pos - c->alphabet);
        for (int d = c->digits - 1; d >= 0; d--) { /* most significant digit first */
            out[w + (size_t)d] = idx % c->vocab_size;
            idx /= c->vocab_size;
        }
        w += (size_t)c->digits;
    }
    return (long)w;
}

void slm_synth_decode(const slm_synth_codec *c, const int32_t *tok, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i + (size_t)c->digits <= n && w + 16 < cap; i += (size_t)c->digits) {
        long idx = 0;
        for (int d = 0; d < c->digits; d++) idx = idx * c->vocab_size + tok[i + (size_t)d];
        int printable = c->bytes ? (idx >= 32 && idx < 127) : (idx < c->alphabet_size);
        if (printable) out[w++] = c->bytes ? (char)idx : c->alphabet[idx];
        else w += (size_t)snprintf(out + w, cap - w, "<%ld>", idx);
    }
    out[w] = '\0';
}
