/* netbench.c - what the network between the ranks does: point-to-point latency and
 * bandwidth (ping-pong between the first and the last rank) and all-reduce bus bandwidth
 * over all of them, for the planner's step-time prediction. Each is a median, not the
 * best time: the planner wants what a training step meets, and a shaped or shared link
 * varies from one message to the next. */
#include <stdlib.h>
#include <string.h>
#include "shardlm/parallel.h"
#include "shardlm/timer.h"

/* The median one-way time of a `bytes` message between ranks a and b over `reps` round
 * trips; every rank of comm takes part in the agreement on the result. */
static double ping_pong(MPI_Comm comm, int a, int b, char *buf, int bytes, int reps)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    double times[64] = {0};
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(comm);
        const double t0 = slm_now();
        if (rank == a) {
            MPI_Send(buf, bytes, MPI_BYTE, b, 7, comm);
            MPI_Recv(buf, bytes, MPI_BYTE, b, 7, comm, MPI_STATUS_IGNORE);
        } else if (rank == b) {
            MPI_Recv(buf, bytes, MPI_BYTE, a, 7, comm, MPI_STATUS_IGNORE);
            MPI_Send(buf, bytes, MPI_BYTE, a, 7, comm);
        }
        times[r] = (slm_now() - t0) / 2;
    }
    double t = slm_median(times, reps);
    MPI_Bcast(&t, 1, MPI_DOUBLE, a, comm);
    return t;
}

slm_status slm_net_measure(MPI_Comm comm, size_t bytes, int reps, slm_net_measurement *out)
{
    int rank, world;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    memset(out, 0, sizeof *out);
    out->ranks = world;
    MPI_Comm node;
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int node_rank;
    MPI_Comm_rank(node, &node_rank);
    int leader = node_rank == 0;
    MPI_Allreduce(&leader, &out->nodes, 1, MPI_INT, MPI_SUM, comm);
    MPI_Comm_free(&node);
    if (world < 2) return SLM_OK;
    SLM_CHECK(bytes >= 8 && bytes <= (size_t)1 << 30, SLM_ERR_ARG, "message size %zu: expected 8 B to 1 GiB", bytes);
    const size_t floats = bytes / sizeof(float);
    char *buf = calloc(floats, sizeof(float));
    float *sum = calloc(floats, sizeof(float));
    if (!slm_all_ok(comm, buf && sum)) {
        free(buf);
        free(sum);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate %zu bytes for the network measurement", bytes);
    }
    /* the first and the last rank: on another node when there are several */
    out->latency_s = ping_pong(comm, 0, world - 1, buf, 8, 4 * reps);
    const double t = ping_pong(comm, 0, world - 1, buf, (int)(floats * sizeof(float)), reps);
    out->bandwidth_Bps = (double)(floats * sizeof(float)) / t;
    double times[64] = {0};
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(comm);
        const double t0 = slm_now();
        MPI_Allreduce(buf, sum, (int)floats, MPI_FLOAT, MPI_SUM, comm);
        times[r] = slm_now() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &times[r], 1, MPI_DOUBLE, MPI_MAX, comm);
    }
    const double mid = slm_median(times, reps);
    /* bus bandwidth: the bytes a ring all-reduce moves per rank, 2 (p-1)/p of the buffer */
    out->allreduce_bus_Bps = 2.0 * (world - 1) / world * (double)(floats * sizeof(float)) / mid;
    out->bytes = floats * sizeof(float);
    free(buf);
    free(sum);
    return SLM_OK;
}
