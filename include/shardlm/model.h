/* shardlm/model.h - the model interface: what the runtime knows of an architecture.
 *
 * A model is an object behind an ops table (src/model/model_impl.h); GPT-2 and the Llama
 * family are two implementations (src/model/gpt2.c, llama.c). Everything outside
 * src/model - the sharding layer, the pipeline, checkpoints, the planner, sample and bench -
 * sees a model only through this header: its configuration (plain data, stored whole in
 * checkpoints), its tensor table (names, global shapes, how tensor parallelism splits each
 * tensor, init rule, weight decay, tying, trainability, the group that reduces its
 * gradient), its units (what ZeRO shards and gathers together), forward and backward per
 * pipeline slot with hooks for the sharding layer, and its formulas (FLOPs, parameters,
 * activation bytes, the GEMMs a step runs).
 *
 * Parameters live in one contiguous float block, unit after unit, so one unit is one
 * contiguous range - the granule of sharding and of communication. Gradients mirror the
 * parameter block; activations and their gradients get one block each. */
#ifndef SHARDLM_MODEL_H
#define SHARDLM_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/kernels.h"
#include "shardlm/status.h"

#define SLM_ARCH_MAX 16
#define SLM_MOE_MAX_EXPERTS 1024

/* How the MoE blocks of a run route and balance (train.moe_* keys). */
typedef enum { SLM_MOE_BALANCE_LOSS, SLM_MOE_BALANCE_BIAS } slm_moe_balance;
typedef struct slm_moe_run {
    double capacity;  /* capacity factor: an expert takes at most ceil(capacity N k / E) of a
                       * micro-batch's N tokens, the most probable first; 0: dropless */
    double aux_loss;  /* coefficient of the load-balancing loss */
    double z_loss;    /* coefficient of the router z-loss */
    slm_moe_balance balance; /* BIAS: also a per-expert selection bias moved toward balance */
    double bias_rate; /* the bias's step per optimizer step */
} slm_moe_run;
/* The defaults: dropless, aux_loss 0.01, no z-loss, balance by the loss, bias_rate 1e-3. */
void slm_moe_run_defaults(slm_moe_run *r);

/* A model's whole configuration: every architecture reads the fields it uses and leaves
 * the others at their defaults (slm_model_config_defaults). Checkpoints store all of it. */
typedef struct slm_model_config {
    char arch[SLM_ARCH_MAX]; /* "gpt2", "llama" */
    int n_layer, n_head, d_model, vocab_size, seq_len;
    int n_kv_head;  /* key/value heads (grouped-query attention); n_head for GPT-2 */
    int ffn_hidden; /* MLP width; 4 d_model for GPT-2 */
    int max_pos;    /* positions the model knows (GPT-2's wpe rows); >= seq_len */
    int tie_embeddings; /* the LM head is the token embedding */
    double norm_eps;
    double rope_theta;
    slm_rope_scaling rope; /* kind SLM_ROPE_NONE or SLM_ROPE_LLAMA3 and its parameters */
    /* Mixture of experts (docs/moe.md): n_experts > 0 replaces the MLP of every moe_every-th
     * block (block l when (l + 1) % moe_every == 0) by a router and n_experts copies of the
     * architecture's MLP, expert_hidden wide, of which each token uses expert_top_k. With
     * n_experts = 0 the other three are 0. */
    int n_experts, expert_top_k, moe_every, expert_hidden;
    /* Activation recompute: keep only each block's output per micro-batch, and recompute
     * a block's inner activations (into one set shared by all blocks) just before its
     * backward. Results are bitwise those without it. A run choice, not stored. */
    int recompute;
    slm_moe_run moe; /* how MoE blocks route and balance: run choices, not stored */
} slm_model_config;

/* The architectures built in, NULL-terminated: {"gpt2", "llama", NULL}. */
extern const char *const slm_model_archs[];
/* Fill the fields of cfg that are 0 (n_kv_head, ffn_hidden, max_pos, norm_eps, rope_theta,
 * tie_embeddings for GPT-2) with cfg->arch's defaults. An unknown arch is left alone (and
 * refused by slm_model_config_check). */
