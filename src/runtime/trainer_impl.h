/* trainer_impl.h - the state of one training run, shared by the loop (train.c) and the
 * checkpoint wiring (checkpoint.c). */
#ifndef SHARDLM_TRAINER_IMPL_H
#define SHARDLM_TRAINER_IMPL_H

#include <stdio.h>
#include "shardlm/conf.h"
#include "shardlm/data.h"
#include "shardlm/model.h"
#include "shardlm/parallel.h"
#include "shardlm/runtime.h"

typedef struct {
    const slm_conf *conf;
    slm_mesh_t mesh;
    MPI_Comm dp_comm;
    int rank, world, dp, dp_rank, accum, B, T;
    slm_model_t model;
    slm_fsdp_t fsdp;
    slm_dataset_t data;
    slm_dataset_t val;         /* data.val, or NULL */
    double best_val;           /* the lowest validation loss so far, and when */
    long best_val_step;
    int evals_since_best;
    slm_dump_t dump;
    FILE *metrics;
    int32_t *windows;          /* (B, T+1) */
    int32_t *inputs, *targets; /* (B, T) */
    float *full;               /* dp rank 0, with log.dump: this rank's parameter vector */
    float *whole;              /* ... with model or expert parallelism: the whole model's (reduced to rank 0) */
    MPI_Comm dump_comm;        /* with log.dump: the ranks whose parameters make up the whole model */
    float *logits0;            /* (B,T,V) with log.dump at dp 1: step 0's first logits, this rank's columns */
    float *losses;
    double *lrs, *norms;
    long start_step;           /* the first step this run trains (after a resume) */
    long long samples;         /* data cursor: sequences consumed before this step */
    int stopped_early;         /* train.stop_after ended the run before train.steps */
    struct slm_async_save *async; /* a checkpoint being written in the background */
    long saved_step;           /* the step of the newest checkpoint this run wrote */
    double peak_gflops, flops_per_token;
    int pipe_slots;            /* pipeline parallelism: micro-batches this stage keeps at once */
    double pipe_wait_s;        /* ... the time it waited for other stages in the last step */
    double data_s, optim_s;    /* time in the last step loading batches, and in norm, clip and update */
    double prof[8];            /* sums over the timed steps, see report_profile() */
    double pipe_bytes;         /* ... and the bytes it sent to them (with the tied sum) */
    MPI_Request *pipe_act_sent, *pipe_grad_sent; /* (pipe_slots) messages in flight, see pipeline.c */
    float *pipe_grad_buf;      /* (pipe_slots, B*T*C) gradients being sent to the previous stage */
    slm_matmul_choice matmul;  /* the GEMM backend in use and how it was chosen */
    char resumed_matmul[32];   /* the backend the resumed checkpoint was trained with, or "" */
    size_t moe_len;            /* MoE: the routing statistics (slm_model_moe_stats_len), */
    double *moe_stats;         /* ... of the last step, summed over the ranks */
    double *moe_aux, *moe_z;   /* (steps) the auxiliary and z losses of each step */
    float *moe_bias;           /* (MoE blocks, experts) the whole model's selection biases */
    slm_tensor_info moe_table; /* the checkpoint's table of moe_bias */
    float *moe_bias_hist;      /* (steps, ...) with log.dump and moe_balance = bias: those of each step */
    int island, islands;       /* islands (docs/islands.md): this rank's island, and how many */
    MPI_Comm job;              /* ... every island's ranks (the world when islands.count is 1) */
    MPI_Comm across;           /* ... the ranks holding the same chunks in every island */
    slm_outer_t outer;         /* ... the outer optimizer, or NULL without islands */
    double *outer_sumsq;       /* ... (tensors) scratch for the norm of its step */
    MPI_Request preempt_req;   /* ... the islands' preemption flags of the last step, in flight */
    int preempt_sent, preempt_any;
    slm_status deferred;       /* the first failure of this step that could not stop it, see */
    char deferred_msg[1024];   /* slm_trainer_defer */
} trainer;

/* Whether this rank writes tensor t into checkpoints and dumps: whole tensors are written
 * by rank 0 of a tensor-parallel group, and the tied embedding by the first pipeline
 * stage, so every element has one writer. */
