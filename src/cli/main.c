/* main.c - the shardlm program: MPI start-up, subcommand dispatch, shutdown. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <mpi.h>
#include "cli.h"
#include "shardlm/ckpt.h"
#include "shardlm/parallel.h"
#include "shardlm/status.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shardlm COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  train [CONFIG.ini] [section.key=value ...]   train a GPT model (see train --help)\n"
            "  bench gemm [--size N] [--threads N] [--seconds S] [--json]\n"
            "                                               measure the GEMM peak used for MFU\n"
            "  bench step [CONFIG.ini] [section.key=value ...]\n"
            "                                               training steps and their profile by kind\n"
            "  bench blas [--threads N] [--json] | --coretype\n"
            "                                               this CPU, OpenBLAS's kernels, every GEMM backend's check\n"
            "  bench calibrate [CONFIG.ini] [section.key=value ...] --out FILE\n"
            "                                               compute rate and network, for plan --calibration\n"
            "  ckpt list DIR | inspect FILE | verify FILE|DIR\n"
            "                                               checkpoint tools\n"
            "  sample CHECKPOINT|DIR [--tokens N] [--temperature T] [--top-k K] [--prompt TEXT]\n"
            "                                               text from a trained model\n"
            "  prep --tokenizer DIR --out DIR [--val F] [--separator TEXT] INPUT...\n"
            "                                               text files to token shards\n"
            "  tokenize --tokenizer DIR [--decode|--bench] [FILE|-]\n"
            "                                               GPT-2 BPE: text to token ids and back\n"
            "  plan [CONFIG.ini] [--flops C | --params N] [--ranks N] [--json] ...\n"
            "                                               compute-optimal size, shape and memory per rank\n"
            "  --version                                    print the version\n"
            "  --help                                       print this help\n"
            "\n"
            "Run under mpirun or srun for several ranks, or as a plain process for one.\n");
}

int slm_cli_launcher_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

void slm_cli_report_error_local(void)
{
    char mine[4096];
    slm_error_format(mine, sizeof mine);
    if (slm_cli_launcher_rank() == 0) fprintf(stderr, "shardlm: error: %s\n", mine);
    fflush(stderr);
}

void slm_cli_report_error(MPI_Comm comm, int collective)
{
    int rank = 0, world = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    char mine[4096], first[4096];
    slm_error_format(mine, sizeof mine);
    if (!collective || world == 1) {
        if (rank == 0) fprintf(stderr, "shardlm: error: %s\n", mine);
        fflush(stderr);
        return;
    }
    /* Every rank failed: rank 0 speaks for all who failed the same way; a rank whose
     * error differs says its own. */
    snprintf(first, sizeof first, "%s", slm_error_message()); /* the message, not the trace */
    char own[4096];
    snprintf(own, sizeof own, "%s", first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, comm);
    if (rank == 0) fprintf(stderr, "shardlm: error: %s\n", mine);
    else if (strcmp(first, own)) fprintf(stderr, "[rank %d] shardlm: error: %s\n", rank, mine);
    fflush(stderr);
}

/* OpenMP threads that spin-wait after a parallel region take the cores OpenBLAS's own
 * threads need between kernels (a 4x slower step was measured on 2 cores). libgomp reads
 * OMP_WAIT_POLICY when it is loaded, before main runs, so when the user has not chosen a
 * policy, choose "passive" and execute the program once more. */
static void ensure_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv)
{
    ensure_passive_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return SLM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("shardlm %s\n", PACKAGE_VERSION);
        return SLM_EXIT_OK;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return SLM_EXIT_OK;
    }
    /* planning is arithmetic: no MPI start-up (0.4 s, and refused on some login nodes) */
    if (!strcmp(argv[1], "plan")) return slm_cmd_plan(argc - 1, argv + 1);
    /* launch/run asks it for the OpenBLAS core before every rank starts: no MPI either */
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "blas")) return slm_cmd_bench_blas(argc - 1, argv + 1);
    int provided = 0;
    /* MULTIPLE: an asynchronous checkpoint writes collectively from its own thread */
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    slm_mpi_thread_level = provided;
    slm_hdf5_errors_off();
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm); /* no module touches MPI_COMM_WORLD */
    int rc;
    if (!strcmp(argv[1], "train")) rc = slm_cmd_train(argc - 1, argv + 1, comm);
    else if (!strcmp(argv[1], "bench")) rc = slm_cmd_bench(argc - 1, argv + 1, comm);
    else if (!strcmp(argv[1], "ckpt")) rc = slm_cmd_ckpt(argc - 1, argv + 1, comm);
    else if (!strcmp(argv[1], "tokenize")) rc = slm_cmd_tokenize(argc - 1, argv + 1, comm);
    else if (!strcmp(argv[1], "sample")) rc = slm_cmd_sample(argc - 1, argv + 1, comm);
    else if (!strcmp(argv[1], "prep")) rc = slm_cmd_prep(argc - 1, argv + 1, comm);
    else {
        int rank;
        MPI_Comm_rank(comm, &rank);
        if (rank == 0) {
            fprintf(stderr, "shardlm: unknown command '%s'\n\n", argv[1]);
            usage(stderr);
        }
        rc = SLM_EXIT_USAGE;
    }
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return rc;
}
