/* shardlm/ckpt.h - HDF5 checkpoints: one file per checkpoint, written collectively
 * through MPI-IO, every tensor under its global name at its global shape.
 *
 * A checkpoint is a set of tensor groups: /params, and the state groups of the optimizer
 * that wrote it (/adam_m and /adam_v for AdamW, others for other optimizers). The writer
 * and reader know neither sharding nor optimizers: the caller describes each group as a
 * table of tensors and says, as pieces, which contiguous ranges of the group's index
 * space this rank holds; each rank writes or reads exactly those ranges (hyperslabs). A
 * checkpoint written by any layout therefore loads into any other. Format:
 * docs/checkpoint-format.md. */
#ifndef SHARDLM_CKPT_H
#define SHARDLM_CKPT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "shardlm/hf.h"
#include "shardlm/model.h"
#include "shardlm/status.h"

#define SLM_CKPT_FORMAT "shardlm-checkpoint"
/* Version 2: HDF5 1.10 file format (checksummed metadata), the matmul attribute and the
 * meta_digest. Version 3: the architecture and its whole configuration (attributes arch
 * and model_config). Version 4: any optimizer's state groups beside /params, and the
 * attributes optimizer and optimizer_step in place of adam_t. Versions 1 to 3 (AdamW
 * only) are still read. */
#define SLM_CKPT_VERSION 4
#define SLM_CKPT_MIN_VERSION 1

/* One contiguous range [offset, offset+count) of a group's index space, and where this
 * rank keeps it. */
typedef struct slm_ckpt_piece {
    size_t offset, count;
    float *data;
} slm_ckpt_piece;

/* One tensor group of a checkpoint (/params, /adam_m, /adafactor_row, ...). Its datasets
 * are described as tensors: name, ndim and global shape, and this rank's part of each in
 * the group's own index space (offset, count, rows, cols, col0, runs, exactly as
 * slm_tensor_info describes a model tensor's local part; count 0 = this rank holds none of
 * it). pieces are the ranges of that index space this rank writes (save: across ranks
 * every element exactly once) or reads (load: any element any number of ranks). A rank has
 * at most one piece overlapping any one dataset. Group names are [a-z0-9_], at most 31
 * characters. */
typedef struct slm_ckpt_group {
    char name[32];
    const slm_tensor_info *tensors;
    int ntensors;
    const slm_ckpt_piece *pieces;
    int npieces;
} slm_ckpt_group;

/* Everything besides tensors that a resumed run needs. */
typedef struct slm_ckpt_meta {
    long step;             /* optimizer steps completed */
    long long samples;     /* data cursor: sequences consumed */
    long long tokens;      /* tokens trained */
    char optimizer[16];    /* the optimizer whose state groups the file holds, e.g. "adamw" */
    long optimizer_step;   /* the optimizer's own step count (AdamW: its bias correction) */
    uint64_t seed;         /* init, data and sampling keys derive from it */
    slm_model_config model; /* the architecture and its whole configuration */
    char layout[160];      /* "dp=2 tp=1 pp=1 zero_stage=3 precision=bf16" */
    char config[16384];    /* the resolved configuration, INI text */
    char matmul[32];       /* the GEMM backend of the run, e.g. "onednn sgemm" ("" in version 1) */
    int version;           /* read: the file's format version; written: SLM_CKPT_VERSION, always */
} slm_ckpt_meta;

/* What a checkpoint is checked against, besides its own checksums and digest. */
typedef struct slm_ckpt_expect {
    /* The model (its `model` configuration: architecture and every parameter-shaping key)
     * and, unless params_only, the optimizer the file must hold, or NULL for any. Another
     * model or optimizer is a configuration error (SLM_ERR_CONFIG). */
    const slm_ckpt_meta *shape;
    /* The groups (their pieces are ignored): the file must hold exactly these groups,
     * each with exactly these datasets at these global shapes, as float32 - nothing
     * missing, nothing extra. With params_only, only /params is checked against its
     * table (the group named "params") and the file's other groups are only read. NULL:
     * the file's groups are checked for readability only. */
    const slm_ckpt_group *groups;
    int ngroups;
    /* Resuming the parameters with a fresh optimizer state: the optimizer and its groups
     * need not match. */
    int params_only;
} slm_ckpt_expect;

typedef struct slm_ckpt_stats {
    double seconds, bytes;
} slm_ckpt_stats;

/* Write checkpoint `step` into dir, atomically: under a temporary name, flushed and
 * fsynced, renamed, then the `latest` pointer moved. groups[0] is "params"; every rank
 * passes the same groups and tables. Keeps the newest `keep` checkpoints and every one
 * whose step is a multiple of keep_every (0: none). Collective. */
