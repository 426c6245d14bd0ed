/* mesh.c - the rank mesh: a private duplicate of the caller's communicator, split into
 * data-parallel groups (tensor and pipeline groups join them with their features). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/parallel.h"

int slm_mpi_thread_level = MPI_THREAD_SINGLE;

struct slm_mesh {
    MPI_Comm world, dp;
    int rank, size, dp_rank, dp_size;
};

slm_status slm_mesh_create(MPI_Comm comm, int tp, int pp, slm_mesh_t *out)
{
    *out = NULL;
    SLM_CHECK(tp == 1 && pp == 1, SLM_ERR_UNSUPPORTED, "tensor and pipeline parallelism are not available");
    slm_mesh_t m = calloc(1, sizeof *m);
    SLM_CHECK(m, SLM_ERR_NOMEM, "out of memory");
    MPI_Comm_dup(comm, &m->world);
    MPI_Comm_rank(m->world, &m->rank);
    MPI_Comm_size(m->world, &m->size);
    /* With tp = pp = 1 every rank is one data-parallel replica. */
    MPI_Comm_split(m->world, 0, m->rank, &m->dp);
    MPI_Comm_rank(m->dp, &m->dp_rank);
    MPI_Comm_size(m->dp, &m->dp_size);
    *out = m;
    return SLM_OK;
}

void slm_mesh_destroy(slm_mesh_t *mp)
{
    slm_mesh_t m = *mp;
    if (!m) return;
    MPI_Comm_free(&m->dp);
    MPI_Comm_free(&m->world);
    free(m);
    *mp = NULL;
}

MPI_Comm slm_mesh_world(slm_mesh_t m) { return m->world; }
MPI_Comm slm_mesh_dp_comm(slm_mesh_t m) { return m->dp; }
int slm_mesh_rank(slm_mesh_t m) { return m->rank; }
int slm_mesh_size(slm_mesh_t m) { return m->size; }
int slm_mesh_dp_rank(slm_mesh_t m) { return m->dp_rank; }
int slm_mesh_dp_size(slm_mesh_t m) { return m->dp_size; }

/* Make every rank agree on a local outcome; the first failing rank's message wins. */
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
