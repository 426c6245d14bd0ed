/* shardlm/hf.h - Hugging Face model directories: a config.json, and the weights as
 * safetensors (model.safetensors, or shards named by model.safetensors.index.json).
 *
 * Reading: slm_hf_read_config turns config.json into a model configuration (the run's
 * model.* keys come from it, see slm_conf_resolve_model); slm_hf_open checks the model's
 * whole tensor table against the files - every tensor there, at its exact shape - and
 * slm_hf_fill then reads only the part of each tensor one rank holds, so a model larger
 * than a node's memory imports. Writing: slm_hf_writer_* writes config.json and the
 * weights, one tensor at a time.
 *
 * What an architecture's config.json keys and tensor names are lives with the
 * architecture (src/model/gpt2_hf.c, llama_hf.c); src/model/hf.c is the same for all.
 * The user's view: docs/huggingface.md. Everything here is local (no MPI). */
#ifndef SHARDLM_HF_H
#define SHARDLM_HF_H

#include <stddef.h>
#include "shardlm/model.h"
#include "shardlm/status.h"

/* How the rows of the q and k projections pair dimensions for the rotary embedding:
 * dimension i with i + hs/2 (rotate-half: Hugging Face's Llama, and what shardlm computes)
 * or 2i with 2i+1 (interleaved: Meta's original checkpoints). */
typedef enum slm_rope_pairing { SLM_ROPE_PAIRING_HALF, SLM_ROPE_PAIRING_INTERLEAVED } slm_rope_pairing;
/* "half", "interleaved". */
const char *slm_rope_pairing_name(slm_rope_pairing p);
/* The pairing named s; 0 when s names none. */
int slm_rope_pairing_parse(const char *s, slm_rope_pairing *p);

/* 1 when path is a directory that holds a config.json. */
int slm_hf_is_model_dir(const char *path);

/* Where the fields of a configuration read from config.json came from, for messages that
 * name both sides of a disagreement. */
#define SLM_HF_MAX_ORIGINS 24
typedef struct slm_hf_origin {
    int n;
    struct {
        char key[32];   /* the model.* key, e.g. "n_layer" */
        char from[64];  /* the config.json key, e.g. "num_hidden_layers" */
        char value[64]; /* what config.json says, e.g. "2", or "4 (absent: its default)" */
    } e[SLM_HF_MAX_ORIGINS];
} slm_hf_origin;

/* The model configuration dir/config.json describes, with seq_len 0 (the run chooses it,
 * up to max_pos), and the rotary pairing it records (shardlm's own key
 * "shardlm_rope_pairing"; half when absent). A model_type shardlm has no architecture for,
 * and settings its architecture does not compute (another activation, biases, another
 * rotary scaling), are errors naming the key and the file. origin may be NULL. */
slm_status slm_hf_read_config(const char *dir, slm_model_config *cfg, slm_rope_pairing *pairing, slm_hf_origin *origin);
/* The entry of origin for model.<key>, or NULL. */
const char *slm_hf_origin_text(const slm_hf_origin *origin, const char *key, const char **from);

/* ---- reading the weights ------------------------------------------------------------ */

typedef struct slm_hf *slm_hf_t;

/* Open the weights of dir for model (created from the configuration slm_hf_read_config
 * gave, with this rank's tensor-parallel part and pipeline stage) and check every tensor of
 * its table, those of other ranks included: present under its Hugging Face name (GPT-2's
 * may carry a "transformer." prefix), of its exact shape - transposed where Hugging Face
 * stores it transposed (GPT-2's Conv1D weights) - and F32, BF16 or F16. A tied model's
 * lm_head.weight and tensors the model does not use are ignored. pairing: the q and k rows'
 * order in the files (interleaved ones are permuted as they are read). Errors name the
 * tensor and the file. Reads headers only. Local. */
slm_status slm_hf_open(const char *dir, slm_model_t model, slm_rope_pairing pairing, slm_hf_t *out);
/* Fill dst (count floats) with the range [offset, offset + count) of the model's parameter
 * index space: for each tensor it overlaps, only the rows and columns of this rank's part
 * are read, a bounded block at a time. SLM_ERR_IO when a read fails. Local. */
slm_status slm_hf_fill(slm_hf_t hf, size_t offset, size_t count, float *dst);
/* What was opened, for the log: "Hugging Face llama, BF16, 2 files". Valid until close. */
const char *slm_hf_describe(slm_hf_t hf);
/* Tensors of the files the model does not use (a tied lm_head.weight not counted), and the
 * first of them by name (NULL when none). */
int slm_hf_unused(slm_hf_t hf, const char **first);
void slm_hf_close(slm_hf_t *hf);

/* ---- writing a model directory ------------------------------------------------------ */

typedef struct slm_hf_writer *slm_hf_writer_t;

/* Start writing the model cfg describes into dir (created if missing; refused if it holds
 * a config.json or a model already): tensors stored as dtype "F32" or "BF16", in files of
 * at most max_shard_bytes of data (0: one file), with q and k rows in `pairing` order. */
slm_status slm_hf_writer_create(const char *dir, const slm_model_config *cfg, const char *dtype, size_t max_shard_bytes,
                                slm_rope_pairing pairing, slm_hf_writer_t *out);
/* Add tensor `name` of the model's table (shardlm's global name), data its whole global
 * shape in row-major order; it is renamed, transposed or permuted as Hugging Face stores it
 * and written out before this returns. */
slm_status slm_hf_writer_add(slm_hf_writer_t w, const char *name, const float *data);
/* Once every tensor of the table is added: the safetensors files (and index) and
 * config.json (architectures, model_type, torch_dtype, the architecture's keys), which
 * comes into place last. */
slm_status slm_hf_writer_finish(slm_hf_writer_t w);
/* Free the writer; without a successful finish nothing is left in dir. */
void slm_hf_writer_destroy(slm_hf_writer_t *w);

#endif
