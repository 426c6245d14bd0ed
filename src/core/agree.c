/* agree.c - every rank learns the first failing rank's error (shardlm/agree.h). */
#include <stdio.h>
#include <string.h>
#include "shardlm/agree.h"

int slm_all_ok(MPI_Comm comm, int ok)
{
    if (comm == MPI_COMM_NULL) return ok;
    int all = 0;
    ok = ok != 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm);
    return all;
}

slm_status slm_agree(MPI_Comm comm, slm_status local)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = local != SLM_OK ? rank : size, first = size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == size) return SLM_OK;
    char msg[1024];
    int code = (int)local;
    snprintf(msg, sizeof msg, "rank %d: %s", rank, slm_error_message());
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, comm);
    MPI_Bcast(&code, 1, MPI_INT, first, comm);
    if (local != SLM_OK && rank == first && size == 1) return local;
    return SLM_ERROR((slm_status)code, "%s", size > 1 ? msg : msg + strlen("rank 0: "));
}
