/* model_impl.h - what an architecture provides, and the model object every architecture
 * shares (the tensor table, units, storage views, activation slots, hooks).
 *
 * An architecture is an ops table (slm_arch). The shared object does the bookkeeping; the
 * decoder skeleton (decoder.c) runs the embedding, the blocks with their hooks, the final
 * norm, the head and the loss, and calls the architecture for what differs between
 * them. To add an architecture: docs/architectures.md. */
#ifndef SHARDLM_MODEL_IMPL_H
#define SHARDLM_MODEL_IMPL_H

#include "shardlm/model.h"

typedef struct slm_arch slm_arch;
typedef struct slm_hf_arch slm_hf_arch; /* hf_impl.h */

/* The activations of one block for a micro-batch: up to MAX_BLOCK_ACTS buffers, the last
 * being the block's output (the residual stream leaving it). */
#define MAX_BLOCK_ACTS 16

struct slm_model {
    const slm_arch *arch;
    slm_model_config cfg;
    slm_model_tp tp;
    slm_model_ep ep;
    slm_model_stage stage;
    int adding_expert; /* while building: the expert whose tensors are being added, or -1 */
    int has_embed; /* the embedding unit is here */
    int nunits;
    int *unit_first, *unit_count; /* this stage's units: their first tensor and how many */
    int tied_unit;                /* this stage's tied unit, or -1 */
    int v0, vl; /* this rank's vocabulary rows of the embedding and head: [v0, v0+vl) */
    int max_batch;
    int ntensors, cap_tensors;
    slm_tensor_info *tensors;
    size_t nparams, gparams; /* this rank's, the whole model's */
    float *params, *grads;
    float **pv, **gv; /* (ntensors) each tensor's parameters and gradients, once bound */
    /* activations for (max_batch, seq_len), one set per slot; the views below point into
     * the slot selected last */
    float *acts;
    size_t acts_floats; /* per slot */
    int nacts;          /* buffers per block (the architecture's), the last the output */
    size_t act_width[MAX_BLOCK_ACTS]; /* floats per token of each */
    float **bacts;      /* (n_layer * nacts) views of every block's buffers */
    float *work[MAX_BLOCK_ACTS]; /* with recompute: the inner buffers all blocks share */
    float *work_mem;
    size_t work_floats;
    float *encoded;              /* (N,C) the stage's input */
    float *fnorm, *fstat1, *fstat2; /* (N,C), (N), (N) final norm output and statistics */
    float *logits;               /* (N,vl); gradient in place after backward */
    float *lse, *losses;         /* (N) */
    float *ce_part;              /* (N,2) cross-entropy over a split vocabulary */
    /* activation gradients, reused block after block */
    float *dacts;
    size_t dacts_floats;
    size_t wide;    /* floats per token of the widest of dwide1/dwide2 */
    float *dres;    /* (N,C) gradient of the residual stream */
    float *dnarrow; /* (N,C) */
    float *dwide1, *dwide2; /* (N,wide) */
    float *datt;    /* attention scratch, forward and backward, for the threads there were */
    size_t datt_floats;
    slm_model_hooks hooks;
    int *block_first;            /* (n_layer) each block's first tensor */
    int *block_unit, *expert_unit; /* (n_layer) this stage's units of each block; -1: none */
    int after_blocks;            /* the first tensor after the blocks (the final norm's) */
    struct moe_state *moe;       /* moe.c's, NULL without MoE blocks */
    float *moe_work;             /* with recompute: the MoE activations all MoE blocks share */
    float *moe_scratch;          /* the MoE backward's scratch, in the activation-gradient block */
    float loss_scale;            /* of the backward running */
    int32_t *inputs_all, *targets_all; /* (slots,N) copies of each slot's batch */
    int *slot_B, *slot_T;              /* (slots) their shapes */
    int32_t *inputs, *targets;         /* the selected slot's */
    int B, T;
    void *priv; /* the architecture's own (e.g. rotary tables) */
};

