/* fsdp_comm.c - the nonblocking collectives of the sharded layer: launch, progress and
 * completion.
 *
 * Open MPI progresses a nonblocking collective only inside MPI calls, so the model calls
 * fsdp_poll between kernels (MPI_Testsome over what is outstanding); whatever compute has
 * not hidden is counted as exposed time when a wait must block. */
#include <string.h>
#include "fsdp_impl.h"
#include "shardlm/activity.h"
#include "shardlm/kernels.h"
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

/* bf16 staging of unit u's gradient as sent, and of its reduced chunk as received. */
static uint16_t *grad_wire(slm_fsdp_t f, int u)
{
    if (f->o.zero_stage < 2) return f->wire + f->u[u].off;
    return u == 0 ? f->unit0_wire : f->gpool.wire[f->u[u].gslot];
}

static uint16_t *grad_wire_recv(slm_fsdp_t f, int u)
{
    if (f->o.zero_stage == 1) return f->wire_shard + f->u[u].shard_off;
    return u == 0 ? f->unit0_wire_recv : f->gpool.wire_recv[f->u[u].gslot];
}

/* Stage 3, bf16: where unit u's gathered parameters arrive. */
static uint16_t *param_wire(slm_fsdp_t f, int u)
{
    return u == 0 ? f->unit0_pwire : f->ppool.wire[f->u[u].pslot];
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
    if (--f->inflight == 0) f->stats.comm_ms += (slm_now() - f->busy_since) * 1e3;
    const int u = op->unit;
    switch (op->kind) {
    case OP_GATHER:
        if (f->bf16) slm_f32_from_bf16(fsdp_unit_params(f, u), param_wire(f, u), un->n);
        un->gathered = 2;
        break;
    case OP_ALLREDUCE:
        if (f->bf16) slm_f32_from_bf16(f->full_grads + un->off, f->wire + un->off, un->n);
        break;
    case OP_ALLGATHER:
        if (f->bf16) slm_f32_from_bf16(f->full_params + un->off, f->wire + un->off, un->n);
        break;
    case OP_REDUCE_SCATTER:
        if (f->bf16 && f->o.zero_stage == 1)
            slm_f32_from_bf16(f->shard_grads + un->shard_off, grad_wire_recv(f, u), un->own_n);
        if (f->o.zero_stage >= 2) { /* add this micro-step's reduced chunk to the shard */
            float *dst = f->shard_grads + un->shard_off;
            float *src = unit_recv(f, u);
            if (f->bf16) slm_f32_from_bf16(src, grad_wire_recv(f, u), un->own_n);
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

/* Ring-algorithm volume each rank sends for one collective over n elements. */
static double ring_bytes(op_kind kind, size_t n, int p, size_t elem)
{
    double share = (double)(p - 1) / p * (double)n * (double)elem;
    return kind == OP_ALLREDUCE ? 2.0 * share : share;
}

/* The same collectives with 16-bit payloads: convert what is sent, reduce with the
 * bf16 sum (fp32 arithmetic, rounded at every combine); complete() converts back. */
static void launch_bf16(slm_fsdp_t f, op_kind kind, int unit, MPI_Request *r)
{
    fsdp_unit *un = &f->u[unit];
    const int n = (int)un->n, own = (int)un->own_n;
    switch (kind) {
    case OP_ALLREDUCE:
        slm_bf16_from_f32(f->wire + un->off, f->full_grads + un->off, un->n);
        MPI_Iallreduce(MPI_IN_PLACE, f->wire + un->off, n, MPI_UINT16_T, f->bf16_sum, un->comm, r);
        break;
    case OP_REDUCE_SCATTER:
        slm_bf16_from_f32(grad_wire(f, unit), fsdp_unit_grads(f, unit), un->n);
        MPI_Ireduce_scatter(grad_wire(f, unit), grad_wire_recv(f, unit), un->counts, MPI_UINT16_T,
                            f->bf16_sum, un->comm, r);
        break;
    case OP_GATHER:
        slm_bf16_from_f32(f->wire_shard + un->shard_off, f->shard_params + un->shard_off, un->own_n);
        MPI_Iallgatherv(f->wire_shard + un->shard_off, own, MPI_UINT16_T, param_wire(f, unit), un->counts,
                        un->displs, MPI_UINT16_T, un->comm, r);
        break;
    case OP_ALLGATHER:
        slm_bf16_from_f32(f->wire + un->off + un->own_lo, f->master + un->shard_off, un->own_n);
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, f->wire + un->off, un->counts, un->displs,
                        MPI_UINT16_T, un->comm, r);
        break;
    default: break;
    }
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
    if (f->bf16) launch_bf16(f, kind, unit, r);
    else
        switch (kind) {
        case OP_ALLREDUCE:
            MPI_Iallreduce(MPI_IN_PLACE, f->full_grads + un->off, n, MPI_FLOAT, MPI_SUM, un->comm, r);
            break;
        case OP_REDUCE_SCATTER: {
            float *recv = f->o.zero_stage == 1 ? f->shard_grads + un->shard_off : unit_recv(f, unit);
            MPI_Ireduce_scatter(fsdp_unit_grads(f, unit), recv, un->counts, MPI_FLOAT, MPI_SUM, un->comm, r);
            break;
        }
        case OP_GATHER: /* stage 3: the owned shard into the unit's gathered buffer */
            MPI_Iallgatherv(f->shard_params + un->shard_off, own, MPI_FLOAT, fsdp_unit_params(f, unit),
                            un->counts, un->displs, MPI_FLOAT, un->comm, r);
            break;
        case OP_ALLGATHER: /* stages 1-2: updated shards back into the replicated vector */
            MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, f->full_params + un->off, un->counts,
                            un->displs, MPI_FLOAT, un->comm, r);
            break;
        default: break;
        }
    if (kind == OP_GATHER) un->gathered = 1;
    f->ops[i] = (fsdp_op){kind, unit, slot, slm_now(),
                          ring_bytes(kind, un->n, un->size, f->bf16 ? sizeof(uint16_t) : sizeof(float))};
    if (f->inflight++ == 0) f->busy_since = slm_now();
    f->stats.bytes_sent += f->ops[i].bytes; /* counted when started, so a step owns its bytes */
    f->stats.collectives++;
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
    static const char *what[] = {"", "MPI_Wait: all-reduce of gradients", "MPI_Wait: reduce-scatter of gradients",
                                 "MPI_Wait: all-gather of parameters (stage 3)",
                                 "MPI_Wait: all-gather of updated parameters"};
    if (f->ops[i].kind == OP_NONE) return;
    slm_activity_set(what[f->ops[i].kind], f->ops[i].unit);
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
