/* gpt_impl.h - private layout of the GPT model object. */
#ifndef SHARDLM_GPT_IMPL_H
#define SHARDLM_GPT_IMPL_H

#include "shardlm/model.h"

/* Views into the parameter (or gradient) block for one transformer block. */
typedef struct {
    float *ln1w, *ln1b;         /* (C) */
    float *qkvw, *qkvb;         /* (3C,C), (3C) */
    float *attprojw, *attprojb; /* (C,C), (C) */
    float *ln2w, *ln2b;         /* (C) */
    float *fcw, *fcb;           /* (4C,C), (4C) */
    float *fcprojw, *fcprojb;   /* (C,4C), (C) */
} gpt_block_views;

typedef struct {
    float *wte; /* (V,C), also the LM head */
    float *wpe; /* (T,C) */
    gpt_block_views *blocks; /* (L) */
    float *lnfw, *lnfb; /* (C) */
} gpt_views;

/* Activations of one transformer block for a micro-batch, N = B*T rows. */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N,C), (N), (N) */
    float *qkv;                       /* (N,3C) */
    float *atty;                      /* (N,C) attention output, heads concatenated */
    float *res2;                      /* (N,C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N,C), (N), (N) */
    float *fch, *fch_gelu;            /* (N,4C) */
    float *res3;                      /* (N,C) residual after the MLP: the block's output */
} gpt_block_acts;

struct slm_gpt {
    slm_gpt_config cfg;
    slm_gpt_tp tp;
    slm_gpt_stage stage;
    int has_embed;          /* the embedding unit is here (first or last stage) */
    int nunits;
    int *unit_first, *unit_count; /* this stage's units: their first tensor and how many */
    int v0, vl; /* this rank's vocabulary rows of wte (columns of the logits): [v0, v0+vl) */
    int max_batch;
    int ntensors;
    slm_tensor_info *tensors;
    size_t nparams, gparams; /* this rank's, the whole model's */
    float *params, *grads;
    gpt_views p, g;
    /* activations for (max_batch, seq_len), one set per slot; the views below point into
     * the slot selected last */
    float *acts;
    size_t acts_floats; /* per slot */
    gpt_block_acts work; /* with recompute: the inner activations all blocks share */
    float *work_mem;
    size_t work_floats;
    float *encoded;              /* (N,C) */
    gpt_block_acts *blocks;      /* (L) */
    float *lnf, *lnf_mean, *lnf_rstd; /* (N,C), (N), (N) */
    float *logits;               /* (N,vl); gradient in place after backward */
    float *lse, *losses;         /* (N) */
    float *ce_part;              /* (N,2) cross-entropy over a split vocabulary */
    /* activation gradients, reused block after block */
    float *dacts;
    size_t dacts_floats;
    float *dres;    /* (N,C) gradient of the residual stream */
    float *dnarrow; /* (N,C) */
    float *dwide1;  /* (N,4C/tp), also holds dqkv (N,3C/tp) */
    float *dwide2;  /* (N,4C/tp) */
    float *datt;    /* attention scratch, forward and backward, for the threads there were */
    size_t datt_floats;
    slm_gpt_hooks hooks;
    int32_t *inputs_all, *targets_all; /* (slots,N) copies of each slot's batch */
    int *slot_B, *slot_T;              /* (slots) their shapes */
    int32_t *inputs, *targets;         /* the selected slot's */
    int B, T;
};

/* Point the activation views at slot's set, and the batch at its copy (gpt.c). */
void gpt_select_slot(slm_gpt_t m, int slot);

/* Hook calls; cheap when no parallel layer is installed. */
static inline void gpt_before(slm_gpt_t m, int unit, slm_pass pass)
{
    if (m->hooks.before_unit) m->hooks.before_unit(m->hooks.ctx, unit, pass);
}
static inline void gpt_after(slm_gpt_t m, int unit, slm_pass pass)
{
    if (m->hooks.after_unit) m->hooks.after_unit(m->hooks.ctx, unit, pass);
}
static inline void gpt_tp_allreduce(slm_gpt_t m, float *buf, size_t n)
{
    if (m->tp.size > 1) m->tp.allreduce(m->tp.ctx, buf, n);
}
static inline void gpt_poll(slm_gpt_t m)
{
    if (m->hooks.poll) m->hooks.poll(m->hooks.ctx);
}

#endif
