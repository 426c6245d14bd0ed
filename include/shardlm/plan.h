/* shardlm/plan.h - compute-optimal planning: loss laws L(N, D), the compute-optimal split
 * of a budget, GPT-2 shapes of a given size, and the memory a layout needs per rank.
 * Pure arithmetic: no MPI, no allocation of a model. docs/scaling.md gives the formulas. */
#ifndef SHARDLM_PLAN_H
#define SHARDLM_PLAN_H

#include <stddef.h>
#include "shardlm/model.h"
#include "shardlm/optim.h"
#include "shardlm/status.h"

/* L(N, D) = E + A / N^alpha + B / D^beta: the loss after D training tokens of a model of
 * N parameters (all of them, embeddings included). */
typedef struct slm_loss_law {
    char name[64];
    double E, A, B, alpha, beta;
} slm_loss_law;

/* "hoffmann" (Hoffmann et al. 2022, the Chinchilla fit: E 1.69, A 406.4, B 410.7,
 * alpha 0.34, beta 0.28) or "besiroglu" (Besiroglu et al. 2024's replication: E 1.8172,
 * A 482.01, B 2085.43, alpha 0.3478, beta 0.3658); NULL for another name. */
const slm_loss_law *slm_law_builtin(const char *name);
/* Read a law from a JSON file with the keys E, A, B, alpha and beta (what `launch/scale`
 * writes after a fit; further keys are ignored). The name becomes the file name. */
slm_status slm_law_load(const char *path, slm_loss_law *law);
double slm_law_loss(const slm_loss_law *law, double N, double D);
/* The N and D that minimize L under C = 6 N D:
 *   N = G (C/6)^(beta/(alpha+beta)),  D = (C/6) / N,  G = (alpha A / (beta B))^(1/(alpha+beta)). */
void slm_law_optimum(const slm_loss_law *law, double C, double *N, double *D);
/* The budget C for which N parameters are compute-optimal (the inverse of the above). */
double slm_law_budget_for(const slm_loss_law *law, double N);

/* One training run's outcome: N parameters trained on D tokens reached `loss`. */
typedef struct slm_loss_point {
    double N, D, loss;
} slm_loss_point;
/* Fit a law to n >= 5 runs as Hoffmann et al. 2022 did: minimise the Huber loss (delta;
 * they used 1e-3) of log L(N, D) - log loss over the runs, from a grid of 768 starts
 * (log A, log B in 0..24, log E in -1..1, alpha, beta in 0.2..1.4), each run by BFGS to
 * a small gradient; the best minimum wins. *objective (may be NULL) gets its value. The
 * law's name is "fit". */
slm_status slm_law_fit(const slm_loss_point *pts, int n, double delta, slm_loss_law *law, double *objective);

/* A shape of base's architecture near `params` parameters (slm_model_params_of):
 * d_model a multiple of head_size, n_head = d_model / head_size, key/value heads in base's
 * ratio to the heads, the architecture's default MLP width, base's vocabulary and
 * sequence length; among the shapes within 10% of the target, the one whose
 * d_model / n_layer is nearest `aspect` (by ratio); if none is within 10%, the nearest in
 * size. Fails (SLM_ERR_ARG, with the reason) when even one layer of the smallest width
 * is larger than the target. */
typedef struct slm_plan_shape {
    slm_model_config model;
    double params;
} slm_plan_shape;
slm_status slm_plan_shape_for(double params, const slm_model_config *base, int head_size, double aspect,
                              slm_plan_shape *out);

/* A layout to plan memory for: world = dp * tp * pp ranks. */
typedef struct slm_plan_layout {
    int dp, tp, pp, zero_stage, bf16;
    int micro_batch, global_batch; /* sequences: per rank per micro-step, per optimizer step */
    int threads;                   /* OpenMP threads per rank (attention's scratch) */
    double bucket_mb;              /* parallel.bucket_mb: how the gradient reduction is split */
    slm_optim_config optim;        /* the optimizer whose state is counted (name "": AdamW) */
    int ep;                        /* expert-parallel ranks (0 or 1: none) */
} slm_plan_layout;

/* Bytes per rank by kind, as `shardlm train` allocates them and its `memory` line prints,
 * for the pipeline stage that needs the most (stage 0: the embeddings and the most
 * micro-batches in flight). */
typedef struct slm_plan_memory {
    double params, grads, optimizer, gathered, grad_buffers, activations, total;
    int stage;
    double nparams; /* the parameters this rank's stage holds (its tensor-parallel share) */
    int buckets;    /* the collectives one gradient reduction of that stage takes */
    double embed_params; /* of those, the (tied) embeddings' (0 on a stage without them) */
} slm_plan_memory;

/* The memory per rank of model `cfg` (cfg->recompute included) under `layout`. Fails
 * with the reason when the layout does not divide the model or the batch (tp must divide
 * n_head, pp must not exceed n_layer, micro_batch * dp must divide global_batch). */
slm_status slm_plan_memory_for(const slm_model_config *cfg, const slm_plan_layout *layout,
                               slm_plan_memory *out);

/* The machine as `shardlm bench calibrate` measured it (a JSON file). */
typedef struct slm_calibration {
    double gflops_per_rank; /* model FLOP/s of one rank training (its MFU times the GEMM peak) */
    double gemm_gflops;     /* the GEMM peak of one rank */
    double latency_s, bandwidth_Bps, allreduce_bus_Bps;
    int ranks, nodes, threads;
} slm_calibration;
slm_status slm_calibration_load(const char *path, slm_calibration *cal);

/* Predicted time of one optimizer step, in seconds, by part:
 *   compute  = flops_per_token * global_batch * T / (dp * tp * pp) / gflops_per_rank
 *   bubble   = compute * (pp - 1) / m                 (1F1B, m micro-batches per step)
 *   dp_comm  = h (dp-1)/dp * S / bus + c (dp-1) * latency * buckets, in units of one
 *              reduce-scatter or all-gather of S = this rank's parameters in bytes (2 per
 *              parameter in bf16), over M micro-steps per step (docs/parallelism.md):
 *                stages 0-1: h = c = 2 (an all-reduce, or reduce-scatter + all-gather, once)
 *                stage 2:    h = c = M + 1 (a reduce-scatter per micro-step, one all-gather)
 *                stage 3:    h = M (3 - embeddings / S's parameters), c = 3 M (per micro-step
 *                            gathers for forward and backward, the embeddings kept, and a
 *                            reduce-scatter)
 *   tp_comm  = 4 all-reduces of B*T*C floats over tp ranks per layer of the stage per
 *              micro-batch (two in forward, two in backward)
 *   pp_comm  = 2 messages of B*T*C floats per micro-batch (activations out, gradients back)
 *   step     = compute + bubble + dp_comm + tp_comm + pp_comm   (nothing overlapped)
 *   overlapped = the same with the gradient reduction hidden behind the backward (two
 *              thirds of compute) as far as it fits. */
typedef struct slm_plan_time {
    double compute_s, bubble_s, dp_comm_s, tp_comm_s, pp_comm_s, step_s, overlapped_s;
} slm_plan_time;
void slm_plan_step_time(const slm_model_config *cfg, const slm_plan_layout *layout, const slm_plan_memory *mem,
                        const slm_calibration *cal, slm_plan_time *out);

/* The bytes of expert parameters one rank holds (fp32, the pipeline stage with the most),
 * for an MoE model at tensor-parallel size tp and pp stages. Local. */
double slm_plan_expert_bytes(const slm_model_config *cfg, int tp, int ep, int pp);

#endif
