/* bench_cmd.c - `shardlm bench gemm`: the machine's sgemm rate, the peak MFU uses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "shardlm/runtime.h"

int slm_cmd_bench(int argc, char **argv, MPI_Comm comm)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (argc < 2 || strcmp(argv[1], "gemm")) {
        if (rank == 0)
            fprintf(stderr, "usage: shardlm bench gemm [--size N] [--threads N] [--seconds S] [--json]\n");
        return argc > 1 && !strcmp(argv[1], "--help") ? SLM_EXIT_OK : SLM_EXIT_USAGE;
    }
    int size = 2048, threads = 0, json = 0;
    double seconds = 2.0;
    for (int i = 2; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--json")) json = 1;
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
    slm_set_threads(threads);
    double g = slm_sgemm_gflops(size, seconds);
    if (rank == 0) {
        if (json)
            printf("{\"kernel\":\"sgemm\",\"size\":%d,\"threads\":%d,\"gflops\":%.2f}\n", size,
                   slm_get_threads(), g);
        else
            printf("sgemm %dx%dx%d, %d thread%s: %.1f GFLOP/s\n", size, size, size, slm_get_threads(),
                   slm_get_threads() > 1 ? "s" : "", g);
    }
    return SLM_EXIT_OK;
}
