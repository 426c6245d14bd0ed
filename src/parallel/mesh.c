/* mesh.c - the rank mesh: a private duplicate of the caller's communicator, split into
 * world = pp x dp x tp with tp innermost, so the ranks of one tensor-parallel group are
 * consecutive (and, with the usual block placement, on one node). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mesh_impl.h"
#include "shardlm/activity.h"

int slm_mpi_thread_level = MPI_THREAD_SINGLE;

slm_status slm_mesh_create(MPI_Comm comm, int tp, int pp, slm_mesh_t *out)
{
    *out = NULL;
    int size;
    MPI_Comm_size(comm, &size);
    /* every rank reaches the same verdict from the same numbers: no collective needed */
    SLM_CHECK(tp >= 1 && pp >= 1 && size % (tp * pp) == 0, SLM_ERR_CONFIG,
              "%d ranks cannot be split into parallel.tp = %d x parallel.pp = %d", size, tp, pp);
    slm_mesh_t m = calloc(1, sizeof *m);
    SLM_CHECK(m, SLM_ERR_NOMEM, "out of memory");
    MPI_Comm_dup(comm, &m->world);
    MPI_Comm_rank(m->world, &m->rank);
    m->size = size;
    m->tp_size = tp;
    m->pp_size = pp;
    m->dp_size = size / (tp * pp);
    m->tp_rank = m->rank % tp;
    m->dp_rank = m->rank / tp % m->dp_size;
    m->pp_rank = m->rank / (tp * m->dp_size);
    /* a group is the ranks that differ only in its own coordinate */
    MPI_Comm_split(m->world, m->pp_rank * m->dp_size + m->dp_rank, m->rank, &m->tp);
    MPI_Comm_split(m->world, m->pp_rank * tp + m->tp_rank, m->rank, &m->dp);
    MPI_Comm_split(m->world, m->dp_rank * tp + m->tp_rank, m->rank, &m->pp);
    int ends = pp > 1 && (m->pp_rank == 0 || m->pp_rank == pp - 1);
    MPI_Comm_split(m->world, ends ? m->dp_rank * tp + m->tp_rank : MPI_UNDEFINED, m->rank, &m->tied);
    MPI_Comm_split(m->world, m->dp_rank, m->rank, &m->mp);
    MPI_Comm_split(m->world, m->pp_rank, m->rank, &m->stage);
    MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &m->node);
    MPI_Comm_rank(m->node, &m->local_rank);
    MPI_Comm_size(m->node, &m->local_size);
    m->ep = m->edp = MPI_COMM_NULL;
    m->ep_size = 1;
    *out = m;
    return SLM_OK;
}

void slm_mesh_destroy(slm_mesh_t *mp)
{
    slm_mesh_t m = *mp;
    if (!m) return;
    MPI_Comm_free(&m->node);
    if (m->ep != MPI_COMM_NULL) MPI_Comm_free(&m->ep);
    if (m->edp != MPI_COMM_NULL) MPI_Comm_free(&m->edp);
    free(m->ep_world);
    if (m->tied != MPI_COMM_NULL) MPI_Comm_free(&m->tied);
    MPI_Comm_free(&m->mp);
    MPI_Comm_free(&m->stage);
    MPI_Comm_free(&m->pp);
    MPI_Comm_free(&m->dp);
    MPI_Comm_free(&m->tp);
    MPI_Comm_free(&m->world);
    free(m);
    *mp = NULL;
}

MPI_Comm slm_mesh_world(slm_mesh_t m) { return m->world; }
MPI_Comm slm_mesh_dp_comm(slm_mesh_t m) { return m->dp; }
MPI_Comm slm_mesh_tp_comm(slm_mesh_t m) { return m->tp; }
MPI_Comm slm_mesh_pp_comm(slm_mesh_t m) { return m->pp; }
MPI_Comm slm_mesh_tied_comm(slm_mesh_t m) { return m->tied; }
MPI_Comm slm_mesh_mp_comm(slm_mesh_t m) { return m->mp; }
MPI_Comm slm_mesh_stage_comm(slm_mesh_t m) { return m->stage; }
int slm_mesh_rank(slm_mesh_t m) { return m->rank; }
int slm_mesh_size(slm_mesh_t m) { return m->size; }
int slm_mesh_dp_rank(slm_mesh_t m) { return m->dp_rank; }
int slm_mesh_dp_size(slm_mesh_t m) { return m->dp_size; }
int slm_mesh_tp_rank(slm_mesh_t m) { return m->tp_rank; }
int slm_mesh_tp_size(slm_mesh_t m) { return m->tp_size; }
int slm_mesh_pp_rank(slm_mesh_t m) { return m->pp_rank; }
int slm_mesh_pp_size(slm_mesh_t m) { return m->pp_size; }
int slm_mesh_local_size(slm_mesh_t m) { return m->local_size; }

/* The tensor-parallel all-reduces: timed, counted, and named for the watchdog. */
static void tp_allreduce(slm_mesh_t m, float *buf, size_t n, MPI_Op op)
{
    slm_activity_set("MPI_Allreduce: tensor-parallel activations", -1);
    double t0 = MPI_Wtime();
    for (size_t done = 0; done < n;) { /* MPI counts are int */
        int k = n - done > (size_t)1 << 30 ? 1 << 30 : (int)(n - done);
        MPI_Allreduce(MPI_IN_PLACE, buf + done, k, MPI_FLOAT, op, m->tp);
        done += (size_t)k;
    }
    m->tp_ms += (MPI_Wtime() - t0) * 1e3;
    m->tp_bytes += 2.0 * (m->tp_size - 1) / m->tp_size * (double)n * sizeof(float); /* ring volume */
    slm_activity_set("forward and backward", -1);
}

void slm_mesh_tp_allreduce(void *mesh, float *buf, size_t n) { tp_allreduce(mesh, buf, n, MPI_SUM); }
void slm_mesh_tp_allreduce_max(void *mesh, float *buf, size_t n) { tp_allreduce(mesh, buf, n, MPI_MAX); }

void slm_mesh_take_tp_stats(slm_mesh_t m, double *ms, double *bytes)
{
    *ms = m->tp_ms;
    *bytes = m->tp_bytes;
    m->tp_ms = m->tp_bytes = 0.0;
}

void slm_mesh_print(slm_mesh_t m, FILE *out)
{
    if (m->rank != 0) return;
    fprintf(out, "mesh      %d rank%s = pp %d x dp %d x tp %d (tp innermost: rank = (pp_i * %d + dp_i) * %d + tp_i)\n",
            m->size, m->size == 1 ? "" : "s", m->pp_size, m->dp_size, m->tp_size, m->dp_size, m->tp_size);
}