void slm_model_config_defaults(slm_model_config *cfg);
/* Check a configuration against its architecture's rules (sizes positive, n_head divides
 * d_model, ...), and that tp_size ranks can split it. Errors name the model.* key. Local. */
slm_status slm_model_config_check(const slm_model_config *cfg, int tp_size);
/* Two configurations describe the same parameters (everything but seq_len and recompute).
 * On a difference, why names the first key that differs and both values, a's first, as
 * "model.d_model = 32, this run has 16" (b is the run's). */
int slm_model_config_same(const slm_model_config *a, const slm_model_config *b, char *why, size_t len);
/* The configuration as a JSON object and back (the checkpoint attribute model_config).
 * Unknown keys in the JSON are an error; missing ones keep their defaults. */
slm_status slm_model_config_to_json(const slm_model_config *cfg, char *buf, size_t len);
slm_status slm_model_config_from_json(const char *json, slm_model_config *cfg);
/* The field of cfg that model.<key> sets ("arch", "n_layer", "rope_scaling", ...) as the
 * configuration file would write it (numbers exactly); 0 when key names no field. */
int slm_model_config_field_text(const slm_model_config *cfg, const char *key, char *buf, size_t len);

/* How tensor parallelism splits a tensor. */
typedef enum {
    SLM_SPLIT_NONE, /* replicated: every rank of the group holds it whole */
    SLM_SPLIT_ROWS, /* column-parallel: rows (output features), in one or more runs */
    SLM_SPLIT_COLS  /* row-parallel: a block of columns (input features) of every row */
} slm_split;
/* How a tensor starts. */
typedef enum { SLM_INIT_ZEROS, SLM_INIT_ONES, SLM_INIT_NORMAL } slm_init_kind;
/* The group whose ranks hold copies of a tensor and sum its gradient: the data-parallel
 * group, or (mixture of experts) the expert-data-parallel group. */
typedef enum { SLM_REDUCE_DATA, SLM_REDUCE_EXPERT_DATA } slm_reduce_group;

/* A run of rows this rank holds: local rows [lrow0, lrow0+n) are global rows
 * [grow0, grow0+n). */
typedef struct slm_row_run {
    int64_t lrow0, grow0, n;
} slm_row_run;
#define SLM_MAX_ROW_RUNS 4

/* One named parameter tensor: its global name and shape, and the part of it this rank
 * holds. Without tensor parallelism that is all of it. With it, a row-split tensor holds
 * some rows - one run per part of a fused tensor (GPT-2's QKV holds one in each of the q,
 * k and v thirds) - and a column-split one holds the columns [col0, col0+cols) of every
 * row. 1-D tensors count as one column. A tensor of another pipeline stage has count 0. */
