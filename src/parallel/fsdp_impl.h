/* fsdp_impl.h - private state of the sharded data-parallel layer. */
#ifndef SHARDLM_FSDP_IMPL_H
#define SHARDLM_FSDP_IMPL_H

#include "shardlm/optim.h"
#include "shardlm/parallel.h"

#define FSDP_MAX_OPS 64
#define FSDP_SLOTS 3 /* gathered-parameter and gradient buffers per pool */

typedef enum { OP_NONE, OP_ALLREDUCE, OP_REDUCE_SCATTER, OP_GATHER, OP_ALLGATHER } op_kind;

/* One outstanding nonblocking collective. */
typedef struct {
    op_kind kind;
    int unit, slot;
    double t0, bytes;
} fsdp_op;

/* A unit of communication - a bucket of one or more consecutive model units (the
 * embeddings always alone) - and this rank's part of it. Its elements are split in `size`
 * chunks of `chunk` (the last ones shorter or empty) over its communicator. */
typedef struct {
    int first, last;       /* the model units it holds */
    MPI_Comm comm;         /* the ranks that sum its gradients and share it: dp, or edp for experts */
    int rank, size, expert;
    size_t off, n;         /* range in the parameter index space */
    size_t chunk;          /* ceil(n / dp) */
    size_t own_lo, own_n;  /* this rank's part, relative to off */
    size_t shard_off;      /* where that part sits in the shard arrays */
    int *counts, *displs;  /* every rank's part, for the v-collectives */
    int gathered;          /* stage 3: 0 absent, 1 in flight, 2 ready */
    int pslot, gslot;      /* buffers held, -1 for none (unit 0 uses its own) */
} fsdp_unit;

typedef struct {
    float *buf[FSDP_SLOTS];
    float *recv[FSDP_SLOTS];     /* gradient pools: the reduced chunk lands here */
    uint16_t *wire[FSDP_SLOTS];  /* bf16: the unit as it crosses the wire */
    uint16_t *wire_recv[FSDP_SLOTS];
    int busy[FSDP_SLOTS];
    size_t size;
} fsdp_pool;

struct slm_fsdp {
    slm_model_t model;
    MPI_Comm dp;
    int rank, size;
    slm_fsdp_options o;
    int nunits;            /* buckets */
    fsdp_unit *u;
    int *bucket_of;        /* model unit -> bucket */
    size_t nparams, shard_total;
    float *full_params;  /* stages 0-2: whole parameter vector */
    float *full_grads;   /* stages 0-1: whole gradient vector */
    float *shard_params; /* stage 3: the owned parts, unit after unit */
    float *shard_grads;  /* stages 1-3: reduced owned gradients */
    float *unit0_params, *unit0_grads, *unit0_recv; /* stage 3 / stages 2-3 */
    /* bf16 communication: fp32 master weights kept apart from the bf16-rounded copy the
     * model computes with, and 16-bit staging for what crosses the wire. */
    int bf16;
    float *master;          /* stage 0: whole; stages 1-2: owned chunks; stage 3: shard_params */
    uint16_t *wire;         /* stages 0-2: the whole vector (gradients, then parameters) */
    uint16_t *wire_shard;   /* stages 1 and 3: owned chunks */
    uint16_t *unit0_wire, *unit0_wire_recv, *unit0_pwire;
    MPI_Op bf16_sum;
    fsdp_pool ppool, gpool;
    slm_optimizer_t opt;   /* over one segment per bucket (stage 0: one over everything) */
    float clip_scale;       /* the clip factor the next optimizer step applies as it reads */
    MPI_Request req[FSDP_MAX_OPS];
    fsdp_op ops[FSDP_MAX_OPS];
    int last_micro;
    slm_fsdp_stats stats;
    int inflight;         /* collectives outstanding */
    double busy_since;    /* when inflight last went from 0 to 1 */
    slm_fsdp_memory mem;
};

/* fsdp_comm.c: launching, progressing and completing collectives */
int fsdp_launch(slm_fsdp_t f, op_kind kind, int unit, int slot);
void fsdp_poll(slm_fsdp_t f);
/* Wait until op i is done (counting the wait as exposed time). */
void fsdp_wait(slm_fsdp_t f, int i);
void fsdp_wait_all(slm_fsdp_t f);
/* Index of an outstanding op of this kind on unit, or -1. */
int fsdp_find(slm_fsdp_t f, op_kind kind, int unit);
/* A free slot of pool, waiting for a reduction to release one if all are held. */
int fsdp_acquire(slm_fsdp_t f, fsdp_pool *pool, int wait);

/* Parameter storage of unit u (stage 3: its gathered buffer). */
float *fsdp_unit_params(slm_fsdp_t f, int u);
float *fsdp_unit_grads(slm_fsdp_t f, int u);

#endif
