/* ep_exchange.c - the expert-parallel exchanges on their own (tests/mpi/ep-exchange.sh).
 *
 *   ep_exchange check   every rank sends rank q a different number of rows (none to some,
 *                       some to itself), each row holding (sender, receiver, index,
 *                       column); every rank finds exactly the rows sent to it, in sender
 *                       order, and the counts exchange delivers each sender's counts
 *   ep_exchange stall   rank 1 never takes part; rank 0's watchdog (2 s) must abort the
 *                       job naming the block and the rank it waits for
 * The world is the expert-parallel group (tp = pp = 1, ep = world). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "shardlm/parallel.h"
#include "shardlm/runtime.h"

enum { W = 3 }; /* floats per row */

static int rows_to(int from, int to) { return (3 * from + 5 * to) % 4; } /* 0 for some pairs */

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int size, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    slm_mesh_t m = NULL;
    if (slm_mesh_create(MPI_COMM_WORLD, 1, 1, &m) != SLM_OK || slm_mesh_set_ep(m, size) != SLM_OK) {
        fprintf(stderr, "ep_exchange: %s\n", slm_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int bad = 0;
    if (argc > 1 && !strcmp(argv[1], "stall")) {
        slm_watchdog_t wd = NULL;
        slm_watchdog_start(slm_mesh_world(m), 2.0, &wd);
        if (rank == 1) sleep(60); /* never reaches the exchange; the watchdog ends the job first */
        int send[size], recv[size];
        for (int q = 0; q < size; q++) send[q] = q;
        slm_mesh_ep_counts(m, send, recv, 1, 5);
        fprintf(stderr, "ep_exchange: the exchange returned without rank 1\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int send_rows[size], recv_rows[size], counts_send[size], counts_recv[size];
    size_t ns = 0, nr = 0;
    for (int q = 0; q < size; q++) {
        send_rows[q] = rows_to(rank, q);
        recv_rows[q] = rows_to(q, rank);
        counts_send[q] = 1000 * rank + q;
        ns += (size_t)send_rows[q];
        nr += (size_t)recv_rows[q];
    }
    float *send = malloc((ns + 1) * W * sizeof(float)), *recv = malloc((nr + 1) * W * sizeof(float));
    size_t at = 0;
    for (int q = 0; q < size; q++)
        for (int i = 0; i < send_rows[q]; i++, at++)
            for (int c = 0; c < W; c++) send[at * W + c] = (float)(1000 * rank + 100 * q + 10 * i + c);
    for (int pass = 0; pass < 2; pass++) { /* forward and backward use other tags */
        memset(recv, 0xff, (nr + 1) * W * sizeof(float));
        slm_mesh_ep_counts(m, counts_send, counts_recv, 1, 3);
        slm_mesh_ep_rows(m, send, send_rows, recv, recv_rows, W, 3, pass);
        at = 0;
        for (int p = 0; p < size; p++) {
            bad += counts_recv[p] != 1000 * p + rank;
            for (int i = 0; i < recv_rows[p]; i++, at++)
                for (int c = 0; c < W; c++) bad += recv[at * W + c] != (float)(1000 * p + 100 * rank + 10 * i + c);
        }
    }
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("ep_exchange: %zu rows received by rank 0 from %d ranks; %d wrong values in all\n", nr, size, bad);
    free(send);
    free(recv);
    slm_mesh_destroy(&m);
    MPI_Finalize();
    return bad ? 1 : 0;
}
