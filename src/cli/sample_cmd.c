/* sample_cmd.c - `shardlm sample CHECKPOINT|DIR`: text from a trained model.
 *
 * Reads the checkpoint's parameters into one whole model on every rank (a checkpoint of
 * any layout loads into it) and samples on rank 0's output. Text goes in and out through
 * the run's own codec: the synthetic corpus's when the run trained on it, else the GPT-2
 * tokenizer its data.tokenizer names (or --tokenizer, --encoder/--vocab say), else token ids. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "shardlm/agree.h"
#include "shardlm/bpe.h"
#include "shardlm/ckpt.h"
#include "shardlm/conf.h"
#include "shardlm/data.h"
#include "shardlm/runtime.h"

typedef struct {
    const char *path, *prompt, *tokenizer, *encoder, *vocab;
    int tokens, top_k;
    double temperature;
    long long seed; /* < 0: the run's */
} sample_args;

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm sample CHECKPOINT.h5|DIR [--tokens N] [--temperature T] [--top-k K]\n"
               "                      [--prompt TEXT] [--seed S]\n"
               "                      [--tokenizer DIR | --encoder encoder.json --vocab vocab.bpe]\n"
               "Generates N tokens (default 200) after the prompt from a checkpoint (a directory: its\n"
               "newest good one), at temperature T (default 0.8; 0 is greedy) among the K most likely\n"
               "tokens (default 0: all). Text is encoded and decoded as the run did: the synthetic\n"
               "corpus's code, or the GPT-2 tokenizer of the run's data.tokenizer (another with\n"
               "--tokenizer DIR, or --encoder and --vocab), or else token ids.\n");
}