int slm_trainer_writes(const trainer *tr, const slm_tensor_info *t);
/* train.c: the inputs and targets of micro-batch `micro` of `step` on this rank. */
void slm_trainer_load_batch(trainer *tr, long step, int micro);
/* With a dump of step 0 (log.dump, dp 1), keep this rank's columns of the logits of the
 * forward just run when it was step 0's first micro-batch. */
void slm_trainer_keep_logits(trainer *tr, long step, int micro);
/* A rank-local failure in the middle of a step (a dump write) must not stop this rank
 * while the others go on into the step's collectives: it is recorded (the first one) and
 * becomes every rank's error at the step boundary. */
void slm_trainer_defer(trainer *tr, slm_status s);
/* pipeline.c: forward and backward of every micro-batch of `step` on this pipeline stage
 * (1F1B); *loss: the sum of their mean losses on the last stage, 0 elsewhere; *wait_s:
 * the time this stage waited for the others. Collective over the pipeline group. */
void slm_trainer_pipeline_step(trainer *tr, long step, double *loss, double *wait_s, double *bytes);

/* moe_stats.c: the MoE routing statistics of a run. Init allocates (nothing for a dense
 * model); discard drops what forwards outside training steps counted; step takes this
 * step's, sums them over all ranks (collective), records the losses and moves the
 * selection biases; summary interprets them per MoE block; log prints rank 0's line. */
slm_status slm_trainer_moe_init(trainer *tr);
void slm_trainer_moe_free(trainer *tr);
void slm_trainer_moe_discard(trainer *tr);
void slm_trainer_moe_step(trainer *tr, long step);
void slm_trainer_moe_summary(const trainer *tr, slm_moe_layer_load *out);
void slm_trainer_moe_log(const trainer *tr, long step);
/* Gather the whole model's selection biases into tr->moe_bias (before a save), or hand
 * tr->moe_bias to the model (after a load). Collective over the pipeline group / local. */
void slm_trainer_moe_gather_bias(trainer *tr);
void slm_trainer_moe_scatter_bias(trainer *tr);

/* islands.c: an island's copy of the configuration with its own output paths (ckpt.dir
 * gets "/island<i>", log.metrics and log.dump ".island<i>" before the extension); the
 * outer optimizer over the owned chunks (nothing without islands); and, when `step` ends
 * with one (every islands.sync_every steps, and the last step), the outer step with its
 * log line and its part of m. Collective over the job. */
slm_status slm_island_conf(const slm_conf *conf, int island, slm_conf *out);
/* A stream that writes to `to` with "[island i] " at the start of every line (NULL: out
 * of memory). */
FILE *slm_island_stream(FILE *to, int island);
slm_status slm_trainer_islands_init(trainer *tr);
void slm_trainer_islands_free(trainer *tr);
slm_status slm_trainer_outer_step(trainer *tr, long step, double loss, slm_step_metrics *m);

/* islands_files.c: the outer step of islands that meet through files
 * (islands.transport = files), and catching up, at start-up, with the outer steps the
 * others took while this island was away. Collective over the island. */
slm_status slm_trainer_files_outer_step(trainer *tr, long step, slm_islands_stats *stats);
/* islands.dir belongs to this run: its `run` file (written by the first island to start)
 * names the islands' shared settings, and they must be this island's. */
slm_status slm_trainer_files_check_run(trainer *tr);
slm_status slm_trainer_files_catch_up(trainer *tr);
/* This island's directory of exchange files, islands.dir/island<i>. */
void slm_trainer_exchange_dir(const trainer *tr, char *out, size_t len);

/* checkpoint.c: this rank's parameters as a checkpoint of /params alone (step `step`, in
 * dir, keeping the newest `keep`); and reading a file's /params into `into`, laid out as
 * the outer optimizer's chunks one after the other. Collective over the island. */
slm_status slm_trainer_write_params(trainer *tr, const char *dir, long step, int keep, double *bytes);
slm_status slm_trainer_read_params(trainer *tr, const char *path, float *into, double *bytes);

/* checkpoint.c: resume from ckpt.resume or the newest good checkpoint in ckpt.dir (if
 * any); save after `step` when ckpt.every says so, the run ends, or (force) a preemption
 * asks for it, unless that step is saved already. Collective. */
slm_status slm_trainer_restore(trainer *tr);
slm_status slm_trainer_save(trainer *tr, long step, int force);
/* Wait for a checkpoint still being written in the background and free its snapshot. */
slm_status slm_trainer_finish_saves(trainer *tr);

#endif
