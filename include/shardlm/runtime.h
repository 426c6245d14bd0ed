/* shardlm/runtime.h - the training loop and what surrounds it: metrics, the oracle
 * dump, text sampling and the compute-peak probe that MFU is measured against. */
#ifndef SHARDLM_RUNTIME_H
#define SHARDLM_RUNTIME_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include "shardlm/ckpt.h"
#include "shardlm/conf.h"
#include "shardlm/data.h"
#include "shardlm/model.h"
#include "shardlm/status.h"

/* Exit statuses the batch scripts act on (docs/cli.md). */
#define SLM_EXIT_PREEMPTED 75 /* stopped by a signal after a checkpoint: requeue and resume */
#define SLM_EXIT_WATCHDOG 124 /* no step completed within train.watchdog_s: aborted */

/* Preemption signals: SIGTERM, SIGUSR1, SIGINT set a flag the loop acts on at the next
 * step boundary; a second signal, or grace_s after the first (0: no deadline), exits at
 * once with SLM_EXIT_PREEMPTED. */
void slm_signals_install(int rank, double grace_s);
/* The signal received, or 0. */
int slm_signal_pending(void);

/* The watchdog: aborts the job with SLM_EXIT_WATCHDOG, after saying where this rank is
 * stuck, when no step completes for limit_s seconds (0: no watchdog). */
typedef struct slm_watchdog *slm_watchdog_t;
slm_status slm_watchdog_start(MPI_Comm comm, double limit_s, slm_watchdog_t *watchdog);
void slm_watchdog_stop(slm_watchdog_t *watchdog);

/* Train as conf says on the ranks of comm (collective). Errors that every rank sees
 * alike (configuration, data) are raised before any communication. */
slm_status slm_train_run(const slm_conf *conf, MPI_Comm comm);
/* The groups of a checkpoint written by a run with these optimizer settings over a model
 * with this tensor table: params, then the optimizer's state groups, their tables set
 * (those of the state groups in info, which the caller frees with slm_optim_groups_free)
 * and no pieces. Returns how many (at most SLM_TRAIN_MAX_CKPT_GROUPS), or -1 for an
 * unknown optimizer. Local. */
#define SLM_TRAIN_MAX_CKPT_GROUPS (4 + SLM_OPTIM_MAX_GROUPS)
int slm_train_ckpt_groups(const slm_optim_config *optim, const slm_tensor_info *tensors, int ntensors,
                          slm_ckpt_group *out, slm_optim_group_info *info);
/* A model with MoE blocks also stores its routers' state: the group "moe_router", one
 * dataset "bias" of shape (MoE blocks, experts), whose table this fills into *table.
 * Returns 1 when the model has it (written into *out, no pieces), else 0. Local. */
int slm_train_moe_ckpt_group(const slm_model_config *model, slm_tensor_info *table, slm_ckpt_group *out);
/* A run with islands (islands.count > 1) also stores its outer optimizer: "outer_anchor"
 * and, with momentum, "outer_momentum", elementwise over the model's tensors (this table).
 * Returns how many it wrote into out (no pieces). Local. */
int slm_train_outer_ckpt_groups(const slm_conf *conf, const slm_tensor_info *tensors, int ntensors,
                                slm_ckpt_group *out);
/* Build the mesh, bind the ranks and print both, without allocating or training anything
 * (`shardlm train --dry-run`). Collective. */
slm_status slm_train_dry_run(const slm_conf *conf, MPI_Comm comm);

/* The GEMM backend of a run (train.matmul = auto | openblas | dnnl): every candidate is
 * checked for correct products on this CPU (one that fails on any rank is never used);
 * under auto they are then timed on the model's products for micro-batches of B and the
 * fastest is selected, the one named `prefer` (a resumed run's, or NULL) unless another
 * is faster by 5 % and 1 ms. All ranks select the same one. Collective. */
typedef struct slm_matmul_choice {
    int ncand, chosen, timed;
    char name[SLM_GEMM_NCANDIDATES][32]; /* each of slm_gemm_candidates, by its name */
    int measured[SLM_GEMM_NCANDIDATES], ok[SLM_GEMM_NCANDIDATES], failed_rank[SLM_GEMM_NCANDIDATES];
    char why[SLM_GEMM_NCANDIDATES][160]; /* why a candidate failed its check (on failed_rank) */
    double gflops[SLM_GEMM_NCANDIDATES]; /* rate on the model's products, mean over ranks (when timed) */
    double fp32_gflops, bf16_gflops; /* the fastest fp32 and bf16 rates */
    char choice[32];      /* the one selected */
    double probe_s;       /* time the checks and timings took */
} slm_matmul_choice;
slm_status slm_matmul_choose(MPI_Comm comm, const char *matmul, int bf16, slm_model_t model, int B,
                             const char *prefer, slm_matmul_choice *choice);
/* The choice as a log line, then warnings: OpenBLAS on generic kernels (with the
 * OPENBLAS_CORETYPE that fixes it), bf16 products slower than fp32. Call on one rank. */
