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
    slm_gpt_t model;
    slm_fsdp_t fsdp;
    slm_dataset_t data;
    slm_dump_t dump;
    FILE *metrics;
    int32_t *windows;          /* (B, T+1) */
    int32_t *inputs, *targets; /* (B, T) */
    float *full;               /* dp rank 0, with log.dump: this rank's parameter vector */
    float *whole;              /* ... with tensor parallelism: the whole model's (reduced to rank 0) */
    float *losses;
    double *lrs, *norms;
    long start_step;           /* the first step this run trains (after a resume) */
    long long samples;         /* data cursor: sequences consumed before this step */
    int stopped_early;         /* train.stop_after ended the run before train.steps */
    struct slm_async_save *async; /* a checkpoint being written in the background */
    long saved_step;           /* the step of the newest checkpoint this run wrote */
    double peak_gflops, flops_per_token;
} trainer;

/* checkpoint.c: resume from ckpt.resume or the newest good checkpoint in ckpt.dir (if
 * any); save after `step` when ckpt.every says so, the run ends, or (force) a preemption
 * asks for it, unless that step is saved already. Collective. */
slm_status slm_trainer_restore(trainer *tr);
slm_status slm_trainer_save(trainer *tr, long step, int force);
/* Wait for a checkpoint still being written in the background and free its snapshot. */
slm_status slm_trainer_finish_saves(trainer *tr);

#endif
