/* tokenize_cmd.c - `shardlm tokenize`: GPT-2 BPE from the command line (encode a file to
 * token ids, decode ids back to bytes, or measure the encoding speed). Rank 0 does the
 * work; other ranks, if any, only learn the exit status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "shardlm/bpe.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm tokenize TOKENIZER [--decode] [FILE|-]\n"
               "       shardlm tokenize TOKENIZER --bench FILE\n"
               "TOKENIZER is --tokenizer DIR (DIR/encoder.json and DIR/vocab.bpe) or\n"
               "--encoder encoder.json --vocab vocab.bpe. Encodes FILE (or standard input) with\n"
               "GPT-2's byte-level BPE and prints the token ids on one line; --decode reads ids\n"
               "and writes the bytes; --bench prints MB/s.\n");
}

static slm_status read_all(const char *path, char **data, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    SLM_CHECK(f, SLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger) free(buf);
            buf = bigger;
            cap *= 2;
        }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    SLM_CHECK(buf, SLM_ERR_NOMEM, "cannot hold %s in memory", path);
    if (err) free(buf);
    SLM_CHECK(!err, SLM_ERR_IO, "cannot read %s", path);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return SLM_OK;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static slm_status encode(slm_bpe_t bpe, const char *text, size_t len, int32_t *tok)
{
    long n = slm_bpe_encode(bpe, text, len, tok, len);
    if (n < 0) return slm_error_push(SLM_ERR_INTERNAL, __FILE__, __LINE__, __func__);
    for (long i = 0; i < n; i++) printf(i ? " %d" : "%d", tok[i]);
    putchar('\n');
    return SLM_OK;
}

static slm_status decode(slm_bpe_t bpe, const char *path, char *text, size_t text_len, int32_t *tok)
{
    SLM_CHECK(strlen(text) == text_len, SLM_ERR_FORMAT, "%s: a NUL byte at offset %zu; expected token ids",
              path, strlen(text));
    size_t n = 0;
    for (char *s = text, *end;; s = end) {
        while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
        if (!*s) break;
        long v = strtol(s, &end, 10);
        SLM_CHECK(end > s && (!*end || strchr(" \n\t\r", *end)) && v >= 0 && v <= INT32_MAX, SLM_ERR_FORMAT,
                  "%s: token %zu, \"%.20s\", is not a token id", path, n, s);
        tok[n++] = (int32_t)v;
    }
    size_t len = slm_bpe_decode(bpe, tok, n, NULL, 0);
    if (len == (size_t)-1) {
        char why[512];
        snprintf(why, sizeof why, "%s", slm_error_message());
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: %s", path, why);
    }
    char *out = malloc(len + 1);
    SLM_CHECK(out, SLM_ERR_NOMEM, "cannot allocate %zu bytes", len);
    slm_bpe_decode(bpe, tok, n, out, len);
    size_t put = fwrite(out, 1, len, stdout);
    free(out);
    SLM_CHECK(put == len, SLM_ERR_IO, "cannot write the decoded bytes");
    return SLM_OK;
}

/* Encode twice: with the pre-token cache empty (as a fresh process meets a corpus) and
 * with it warm. */
static slm_status bench(slm_bpe_t bpe, double load_s, const char *path, const char *text, size_t len,
                        int32_t *tok)
{
    double mb = (double)len / 1e6;
    printf("tokenize %s: %zu bytes (encoder.json and vocab.bpe loaded in %.3f s)\n", path, len, load_s);
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now();
        long n = slm_bpe_encode(bpe, text, len, tok, len);
        double dt = now() - t0;
        if (n < 0) return slm_error_push(SLM_ERR_INTERNAL, __FILE__, __LINE__, __func__);
        printf("  encode, %s cache: %ld tokens in %.3f s: %.2f MB/s\n", pass ? "warm" : "cold", n, dt, mb / dt);
    }
    return SLM_OK;
}

static int run(int argc, char **argv)
{
    const char *dir = NULL, *enc = NULL, *voc = NULL, *path = "-", *mode = "encode";
    int have_path = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--tokenizer")) dir = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--encoder")) enc = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--vocab")) voc = argv[++i];
        else if (!strcmp(argv[i], "--decode")) mode = "decode";
        else if (!strcmp(argv[i], "--bench")) mode = "bench";
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return SLM_EXIT_OK;
        } else if ((argv[i][0] != '-' || !strcmp(argv[i], "-")) && !have_path) {
            path = argv[i];
            have_path = 1;
        } else {
            fprintf(stderr, "shardlm tokenize: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return SLM_EXIT_USAGE;
        }
    }
    if (!dir == !(enc && voc) || (dir && (enc || voc)) || (!strcmp(mode, "bench") && !have_path)) {
        fprintf(stderr, "shardlm tokenize: need --tokenizer, or --encoder and --vocab%s\n",
                strcmp(mode, "bench") ? "" : ", and a FILE to --bench");
        usage(stderr);
        return SLM_EXIT_USAGE;
    }
    slm_bpe_t bpe = NULL;
    char *text = NULL;
    int32_t *tok = NULL;
    size_t len = 0;
    double t0 = now();
    slm_status s = dir ? slm_bpe_open_dir(dir, &bpe) : slm_bpe_open(enc, voc, &bpe);
    double load_s = now() - t0;
    if (s == SLM_OK) s = read_all(path, &text, &len);
    if (s == SLM_OK && !(tok = malloc((len + 1) * sizeof *tok)))
        s = SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate %zu tokens", len + 1);
    if (s == SLM_OK) {
        if (!strcmp(mode, "encode")) s = encode(bpe, text, len, tok);
        else if (!strcmp(mode, "decode")) s = decode(bpe, path, text, len, tok);
        else s = bench(bpe, load_s, path, text, len, tok);
    }
    free(tok);
    free(text);
    slm_bpe_close(&bpe);
    if (fflush(stdout) != 0 && s == SLM_OK) s = SLM_ERROR(SLM_ERR_IO, "cannot write standard output: %s", strerror(errno));
    return s == SLM_OK ? SLM_EXIT_OK : SLM_EXIT_FAILURE;
}

int slm_cmd_tokenize(int argc, char **argv, MPI_Comm comm)
{
    int rank, rc = SLM_EXIT_OK;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) rc = run(argc, argv);
    if (rc == SLM_EXIT_FAILURE) slm_cli_report_error(comm, 0);
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    return rc;
}
