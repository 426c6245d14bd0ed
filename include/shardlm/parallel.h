/* shardlm/parallel.h - the process mesh and fully sharded data parallelism (ZeRO 0-3).
 *
 * The mesh duplicates the caller's communicator once and splits it; no module touches
 * MPI_COMM_WORLD. The FSDP layer owns the training state of a model - parameters,
 * gradients and optimizer state, each sharded or replicated as the ZeRO stage says - binds
 * the model's units to it, and drives the collectives from the model's unit hooks so a
 * unit's gradient reduction runs while earlier units still compute. */
#ifndef SHARDLM_PARALLEL_H
#define SHARDLM_PARALLEL_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include "shardlm/agree.h"
#include "shardlm/model.h"
#include "shardlm/optim.h"
#include "shardlm/status.h"

/* The thread support MPI_Init_thread provided (set by the program that initialized MPI). */
extern int slm_mpi_thread_level;

typedef struct slm_mesh *slm_mesh_t;

/* Collective over comm: world = pp x dp x tp with tp innermost. Refuses a world that
 * tp x pp does not divide (before any collective). */
slm_status slm_mesh_create(MPI_Comm comm, int tp, int pp, slm_mesh_t *mesh);
void slm_mesh_destroy(slm_mesh_t *mesh);
MPI_Comm slm_mesh_world(slm_mesh_t mesh);
MPI_Comm slm_mesh_dp_comm(slm_mesh_t mesh);
int slm_mesh_rank(slm_mesh_t mesh);
int slm_mesh_size(slm_mesh_t mesh);
int slm_mesh_dp_rank(slm_mesh_t mesh);
int slm_mesh_dp_size(slm_mesh_t mesh);
MPI_Comm slm_mesh_tp_comm(slm_mesh_t mesh);
MPI_Comm slm_mesh_pp_comm(slm_mesh_t mesh);
/* The first and last pipeline stage of this rank's dp and tp coordinates (they share the
 * tied embedding); MPI_COMM_NULL on other stages and without pipeline parallelism. */
MPI_Comm slm_mesh_tied_comm(slm_mesh_t mesh);
/* All ranks of this rank's model replica (pp x tp ranks, one dp coordinate). */
MPI_Comm slm_mesh_mp_comm(slm_mesh_t mesh);
/* All ranks of this rank's pipeline stage (dp x tp ranks). */
MPI_Comm slm_mesh_stage_comm(slm_mesh_t mesh);
int slm_mesh_tp_rank(slm_mesh_t mesh);
int slm_mesh_tp_size(slm_mesh_t mesh);
int slm_mesh_pp_rank(slm_mesh_t mesh);
int slm_mesh_pp_size(slm_mesh_t mesh);
/* Ranks of this mesh on this rank's node. */
int slm_mesh_local_size(slm_mesh_t mesh);
/* Sum n floats in place over the tensor-parallel group (ctx: the mesh); the model's
 * slm_model_tp.allreduce. Collective over the group. */
void slm_mesh_tp_allreduce(void *mesh, float *buf, size_t n);
/* The same with the maximum. */
void slm_mesh_tp_allreduce_max(void *mesh, float *buf, size_t n);
/* Time spent in (they block: all of it exposed) and bytes sent by (ring volume) those
 * all-reduces since the last call. Local. */
void slm_mesh_take_tp_stats(slm_mesh_t mesh, double *ms, double *bytes);

/* Expert parallelism (src/parallel/experts.c): split the data-parallel group into groups
 * of ep consecutive ranks that share each MoE block's experts (ep divides dp), and the
 * expert-data-parallel groups of the ranks holding the same experts (dp / ep of them,
 * ranks ep apart). Collective over the world. */
slm_status slm_mesh_set_ep(slm_mesh_t mesh, int ep);
MPI_Comm slm_mesh_ep_comm(slm_mesh_t mesh);  /* MPI_COMM_NULL before slm_mesh_set_ep */
MPI_Comm slm_mesh_edp_comm(slm_mesh_t mesh); /* the data-parallel group when ep is 1 */
int slm_mesh_ep_rank(slm_mesh_t mesh);
int slm_mesh_ep_size(slm_mesh_t mesh);
/* The exchanges slm_model_ep asks for, over the expert-parallel group (ctx: the mesh).
 * Counts and rows go rank to rank, each rank's part into its own place, so what arrives
 * first changes nothing; while a rank waits, the watchdog's report names the MoE block,
 * the direction and the first rank whose part has not arrived. */
