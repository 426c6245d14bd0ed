/* blas_cmd.c - `shardlm bench blas`: this CPU, the OpenBLAS kernels in use and the ones
 * that fit it, and every GEMM backend's check and rate. Needs no MPI, so launch/run can
 * ask it for the OPENBLAS_CORETYPE to set (--coretype) before a rank starts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "shardlm/cpu.h"
#include "shardlm/kernels.h"
#include "shardlm/runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm bench blas [--threads N] [--size N] [--seconds S] [--json]\n"
               "       shardlm bench blas --coretype    the OPENBLAS_CORETYPE this CPU needs, or nothing\n");
}

int slm_cmd_bench_blas(int argc, char **argv)
{
    int threads = 0, size = 1024, json = 0, coretype = 0;
    double seconds = 0.5;
    for (int i = 2; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--coretype")) coretype = 1;
        else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return SLM_EXIT_OK;
        } else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = (int)strtol(argv[++i], &end, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--size")) size = (int)strtol(argv[++i], &end, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--seconds")) seconds = strtod(argv[++i], &end);
        else {
            if (slm_cli_launcher_rank() == 0) {
                fprintf(stderr, "shardlm bench blas: unknown argument '%s'\n", argv[i]);
                usage(stderr);
            }
            return SLM_EXIT_USAGE;
        }
        if ((end && *end) || threads < 0 || size < 64 || size > 16384 || seconds <= 0) {
            if (slm_cli_launcher_rank() == 0)
                fprintf(stderr, "shardlm bench blas: need --threads >= 0, 64 <= --size <= 16384, --seconds > 0\n");
            return SLM_EXIT_USAGE;
        }
    }
    const char *fix = slm_blas_core_suggested();
    if (coretype) { /* for scripts: one word or nothing, from any rank */
        if (fix) printf("%s\n", fix);
        return SLM_EXIT_OK;
    }
    if (slm_cli_launcher_rank() != 0) return SLM_EXIT_OK;
    slm_set_threads(threads);
    char cpu[256];
    slm_cpu_describe(cpu, sizeof cpu);
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (json)
        printf("{\"cpu\":\"%s\",\"openblas_core\":\"%s\",\"openblas_coretype_env\":\"%s\",\"suggested_coretype\":\"%s\","
               "\"threads\":%d,\"size\":%d,\"backends\":[",
               cpu, slm_blas_core(), env ? env : "", fix ? fix : "", slm_get_threads(), size);
    else
        printf("cpu       %s\nopenblas  core %s%s%s%s; OPENBLAS_CORETYPE %s%s\n", cpu, slm_blas_core(),
               fix ? " (generic: this CPU runs " : " (fits this CPU)", fix ? fix : "", fix ? " kernels)" : "",
               env ? "= " : "unset", env ? env : "");
    int first = 1;
    for (int i = 0; i < SLM_GEMM_NCANDIDATES; i++) {
        const slm_gemm_candidate c = slm_gemm_candidates[i];
        const char *name = slm_gemm_candidate_name(c);
        if (!slm_gemm_available(c.backend)) continue;
        char why[256] = "";
        const int ok = slm_gemm_check(c.backend, c.bf16, why, sizeof why) == 0;
        double gflops = 0.0;
        if (ok) {
            slm_gemm_select(c.backend, c.bf16);
            gflops = slm_gemm_peak_gflops(size, seconds);
            slm_gemm_select(SLM_GEMM_OPENBLAS, 0);
        }
        if (json)
            printf("%s{\"backend\":\"%s\",\"check\":\"%s\",\"gflops\":%.2f}", first ? "" : ",", name,
                   ok ? "ok" : why, gflops);
        else if (ok)
            printf("backend   %-20s check ok, %d^3 product %.1f GFLOP/s on %d thread%s\n", name, size, gflops,
                   slm_get_threads(), slm_get_threads() > 1 ? "s" : "");
        else printf("backend   %-20s check FAILED: %s\n", name, why);
        first = 0;
    }
    if (json) printf("]}\n");
    return SLM_EXIT_OK;
}
