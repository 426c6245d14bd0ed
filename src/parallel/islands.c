/* islands.c - one MPI job cut into islands (docs/islands.md): consecutive blocks of ranks,
 * each a whole mesh of its own, and the communicator across them that joins the ranks
 * holding the same part of the model (the same rank within their islands, so the same
 * owned chunks), over which the outer step sums the pseudo-gradients chunk by chunk. */
#include <stdlib.h>
#include <string.h>
#include "shardlm/activity.h"
#include "shardlm/kernels.h"
#include "shardlm/parallel.h"

slm_status slm_islands_split(MPI_Comm comm, int count, MPI_Comm *island, MPI_Comm *across, int *index)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    SLM_CHECK(count >= 1 && size % count == 0, SLM_ERR_CONFIG,
              "%d ranks cannot be split into islands.count = %d islands of equal size", size, count);
    const int per = size / count;
    *index = rank / per;
    MPI_Comm_split(comm, *index, rank, island);
    MPI_Comm_split(comm, rank % per, rank, across);
    return SLM_OK;
}

void slm_islands_outer_step(MPI_Comm across, slm_outer_t outer, double *sumsq, slm_islands_stats *stats)
{
    int k = 1;
    MPI_Comm_size(across, &k);
    memset(stats, 0, sizeof *stats);
    stats->islands = k;
    /* the first exchange completes when the last island arrives: the wait for the others */
    slm_activity_set("islands: waiting for the other islands at the outer step", -1);
    double t0 = MPI_Wtime();
    int here = 1;
    MPI_Allreduce(MPI_IN_PLACE, &here, 1, MPI_INT, MPI_SUM, across);
    stats->wait_ms = (MPI_Wtime() - t0) * 1e3;
    /* every chunk's sum starts at once and each is applied as soon as it is complete, so
     * the updates of the first chunks run while the later ones still travel */
    slm_activity_set("islands: summing the pseudo-gradients (MPI_Iallreduce)", -1);
    t0 = MPI_Wtime();
    const int n = slm_outer_num_chunks(outer);
    MPI_Request *req = malloc((size_t)(n ? n : 1) * sizeof *req);
    for (int c = 0; c < n; c++) {
        const size_t cnt = slm_outer_chunk(outer, c)->count;
        float *d = slm_outer_delta(outer, c);
        if (req) MPI_Iallreduce(MPI_IN_PLACE, d, (int)cnt, MPI_FLOAT, MPI_SUM, across, &req[c]);
        else MPI_Allreduce(MPI_IN_PLACE, d, (int)cnt, MPI_FLOAT, MPI_SUM, across);
        stats->bytes += 2.0 * (k - 1) / k * (double)cnt * sizeof(float); /* ring volume */
    }
    slm_outer_begin(outer, 1.0f / (float)k);
    for (int c = 0; c < n; c++) {
        if (req) MPI_Wait(&req[c], MPI_STATUS_IGNORE);
        slm_outer_apply(outer, c, sumsq);
    }
    free(req);
    stats->comm_ms = (MPI_Wtime() - t0) * 1e3;
    slm_activity_set("forward and backward", -1);
}
