/* bench_cmd.c - `shardlm bench gemm`: the machine's GEMM rate, the peak MFU uses;
 * `shardlm bench step`: training steps of a configuration with nothing but the steps
 * (no checkpoints, no sample), ending in the per-step profile by kind of work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "shardlm/kernels.h"
#include "shardlm/runtime.h"

/* `bench step [CONFIG.ini] [key=value ...]` is `train` with checkpoints, the sample and
 * the evaluation switched off ahead of the user's own overrides. */
static int bench_step(int argc, char **argv, MPI_Comm comm)
{
    char *fixed[] = {"sample.tokens=0", "ckpt.dir=", "eval.every=0", "log.every=1000000"};
    const int nfixed = (int)(sizeof fixed / sizeof fixed[0]);
    char **args = malloc((size_t)(argc + nfixed + 1) * sizeof *args);
    if (!args) return SLM_EXIT_FAILURE;
    int n = 0, i = 2;
    args[n++] = "train";
    if (i < argc && !strchr(argv[i], '=') && argv[i][0] != '-') args[n++] = argv[i++]; /* the config file */
    for (int k = 0; k < nfixed; k++) args[n++] = fixed[k];
    while (i < argc) args[n++] = argv[i++];
    args[n] = NULL;
    int rc = slm_cmd_train(n, args, comm);
    free(args);
    return rc;
}

int slm_cmd_bench(int argc, char **argv, MPI_Comm comm)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (argc >= 2 && !strcmp(argv[1], "step")) return bench_step(argc, argv, comm);
    if (argc >= 2 && !strcmp(argv[1], "calibrate")) return slm_cmd_calibrate(argc, argv, comm);
    if (argc < 2 || strcmp(argv[1], "gemm")) {
        if (rank == 0)
            fprintf(stderr, "usage: shardlm bench gemm [--size N] [--threads N] [--seconds S] [--matmul openblas|dnnl]\n"
                            "                          [--precision fp32|bf16] [--json]\n"
                            "       shardlm bench blas [--threads N] [--json] | --coretype\n"
                            "       shardlm bench step [CONFIG.ini] [section.key=value ...]\n"
                            "       shardlm bench calibrate [CONFIG.ini] [section.key=value ...] --out FILE\n");
        return argc > 1 && !strcmp(argv[1], "--help") ? SLM_EXIT_OK : SLM_EXIT_USAGE;
    }
    int size = 2048, threads = 0, json = 0;
    double seconds = 2.0;
    const char *matmul = "openblas", *precision = "fp32";
    for (int i = 2; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--matmul")) matmul = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--precision")) precision = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--size")) size = (int)strtol(argv[++i], &end, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = (int)strtol(argv[++i], &end, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--seconds")) seconds = strtod(argv[++i], &end);
        else {
            if (rank == 0) fprintf(stderr, "shardlm bench gemm: unknown argument '%s'\n", argv[i]);
            return SLM_EXIT_USAGE;
        }
        if (end && *end) {
            if (rank == 0) fprintf(stderr, "shardlm bench gemm: '%s' is not a number\n", argv[i]);
            return SLM_EXIT_USAGE;
        }
    }
    if (size < 64 || size > 16384 || threads < 0 || seconds <= 0) {
        if (rank == 0) fprintf(stderr, "shardlm bench gemm: need 64 <= --size <= 16384, --threads >= 0, --seconds > 0\n");
        return SLM_EXIT_USAGE;
    }
    const int dnnl = !strcmp(matmul, "dnnl"), bf16 = !strcmp(precision, "bf16");
    if ((!dnnl && strcmp(matmul, "openblas")) || (!bf16 && strcmp(precision, "fp32"))) {
        if (rank == 0) fprintf(stderr, "shardlm bench gemm: need --matmul openblas|dnnl and --precision fp32|bf16\n");
        return SLM_EXIT_USAGE;
    }
    if (slm_gemm_select(dnnl ? SLM_GEMM_DNNL : SLM_GEMM_OPENBLAS, bf16)) {
        if (rank == 0)
            fprintf(stderr, "shardlm bench gemm: --matmul %s --precision %s: %s\n", matmul, precision,
                    dnnl ? "this shardlm was built without oneDNN (configure --with-dnnl)"
                         : "bf16 products need --matmul dnnl");
        return SLM_EXIT_USAGE;
    }
    slm_set_threads(threads);
    double g = slm_gemm_peak_gflops(size, seconds);
    if (rank == 0) {
        if (json)
            printf("{\"kernel\":\"%s\",\"backend\":\"%s\",\"size\":%d,\"threads\":%d,\"gflops\":%.2f}\n",
                   bf16 ? "bf16gemm" : "sgemm", matmul, size, slm_get_threads(), g);
        else
            printf("%s %dx%dx%d, %d thread%s: %.1f GFLOP/s\n", slm_gemm_name(), size, size, size,
                   slm_get_threads(), slm_get_threads() > 1 ? "s" : "", g);
    }
    return SLM_EXIT_OK;
}
