/* prep_cmd.c - `shardlm prep`: text files to GPT-2 token shards over the MPI ranks, with
 * a progress line on rank 0 and a summary of the splits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "shardlm/prep.h"
#include "shardlm/timer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shardlm prep (--tokenizer DIR | --encoder encoder.json --vocab vocab.bpe) --out DIR\n"
            "                    [--name NAME] [--val FRACTION] [--shard-tokens N] [--separator TEXT]\n"
            "                    [--no-eot] [--force] INPUT...\n"
            "Encodes text files (directories: every file under them, in sorted order) with GPT-2 BPE\n"
            "into llm.c token shards DIR/NAME_train_000000.bin ... and DIR/NAME_val_000000.bin ...\n"
            "(NAME defaults to 'data'). Every file is a document, and so is the text between two\n"
            "--separator TEXTs (\\n and \\t escapes allowed; the separator is dropped). Each document\n"
            "starts with <|endoftext|> unless --no-eot. A share FRACTION of the documents (default\n"
            "0.01), spread evenly, goes to val. Shards hold at most N tokens (default 100000000);\n"
            "uint16 tokens, or uint32 for vocabularies past 65536. Runs on any number of ranks\n"
            "and writes the same bytes whatever the count. Existing NAME shards in DIR are refused\n"
            "unless --force.\n");
}

typedef struct {
    const char *tokenizer, *encoder, *vocab;
    slm_prep_options opt;
    char separator[1024];
    int no_eot, first_input;
} prep_args;

/* The separator with \n, \t and \\ turned into the bytes they name. */
static slm_status unescape(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *s = in; *s; s++) {
        char c = *s;
        if (c == '\\' && s[1]) {
            c = *++s == 'n' ? '\n' : *s == 't' ? '\t' : *s == '\\' ? '\\' : 0;
            SLM_CHECK(c, SLM_ERR_ARG, "prep: --separator: unknown escape \\%c (\\n, \\t and \\\\ are known)", *s);
        }
        SLM_CHECK(n + 1 < cap, SLM_ERR_ARG, "prep: --separator is longer than %zu bytes", cap - 1);
        out[n++] = c;
    }
    out[n] = '\0';
    return SLM_OK;
}

static slm_status parse(int argc, char **argv, prep_args *a)
{
    *a = (prep_args){.opt = {.name = "data", .val_fraction = 0.01, .shard_tokens = 100000000, .eot = -1}};
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--")) {
            i++;
            break;
        }
        if (!strcmp(k, "--no-eot")) a->no_eot = 1;
        else if (!strcmp(k, "--force")) a->opt.force = 1;
        else {
            SLM_CHECK(v, SLM_ERR_ARG, "prep: %s needs a value", k);
            char *end = NULL;
            if (!strcmp(k, "--tokenizer")) a->tokenizer = v;
            else if (!strcmp(k, "--encoder")) a->encoder = v;
            else if (!strcmp(k, "--vocab")) a->vocab = v;
            else if (!strcmp(k, "--out")) a->opt.out_dir = v;
            else if (!strcmp(k, "--name")) a->opt.name = v;
            else if (!strcmp(k, "--val")) a->opt.val_fraction = strtod(v, &end);
            else if (!strcmp(k, "--shard-tokens")) a->opt.shard_tokens = strtoull(v, &end, 10);
            else if (!strcmp(k, "--separator")) {
                SLM_CALL(unescape(v, a->separator, sizeof a->separator));
                a->opt.separator = a->separator;
            } else return SLM_ERROR(SLM_ERR_ARG, "prep: unknown option %s", k);
            SLM_CHECK(!end || (*end == '\0' && end != v && v[0] != '-'), SLM_ERR_ARG,
                      "prep: %s '%s' is not a non-negative number", k, v);
            i++;
        }
    }
    a->first_input = i;
    SLM_CHECK(i < argc, SLM_ERR_ARG, "prep: which text files? (give files or directories after the options)");
    SLM_CHECK(!a->tokenizer != (!a->encoder && !a->vocab), SLM_ERR_ARG,
              "prep: give the tokenizer as --tokenizer DIR or as --encoder FILE --vocab FILE");
    SLM_CHECK(a->tokenizer || (a->encoder && a->vocab), SLM_ERR_ARG, "prep: --encoder and --vocab go together");
    SLM_CALL(slm_prep_check_options(&a->opt));
    return SLM_OK;
}