/* Building the table. Where a tensor lives. */
typedef enum { HELD_BLOCK, HELD_EMBED, HELD_HEAD } tensor_home;
typedef struct tensor_spec {
    const char *name; /* block tensors are prefixed "blocks.%d." */
    int64_t d0, d1;   /* d1 = 0: 1-D */
    slm_split split;
    int nparts;       /* SLM_SPLIT_ROWS of a fused tensor: rows in nparts equal-width parts */
    const int64_t *part_rows; /* or parts of these heights (nparts of them); NULL: equal */
    slm_init_kind init;
    double init_std;
    int decay;
} tensor_spec;
struct slm_arch {
    const char *name;
    /* Fill zero fields of cfg with this architecture's defaults. */
    void (*defaults)(slm_model_config *cfg);
    /* Rules beyond the shared ones (positive sizes, vocabulary >= tp). */
    slm_status (*check)(const slm_model_config *cfg, int tp_size);
    /* Append every tensor (slm_model_add_tensor) and units (slm_model_add_unit). */
    void (*build)(slm_model_t m);
    /* Floats per token of each activation buffer of a block (the last is the output,
     * d_model wide); returns how many. And the widest activation-gradient row. */
    int (*block_acts)(const slm_model_t m, size_t *width);
    size_t (*grad_width)(const slm_model_t m);
    /* Private state that needs the whole object (rotary tables); may be NULL. */
    slm_status (*setup)(slm_model_t m);
    void (*teardown)(slm_model_t m);
    /* Embed the tokens into m->encoded (N,C), this rank's vocabulary rows, before the
     * tensor-parallel sum; backward accumulates the embedding gradients from m->dres. */
    void (*embed_forward)(slm_model_t m, int B, int T);
    void (*embed_backward)(slm_model_t m, int B, int T);
    /* Block l from input x into its activation buffers; with output 0 (recompute before
     * backward) stop as soon as everything backward reads is there. */
    void (*block_forward)(slm_model_t m, int l, const float *x, int B, int T, int output);
    /* m->dres holds the gradient of the block's output; leave that of its input x. */
    void (*block_backward)(slm_model_t m, int l, const float *x, int B, int T);
    /* The final norm: x (N,C) -> m->fnorm; backward from dout into m->dres (accumulate). */
    void (*final_norm_forward)(slm_model_t m, const float *x, int N);
    void (*final_norm_backward)(slm_model_t m, const float *x, const float *dout, int N);
    /* The LM head's weight and its gradient (this rank's vocabulary rows). */
    int (*head_tensor)(const slm_model_t m);
    /* Formulas from the configuration alone. */
    double (*flops_per_token)(const slm_model_config *cfg);
    double (*params_of)(const slm_model_config *cfg);
    /* The products of one micro-batch (see slm_model_gemm_shapes). */
    int (*gemm_shapes)(slm_model_t m, int B, slm_gemm_shape *out, int max);
    /* The dense MLP, which is also an expert (moe.c): the block's tensors before the
     * MLP's (always the block's last ones), the MLP's table at width F, the block
     * activations only it uses (a bit each), and its forward and backward over n rows at
     * this rank's width FL. h1 and h2 hold what backward reads (widths from hidden:
     * floats per row). The output is a row-parallel partial sum, with the bias (if any)
     * from tensor-parallel rank 0; y NULL stops at h1 and h2 (recompute needs no more).
     * Backward accumulates the weight gradients and the input gradient into dx (a partial
     * sum too), using dh1 and dh2 as scratch. The dense blocks use the same two. */
    int mlp_first;
    int (*mlp_tensors)(const slm_model_config *cfg, int64_t F, tensor_spec *out);
    unsigned mlp_acts;
    void (*mlp_hidden)(int FL, size_t *h1, size_t *h2);
    void (*mlp_forward)(slm_model_t m, float *const *w, const float *x, int n, int FL, float *h1, float *h2,
                        float *y);
    void (*mlp_backward)(slm_model_t m, float *const *w, float *const *g, const float *x, const float *h1,
                         const float *h2, const float *dy, int n, int FL, float *dx, float *dh1, float *dh2);
    /* Parameters of one MLP of width F: its matrices (with_vectors 0), or all of it. */
    double (*mlp_params)(const slm_model_config *cfg, double F, int with_vectors);
    /* Hugging Face's config.json keys and tensor names (hf_impl.h); NULL: no such form. */
    const slm_hf_arch *hf;
};

extern const slm_arch slm_arch_gpt2, slm_arch_llama;
extern const slm_hf_arch slm_hf_gpt2, slm_hf_llama; /* gpt2_hf.c, llama_hf.c */
const slm_arch *slm_arch_find(const char *name);
/* The architecture whose Hugging Face model_type is model_type, or NULL. */
const slm_arch *slm_arch_find_hf(const char *model_type);

/* Append a tensor of block `block` (or -1) living in `home`. */
void slm_model_add_tensor(slm_model_t m, int block, tensor_home home, const tensor_spec *s);
/* Append block l's MLP - the dense one (named "mlp.*"), or a router and experts - and
 * close the block's unit(s): what every architecture's build calls after the block's
 * mlp_first tensors. */
