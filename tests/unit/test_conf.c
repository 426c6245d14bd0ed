/* test_conf.c - configuration parsing: defaults, files, overrides, and that every kind
 * of bad input is refused with a message naming the key (and file:line). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "shardlm/conf.h"

static char tmpdir[] = "/tmp/slm-conf-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* The current error message contains every needle. */
static int msg_has(const char *a, const char *b)
{
    const char *m = slm_error_message();
    return strstr(m, a) && (!b || strstr(m, b));
}

static void test_defaults_valid(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_OK);
    CU_ASSERT_STRING_EQUAL(c.data.train, "synthetic");
    CU_ASSERT_EQUAL(slm_conf_grad_accum(&c, 1), 1);
}

static void test_file_and_overrides(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    const char *p = write_file("ok.ini", "; comment\n[model]\nn_layer = 3\nd_model = 48\nn_head = 6\n"
                                         "[train]\nlr = 2.5e-3\nrecompute = false\nseed = 18446744073709551615\n");
    CU_ASSERT_EQUAL_FATAL(slm_conf_load_file(&c, p), SLM_OK);
    CU_ASSERT_EQUAL(c.model.n_layer, 3);
    CU_ASSERT_EQUAL(c.model.d_model, 48);
    CU_ASSERT_DOUBLE_EQUAL(c.train.lr, 2.5e-3, 1e-12);
    CU_ASSERT_EQUAL(c.train.seed, 18446744073709551615ULL);
    CU_ASSERT_EQUAL(slm_conf_set(&c, "model.n_layer=5"), SLM_OK);
    CU_ASSERT_EQUAL(slm_conf_set(&c, "train.global_batch=16"), SLM_OK);
    CU_ASSERT_EQUAL(c.model.n_layer, 5);
    CU_ASSERT_EQUAL(slm_conf_grad_accum(&c, 1), 2);
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_OK);
}

static void test_unknown_key(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    const char *p = write_file("bad.ini", "[model]\nn_layer = 2\n\n[train]\nlearning_rate = 1\n");
    CU_ASSERT_EQUAL(slm_conf_load_file(&c, p), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("train.learning_rate", "bad.ini:5"));
    p = write_file("sec.ini", "[optimizer]\nlr = 1\n");
    CU_ASSERT_EQUAL(slm_conf_load_file(&c, p), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("[optimizer]", "sec.ini:2"));
    CU_ASSERT_EQUAL(slm_conf_set(&c, "model.layers=4"), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.layers", NULL));
    CU_ASSERT_EQUAL(slm_conf_set(&c, "steps=4"), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("section.key=value", NULL));
    CU_ASSERT_EQUAL(slm_conf_load_file(&c, "/nonexistent/x.ini"), SLM_ERR_IO);
    CU_ASSERT(msg_has("/nonexistent/x.ini", NULL));
}

static void test_bad_values(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    const char *bad[] = {"model.n_layer=-1", "model.n_layer=2x", "model.n_layer=", "train.lr=fast",
                         "train.recompute=maybe", "train.seed=-3", "model.vocab_size=1",
                         "model.seq_len=0", "parallel.zero_stage=4", "train.lr=nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        slm_conf_defaults(&c);
        CU_ASSERT_EQUAL(slm_conf_set(&c, bad[i]), SLM_ERR_CONFIG);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(bad[i], '=') - bad[i]), bad[i]);
        CU_ASSERT(msg_has(key, NULL));
    }
    const char *p = write_file("val.ini", "[model]\n\nd_model = many\n");
    CU_ASSERT_EQUAL(slm_conf_load_file(&c, p), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.d_model", "val.ini:3"));
}

static void test_cross_checks(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    slm_conf_set(&c, "model.n_head=3"); /* 128 % 3 != 0 */
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.n_head", "model.d_model"));
    slm_conf_defaults(&c);
    slm_conf_set(&c, "train.global_batch=12"); /* micro_batch 8 */
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("train.global_batch", "train.micro_batch"));
    slm_conf_defaults(&c);
    slm_conf_set(&c, "train.min_lr=1");
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("train.min_lr", NULL));
    slm_conf_defaults(&c);
    slm_conf_set(&c, "train.precision=fp8");
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("train.precision", NULL));
    slm_conf_defaults(&c);
    slm_conf_set(&c, "parallel.tp=2");
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 3), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("parallel.tp", NULL));
    slm_conf_defaults(&c);
    slm_conf_set(&c, "parallel.bind=socket");
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("parallel.bind", "socket"));
}

static void test_ini_round_trip(void)
{
    slm_conf a, b;
    slm_conf_defaults(&a);
    slm_conf_set(&a, "model.n_layer=7");
    slm_conf_set(&a, "train.lr=0.000123");
    slm_conf_set(&a, "log.metrics=/tmp/m.jsonl");
    char text[8192];
    slm_conf_to_ini(&a, text, sizeof text);
    slm_conf_defaults(&b);
    CU_ASSERT_EQUAL_FATAL(slm_conf_load_file(&b, write_file("rt.ini", text)), SLM_OK);
    CU_ASSERT_EQUAL(b.model.n_layer, 7);
    CU_ASSERT_DOUBLE_EQUAL(b.train.lr, 0.000123, 1e-15);
    CU_ASSERT_STRING_EQUAL(b.log.metrics, "/tmp/m.jsonl");
    /* every value; not where each came from (the command line there, the file here) */
    CU_ASSERT_EQUAL(memcmp(&a, &b, offsetof(slm_conf, set_by)), 0);
    CU_ASSERT_EQUAL(a.set_by[0], SLM_CONF_SET_DEFAULT);
    CU_ASSERT_EQUAL(b.set_by[0], SLM_CONF_SET_FILE);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("conf", NULL, NULL);
    CU_add_test(s, "defaults are valid", test_defaults_valid);
    CU_add_test(s, "file then overrides", test_file_and_overrides);
    CU_add_test(s, "unknown keys and sections", test_unknown_key);
    CU_add_test(s, "bad values", test_bad_values);
    CU_add_test(s, "cross-key checks", test_cross_checks);
    CU_add_test(s, "INI round trip", test_ini_round_trip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return failures != 0;
}
