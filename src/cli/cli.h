/* cli.h - subcommands of the shardlm program. Each returns the process exit status. */
#ifndef SHARDLM_CLI_H
#define SHARDLM_CLI_H

#include <mpi.h>

/* Exit statuses (documented in docs/cli.md). */
enum {
    SLM_EXIT_OK = 0,
    SLM_EXIT_FAILURE = 1, /* a run failed after it started */
    SLM_EXIT_USAGE = 2    /* bad command line or configuration: nothing was computed */
};

int slm_cmd_train(int argc, char **argv, MPI_Comm comm);
int slm_cmd_bench(int argc, char **argv, MPI_Comm comm);
int slm_cmd_ckpt(int argc, char **argv, MPI_Comm comm);
int slm_cmd_tokenize(int argc, char **argv, MPI_Comm comm);
int slm_cmd_sample(int argc, char **argv, MPI_Comm comm);
int slm_cmd_prep(int argc, char **argv, MPI_Comm comm);
/* Arithmetic only: runs without MPI, so it answers at once on a login node; under a
 * launcher, the rank it names (slm_cli_launcher_rank) prints. */
int slm_cmd_plan(int argc, char **argv);
/* `bench blas` (argv[1] is "blas"): without MPI, like plan */
int slm_cmd_bench_blas(int argc, char **argv);
/* `bench calibrate` (argv[1] is "calibrate") */
int slm_cmd_calibrate(int argc, char **argv, MPI_Comm comm);

/* Print the current error with its trace. Not collective: rank 0 prints (for errors every
 * rank reaches alike, such as a bad configuration). Collective (every rank failed): rank 0
 * prints, and any rank whose error differs from rank 0's prints its own too. */
void slm_cli_report_error(MPI_Comm comm, int collective);
/* Without MPI: the current error, printed by the launcher's rank 0 only. */
void slm_cli_report_error_local(void);
/* The rank mpirun or srun gave this process in its environment (0 when started alone). */
int slm_cli_launcher_rank(void);

#endif