slm_status slm_ckpt_save(MPI_Comm comm, const char *dir, const slm_ckpt_meta *meta, const slm_ckpt_group *groups,
                         int ngroups, int keep, long keep_every, slm_ckpt_stats *stats);

/* The checkpoint to resume from: `explicit_path` if given (it must verify), else the
 * newest checkpoint in dir that verifies against expect (may be NULL), with each damaged
 * one skipped and reported on rank 0. A checkpoint that is intact but holds another model
 * or optimizer state is not skipped: that is an error. path[0] = 0 when there is none.
 * Collective. */
slm_status slm_ckpt_find(MPI_Comm comm, const char *dir, const char *explicit_path,
                         const slm_ckpt_expect *expect, char *path, size_t len);

/* Check a checkpoint, reading all of it: format and version (1 to 4), completeness, every
 * metadata attribute, the meta_digest over the attributes and the tensor list (version
 * 2 on), the groups at the root (versions 1-3: /params, /adam_m and /adam_v; version 4:
 * /params and any groups of datasets), the model shape, optimizer and groups (those of
 * expect that are given), and every chunk's checksum. meta receives the attributes.
 * Errors name the file and what is wrong; damage is SLM_ERR_FORMAT, a model or optimizer
 * state other than expect's SLM_ERR_CONFIG. Collective. */
slm_status slm_ckpt_verify(MPI_Comm comm, const char *path, const slm_ckpt_expect *expect,
                           slm_ckpt_meta *meta);

/* The metadata attributes of a checkpoint, checked as far as they can be without a tensor
 * table (format, version, completeness, the groups at the root, the meta_digest) and
 * without reading tensor data; *ntensors: the datasets in /params. For a tool that builds
 * the expected tensor table from what the file says it holds. Collective. */
slm_status slm_ckpt_read_meta(MPI_Comm comm, const char *path, slm_ckpt_meta *meta, int *ntensors);

/* Read meta and this rank's pieces of the listed groups from path (the file may hold
 * more groups). Collective. */
slm_status slm_ckpt_load(MPI_Comm comm, const char *path, const slm_ckpt_group *groups, int ngroups,
                         slm_ckpt_meta *meta, slm_ckpt_stats *stats);

/* Print what a checkpoint holds: meta, layout, the optimizer, every tensor of /params with
 * its shape and size, and every group with its size (without reading the data).
 * Collective. */
slm_status slm_ckpt_inspect(MPI_Comm comm, const char *path, FILE *out);
/* Write the parameters of a checkpoint as a safetensors file (F32, the global names and
 * shapes; a tied LM head is the embedding, not stored twice). Local. */
slm_status slm_ckpt_export_safetensors(const char *path, const char *out);
/* Write the parameters of a checkpoint as a Hugging Face model directory dir: config.json
 * and safetensors files of dtype "F32" or "BF16", at most max_shard_bytes of data each
 * (0: one file), the q and k rows in `pairing` order (shardlm/hf.h). Reads and writes one
 * tensor at a time. Local. */
slm_status slm_ckpt_export_hf(const char *path, const char *dir, const char *dtype, size_t max_shard_bytes,
                              slm_rope_pairing pairing);
/* llm.c GPT-2 checkpoints (magic 20240326, version 3, fp32) as initial weights. */
typedef struct slm_llmc *slm_llmc_t;
/* Map and check the file against the model shape (n_layer, n_head, d_model and
 * vocab_size equal; seq_len at most its positions). Local. */
slm_status slm_llmc_open(const char *path, const slm_model_config *cfg, slm_llmc_t *llmc);
void slm_llmc_close(slm_llmc_t *llmc);
/* Copy the range [offset, offset+count) of shardlm's parameter index space into dst. */
void slm_llmc_fill(slm_llmc_t llmc, const slm_tensor_info *tensors, int ntensors, size_t offset,
                   size_t count, float *dst);

/* List the checkpoints of dir (newest first) with step, size and which one `latest`
 * names. Local. */
slm_status slm_ckpt_list(const char *dir, FILE *out);
/* The steps of the committed checkpoints in dir (step_N.h5), newest first, at most max;
 * -1 if dir cannot be read. Local. */
int slm_ckpt_list_steps(const char *dir, long *steps, int max);
#define SLM_CKPT_MAX_LISTED 4096

/* HDF5 reports through shardlm's errors, which name the file and the operation: its
 * automatic printing of error stacks is switched off. Called once at start-up. */
void slm_hdf5_errors_off(void);

#endif
