/* shardlm/ckpt.h - HDF5 checkpoints: one file per checkpoint, written collectively
 * through MPI-IO, every tensor under its global name at its global shape.
 *
 * The writer and reader know nothing of sharding: the caller describes what this rank
 * holds as pieces - contiguous ranges of the global parameter index space with the
 * buffers that hold their parameters and AdamW moments - and each rank writes or reads
 * exactly those ranges (hyperslabs). A checkpoint written by any layout therefore loads
 * into any other. Format: docs/checkpoint-format.md. */
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
 * and model_config). Versions 1 and 2 (GPT-2 only) are still read. */
#define SLM_CKPT_VERSION 3
#define SLM_CKPT_MIN_VERSION 1

/* One contiguous range [offset, offset+count) of the parameter index space and where this
 * rank keeps it. m and v may be NULL for a range that carries parameters only. */
typedef struct slm_ckpt_piece {
    size_t offset, count;
    float *params, *m, *v;
} slm_ckpt_piece;

/* Everything besides tensors that a resumed run needs. */
typedef struct slm_ckpt_meta {
    long step;             /* optimizer steps completed */
    long long samples;     /* data cursor: sequences consumed */
    long long tokens;      /* tokens trained */
    long adam_t;           /* AdamW step count (bias correction) */
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
     * the file must hold, or NULL for any. Another model is a configuration error
     * (SLM_ERR_CONFIG). */
    const slm_ckpt_meta *shape;
    /* The tensor table: each of the groups params, adam_m and adam_v must hold exactly
     * these names at these global shapes, as float32 - nothing missing, nothing extra.
     * NULL: the file's tensors are checked for readability only. */
    const slm_tensor_info *tensors;
    int ntensors;
} slm_ckpt_expect;

typedef struct slm_ckpt_stats {
    double seconds, bytes;
} slm_ckpt_stats;

/* Write checkpoint `step` into dir, atomically: under a temporary name, flushed and
 * fsynced, renamed, then the `latest` pointer moved. Keeps the newest `keep` checkpoints
 * and every one whose step is a multiple of keep_every (0: none). Collective. */
slm_status slm_ckpt_save(MPI_Comm comm, const char *dir, const slm_ckpt_meta *meta,
                         const slm_tensor_info *tensors, int ntensors,
                         const slm_ckpt_piece *pieces, int npieces, int keep, long keep_every,
                         slm_ckpt_stats *stats);

/* The checkpoint to resume from: `explicit_path` if given (it must verify), else the
 * newest checkpoint in dir that verifies against expect (may be NULL), with each damaged
 * one skipped and reported on rank 0. A checkpoint that is intact but holds another model
 * shape is not skipped: that is an error. path[0] = 0 when there is none. Collective. */
slm_status slm_ckpt_find(MPI_Comm comm, const char *dir, const char *explicit_path,
                         const slm_ckpt_expect *expect, char *path, size_t len);

/* Check a checkpoint, reading all of it: format and version (1 or 2), completeness, every
 * metadata attribute, the meta_digest over the attributes and the tensor list (version
 * 2), nothing but the three groups at the root, the model shape and the tensor table
 * (those of expect that are given), and every chunk's checksum. meta receives the
 * attributes. Errors name the file and what is wrong; damage is SLM_ERR_FORMAT, a shape
 * other than expect's SLM_ERR_CONFIG. Collective. */
slm_status slm_ckpt_verify(MPI_Comm comm, const char *path, const slm_ckpt_expect *expect,
                           slm_ckpt_meta *meta);

/* The metadata attributes of a checkpoint, checked as far as they can be without a tensor
 * table (format, version, completeness, the meta_digest of a version-2 file) and without
 * reading tensor data; *ntensors: the datasets in /params. For a tool that builds the
 * expected tensor table from what the file says it holds. Collective. */
slm_status slm_ckpt_read_meta(MPI_Comm comm, const char *path, slm_ckpt_meta *meta, int *ntensors);

/* Read meta and this rank's pieces from path. Collective. */
slm_status slm_ckpt_load(MPI_Comm comm, const char *path, const slm_tensor_info *tensors,
                         int ntensors, const slm_ckpt_piece *pieces, int npieces,
                         slm_ckpt_meta *meta, slm_ckpt_stats *stats);

/* Print what a checkpoint holds: meta, layout, and every tensor with its shape and size
 * (without reading the data). Collective. */
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
