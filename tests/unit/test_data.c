/* test_data.c - llm.c shards (good, short, bad header, out-of-vocabulary token), sample
 * windows, and the synthetic corpus (determinism, code round trip, word frequencies). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "shardlm/data.h"
#include "shardlm/rng.h"

static char tmpdir[] = "/tmp/slm-data-XXXXXX";

static const char *path_of(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static int msg_has(const char *a, const char *b)
{
    const char *m = slm_error_message();
    return strstr(m, a) && (!b || strstr(m, b));
}

static void test_shard_windows(void)
{
    uint16_t tok[23];
    for (int i = 0; i < 23; i++) tok[i] = (uint16_t)(i * 3 % 50);
    CU_ASSERT_EQUAL_FATAL(slm_shard_write(path_of("a.bin"), tok, 23), SLM_OK);
    CU_ASSERT_EQUAL_FATAL(slm_shard_write(path_of("b.bin"), tok, 9), SLM_OK);
    slm_dataset_t ds = NULL;
    char glob[512];
    snprintf(glob, sizeof glob, "%s/*.bin", tmpdir);
    CU_ASSERT_EQUAL_FATAL(slm_dataset_open(glob, 50, 5, 0, 0, 0, &ds), SLM_OK);
    /* a: (23-1)/5 = 4 windows; b: (9-1)/5 = 1 window */
    CU_ASSERT_EQUAL(slm_dataset_num_windows(ds), 5);
    CU_ASSERT_EQUAL(slm_dataset_num_tokens(ds), 32);
    int32_t w[6];
    slm_dataset_sample(ds, 3, w); /* a, tokens 15..20 */
    for (int t = 0; t < 6; t++) CU_ASSERT_EQUAL(w[t], tok[15 + t]);
    slm_dataset_sample(ds, 4, w); /* b, tokens 0..5 */
    for (int t = 0; t < 6; t++) CU_ASSERT_EQUAL(w[t], tok[t]);
    slm_dataset_sample(ds, 6, w); /* wraps to window 1 of a */
    CU_ASSERT_EQUAL(w[0], tok[5]);
    slm_dataset_destroy(&ds);
    CU_ASSERT_PTR_NULL(ds);
}

static void write_raw(const char *name, const void *data, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_shard_errors(void)
{
    slm_dataset_t ds = NULL;
    int32_t header[256] = {20240520, 1, 10};
    write_raw("short.bin", header, 100);
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("short.bin"), 50, 4, 0, 0, 0, &ds), SLM_ERR_FORMAT);
    CU_ASSERT(msg_has("short.bin", "header"));
    /* header says 10 tokens, file holds 4 */
    unsigned char buf[1024 + 20] = {0};
    memcpy(buf, header, sizeof header);
    write_raw("trunc.bin", buf, 1024 + 8);
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("trunc.bin"), 50, 4, 0, 0, 0, &ds), SLM_ERR_FORMAT);
    CU_ASSERT(msg_has("trunc.bin", "10 tokens"));
    header[0] = 12345;
    memcpy(buf, header, sizeof header);
    write_raw("magic.bin", buf, 1024 + 20);
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("magic.bin"), 50, 4, 0, 0, 0, &ds), SLM_ERR_FORMAT);
    CU_ASSERT(msg_has("magic.bin", "magic 12345"));
    /* token 7 (byte offset 1024 + 14) is 60 >= vocab 50 */
    uint16_t tok[10] = {1, 2, 3, 4, 5, 6, 7, 60, 8, 9};
    slm_shard_write(path_of("vocab.bin"), tok, 10);
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("vocab.bin"), 50, 4, 0, 0, 0, &ds), SLM_ERR_FORMAT);
    CU_ASSERT(msg_has("vocab.bin", "offset 1038"));
    CU_ASSERT(msg_has("token 60", "model.vocab_size = 50"));
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("vocab.bin"), 61, 4, 0, 0, 0, &ds), SLM_OK);
    slm_dataset_destroy(&ds);
    /* too short for the context */
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("vocab.bin"), 61, 10, 0, 0, 0, &ds), SLM_ERR_FORMAT);
    CU_ASSERT(msg_has("seq_len", NULL));
    CU_ASSERT_EQUAL(slm_dataset_open(path_of("none-*.bin"), 61, 4, 0, 0, 0, &ds), SLM_ERR_IO);
    CU_ASSERT(msg_has("none-*.bin", NULL));
    CU_ASSERT_PTR_NULL(ds);
}