typedef struct slm_tensor_info {
    char name[64];
    int ndim;
    int64_t shape[2];     /* global */
    size_t offset, count; /* in floats, within this rank's parameter block */
    size_t goffset;       /* where the whole tensor starts in the whole model's block */
    int decay;            /* 1: weight decay applies (matrices), 0: biases and norms */
    int block;            /* transformer block index, or -1 for embeddings/final norm/head */
    int unit;             /* the unit it belongs to (this stage's numbering), -1 elsewhere */
    slm_split split;
    int tp_split;         /* 1: split across the tensor-parallel ranks (split != NONE, tp > 1) */
    slm_init_kind init;
    double init_std;      /* SLM_INIT_NORMAL: N(0, init_std^2) */
    int tied;             /* held by the first and the last pipeline stage (the tied embedding):
                           * the two sum its gradient; only the first counts or stores it */
    int trainable;        /* 0: frozen (no gradient, no optimizer state) */
    slm_reduce_group reduce;
    int64_t rows, cols, col0; /* the local part: rows x cols, from global column col0 */
    int nruns;
    slm_row_run runs[SLM_MAX_ROW_RUNS];
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
/* The part [*lo, *hi) of the range [offset, offset+count) of this rank's parameter index
 * space that tensor t holds; 0 when there is none. */
static inline int slm_tensor_overlap(const slm_tensor_info *t, size_t offset, size_t count, size_t *lo, size_t *hi)
{
    *lo = t->offset > offset ? t->offset : offset;
    *hi = t->offset + t->count < offset + count ? t->offset + t->count : offset + count;
    return *lo < *hi;
}

typedef struct slm_model *slm_model_t;

/* Units of a stage are numbered from 0 in forward order: the embeddings (if the stage has
 * them), one per transformer block, then the final norm and head (on the last stage). */
typedef enum { SLM_PASS_FORWARD, SLM_PASS_BACKWARD } slm_pass;

/* Callbacks a parallel layer installs to gather parameters before a unit runs, release or
 * reduce after it, and drive communication between kernels. Any entry may be NULL.
 * Forward calls before(0), then for each block before/after, then before(last)/after(last)
 * around the final norm and head, then after(0). Backward calls before(0) and
 * before(last) first (a tied head needs the embedding), after(last), then blocks from the
 * last to the first with before/after, and after(0) once the embeddings' gradients are
 * complete. */
typedef struct slm_model_hooks {
    void (*before_unit)(void *ctx, int unit, slm_pass pass);
    void (*after_unit)(void *ctx, int unit, slm_pass pass);
    void (*poll)(void *ctx); /* between kernels: a chance to progress communication */
    void *ctx;
} slm_model_hooks;

/* Tensor parallelism (Megatron's split): the model holds a 1/tp share of the heads (query
 * and key/value), of the MLP width and of the vocabulary rows of the embedding and head.
 * It calls allreduce (a sum over the tensor-parallel group) after each row-parallel
 * product in forward and on the gradients of the inputs of column-parallel ones in
 * backward, and allreduce_max / allreduce on one or two floats per token for the
 * cross-entropy over the split vocabulary. */
typedef struct slm_model_tp {
    int rank, size; /* size 1: no tensor parallelism */
    void (*allreduce)(void *ctx, float *buf, size_t n);
    void (*allreduce_max)(void *ctx, float *buf, size_t n);
    void *ctx;
} slm_model_tp;

/* Expert parallelism: the experts of every MoE block are split over the size ranks of an
 * expert-parallel group (carved out of the data-parallel group), this rank holding the
 * contiguous n_experts/size of them from rank * n_experts/size. Tokens travel to the rank
 * of their expert and back: counts exchanges, for each rank, n ints (one per expert of
 * that rank) and receives n from each; rows exchanges rows of width floats, send[q] and
 * recv[q] rows with rank q (packed in rank order). block and backward say what for (the
 * watchdog names them). Both are collective over the group. */
typedef struct slm_model_ep {
    int rank, size; /* size 1: every expert here */
    void (*counts)(void *ctx, const int *send, int *recv, int n, int block);
    void (*rows)(void *ctx, const float *send, const int *send_rows, float *recv, const int *recv_rows, int width,
                 int block, int backward);
    void *ctx;
} slm_model_ep;

/* Pipeline parallelism: the part of the model one stage runs. The first stage embeds the
 * tokens, the last applies the final norm, the LM head and the loss. Every tensor of the
 * model stays in the table (global names, shapes and offsets); those of other stages have
 * count 0. slots: micro-batches whose activations are kept at once (a 1F1B schedule has
 * up to pp - stage of them in flight). */
typedef struct slm_model_stage {
    int first_layer, n_layers;
    int first, last;
    int slots;
} slm_model_stage;

/* Allocate a model for micro-batches of up to max_batch sequences of cfg->seq_len. With
 * own_storage, the model allocates full parameter and gradient blocks and binds every unit
 * to them; without, nothing is bound until slm_model_bind_unit is called (a sharded
 * layout provides the storage). tp, ep: this rank's part, or NULL for the whole model.
 * stage: NULL for all of it. Local. */
slm_status slm_model_create(const slm_model_config *cfg, int max_batch, int own_storage, const slm_model_tp *tp,
                            const slm_model_ep *ep, const slm_model_stage *stage, slm_model_t *model);
/* What slm_model_create would hold on one rank, without allocating it: this rank's
 * parameters, the sizes of its units (the first, the largest after it, the last) and the
 * activation bytes with `threads` OpenMP threads. Local. */
typedef struct slm_model_footprint {
    size_t params, unit0, max_unit, unit_last;
    int nunits;
    size_t activation_bytes;
} slm_model_footprint;
slm_status slm_model_measure(const slm_model_config *cfg, int max_batch, int tp_size, int ep_size,
                             const slm_model_stage *stage, int threads, slm_model_footprint *out);
/* The whole model's tensor table alone (one rank, one stage), nothing allocated for
 * parameters or activations: for tools that check a file against the model it claims to
 * hold. Only table and config queries may be used on it. Local. */
slm_status slm_model_describe(const slm_model_config *cfg, slm_model_t *model);
/* The same for the part tensor- and expert-parallel rank 0 hold of a pipeline stage. */
slm_status slm_model_describe_part(const slm_model_config *cfg, int tp_size, int ep_size, const slm_model_stage *stage,
                                   slm_model_t *model);
/* Free everything; sets *model to NULL; NULL is a no-op. */
void slm_model_destroy(slm_model_t *model);

/* Initialization by each tensor's rule. Element j of tensor i is drawn from the
 * counter-based generator at (seed, init, i, j): the same values whatever the layout. */
void slm_model_init_params(slm_model_t m, uint64_t seed);
/* The same values for the element range [offset, offset+count) of the parameter index
 * space, written to dst (count floats): how a shard initializes only what it owns. */
void slm_model_init_range(slm_model_t m, uint64_t seed, size_t offset, size_t count, float *dst);

/* Units this stage holds. */
int slm_model_num_units(slm_model_t m);
/* First element (in the parameter index space) and element count of unit u. */
void slm_model_unit_range(slm_model_t m, int u, size_t *offset, size_t *count);
/* The unit this stage shares with the other end of the pipeline (the tied embedding and
 * head, held by the first and the last stage), or -1. */
int slm_model_tied_unit(slm_model_t m);
/* The group that reduces the gradients of unit u's tensors. */
slm_reduce_group slm_model_unit_reduce(slm_model_t m, int u);
/* 1 when the model has a tied unit at all (whatever the stage). */
int slm_model_has_tied(const slm_model_config *cfg);
/* Point the parameter and/or gradient views of unit u at storage whose first element is
 * the unit's first element; NULL leaves that side as it is. Local. */
void slm_model_bind_unit(slm_model_t m, int u, float *params, float *grads);
/* Install (or with NULL remove) the unit callbacks. */
void slm_model_set_hooks(slm_model_t m, const slm_model_hooks *hooks);

const slm_model_config *slm_model_config_of(slm_model_t m);
size_t slm_model_num_params(slm_model_t m);
/* Parameters of the whole model (more than this rank's under model parallelism). */
size_t slm_model_num_global_params(slm_model_t m);
/* The model's own blocks (num_params each), or NULL when created without storage. */
float *slm_model_params(slm_model_t m);
float *slm_model_grads(slm_model_t m);
int slm_model_num_tensors(slm_model_t m);
const slm_tensor_info *slm_model_tensor(slm_model_t m, int i);
/* The tensor called name, or NULL. */
const slm_tensor_info *slm_model_find_tensor(slm_model_t m, const char *name);
/* The table index of the LM head's weight: the token embedding when tied. */
int slm_model_head_tensor(slm_model_t m);
/* This rank's vocabulary rows of the embedding and the head, [v0, v0 + vl): the columns of
 * the logits it computes. */
void slm_model_vocab_rows(slm_model_t m, int *v0, int *vl);
/* Bytes of activations (and activation gradients) held for one micro-batch per slot. */
size_t slm_model_activation_bytes(slm_model_t m);
/* Model FLOPs per trained token (forward + backward): 6 x the matrix weights a token
 * passes through (embedding lookups excluded, the head included) + the attention scores
 * and values, 12 x layers x attention width x seq_len. MFU uses it. */
double slm_model_flops_per_token(const slm_model_config *cfg);
/* Parameters of the whole model, from the configuration alone. */
double slm_model_params_of(const slm_model_config *cfg);

/* ---- mixture of experts (src/model/moe.c) ---- */
/* 1 when block l of cfg is an MoE block. */
int slm_model_is_moe_block(const slm_model_config *cfg, int l);
/* The MoE blocks of the model. */
int slm_model_num_moe_layers(const slm_model_config *cfg);
/* Parameters one token passes through: everything but the experts it is not routed to
 * (the router and expert_top_k experts per MoE block). slm_model_params_of for dense. */
double slm_model_active_params_of(const slm_model_config *cfg);

/* Routing statistics of the micro-batches run since the last take, one record of
 * SLM_MOE_STAT_LEN(E) doubles per MoE block of the whole model (in block order; blocks
 * of other pipeline stages stay 0), so that ranks can sum them: the token-slots routed to
 * each expert (E, before capacity drops), the dropped ones, the auxiliary loss and the
 * z-loss summed over micro-batches (coefficients applied), and the micro-batches. A
 * forward that only recomputes for backward does not count. */
#define SLM_MOE_STAT_LEN(E) ((size_t)(E) + 4)
enum { SLM_MOE_STAT_DROPPED, SLM_MOE_STAT_AUX, SLM_MOE_STAT_Z, SLM_MOE_STAT_MICRO }; /* after the E counts */
size_t slm_model_moe_stats_len(const slm_model_config *cfg);
void slm_model_moe_take_stats(slm_model_t m, double *out);
/* The routers' selection biases (moe_balance = bias), (num_moe_layers, E) for the whole
 * model; get writes 0 for the blocks of other stages, set reads only this stage's. */
void slm_model_moe_get_bias(slm_model_t m, float *out);
void slm_model_moe_set_bias(slm_model_t m, const float *in);
/* After a step: move each bias of this stage's blocks by bias_rate toward balance, from
 * the step's routing statistics summed over every rank that saw other tokens. Local. */
void slm_model_moe_update_bias(slm_model_t m, const double *stats);

/* The matrix products one micro-batch of B sequences runs on this rank (its stage, its
 * tensor-parallel part), forward and backward, at most max: what a GEMM backend is timed
 * on. Returns how many were written. Local. */
int slm_model_gemm_shapes(slm_model_t m, int B, slm_gemm_shape *out, int max);

/* Forward over inputs (B,T) with T <= seq_len and B <= max_batch. With targets (B,T),
 * returns the mean cross-entropy and keeps what backward needs; without (NULL), only
 * the logits are computed and 0 is returned. */
float slm_model_forward(slm_model_t m, const int32_t *inputs, const int32_t *targets, int B, int T);
/* Logits (B,T,V) of the last forward; overwritten by slm_model_backward. Under tensor
 * parallelism only this rank's vocabulary columns: (B,T,V_r). */
const float *slm_model_logits(slm_model_t m);
/* The whole vocabulary's logits (V) at the last position of sequence b of the last
 * forward, into out. Collective over the tensor-parallel group. */
void slm_model_last_logits(slm_model_t m, int b, float *out);
/* Backward of sum_i loss_scale * loss_i over the tokens of the last forward (with
 * targets). Parameter gradients accumulate, so micro-steps add up. */
void slm_model_backward(slm_model_t m, float loss_scale);
/* The same for one pipeline stage and activation slot. A stage that is not the first
 * reads its input, the residual stream entering its first block (B,T,C), from
 * slm_model_stage_input(m, slot), written before the forward; a stage that is not the last
 * leaves its output in slm_model_stage_output(m, slot) and returns 0. In backward a stage
 * that is not the last reads the gradient of its output from slm_model_stage_grad(m),
 * written before the call; one that is not the first leaves the gradient of its input
 * there. */
float slm_model_forward_slot(slm_model_t m, int slot, const int32_t *inputs, const int32_t *targets, int B, int T);
void slm_model_backward_slot(slm_model_t m, int slot, float loss_scale);
float *slm_model_stage_input(slm_model_t m, int slot);
const float *slm_model_stage_output(slm_model_t m, int slot);
float *slm_model_stage_grad(slm_model_t m);

/* Zero the model's own gradient block (models created with storage). */
void slm_model_zero_grad(slm_model_t m);

#endif