typedef struct {
    double t0, last;
    int tty;
} progress_state;

static void show_progress(void *ctx, double done, double total)
{
    progress_state *p = ctx;
    double now = slm_now(), dt = now - p->t0;
    if (now - p->last < (p->tty ? 0.5 : 10.0) && done < total) return;
    p->last = now;
    double rate = dt > 0 ? done / dt : 0;
    fprintf(stderr, "prep      %.1f / %.1f MB  %3.0f%%  %.1f MB/s  ETA %.0f s%s", done / 1e6, total / 1e6,
            100 * done / total, rate / 1e6, rate > 0 ? (total - done) / rate : 0, p->tty ? "   \r" : "\n");
}

static void summary(const prep_args *a, const slm_prep_result *r, double seconds, int ranks)
{
    fprintf(stderr, "%s", isatty(2) ? "\n" : "");
    printf("prep      %llu file%s, %.2f MB in %.2f s: %.2f MB/s on %d rank%s\n", (unsigned long long)r->files,
           r->files == 1 ? "" : "s", (double)r->bytes / 1e6, seconds, (double)r->bytes / 1e6 / seconds, ranks,
           ranks == 1 ? "" : "s");
    for (int split = 0; split < 2; split++) {
        const char *name = split == SLM_PREP_TRAIN ? "train" : "val";
        printf("%-9s %llu documents, %llu tokens (uint%d) in %d shard%s", name, (unsigned long long)r->docs[split],
               (unsigned long long)r->tokens[split], 8 * r->token_bytes, r->shards[split],
               r->shards[split] == 1 ? "" : "s");
        if (r->shards[split]) printf(": %s/%s_%s_*.bin", a->opt.out_dir, a->opt.name, name);
        putchar('\n');
    }
    if (a->opt.eot < 0 && !a->no_eot)
        printf("note      the vocabulary has no <|endoftext|>: documents follow each other without a separator\n");
    if (a->opt.val_fraction > 0 && !r->docs[SLM_PREP_VAL])
        printf("note      the val split is empty: %llu documents x %g is less than one document\n",
               (unsigned long long)r->docs[SLM_PREP_TRAIN], a->opt.val_fraction);
    fflush(stdout);
}

int slm_cmd_prep(int argc, char **argv, MPI_Comm comm)
{
    int rank, ranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        if (rank == 0) usage(stdout);
        return SLM_EXIT_OK;
    }
    prep_args a;
    if (parse(argc, argv, &a) != SLM_OK) {
        slm_cli_report_error(comm, 0);
        if (rank == 0) usage(stderr);
        return SLM_EXIT_USAGE;
    }
    double t0 = slm_now();
    slm_bpe_t bpe = NULL;
    slm_status s = a.tokenizer ? slm_bpe_open_dir(a.tokenizer, &bpe) : slm_bpe_open(a.encoder, a.vocab, &bpe);
    if (s == SLM_OK && !a.no_eot) a.opt.eot = slm_bpe_token_id(bpe, "<|endoftext|>", 13);
    progress_state ps = {.t0 = t0, .last = t0, .tty = isatty(2)};
    if (rank == 0) {
        a.opt.progress = show_progress;
        a.opt.progress_ctx = &ps;
    }
    slm_prep_result r;
    /* every rank loads the same files, so a bad one fails everywhere alike */
    if (s == SLM_OK) s = slm_prep(comm, bpe, argv + a.first_input, argc - a.first_input, &a.opt, &r);
    slm_bpe_close(&bpe);
    if (s != SLM_OK) {
        slm_cli_report_error(comm, 1);
        return SLM_EXIT_FAILURE;
    }
    if (rank == 0) summary(&a, &r, slm_now() - t0, ranks);
    return SLM_EXIT_OK;
}