void slm_model_add_block_mlp(slm_model_t m, int l);
/* Close the current unit: the tensors appended since the last call form one unit (if
 * this stage holds them). */
void slm_model_end_unit(slm_model_t m, int first_tensor);

/* Tensor k of block l, and the block's tensor views. */
static inline int slm_block_tensor(const slm_model_t m, int l, int k) { return m->block_first[l] + k; }
/* The final norm's first tensor. */
static inline int slm_after_blocks(const slm_model_t m) { return m->after_blocks; }

/* moe.c: the router and the experts of MoE block l (after the block's mlp_first
 * tensors; closes the block's unit and adds the experts' unit); the MoE forward of
 * block l from its normed input x (N = B*T rows) into out (N,C), whole (summed over the
 * tensor-parallel group); with count 0 (recompute before backward) statistics are left
 * alone; and its backward from dout into dx (N,C, accumulated), whole. */
void slm_moe_build(slm_model_t m, int l);
slm_status slm_moe_setup(slm_model_t m);
void slm_moe_teardown(slm_model_t m);
void slm_moe_forward(slm_model_t m, int l, const float *x, float *out, int N, int count);
void slm_moe_backward(slm_model_t m, int l, const float *x, const float *dout, float *dx, int N);
/* Floats of one MoE block's activations for N tokens (per slot), and of the scratch its
 * backward needs; the views into base (or nothing, base NULL). */
size_t slm_moe_act_floats(const slm_model_t m, size_t N);
size_t slm_moe_scratch_floats(const slm_model_t m, size_t N);
void slm_moe_layout(slm_model_t m, int l, float *base, size_t N);
/* What the MoE blocks add to the architecture's dense counts: parameters, active
 * parameters, FLOPs per token. */
double slm_moe_params_delta(const slm_model_config *cfg);
double slm_moe_active_delta(const slm_model_config *cfg);
double slm_moe_flops_delta(const slm_model_config *cfg);

/* Block l's activation buffer k, and its last (the output). */
static inline float *slm_block_act(slm_model_t m, int l, int k) { return m->bacts[(size_t)l * m->nacts + k]; }
static inline float *slm_block_out(slm_model_t m, int l) { return slm_block_act(m, l, m->nacts - 1); }
/* A tensor's bound parameters and gradients by table index. */
#define PV(m, i) ((m)->pv[i])
#define GV(m, i) ((m)->gv[i])

/* Point the activation views at slot's set, and the batch at its copy. */
void slm_model_select_slot(slm_model_t m, int slot);

static inline void slm_model_before(slm_model_t m, int unit, slm_pass pass)
{
    if (m->hooks.before_unit) m->hooks.before_unit(m->hooks.ctx, unit, pass);
}
static inline void slm_model_after(slm_model_t m, int unit, slm_pass pass)
{
    if (m->hooks.after_unit) m->hooks.after_unit(m->hooks.ctx, unit, pass);
}
static inline void slm_model_poll(slm_model_t m)
{
    if (m->hooks.poll) m->hooks.poll(m->hooks.ctx);
}
/* Sum over the tensor-parallel group (nothing without tensor parallelism). */
static inline void slm_model_tp_allreduce(slm_model_t m, float *buf, size_t n)
{
    if (m->tp.size > 1) m->tp.allreduce(m->tp.ctx, buf, n);
}
/* A row-parallel projection: partial sums of out from this rank's input columns, summed
 * over the group; the bias (may be NULL) is seeded by rank 0 only, so it is added once. */
void slm_model_row_parallel_forward(slm_model_t m, float *out, const float *inp, const float *w, const float *bias,
                                    int N, int IC, int OC);
/* Unit numbers of this stage. */
static inline int slm_model_block_unit(slm_model_t m, int l) { return m->block_unit[l]; }
static inline int slm_model_last_unit(slm_model_t m) { return m->nunits - 1; }
/* The GEMM shapes of a linear layer (N,IC) -> (N,OC), `times` per micro-batch: forward,
 * input gradient, weight gradient. */
int slm_gemm_add_linear(slm_gemm_shape *out, int n, int max, int N, int IC, int OC, double times);
/* The attention's tile products for B sequences of T, `heads` heads of hs over L layers. */
int slm_gemm_add_attention(slm_gemm_shape *out, int n, int max, int B, int T, int heads, int hs, int L);

#endif
