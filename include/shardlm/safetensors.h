/* shardlm/safetensors.h - reading and writing safetensors files and sharded Hugging Face
 * style directories: the format layer only, with no knowledge of any model.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of JSON that
 * map each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (offsets into
 * the data that follows the header) plus an optional "__metadata__" object of strings,
 * then the raw little-endian tensor data. A sharded model is a directory of such files
 * and a `model.safetensors.index.json` whose "weight_map" names each tensor's file.
 * Accepted and refused inputs, and what the writer writes: docs/checkpoint-format.md.
 *
 * The reader validates every header before it reads any tensor, and then reads only the
 * elements asked for (pread of that range), so a rank reads what it holds and a model
 * larger than memory can be imported piece by piece. The writer keeps only the tensor
 * table in memory: each tensor's bytes go to a temporary file as they are added.
 *
 * Everything here is local (no MPI). A handle is used by one thread at a time. */
#ifndef SHARDLM_SAFETENSORS_H
#define SHARDLM_SAFETENSORS_H

#include <stddef.h>
#include "shardlm/status.h"

#define SLM_ST_MAX_DIMS 8

typedef enum slm_st_dtype {
    SLM_ST_DTYPE_F32,  /* IEEE binary32 */
    SLM_ST_DTYPE_BF16, /* bfloat16: the top 16 bits of a binary32 */
    SLM_ST_DTYPE_F16   /* IEEE binary16 */
} slm_st_dtype;

/* "F32", "BF16", "F16": the names the format uses. */
const char *slm_st_dtype_name(slm_st_dtype d);

/* What the reader knows of one tensor. Pointers stay valid until slm_st_close. */
typedef struct slm_st_info {
    const char *name;
    slm_st_dtype dtype;
    int ndim;                       /* 0 for a scalar */
    size_t shape[SLM_ST_MAX_DIMS];  /* shape[0..ndim) */
    size_t numel;                   /* product of the shape (1 for a scalar) */
    const char *file;               /* path of the file that holds it */
} slm_st_info;

/* ---- reading ------------------------------------------------------------------------- */

typedef struct slm_st *slm_st_t;

/* Open `path`: a .safetensors file, a *.index.json naming shard files in its own
 * directory, or a directory holding `model.safetensors` (used when present) or else
 * `model.safetensors.index.json`. Every header is parsed and validated (dtypes, shapes,
 * offsets within the file, no overlaps, each tensor in exactly one file and, for an
 * index, exactly where it says) before this returns; a failure is SLM_ERR_FORMAT (or
 * SLM_ERR_IO for a file that cannot be opened) with a message naming the file and the
 * tensor. Keeps one descriptor open per file until slm_st_close. */
slm_status slm_st_open(const char *path, slm_st_t *out);
/* Close the files and free everything; *st becomes NULL. NULL or *st NULL: nothing. */
void slm_st_close(slm_st_t *st);

/* Number of tensors (over all files). */
size_t slm_st_num_tensors(slm_st_t st);
/* The i-th tensor in the byte order of the names, i < slm_st_num_tensors. */
const slm_st_info *slm_st_tensor(slm_st_t st, size_t i);
/* The tensor named `name`, or NULL when there is none. */
const slm_st_info *slm_st_find(slm_st_t st, const char *name);
/* The value of `key` in the "__metadata__" of the file (for a sharded model: of the first
 * shard, in the order of the file names, that has the key), or NULL. */
const char *slm_st_metadata(slm_st_t st, const char *key);

/* Elements [first, first + count) of tensor `name` in row-major order, converted to
 * fp32 into dst[0..count): F32 as stored, BF16 exactly (the high 16 bits), F16 exactly
 * (subnormals, infinities and NaNs included). Reads only those bytes. SLM_ERR_ARG for an
 * unknown name or a range past the tensor's end, SLM_ERR_IO for a failed read. */
slm_status slm_st_read(slm_st_t st, const char *name, size_t first, size_t count, float *dst);
/* Rows [r0, r0 + nr) x columns [c0, c0 + nc) of the 2-D tensor `name`, converted to
 * fp32 into the dense row-major (nr, nc) buffer dst. One read per row, or one in all when
 * the block spans whole rows. SLM_ERR_ARG for a tensor that is not 2-D or a block past
 * its edges. */
slm_status slm_st_read_block(slm_st_t st, const char *name, size_t r0, size_t nr, size_t c0, size_t nc,
                             float *dst);

/* ---- writing ------------------------------------------------------------------------- */

typedef struct slm_st_writer *slm_st_writer_t;

/* Start writing a model into directory `dir` (created if missing) with every tensor
 * stored as `dtype`, "F32" or "BF16" (rounded to nearest, ties to even). max_shard_bytes:
 * the most tensor data one file holds (a tensor larger than that gets a file of its own);
 * 0 for a single file. Refused when dir already holds model.safetensors or
 * model.safetensors.index.json. Creates the temporary data file in dir at once, so an
 * unwritable dir is an error here. */
slm_status slm_st_writer_create(const char *dir, const char *dtype, size_t max_shard_bytes, slm_st_writer_t *out);
/* The same for one file at `path` (any name; written over if it exists, like any output
 * file), never sharded and with no index. */
slm_status slm_st_writer_create_file(const char *path, const char *dtype, slm_st_writer_t *out);
/* Add a tensor: `name` (unique, not "__metadata__"), shape[0..ndim) (ndim <= 8; 0 for a
 * scalar), data in row-major order. The data is converted and written out before this
 * returns; the caller may reuse its buffer. */
slm_status slm_st_writer_add(slm_st_writer_t w, const char *name, int ndim, const size_t *shape, const float *data);
/* Write the files: `model.safetensors` when everything fits in one file, else
 * `model-00001-of-0000N.safetensors` ... and `model.safetensors.index.json` ({"metadata":
 * {"total_size": bytes of tensor data}, "weight_map": {name: file}}). Tensors are
 * assigned to files and laid out in the byte order of their names; each header is padded
 * with spaces to a multiple of 8 bytes and carries `metadata` as its "__metadata__".
 * metadata: NULL, or key, value, key, value, ..., NULL (strings). Every file is written
 * under a temporary name, synced and renamed into place; the index comes last. */
slm_status slm_st_writer_finish(slm_st_writer_t w, const char *const *metadata);
/* Free the writer; without a successful finish, its temporary files are removed and
 * nothing is left in dir. *w becomes NULL. NULL or *w NULL: nothing. */
void slm_st_writer_destroy(slm_st_writer_t *w);

#endif