static slm_status parse(int argc, char **argv, sample_args *a)
{
    *a = (sample_args){.prompt = "", .tokens = 200, .temperature = 0.8, .seed = -1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (k[0] != '-') {
            SLM_CHECK(!a->path, SLM_ERR_ARG, "sample: two checkpoints given (%s and %s)", a->path, k);
            a->path = k;
            continue;
        }
        SLM_CHECK(v, SLM_ERR_ARG, "sample: %s needs a value", k);
        char *end = NULL;
        if (!strcmp(k, "--tokens")) a->tokens = (int)strtol(v, &end, 10);
        else if (!strcmp(k, "--top-k")) a->top_k = (int)strtol(v, &end, 10);
        else if (!strcmp(k, "--seed")) a->seed = strtoll(v, &end, 10);
        else if (!strcmp(k, "--temperature")) a->temperature = strtod(v, &end);
        else if (!strcmp(k, "--prompt")) a->prompt = v;
        else if (!strcmp(k, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(k, "--encoder")) a->encoder = v;
        else if (!strcmp(k, "--vocab")) a->vocab = v;
        else return SLM_ERROR(SLM_ERR_ARG, "sample: unknown option %s", k);
        SLM_CHECK(!end || (*end == '\0' && end != v), SLM_ERR_ARG, "sample: %s '%s' is not a number", k, v);
        i++;
    }
    SLM_CHECK(a->path, SLM_ERR_ARG, "sample: which checkpoint? (a .h5 file or a checkpoint directory)");
    SLM_CHECK(a->tokens >= 0 && a->top_k >= 0 && a->temperature >= 0 && isfinite(a->temperature), SLM_ERR_ARG,
              "sample: --tokens, --top-k and --temperature must not be negative");
    SLM_CHECK(!a->encoder == !a->vocab, SLM_ERR_ARG, "sample: --encoder and --vocab go together");
    SLM_CHECK(!(a->tokenizer && a->encoder), SLM_ERR_ARG, "sample: --tokenizer or --encoder/--vocab, not both");
    return SLM_OK;
}

static void next_logits(void *ctx, const int32_t *tok, int T, float *out)
{
    slm_model_t m = ctx;
    slm_model_forward(m, tok, NULL, 1, T);
    slm_model_last_logits(m, 0, out);
}

typedef struct {
    slm_bpe_t bpe;
    slm_dataset_t synth;
} codec;

static long encode(const codec *c, const char *text, int32_t *out, size_t cap)
{
    if (c->bpe) return slm_bpe_encode(c->bpe, text, strlen(text), out, cap);
    if (c->synth) return slm_dataset_encode(c->synth, text, out, cap);
    return 0;
}

static void print_decoded(const codec *c, const int32_t *tok, size_t n)
{
    size_t cap = 16 * n + 64;
    char *text = malloc(cap);
    if (!text) return;
    if (c->bpe) {
        size_t len = slm_bpe_decode(c->bpe, tok, n, text, cap);
        fwrite(text, 1, len < cap ? len : cap, stdout);
        putchar('\n');
    } else if (c->synth) {
        slm_dataset_decode(c->synth, tok, n, text, cap);
        printf("%s\n", text);
    } else {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", tok[i]);
        putchar('\n');
    }
    free(text);
}

static slm_status run(const sample_args *a, MPI_Comm comm, slm_model_t *model, codec *cd)
{
    char path[4096];
    const int is_file = strlen(a->path) > 3 && !strcmp(a->path + strlen(a->path) - 3, ".h5");
    SLM_CALL(slm_ckpt_find(comm, is_file ? "" : a->path, is_file ? a->path : "", NULL, path, sizeof path));
    SLM_CHECK(path[0], SLM_ERR_IO, "sample: no checkpoint in %s", a->path);
    static slm_ckpt_meta meta; /* 16 KiB of configuration text */
    SLM_CALL(slm_ckpt_verify(comm, path, NULL, &meta));
    slm_conf run;
    slm_conf_defaults(&run);
    SLM_CALL(slm_conf_load_text(&run, meta.config, path));
    SLM_CALL(slm_model_create(&meta.model, 1, 1, NULL, NULL, NULL, model));
    const slm_ckpt_piece whole = {0, slm_model_num_params(*model), slm_model_params(*model)};
    const slm_ckpt_group params = {"params", slm_model_tensor(*model, 0), slm_model_num_tensors(*model), &whole, 1};
    SLM_CALL(slm_ckpt_load(comm, path, &params, 1, &meta, NULL));
    if (a->encoder) SLM_CALL(slm_bpe_open(a->encoder, a->vocab, &cd->bpe));
    else if (a->tokenizer) SLM_CALL(slm_bpe_open_dir(a->tokenizer, &cd->bpe));
    else if (run.data.tokenizer[0] && slm_bpe_open_dir(run.data.tokenizer, &cd->bpe) != SLM_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", slm_error_message());
        return SLM_ERROR(SLM_ERR_IO, "sample: the run's tokenizer (data.tokenizer = %s) cannot be read: %s; "
                         "give it with --tokenizer DIR", run.data.tokenizer, why);
    } else if (!strcmp(run.data.train, "synthetic"))
        SLM_CALL(slm_dataset_open("synthetic", meta.model.vocab_size, meta.model.seq_len, run.train.seed, 0,
                                  (size_t)meta.model.seq_len + 2,
                                  &cd->synth));
    size_t room = strlen(a->prompt) + (size_t)a->tokens + 2;
    int32_t *tok = malloc(room * sizeof *tok);
    SLM_CALL(slm_agree(comm, tok ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "sample: out of memory")));
    long n = encode(cd, a->prompt, tok, room);
    if (n < 0) {
        free(tok);
        return SLM_ERROR(SLM_ERR_ARG, "sample: the prompt cannot be encoded (%s)",
                         cd->synth ? "the synthetic corpus has only lowercase letters, spaces and '.'" : "bad bytes");
    }
    n = slm_sample_tokens(next_logits, *model, comm, tok, n, a->tokens, meta.model.seq_len, meta.model.vocab_size, a->temperature,
                          a->top_k, a->seed >= 0 ? (uint64_t)a->seed : run.train.seed);
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (n >= 0 && rank == 0) {
        fprintf(stderr, "sample    %s: step %ld, %d tokens at temperature %.2f%s\n", path, meta.step, a->tokens,
                a->temperature, a->top_k ? " (top-k)" : "");
        print_decoded(cd, tok, (size_t)n);
    }
    free(tok);
    SLM_CHECK(n >= 0, SLM_ERR_NOMEM, "sample: out of memory");
    return SLM_OK;
}

int slm_cmd_sample(int argc, char **argv, MPI_Comm comm)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        if (rank == 0) usage(stdout);
        return SLM_EXIT_OK;
    }
    sample_args a;
    if (parse(argc, argv, &a) != SLM_OK) {
        slm_cli_report_error(comm, 0);
        if (rank == 0) usage(stderr);
        return SLM_EXIT_USAGE;
    }
    slm_model_t model = NULL;
    codec cd = {0};
    slm_status s = run(&a, comm, &model, &cd);
    slm_model_destroy(&model);
    slm_bpe_close(&cd.bpe);
    slm_dataset_destroy(&cd.synth);
    if (s != SLM_OK) {
        slm_cli_report_error(comm, 1);
        return SLM_EXIT_FAILURE;
    }
    return SLM_EXIT_OK;
}
