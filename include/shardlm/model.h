/* shardlm/model.h - the GPT-2 model: parameter layout, initialization, forward and
 * backward on one rank's micro-batch.
 *
 * Parameters live in one contiguous float block laid out block by block (embeddings,
 * then each transformer block, then the final LayerNorm), so one transformer block is
 * one contiguous range - the unit of sharding for data parallelism. Gradients mirror the
 * parameter block; activations and their gradients get one block each. */
#ifndef SHARDLM_MODEL_H
#define SHARDLM_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/kernels.h"
#include "shardlm/status.h"

typedef struct slm_gpt_config {
    int n_layer, n_head, d_model, vocab_size, seq_len;
    /* Activation recompute: keep only each block's output per micro-batch, and recompute
     * a block's inner activations (into one set shared by all blocks) just before its
     * backward. Results are bitwise those without it. */
    int recompute;
} slm_gpt_config;

/* A run of rows this rank holds: local rows [lrow0, lrow0+n) are global rows
 * [grow0, grow0+n). */
typedef struct slm_row_run {
    int64_t lrow0, grow0, n;
} slm_row_run;

/* One named parameter tensor: its global name and shape, and the part of it this rank
 * holds. Without tensor parallelism that is all of it. With it, a column-parallel tensor
 * (QKV, MLP-up, and their biases) holds some rows - for QKV one run each in the q, k and v
 * thirds - and a row-parallel weight (attention and MLP-down projections) holds the
 * columns [col0, col0+cols) of every row. 1-D tensors count as one column. */
typedef struct slm_tensor_info {
    char name[64];
    int ndim;
    int64_t shape[2];     /* global */
    size_t offset, count; /* in floats, within this rank's parameter block */
    size_t goffset;       /* where the whole tensor starts in the whole model's block */
    int decay;            /* 1: weight decay applies (matrices), 0: biases and LayerNorm */
    int block;            /* transformer block index, or -1 for embeddings/final norm */
    int tp_split;         /* 1: split across the tensor-parallel ranks; 0: whole on each */
    int64_t rows, cols, col0; /* the local part: rows x cols, from global column col0 */
    int nruns;
    slm_row_run runs[3];
} slm_tensor_info;