void slm_mesh_ep_counts(void *mesh, const int *send, int *recv, int n, int block);
void slm_mesh_ep_rows(void *mesh, const float *send, const int *send_rows, float *recv, const int *recv_rows,
                      int width, int block, int backward);
/* Time in and bytes sent by the expert exchanges since the last take. */
void slm_mesh_take_ep_stats(slm_mesh_t mesh, double *ms, double *bytes);
/* Rank 0 prints the shape of the mesh. */
void slm_mesh_print(slm_mesh_t mesh, FILE *out);

/* Binding of ranks to cores (parallel.bind). */
typedef enum {
    SLM_BIND_AUTO,  /* keep the launcher's binding when it gave the ranks of a node disjoint
                     * cores, else deal the node's cores out in blocks by local rank */
    SLM_BIND_CORES, /* always deal the cores out, whatever the launcher did */
    SLM_BIND_NONE   /* leave the process as it is */
} slm_bind_mode;
typedef struct slm_placement {
    int cores;          /* cores this rank is bound to: the default thread count */
    int tp_spans_nodes; /* this rank's tensor-parallel group is on several nodes */
    int tp_spans_numa;  /* ... or on one node but several NUMA nodes */
    char where[384];    /* "host cores 0-1, package 0, NUMA 0; bound by shardlm" */
} slm_placement;
/* Bind this rank as mode says and describe where it runs. Collective over the world. */
slm_status slm_mesh_bind(slm_mesh_t mesh, slm_bind_mode mode, slm_placement *out);
/* Rank 0 prints every rank's placement (the first 32) and warns about tensor-parallel
 * groups split across nodes or NUMA nodes. Collective over the world. */
void slm_mesh_print_binding(slm_mesh_t mesh, const slm_placement *p, int threads, FILE *out);

typedef struct slm_fsdp_options {
    int zero_stage; /* 0 replicated, 1 +optimizer sharded, 2 +gradients, 3 +parameters */
    int overlap;    /* 1: reduce each unit as its backward ends; 0: wait for each at once */
    double bucket_mb; /* consecutive blocks are fused into one collective until it holds
                       * this many MiB (0: one block per collective) */
    int bf16;       /* 1: gradients and gathered parameters travel as bfloat16; the model
                     * computes with bf16-rounded parameters; master weights and optimizer
                     * state stay fp32 */
    slm_optim_config optim;
    MPI_Comm tp;    /* the tensor-parallel group, for the gradient norm of split tensors;
                     * MPI_COMM_NULL without tensor parallelism */
    MPI_Comm stage; /* dp x tp ranks of this pipeline stage: where the optimizer's per-tensor
                     * statistics are combined */
    MPI_Comm pp;    /* the pipeline group, for the gradient norm over stages (or NULL) */
    MPI_Comm tied;  /* first and last pipeline stage, which both hold the model's tied unit
                     * (slm_model_tied_unit): its gradient is summed over them (or NULL) */
    int count_tied; /* 0: leave the tied unit out of the gradient norm (the last stage's copy) */
    int ep;         /* expert parallelism: the experts' units reduce and shard over edp, and
                     * the gradient norm sums the experts over ep (1: none) */
    MPI_Comm ep_comm, edp;
} slm_fsdp_options;

/* Communication accounting since the last slm_fsdp_take_stats. */
typedef struct slm_fsdp_stats {
    double exposed_ms;  /* time compute waited for communication */
    double comm_ms;     /* wall time with at least one collective in flight (from its start
                         * to its observed end); collectives in flight together count once */
    double bytes_sent;  /* per rank, by the algorithm's volume (ring) */
    int collectives;
} slm_fsdp_stats;

/* Memory the layer allocated, in bytes, by kind. */
typedef struct slm_fsdp_memory {
    double params, grads, optimizer, gathered, grad_buckets;
} slm_fsdp_memory;

typedef struct slm_fsdp *slm_fsdp_t;

/* Allocate the training state for model (created without storage) over the dp
 * communicator, bind the model to it and install the hooks. Collective over dp. */
slm_status slm_fsdp_create(slm_model_t model, MPI_Comm dp, const slm_fsdp_options *opt,
                           slm_fsdp_t *fsdp);
void slm_fsdp_destroy(slm_fsdp_t *fsdp);
/* Initialize the parameters this rank holds (GPT-2 init, layout independent). Local. */
void slm_fsdp_init_params(slm_fsdp_t f, uint64_t seed);
/* Start an optimizer step: zero gradient accumulators. Local. */
void slm_fsdp_begin_step(slm_fsdp_t f);
/* Tell the layer whether the next backward is the last micro-step of the step (stages 0
 * and 1 reduce only then; stages 2 and 3 reduce every micro-step into their shards). */
