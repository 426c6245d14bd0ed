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

/* Print the current error (with its trace) once: on rank 0, or on every rank when the
 * error may differ between ranks. */
void slm_cli_report_error(MPI_Comm comm, int every_rank);

#endif