void slm_matmul_report(const slm_matmul_choice *choice, const char *matmul, int bf16, FILE *out);

/* Set the compute threads (OpenBLAS and OpenMP); 0 leaves the defaults. */
void slm_set_threads(int threads);
/* Threads compute will use. */
int slm_get_threads(void);

/* The whole vocabulary's logits (V) after the tokens tok (T of them), into out. */
typedef void (*slm_next_logits_fn)(void *ctx, const int32_t *tok, int T, float *out);
/* Append ntokens tokens to tok[0..n) (room for n + ntokens + 1), each drawn from the logits
 * next_logits gives for the last seq_len tokens: greedy at temperature 0, else from the
 * softmax at that temperature over the top_k largest logits (0: all). Returns the new
 * length, or -1 out of memory (on every rank of comm alike, before next_logits runs).
 * Every rank that runs it with the same logits draws the same tokens. Collective over
 * comm, the ranks next_logits runs on together (MPI_COMM_NULL: this rank alone). */
long slm_sample_tokens(slm_next_logits_fn next_logits, void *ctx, MPI_Comm comm, int32_t *tok, long n, int ntokens,
                       int seq_len, int vocab_size, double temperature, int top_k, uint64_t seed);

/* Per-step record written to the JSON-lines metrics file. */
/* The load of one MoE block in a step: the tokens its experts got, as shares of the mean
 * (lowest, highest, coefficient of variation), the share of assignments capacity dropped,
 * and its auxiliary and z losses (means over micro-batches). */
typedef struct slm_moe_layer_load {
    int block;
    double min, max, cv, dropped, aux, z;
} slm_moe_layer_load;

typedef struct slm_step_metrics {
    long step, steps;
    double loss, lr, grad_norm, tokens_per_s, mfu, step_ms, exposed_comm_ms, peak_rss_mib;
    long long tokens_seen;
    double comm_bytes;       /* sent per rank this step (ring-algorithm volume), all kinds */
    double overlap_fraction; /* share of collective time hidden behind compute */
    double tp_comm_bytes;    /* of comm_bytes: the tensor-parallel all-reduces */
    double pp_comm_bytes;    /* of comm_bytes: pipeline messages and the tied embedding's sum */
    double pipeline_wait_ms; /* time this rank's stage waited for other stages */
    double val_loss;         /* validation loss after this step, or NAN when not evaluated */
    /* this rank's time in the step by kind: matrix products, attention, element-wise
     * kernels, gradient norm + clipping + optimizer update (with their collectives), and
     * loading batches */
    double matmul_ms, attention_ms, elementwise_ms, optimizer_ms, data_ms;
    const char *matmul;      /* the GEMM backend in use (slm_gemm_name) */
    double ep_comm_ms, ep_comm_bytes; /* of exposed_comm_ms and comm_bytes: the experts' exchanges */
    /* MoE: the step's auxiliary and z losses (summed over blocks) and each block's load */
    int moe_layers;
    double moe_aux_loss, moe_z_loss;
    const slm_moe_layer_load *moe;
    /* islands: the outer step after this step, when there was one (outer_step > 0: the
     * how-manieth), with the islands that took part, the bytes this rank sent for it, the
     * norm of the anchor's step, the time waiting for the other islands and in the sums */
    long outer_step;
    int outer_islands, island;
    double outer_bytes, outer_norm, outer_wait_ms, outer_ms;
} slm_step_metrics;
void slm_metrics_write(FILE *f, const slm_step_metrics *m);

/* The oracle dump (log.dump): an HDF5 file with the initial parameters, the batches,
 * step-0 logits/loss/gradients, per-step losses, learning rates and norms, and the final
 * parameters. See docs/testing.md. */
typedef struct slm_dump *slm_dump_t;
/* init: the whole initial parameter vector. With dp > 1 ranks, the per-rank batches and
 * logits are not recorded (tokens and step0/logits are absent). island: this run's island
 * (0 without islands), recorded with the islands' settings. */
slm_status slm_dump_create(const char *path, const slm_conf *conf, slm_model_t model,
                           const float *init, int accum, int dp, int island, slm_dump_t *dump);
slm_status slm_dump_tokens(slm_dump_t d, long step, int micro, const int32_t *windows);
/* Logits (B,T,V) of the first micro-batch of step 0, before backward. */
slm_status slm_dump_logits(slm_dump_t d, const float *logits);
/* Step 0's mean loss and accumulated gradients, before clipping. */
slm_status slm_dump_step0(slm_dump_t d, double loss, const float *grads);
slm_status slm_dump_finish(slm_dump_t d, const float *losses, const double *lrs,
                           const double *norms, const float *final_params);
/* MoE: each step's auxiliary and z losses, and (moe_balance = bias; NULL otherwise) the
 * selection biases each step routed with, (steps, MoE blocks, experts). */
slm_status slm_dump_moe(slm_dump_t d, const double *aux, const double *z, const float *bias);
void slm_dump_destroy(slm_dump_t *d);

#endif