void slm_fsdp_set_last_micro(slm_fsdp_t f, int last);
/* Complete every outstanding reduction of this backward. Collective over dp. */
slm_status slm_fsdp_finish_backward(slm_fsdp_t f);
/* Global L2 norm of the reduced gradient. Collective over dp. */
double slm_fsdp_grad_norm(slm_fsdp_t f);
/* Pipeline parallelism: sum the tied unit's reduced gradient over the first and last stage, so
 * both copies of the tied embedding take the same step; returns the bytes sent (ring
 * volume). Collective over the tied group. */
double slm_fsdp_sum_tied(slm_fsdp_t f);
/* Clip as slm_clip_grads does, on what this rank holds: the factor is applied as the next
 * optimizer step reads the gradients (no pass of its own; the gradients themselves stay
 * unscaled). Local. */
void slm_fsdp_clip(slm_fsdp_t f, double norm, double max_norm);
/* The optimizer step on the owned shards, then make parameters whole again where the
 * stage keeps them replicated (stages 1-2: the all-gathers are started here and waited for
 * by the next forward, bucket by bucket, or by any call that reads the state). Collective
 * over dp, and over the stage's ranks when the optimizer combines per-tensor statistics. */
slm_status slm_fsdp_optimizer_step(slm_fsdp_t f, double lr);
/* The whole parameter (grads = 0) or reduced gradient (grads = 1) vector on dp rank 0
 * (full: num_params floats there; ignored elsewhere). Collective over dp. */
slm_status slm_fsdp_gather(slm_fsdp_t f, int grads, float *full);
/* A contiguous range of the parameter index space this rank holds: the buffer of its fp32
 * (master) parameters (NULL for a range of optimizer state only), and whether the
 * optimizer keeps state for it (slm_optimizer_state_at). */
typedef struct slm_fsdp_range {
    size_t offset, count;
    float *params;
    int optimizer;
} slm_fsdp_range;
/* The ranges to save (for_read = 0: across ranks every element exactly once) or to fill
 * when restoring (for_read = 1: also the replicated copies the stage keeps). out needs
 * room for 2 x buckets entries; returns how many were written. Local. */
int slm_fsdp_state_ranges(slm_fsdp_t f, int for_read, slm_fsdp_range *out);
/* The chunk of every bucket this rank owns (at every ZeRO stage, also 0 where the
 * optimizer's segment is the whole vector): the outer optimizer of islands keeps its state
 * for these, so it is sharded over the data-parallel ranks whatever the stage. params
 * points at the fp32 (master) values; grads is NULL. out needs room for the buckets;
 * returns how many. Local. */
int slm_fsdp_owned_chunks(slm_fsdp_t f, slm_optim_segment *out);
/* Complete every collective still in flight (the all-gathers an update started), so the
 * owned chunks may be read and written. Collective over dp. */
void slm_fsdp_settle(slm_fsdp_t f);
/* After the owned chunks' parameters were changed from outside (the outer step): make
 * the copies derived from them right again - the replicated vector (all-gathered over
 * each bucket's ranks), bf16 copies, gathered stage-3 units. Collective over dp. */
void slm_fsdp_chunks_changed(slm_fsdp_t f);
/* After the read ranges were filled: rebuild what derives from them (bf16 copies,
 * masters, the optimizer's step count) and drop gathered copies. Local. */
void slm_fsdp_after_load(slm_fsdp_t f, long optimizer_steps);
/* The optimizer over this rank's shards (its state groups are what checkpoints store). */
slm_optimizer_t slm_fsdp_optimizer(slm_fsdp_t f);
slm_fsdp_stats slm_fsdp_take_stats(slm_fsdp_t f);
/* Buckets: the collectives one gradient reduction takes. */
int slm_fsdp_num_buckets(slm_fsdp_t f);
slm_fsdp_memory slm_fsdp_memory_of(slm_fsdp_t f);
/* The per-rank bytes the stage is expected to need for parameters (with fp32 masters
 * apart when bf16) and gradients, plus optimizer_bytes: the figure the log prints next to
 * the measured one. Of the nparams, experts are sharded over dp / ep ranks. */
double slm_fsdp_expected_bytes(size_t nparams, size_t experts, int dp, int ep, int zero_stage, int bf16,
                               double optimizer_bytes);