static void test_synth_deterministic(void)
{
    size_t la, lb, lc;
    char *a = slm_synth_text(slm_rng_key(1, SLM_RNG_DATA, 0), 5000, &la);
    char *b = slm_synth_text(slm_rng_key(1, SLM_RNG_DATA, 0), 5000, &lb);
    char *c = slm_synth_text(slm_rng_key(2, SLM_RNG_DATA, 0), 5000, &lc);
    CU_ASSERT(la >= 5000 && la == lb);
    CU_ASSERT_EQUAL(memcmp(a, b, la), 0);
    CU_ASSERT(memcmp(a, c, la < lc ? la : lc) != 0);
    CU_ASSERT(la >= 2 && a[la - 2] == '.' && a[la - 1] == ' ');
    free(a);
    free(b);
    free(c);
}

static void test_synth_codec(void)
{
    const char *text = "the old cat sees a dog. ";
    int vocabs[] = {256, 128, 40, 30, 5, 2};
    for (size_t k = 0; k < sizeof vocabs / sizeof vocabs[0]; k++) {
        slm_synth_codec codec;
        slm_synth_codec_init(&codec, vocabs[k]);
        int32_t tok[512];
        long n = slm_synth_encode(&codec, text, strlen(text), tok, 512);
        CU_ASSERT_EQUAL(n, (long)strlen(text) * codec.digits);
        for (long i = 0; i < n; i++) CU_ASSERT(tok[i] >= 0 && tok[i] < vocabs[k]);
        char back[1024];
        slm_synth_decode(&codec, tok, (size_t)n, back, sizeof back);
        CU_ASSERT_STRING_EQUAL(back, text);
    }
    slm_synth_codec codec;
    slm_synth_codec_init(&codec, 2);
    CU_ASSERT(codec.digits >= 5); /* 2^5 = 32 >= the alphabet */
    CU_ASSERT_EQUAL(slm_synth_encode(&codec, "Z", 1, (int32_t[8]){0}, 8), -1);
}

static void test_synth_frequencies(void)
{
    /* The four determiners have Zipf weights 1, 1/2, 1/3, 1/4: P("the") = 12/25 = 0.48 at
     * the start of a sentence; P(object) = 0.6 means 60% of sentences have two
     * determiners. Checked on 20000 sentences (binomial sd ~0.0035). */
    size_t len;
    char *t = slm_synth_text(slm_rng_key(7, SLM_RNG_DATA, 0), 600000, &len);
    long sentences = 0, the_first = 0, with_object = 0;
    char *s = t;
    while (sentences < 20000) {
        char *end = strstr(s, ". ");
        CU_ASSERT_FATAL(end != NULL);
        sentences++;
        if (!strncmp(s, "the ", 4)) the_first++;
        int dets = 0;
        for (char *w = s; w < end; w = strchr(w, ' ') ? strchr(w, ' ') + 1 : end) {
            if (!strncmp(w, "the ", 4) || !strncmp(w, "a ", 2) || !strncmp(w, "every ", 6) ||
                !strncmp(w, "some ", 5))
                dets++;
            if (!strchr(w, ' ') || strchr(w, ' ') > end) break;
        }
        if (dets == 2) with_object++;
        s = end + 2;
    }
    CU_ASSERT(abs((int)(the_first * 1000 / sentences) - 480) <= 15);
    CU_ASSERT(abs((int)(with_object * 1000 / sentences) - 600) <= 15);
    free(t);
    /* Entropy rate: the formula gives 0.4035 nats per character; a value outside
     * (0.2, 1.0) would mean the word tables or the length accounting broke. */
    double h = slm_synth_entropy_per_char();
    CU_ASSERT(h > 0.2 && h < 1.0);
}

/* The epoch order is a permutation of the windows for any count (including 1, powers of
 * two and one past them), depends on the key, and is not the identity. */
static void test_permute(void)
{
    const uint64_t sizes[] = {1, 2, 3, 7, 64, 65, 1000, 65537};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const uint64_t n = sizes[k];
        unsigned char *seen = calloc(n, 1);
        uint64_t fixed = 0, same_other_key = 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t p = slm_rng_permute(11, n, i);
            CU_ASSERT_FATAL(p < n);
            CU_ASSERT(!seen[p]);
            seen[p] = 1;
            fixed += p == i;
            same_other_key += p == slm_rng_permute(12, n, i);
            CU_ASSERT(p == slm_rng_permute(11, n, i)); /* a function of (key, n, i) */
        }
        if (n >= 64) {
            CU_ASSERT(fixed < n / 8);          /* shuffled, not the identity */
            CU_ASSERT(same_other_key < n / 8); /* another epoch, another order */
        }
        free(seen);
    }
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("data", NULL, NULL);
    CU_add_test(s, "shard windows", test_shard_windows);
    CU_add_test(s, "shard errors", test_shard_errors);
    CU_add_test(s, "synthetic text is deterministic", test_synth_deterministic);
    CU_add_test(s, "synthetic code round trip", test_synth_codec);
    CU_add_test(s, "synthetic word frequencies", test_synth_frequencies);
    CU_add_test(s, "epoch order is a keyed permutation", test_permute);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return failures != 0;
}