/* Position in the global tensor (row-major, flat) of local element j of t. */
static inline size_t slm_tensor_global_index(const slm_tensor_info *t, size_t j)
{
    int64_t r = (int64_t)(j / (size_t)t->cols), c = (int64_t)(j % (size_t)t->cols);
    int k = 0;
    while (k + 1 < t->nruns && r >= t->runs[k + 1].lrow0) k++;
    int64_t gcols = t->ndim == 2 ? t->shape[1] : 1;
    return (size_t)((t->runs[k].grow0 + r - t->runs[k].lrow0) * gcols + t->col0 + c);
}
/* Elements of the global tensor. */
static inline size_t slm_tensor_global_count(const slm_tensor_info *t)
{
    return (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
}

typedef struct slm_gpt *slm_gpt_t;

/* The model is cut into units, the granule of sharding and of communication: unit 0 is
 * the embeddings (wte, which is also the LM head, and wpe), unit 1+l is transformer block
 * l, and the last unit is the final LayerNorm. Each unit is one contiguous range of the
 * parameter index space. */
typedef enum { SLM_PASS_FORWARD, SLM_PASS_BACKWARD } slm_pass;

/* Callbacks a parallel layer installs to gather parameters before a unit runs, release or
 * reduce after it, and drive communication between kernels. Any entry may be NULL.
 * Forward calls before(0), then for each block before(1+l)/after(1+l), then
 * before(last)/after(last) around the final norm and head, then after(0). Backward calls
 * before(0) and before(last) first (the head needs wte), after(last), then blocks from
 * the last to the first with before/after, and after(0) once the embeddings' gradients
 * are complete. */
typedef struct slm_gpt_hooks {
    void (*before_unit)(void *ctx, int unit, slm_pass pass);
    void (*after_unit)(void *ctx, int unit, slm_pass pass);
    void (*poll)(void *ctx); /* between kernels: a chance to progress communication */
    void *ctx;
} slm_gpt_hooks;

/* Tensor parallelism: the model holds heads [r*H/tp, (r+1)*H/tp), MLP columns
 * [r*4C/tp, (r+1)*4C/tp) and vocabulary rows [r*V/tp, (r+1)*V/tp) of the embedding and
 * LM head. It calls allreduce (a sum over the tensor-parallel group) twice per block in
 * forward - after the attention and MLP-down projections - and twice in backward - on
 * the gradients of the two LayerNorm outputs; once more each way for the embedding and
 * the head, and allreduce_max and allreduce on one or two floats per token for the
 * cross-entropy over the split vocabulary. */
typedef struct slm_gpt_tp {
    int rank, size; /* size 1: no tensor parallelism */
    void (*allreduce)(void *ctx, float *buf, size_t n);
    void (*allreduce_max)(void *ctx, float *buf, size_t n);
    void *ctx;
} slm_gpt_tp;

/* Pipeline parallelism: the part of the model one stage runs. The first stage embeds the
 * tokens, the last applies the final LayerNorm, the LM head and the loss; both hold the
 * embedding unit (wte is the head), which the caller keeps equal by summing its gradient
 * over the two. Every tensor of the model stays in the table (global names, shapes and
 * offsets); those of other stages have count 0. slots: micro-batches whose activations
 * are kept at once (a 1F1B schedule has up to pp - stage of them in flight). */
typedef struct slm_gpt_stage {
    int first_layer, n_layers;
    int first, last;
    int slots;
} slm_gpt_stage;

/* Check a configuration (sizes positive, n_head divides d_model). Local. */
slm_status slm_gpt_config_check(const slm_gpt_config *cfg);
/* Allocate a model for micro-batches of up to max_batch sequences of cfg->seq_len. With
 * own_storage, the model allocates full parameter and gradient blocks and binds every unit
 * to them; without, nothing is bound until slm_gpt_bind_unit is called (a sharded layout
 * provides the storage). tp: this rank's part under tensor parallelism, or NULL for the
 * whole model (tp->size must divide n_head). Local. */
slm_status slm_gpt_create(const slm_gpt_config *cfg, int max_batch, int own_storage, const slm_gpt_tp *tp,
                          const slm_gpt_stage *stage, slm_gpt_t *model);
/* What slm_gpt_create would hold on one rank, without allocating it: this rank's
 * parameters (under tensor parallelism of tp_size ranks and the stage), the sizes of its
 * units (unit 0, the embeddings, and the largest other one), and the bytes
 * slm_gpt_activation_bytes would report with `threads` OpenMP threads. Local. */
typedef struct slm_gpt_footprint {
    size_t params, unit0, max_unit, unit_last; /* units: the first, the largest after it, the last */
    int nunits;
    size_t activation_bytes;
} slm_gpt_footprint;
slm_status slm_gpt_measure(const slm_gpt_config *cfg, int max_batch, int tp_size, const slm_gpt_stage *stage,
                           int threads, slm_gpt_footprint *out);

/* The whole model's tensor table alone (global names and shapes, one rank, one stage),
 * with nothing allocated for parameters or activations: for tools that check a file
 * against the model it claims to hold. Only the table and config queries
 * (slm_gpt_num_tensors, slm_gpt_tensor, slm_gpt_config_of, slm_gpt_num_params) may be
 * used on it; free it with slm_gpt_destroy. Local. */
slm_status slm_gpt_describe(const slm_gpt_config *cfg, slm_gpt_t *model);
/* Free everything; sets *model to NULL; NULL is a no-op. */
void slm_gpt_destroy(slm_gpt_t *model);

/* GPT-2 initialization: weights N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
 * biases 0, LayerNorm weights 1. Element j of tensor i is drawn from the counter-based
 * generator at (seed, init, i, j): the same values whatever the layout. */
void slm_gpt_init_params(slm_gpt_t m, uint64_t seed);
/* The same values for the element range [offset, offset+count) of the parameter index
 * space, written to dst (count floats): how a shard initializes only what it owns. */
void slm_gpt_init_range(slm_gpt_t m, uint64_t seed, size_t offset, size_t count, float *dst);

/* Units this stage holds, numbered from 0 in forward order. */
int slm_gpt_num_units(slm_gpt_t m);
/* First element (in the parameter index space) and element count of unit u. */
void slm_gpt_unit_range(slm_gpt_t m, int u, size_t *offset, size_t *count);
/* Point the parameter and/or gradient views of unit u at storage whose first element is
 * the unit's first element; NULL leaves that side as it is. Local. */
void slm_gpt_bind_unit(slm_gpt_t m, int u, float *params, float *grads);
/* Install (or with NULL remove) the unit callbacks. */
void slm_gpt_set_hooks(slm_gpt_t m, const slm_gpt_hooks *hooks);

const slm_gpt_config *slm_gpt_config_of(slm_gpt_t m);
size_t slm_gpt_num_params(slm_gpt_t m);
/* Parameters of the whole model (more than this rank's under tensor parallelism). */
size_t slm_gpt_num_global_params(slm_gpt_t m);
/* The model's own blocks (num_params each), or NULL when created without storage. */
float *slm_gpt_params(slm_gpt_t m);
float *slm_gpt_grads(slm_gpt_t m);
int slm_gpt_num_tensors(slm_gpt_t m);
const slm_tensor_info *slm_gpt_tensor(slm_gpt_t m, int i);
/* Bytes of activations (and activation gradients) held for one micro-batch. */
size_t slm_gpt_activation_bytes(slm_gpt_t m);
/* Model FLOPs per trained token (forward + backward), the formula MFU uses:
 * 6 * (12*L*C^2 + V*C) + 12 * L * C * T  (matmul weights, plus attention scores). */
double slm_gpt_flops_per_token(const slm_gpt_config *cfg);

/* The matrix products one micro-batch of B sequences runs on this rank (its stage, its
 * tensor-parallel part), forward and backward, at most max: what a GEMM backend is timed
 * on. Returns how many were written. Local. */
int slm_gpt_gemm_shapes(slm_gpt_t m, int B, slm_gemm_shape *out, int max);

/* Forward over inputs (B,T) with T <= seq_len and B <= max_batch. With targets (B,T),
 * returns the mean cross-entropy and keeps what backward needs; without (NULL), only
 * the logits are computed and 0 is returned. */
float slm_gpt_forward(slm_gpt_t m, const int32_t *inputs, const int32_t *targets, int B, int T);
/* Logits (B,T,V) of the last forward; overwritten by slm_gpt_backward. Under tensor
 * parallelism only this rank's vocabulary columns: (B,T,V_r). */
const float *slm_gpt_logits(slm_gpt_t m);
/* The whole vocabulary's logits (V) at the last position of sequence b of the last
 * forward, into out. Collective over the tensor-parallel group. */
void slm_gpt_last_logits(slm_gpt_t m, int b, float *out);
/* Backward of sum_i loss_scale * loss_i over the tokens of the last forward (with
 * targets). Parameter gradients accumulate, so micro-steps add up. */
void slm_gpt_backward(slm_gpt_t m, float loss_scale);
/* The same for one pipeline stage and activation slot. A stage that is not the first
 * reads its input, the residual stream entering its first block (B,T,C), from
 * slm_gpt_stage_input(m, slot), written before the forward; a stage that is not the last
 * leaves its output in slm_gpt_stage_output(m, slot) and returns 0. In backward a stage
 * that is not the last reads the gradient of its output from slm_gpt_stage_grad(m),
 * written before the call; one that is not the first leaves the gradient of its input
 * there. */
float slm_gpt_forward_slot(slm_gpt_t m, int slot, const int32_t *inputs, const int32_t *targets, int B, int T);
void slm_gpt_backward_slot(slm_gpt_t m, int slot, float loss_scale);
float *slm_gpt_stage_input(slm_gpt_t m, int slot);
const float *slm_gpt_stage_output(slm_gpt_t m, int slot);
float *slm_gpt_stage_grad(slm_gpt_t m);

/* Zero the model's own gradient block (models created with storage). */
void slm_gpt_zero_grad(slm_gpt_t m);

#endif