/* The network between the ranks of comm: one-way latency of an 8-byte message and
 * bandwidth of a `bytes` message between the first and the last rank (ping-pong, median
 * of `reps`), and the bus bandwidth of an all-reduce of `bytes` over all ranks (2 (p-1)/p
 * of the buffer per rank over the slowest rank's time, median of `reps`); nodes counts the
 * shared-memory domains. With one rank only ranks and nodes are set. Collective. */
typedef struct slm_net_measurement {
    int ranks, nodes;
    size_t bytes;
    double latency_s, bandwidth_Bps, allreduce_bus_Bps;
} slm_net_measurement;
slm_status slm_net_measure(MPI_Comm comm, size_t bytes, int reps, slm_net_measurement *out);

/* The buckets of n model units of size[u] parameters: the first unit (the embeddings) alone,
 * then consecutive units until a bucket reaches bucket_mb MiB of fp32 (0: every unit its
 * own), never across a change of group[u] (units that reduce over other ranks; NULL: all
 * alike). Fills bucket_of[u] unless it is NULL; returns the number of buckets. */
int slm_fsdp_group_units(const size_t *size, const int *group, int n, double bucket_mb, int *bucket_of);
/* The groups of model's units for slm_fsdp_group_units under expert parallelism of ep
 * ranks: 1 for a unit of experts, 0 for the rest; NULL (nothing written) when ep is 1,
 * where the experts reduce over the data-parallel group like everything else. */
const int *slm_fsdp_unit_groups(slm_model_t model, int ep, int *group);

/* Islands (islands.c, docs/islands.md): comm cut into `count` islands of consecutive
 * ranks (*island: this rank's, *index: its number) and the communicator across them that
 * joins the ranks with the same rank in their islands. Collective over comm. */
slm_status slm_islands_split(MPI_Comm comm, int count, MPI_Comm *island, MPI_Comm *across, int *index);
/* What one outer step took. */
typedef struct slm_islands_stats {
    int islands;     /* that took part */
    double wait_ms;  /* until the last island arrived */
    double comm_ms;  /* summing the pseudo-gradients and applying the step */
    double bytes;    /* sent by this rank (ring volume) */
} slm_islands_stats;
/* How pseudo-gradients cross between islands (islands.compress): fp32 sums (none), or
 * every island's Δ gathered as bf16, or as int8 with a scale per block and error feedback,
 * and added up in island order. */
typedef enum { SLM_ISLANDS_FP32, SLM_ISLANDS_BF16, SLM_ISLANDS_INT8 } slm_islands_wire;
slm_islands_wire slm_islands_wire_named(const char *compress);
/* The outer step: every chunk's pseudo-gradient exchanged over the islands (each chunk's
 * exchange started at once, each applied as it completes), the outer optimizer's step,
 * θ = anchor. sumsq as slm_outer_apply. Every island gets the same bits. Collective over
 * across; an allocation failure is every island's. */
slm_status slm_islands_outer_step(MPI_Comm across, slm_outer_t outer, slm_islands_wire wire, double *sumsq,
                                  slm_islands_stats *stats);

/* The ranges of model's parameter index space rank `rank` of dp updates under zero_stage
 * with buckets of bucket_mb (as slm_fsdp_create cuts them, experts over dp / ep ranks):
 * stage 0 one segment over everything, else the rank's chunk of every bucket, one segment
 * each (pointers NULL).
 * out needs room for slm_model_num_units(model) entries; returns how many. Local. */
int slm_fsdp_rank_segments(slm_model_t model, double bucket_mb, int dp, int ep, int rank, int zero_stage,
                           slm_optim_segment *out);

/* What slm_fsdp_create allocates, by kind, for a model of nparams parameters on this
 * rank in nbuckets buckets (slm_fsdp_group_units: bucket 0, the embeddings, of bucket0
 * elements, the largest other one max_bucket), without creating it: for planning. Under
 * expert parallelism (ep > 1) `experts` of the parameters are in expert buckets, the
 * largest max_expert_bucket, sharded over dp / ep ranks. The shards are counted as
 * nparams/dp + nbuckets (each bucket's shard is rounded up), so this is at most a few
 * elements per bucket above what is allocated. The optimizer's state is optimizer_bytes
 * (slm_optim_bytes_for). */
slm_fsdp_memory slm_fsdp_memory_for(size_t nparams, size_t experts, size_t bucket0, size_t max_bucket,
                                    size_t max_expert_bucket, int nbuckets, int dp, int ep,
                                    int zero_stage, int bf16, double optimizer_bytes);

#endif
