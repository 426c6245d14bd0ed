/* test_conf.c - configuration parsing: defaults, files, overrides, and that every kind
 * of bad input is refused with a message naming the key (and file:line). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* A model directory holding only config.json (the configuration needs no weights). */
static const char *model_dir(const char *name, const char *config)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0755);
    char file[64];
    snprintf(file, sizeof file, "%.40s/config.json", name);
    write_file(file, config);
    return dir;
}

/* Defaults, then model.init_from = dir and the given overrides, then the resolution. */
static slm_status resolve(slm_conf *c, const char *dir, const char *const *overrides)
{
    char from[700];
    slm_conf_defaults(c);
    snprintf(from, sizeof from, "model.init_from=%s", dir);
    slm_conf_set(c, from);
    for (int i = 0; overrides && overrides[i]; i++) CU_ASSERT_EQUAL(slm_conf_set(c, overrides[i]), SLM_OK);
    return slm_conf_resolve_model(c);
}

static const char *const llama_json =
    "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 80, \"num_attention_heads\": 6,"
    " \"num_key_value_heads\": 2, \"num_hidden_layers\": 3, \"vocab_size\": 300, \"max_position_embeddings\": 32,"
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"tie_word_embeddings\": true,"
    " \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}}";

static void test_hf_config(void)
{
    slm_conf c;
    const char *dir = model_dir("llama", llama_json);
    CU_ASSERT_EQUAL_FATAL(resolve(&c, dir, NULL), SLM_OK);
    CU_ASSERT_STRING_EQUAL(c.model.arch, "llama");
    CU_ASSERT(c.model.n_layer == 3 && c.model.n_head == 6 && c.model.n_kv_head == 2 && c.model.d_model == 48);
    CU_ASSERT(c.model.ffn_hidden == 80 && c.model.vocab_size == 300 && c.model.max_pos == 32 && c.model.tie_embeddings);
    CU_ASSERT_STRING_EQUAL(c.model.rope_scaling, "llama3");
    CU_ASSERT(c.model.rope_theta == 500000 && c.model.rope_factor == 8 && c.model.rope_original_max_pos == 16);
    CU_ASSERT_EQUAL(c.model.seq_len, 32); /* the default 64, cut to the positions there are */
    CU_ASSERT_STRING_EQUAL(c.model.init_rope_pairing, "half");
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_OK);
    /* the run may repeat config.json, choose seq_len within it, and nothing else */
    const char *const same[] = {"model.n_layer=3", "model.norm_eps=1e-5", "model.seq_len=16", NULL};
    CU_ASSERT_EQUAL(resolve(&c, dir, same), SLM_OK);
    CU_ASSERT_EQUAL(c.model.seq_len, 16);
    const char *const layers[] = {"model.n_layer=4", NULL};
    CU_ASSERT_EQUAL(resolve(&c, dir, layers), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.n_layer = 4 (set on the command line) contradicts config.json's num_hidden_layers = 3",
                      dir));
    slm_conf_defaults(&c);
    char ini[800];
    snprintf(ini, sizeof ini, "[model]\ninit_from = %s\nrope_factor = 4\n", dir);
    CU_ASSERT_EQUAL_FATAL(slm_conf_load_file(&c, write_file("hf.ini", ini)), SLM_OK);
    CU_ASSERT_EQUAL(slm_conf_resolve_model(&c), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.rope_factor = 4 (set in ", "hf.ini) contradicts config.json's rope_scaling.factor = 8"));
    const char *const longer[] = {"model.seq_len=33", NULL};
    CU_ASSERT_EQUAL(resolve(&c, dir, longer), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("model.seq_len = 33 (set on the command line) is longer than config.json's "
                      "max_position_embeddings = 32", NULL));
    /* an llm.c file is left alone; a directory without config.json is not a model */
    CU_ASSERT_EQUAL(resolve(&c, write_file("m.bin", "x"), NULL), SLM_OK);
    CU_ASSERT_STRING_EQUAL(c.model.arch, "gpt2");
    CU_ASSERT_EQUAL(resolve(&c, tmpdir, NULL), SLM_ERR_CONFIG);
    CU_ASSERT(msg_has("without a config.json", NULL));
}

static void test_hf_config_forms(void)
{
    slm_conf c;
    /* the newer rotary form, defaults for what is absent, and the pairing an export records */
    const char *dir = model_dir("newer", "{\"model_type\": \"llama\", \"hidden_size\": 32, \"num_attention_heads\": 4,"
                                         " \"num_hidden_layers\": 2, \"intermediate_size\": 64, \"vocab_size\": 64,"
                                         " \"max_position_embeddings\": 128, \"shardlm_rope_pairing\": \"interleaved\","
                                         " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000.0}}");
    CU_ASSERT_EQUAL_FATAL(resolve(&c, dir, NULL), SLM_OK);
    CU_ASSERT(c.model.rope_theta == 1000 && !strcmp(c.model.rope_scaling, "none") && c.model.n_kv_head == 4);
    CU_ASSERT(c.model.norm_eps == 1e-6 && !c.model.tie_embeddings && c.model.seq_len == 64);
    CU_ASSERT_STRING_EQUAL(c.model.init_rope_pairing, "interleaved");
    const char *const half[] = {"model.init_rope_pairing=half", NULL};
    CU_ASSERT_EQUAL(resolve(&c, dir, half), SLM_OK);
    CU_ASSERT_STRING_EQUAL(c.model.init_rope_pairing, "half");
    /* GPT-2: n_inner null is 4 n_embd, the head is tied */
    dir = model_dir("gpt2", "{\"model_type\": \"gpt2\", \"n_embd\": 24, \"n_head\": 3, \"n_layer\": 2,"
                            " \"n_positions\": 16, \"vocab_size\": 50, \"n_inner\": null}");
    CU_ASSERT_EQUAL_FATAL(resolve(&c, dir, NULL), SLM_OK);
    CU_ASSERT(!strcmp(c.model.arch, "gpt2") && c.model.ffn_hidden == 96 && c.model.n_kv_head == 3 &&
              c.model.tie_embeddings && c.model.seq_len == 16);
    CU_ASSERT_EQUAL(slm_conf_validate(&c, 1), SLM_OK);
    /* what the models do not compute */
    static const struct {
        const char *name, *json, *needle;
    } bad[] = {
        {"mistral", "{\"model_type\": \"mistral\"}", "model_type \"mistral\" is not one"},
        {"yarn", "{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
         "\"rope_scaling.rope_type\" = \"yarn\""},
        {"bias", "{\"model_type\": \"llama\", \"attention_bias\": true}", "\"attention_bias\" = true"},
        {"headdim", "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 32}",
         "\"head_dim\" = 32"},
        {"relu", "{\"model_type\": \"gpt2\", \"activation_function\": \"relu\"}", "\"activation_function\" = \"relu\""},
        {"types", "{\"model_type\": \"gpt2\", \"n_layer\": \"2\"}", "\"n_layer\" is not an integer"},
        {"notjson", "{\"model_type\": ", "cannot read it as JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_NOT_EQUAL(resolve(&c, model_dir(bad[i].name, bad[i].json), NULL), SLM_OK);
        if (!msg_has(bad[i].needle, "config.json")) fprintf(stderr, "%s: %s\n", bad[i].name, slm_error_message());
        CU_ASSERT(msg_has(bad[i].needle, "config.json"));
    }
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
    CU_add_test(s, "a Hugging Face config.json sets the model", test_hf_config);
    CU_add_test(s, "config.json's forms and refusals", test_hf_config_forms);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return failures != 0;
}
