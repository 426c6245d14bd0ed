/* fsdp_comm.c - the nonblocking collectives of the sharded layer: launch, progress and
 * completion.
 *
 * Open MPI progresses a nonblocking collective only inside MPI calls, so the model calls
 * fsdp_poll between kernels (MPI_Testsome over what is outstanding); whatever compute has
 * not hidden is counted as exposed time when a wait must block. */
#include <string.h>
#include "fsdp_impl.h"
#include "shardlm/timer.h"

float *fsdp_unit_params(slm_fsdp_t f, int u)
{
    const fsdp_unit *un = &f->u[u];
    if (f->o.zero_stage < 3) return f->full_params + un->off;
    return u == 0 ? f->unit0_params : f->ppool.buf[un->pslot];
}

float *fsdp_unit_grads(slm_fsdp_t f, int u)
{
    const fsdp_unit *un = &f->u[u];
    if (f->o.zero_stage < 2) return f->full_grads + un->off;
    return u == 0 ? f->unit0_grads : f->gpool.buf[un->gslot];
}

static float *unit_recv(slm_fsdp_t f, int u)
{
    return u == 0 ? f->unit0_recv : f->gpool.recv[f->u[u].gslot];
}

int fsdp_find(slm_fsdp_t f, op_kind kind, int unit)
{
    for (int i = 0; i < FSDP_MAX_OPS; i++)
        if (f->ops[i].kind == kind && f->ops[i].unit == unit) return i;
    return -1;
}

/* What finishing op i means for the state it touched. */
static void complete(slm_fsdp_t f, int i)
{
    fsdp_op *op = &f->ops[i];
    fsdp_unit *un = &f->u[op->unit];
    f->stats.comm_ms += (slm_now() - op->t0) * 1e3;
    f->stats.bytes_sent += op->bytes;
    f->stats.collectives++;
    switch (op->kind) {
    case OP_GATHER: un->gathered = 2; break;
    case OP_REDUCE_SCATTER:
        if (f->o.zero_stage >= 2) { /* add this micro-step's reduced chunk to the shard */
            float *dst = f->shard_grads + un->shard_off;
            const float *src = unit_recv(f, op->unit);
            for (size_t k = 0; k < un->own_n; k++) dst[k] += src[k];
            if (op->unit != 0) f->gpool.busy[un->gslot] = 0;
            un->gslot = -1;
        }
        break;
    default: break;
    }
    op->kind = OP_NONE;
    f->req[i] = MPI_REQUEST_NULL;
}

/* Ring-algorithm volume each rank sends for one collective over n floats. */
static double ring_bytes(op_kind kind, size_t n, int p)
{
    double share = (double)(p - 1) / p * (double)n * sizeof(float);
    return kind == OP_ALLREDUCE ? 2.0 * share : share;
}

int fsdp_launch(slm_fsdp_t f, op_kind kind, int unit, int slot)
{
    int i = 0;
    while (i < FSDP_MAX_OPS && f->ops[i].kind != OP_NONE) i++;
    if (i == FSDP_MAX_OPS) { /* every entry busy: retire the first one */
        fsdp_wait(f, 0);
        i = 0;
    }
    fsdp_unit *un = &f->u[unit];
    const int n = (int)un->n, own = (int)un->own_n;
    MPI_Request *r = &f->req[i];
    switch (kind) {
    case OP_ALLREDUCE:
        MPI_Iallreduce(MPI_IN_PLACE, f->full_grads + un->off, n, MPI_FLOAT, MPI_SUM, f->dp, r);
        break;
    case OP_REDUCE_SCATTER: {
        float *recv = f->o.zero_stage == 1 ? f->shard_grads + un->shard_off : unit_recv(f, unit);
        MPI_Ireduce_scatter(fsdp_unit_grads(f, unit), recv, un->counts, MPI_FLOAT, MPI_SUM, f->dp, r);
        break;
    }
    case OP_GATHER: /* stage 3: the owned shard into the unit's gathered buffer */
        MPI_Iallgatherv(f->shard_params + un->shard_off, own, MPI_FLOAT, fsdp_unit_params(f, unit),
                        un->counts, un->displs, MPI_FLOAT, f->dp, r);
        un->gathered = 1;
        break;
    case OP_ALLGATHER: /* stages 1-2: updated shards back into the replicated vector */
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, f->full_params + un->off, un->counts,
                        un->displs, MPI_FLOAT, f->dp, r);
        break;
    default: break;
    }
    f->ops[i] = (fsdp_op){kind, unit, slot, slm_now(), ring_bytes(kind, un->n, f->size)};
    return i;
}

void fsdp_poll(slm_fsdp_t f)
{
    int idx[FSDP_MAX_OPS], n = 0;
    MPI_Testsome(FSDP_MAX_OPS, f->req, &n, idx, MPI_STATUSES_IGNORE);
    if (n == MPI_UNDEFINED) return;
    for (int k = 0; k < n; k++) complete(f, idx[k]);
}

void fsdp_wait(slm_fsdp_t f, int i)
{
    if (f->ops[i].kind == OP_NONE) return;
    double t0 = slm_now();
    MPI_Wait(&f->req[i], MPI_STATUS_IGNORE);
    f->stats.exposed_ms += (slm_now() - t0) * 1e3;
    complete(f, i);
}

void fsdp_wait_all(slm_fsdp_t f)
{
    for (int i = 0; i < FSDP_MAX_OPS; i++) fsdp_wait(f, i);
}

int fsdp_acquire(slm_fsdp_t f, fsdp_pool *pool, int wait)
{
    for (;;) {
        for (int s = 0; s < FSDP_SLOTS; s++)
            if (!pool->busy[s]) {
                pool->busy[s] = 1;
                return s;
            }
        if (!wait) return -1;
        /* Every buffer is held: wait for the oldest reduction, which frees one. */
        int oldest = -1;
        for (int i = 0; i < FSDP_MAX_OPS; i++)
            if (f->ops[i].kind == OP_REDUCE_SCATTER && f->ops[i].unit != 0 &&
                (oldest < 0 || f->ops[i].t0 < f->ops[oldest].t0))
                oldest = i;
        if (oldest < 0) return -1; /* held by gathers in use: a caller bug */
        fsdp_wait(f, oldest);
    }
}
