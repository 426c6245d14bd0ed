/* experts.c - the communicators and exchanges of expert parallelism. The ranks of one
 * expert-parallel group hold different experts of every MoE block and exchange the rows
 * (token activations) routed to them; the ranks of one expert-data-parallel group hold
 * the same experts and sum their gradients. */
#include <stdlib.h>
#include <string.h>
#include "mesh_impl.h"
#include "shardlm/activity.h"
#include "shardlm/timer.h"

slm_status slm_mesh_set_ep(slm_mesh_t m, int ep)
{
    SLM_CHECK(ep >= 1 && m->dp_size % ep == 0, SLM_ERR_CONFIG,
              "parallel.ep = %d does not divide the %d data-parallel ranks (world / (tp x pp))", ep, m->dp_size);
    const int tp = m->tp_size, group = m->dp_rank / ep, lane = m->dp_rank % ep;
    /* same stage and tensor-parallel rank; consecutive dp ranks share experts, ranks ep apart hold the same */
    MPI_Comm_split(m->world, (m->pp_rank * tp + m->tp_rank) * (m->dp_size / ep) + group, m->rank, &m->ep);
    MPI_Comm_split(m->world, (m->pp_rank * tp + m->tp_rank) * ep + lane, m->rank, &m->edp);
    MPI_Comm_rank(m->ep, &m->ep_rank);
    MPI_Comm_size(m->ep, &m->ep_size);
    m->ep_world = malloc((size_t)m->ep_size * sizeof(int));
    SLM_CHECK(m->ep_world, SLM_ERR_NOMEM, "out of memory");
    MPI_Allgather(&m->rank, 1, MPI_INT, m->ep_world, 1, MPI_INT, m->ep);
    return SLM_OK;
}

MPI_Comm slm_mesh_ep_comm(slm_mesh_t m) { return m->ep; }
MPI_Comm slm_mesh_edp_comm(slm_mesh_t m) { return m->edp != MPI_COMM_NULL ? m->edp : m->dp; }
int slm_mesh_ep_rank(slm_mesh_t m) { return m->ep_rank; }
int slm_mesh_ep_size(slm_mesh_t m) { return m->ep_size; }

/* Every rank's part of send to that rank and every rank's part of recv from it (counts
 * in elements of type, packed in rank order), rank to rank; waiting, the activity names
 * the first rank whose part has not arrived. */
static void exchange(slm_mesh_t m, const void *send, const int *send_n, void *recv, const int *recv_n,
                     MPI_Datatype type, int tag, const char *what, int block, int backward)
{
    const int P = m->ep_size, me = m->ep_rank;
    int size;
    MPI_Type_size(type, &size);
    const double t0 = slm_now();
    MPI_Request req[2 * P];
    size_t so = 0, ro = 0;
    double bytes = 0.0;
    for (int q = 0; q < P; q++) {
        req[q] = req[P + q] = MPI_REQUEST_NULL;
        if (q == me) {
            memcpy((char *)recv + ro * size, (const char *)send + so * size, (size_t)send_n[q] * size);
        } else {
            MPI_Irecv((char *)recv + ro * size, recv_n[q], type, q, tag, m->ep, &req[q]);
            MPI_Isend((const char *)send + so * size, send_n[q], type, q, tag, m->ep, &req[P + q]);
            bytes += (double)send_n[q] * size;
        }
        so += (size_t)send_n[q];
        ro += (size_t)recv_n[q];
    }
    const char *dir = backward ? "backward" : "forward";
    for (int q = 0; q < P; q++) { /* in rank order: the report names the first one missing */
        if (req[q] == MPI_REQUEST_NULL) continue;
        slm_activity_set_text("MoE block %d %s: waiting for the %s of world rank %d (expert-parallel rank %d of %d)",
                              block, dir, what, m->ep_world[q], q, P);
        MPI_Wait(&req[q], MPI_STATUS_IGNORE);
    }
    slm_activity_set_text("MoE block %d %s: sending %s to the expert-parallel ranks", block, dir, what);
    MPI_Waitall(P, req + P, MPI_STATUSES_IGNORE);
    m->ep_ms += (slm_now() - t0) * 1e3;
    m->ep_bytes += bytes;
}

/* Tags: counts and rows of one block apart, and apart from other blocks' */
void slm_mesh_ep_counts(void *mesh, const int *send, int *recv, int n, int block)
{
    slm_mesh_t m = mesh;
    int each[m->ep_size];
    for (int q = 0; q < m->ep_size; q++) each[q] = n;
    exchange(m, send, each, recv, each, MPI_INT, 2 * block, "row counts", block, 0);
}

void slm_mesh_ep_rows(void *mesh, const float *send, const int *send_rows, float *recv, const int *recv_rows,
                      int width, int block, int backward)
{
    slm_mesh_t m = mesh;
    int sn[m->ep_size], rn[m->ep_size];
    for (int q = 0; q < m->ep_size; q++) sn[q] = send_rows[q] * width, rn[q] = recv_rows[q] * width;
    exchange(m, send, sn, recv, rn, MPI_FLOAT, 2 * block + 1, "rows", block, backward);
}

void slm_mesh_take_ep_stats(slm_mesh_t m, double *ms, double *bytes)
{
    *ms = m->ep_ms;
    *bytes = m->ep_bytes;
    m->ep_ms = m->ep_bytes = 0.0;
}
