/* gpt_forward.c - forward and backward passes of the GPT-2 model on one micro-batch.
 *
 * Under tensor parallelism (Megatron's split) a rank holds H/tp heads and 4C/tp MLP
 * columns: QKV and MLP-up are column-parallel (their outputs are this rank's share),
 * the attention and MLP-down projections row-parallel (their outputs are partial sums,
 * all-reduced over the group, with the bias added by one rank). In backward the
 * gradients of the two LayerNorm outputs, partial sums from the column-parallel layers,
 * are all-reduced the same way. The token embedding and the tied LM head are split by
 * vocabulary rows: the embedding sums each rank's rows (rank 0 adds the positions), the
 * head gives each rank its columns of the logits, and the cross-entropy combines the
 * rows' maxima and exponential sums over the group. LayerNorms and the residual stream
 * run whole and identically on every rank of the group. */
#include <math.h>
#include <string.h>
#include "gpt_impl.h"
#include "shardlm/kernels.h"

/* A row-parallel projection: partial sums of out from this rank's input columns, summed
 * over the group; the bias is seeded by rank 0 only, so it is added once. */
static void row_parallel_forward(slm_gpt_t m, float *out, const float *inp, const float *w, const float *bias,
                                 int N, int IC, int OC)
{
    slm_matmul_forward(out, inp, w, m->tp.rank == 0 ? bias : NULL, N, IC, OC);
    gpt_tp_allreduce(m, out, (size_t)N * OC);
}

/* Unit numbers of this stage: the embeddings (if here), its blocks, the final norm. */
static int block_unit(slm_gpt_t m, int l) { return m->has_embed + l - m->stage.first_layer; }
static int last_unit(slm_gpt_t m) { return m->nunits - 1; }

/* Block l's forward from its input x into its activation views; with output false
 * (recompute before backward) it stops at the MLP's GELU, which is all backward reads. */
static void block_forward(slm_gpt_t m, int l, const float *x, int B, int T, int output)
{
    const int C = m->cfg.d_model, NH = m->cfg.n_head / m->tp.size, CL = C / m->tp.size, N = B * T;
    const int hs = C / m->cfg.n_head; /* this rank's NH heads, each with its own k and v */
    const gpt_block_views *w = &m->p.blocks[l];
    const gpt_block_acts *a = &m->blocks[l];
    slm_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1w, w->ln1b, N, C);
    slm_matmul_forward(a->qkv, a->ln1, w->qkvw, w->qkvb, N, C, 3 * CL);
    gpt_poll(m);
    slm_attention_forward(a->atty, m->datt, m->datt_floats, a->qkv, B, T, NH, NH, hs);
    gpt_poll(m);
    row_parallel_forward(m, a->res2, a->atty, w->attprojw, w->attprojb, N, CL, C);
    slm_residual_forward(a->res2, a->res2, x, (size_t)N * C);
    slm_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, w->ln2w, w->ln2b, N, C);
    slm_matmul_forward(a->fch, a->ln2, w->fcw, w->fcb, N, C, 4 * CL);
    gpt_poll(m);
    slm_gelu_forward(a->fch_gelu, a->fch, (size_t)N * 4 * CL);
    if (!output) return;
    row_parallel_forward(m, a->res3, a->fch_gelu, w->fcprojw, w->fcprojb, N, 4 * CL, C);
    slm_residual_forward(a->res3, a->res3, a->res2, (size_t)N * C);
}

float slm_gpt_forward(slm_gpt_t m, const int32_t *inputs, const int32_t *targets, int B, int T)
{
    return slm_gpt_forward_slot(m, 0, inputs, targets, B, T);
}

float slm_gpt_forward_slot(slm_gpt_t m, int slot, const int32_t *inputs, const int32_t *targets, int B, int T)
{
    const int C = m->cfg.d_model, V = m->cfg.vocab_size;
    const int N = B * T;
    m->slot_B[slot] = B;
    m->slot_T[slot] = T;
    gpt_select_slot(m, slot);
    memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    if (targets) memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));
    const int l0 = m->stage.first_layer, l1 = l0 + m->stage.n_layers;

    if (m->has_embed) gpt_before(m, 0, SLM_PASS_FORWARD);
    if (m->stage.first) {
        slm_encoder_forward_rows(m->encoded, inputs, m->p.wte, m->v0, m->v0 + m->vl,
                                 m->tp.rank == 0 ? m->p.wpe : NULL, B, T, C);
        gpt_tp_allreduce(m, m->encoded, (size_t)N * C);
    } /* else the previous stage's output was written there */
    const float *x = m->encoded; /* residual stream entering the block, (N,C) */
    for (int l = l0; l < l1; l++) {
        gpt_before(m, block_unit(m, l), SLM_PASS_FORWARD);
        block_forward(m, l, x, B, T, 1);
        gpt_after(m, block_unit(m, l), SLM_PASS_FORWARD);
        x = m->blocks[l].res3;
    }
    if (!m->stage.last) { /* x is the output the next stage reads */
        if (m->has_embed) gpt_after(m, 0, SLM_PASS_FORWARD);
        return 0.0f;
    }
    const int last = last_unit(m);
    gpt_before(m, last, SLM_PASS_FORWARD);
    slm_layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, x, m->p.lnfw, m->p.lnfb, N, C);
    slm_matmul_forward(m->logits, m->lnf, m->p.wte, NULL, N, C, m->vl); /* tied LM head */
    gpt_after(m, last, SLM_PASS_FORWARD);
    gpt_after(m, 0, SLM_PASS_FORWARD);
    if (!targets) return 0.0f;
    if (m->tp.size == 1) slm_crossentropy_forward(m->losses, m->lse, m->logits, targets, N, V);
    else { /* over the vocabulary split: maxima, then sums of exponentials and target logits */
        slm_rowmax(m->lse, m->logits, N, m->vl);
        m->tp.allreduce_max(m->tp.ctx, m->lse, (size_t)N);
        slm_crossentropy_part(m->ce_part, m->logits, m->lse, targets, m->v0, N, m->vl);
        gpt_tp_allreduce(m, m->ce_part, 2 * (size_t)N);
        for (int i = 0; i < N; i++) {
            m->lse[i] += (float)log(m->ce_part[2 * i]);
            m->losses[i] = m->lse[i] - m->ce_part[2 * i + 1];
        }
    }
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->losses[i];
    return (float)(sum / N);
}

void slm_gpt_backward(slm_gpt_t m, float loss_scale) { slm_gpt_backward_slot(m, 0, loss_scale); }

void slm_gpt_backward_slot(slm_gpt_t m, int slot, float loss_scale)
{
    gpt_select_slot(m, slot);
    const int C = m->cfg.d_model;
    const int NH = m->cfg.n_head / m->tp.size, CL = C / m->tp.size, hs = C / m->cfg.n_head;
    const int B = m->B, T = m->T, N = B * T;
    const int l0 = m->stage.first_layer, l1 = l0 + m->stage.n_layers;
    const size_t NC = (size_t)N * C, NCL = (size_t)N * CL;

    if (m->has_embed) gpt_before(m, 0, SLM_PASS_BACKWARD);
    if (m->stage.last) {
        const int last = last_unit(m);
        gpt_before(m, last, SLM_PASS_BACKWARD);
        slm_crossentropy_backward_part(m->logits, m->lse, m->targets, m->v0, loss_scale, N, m->vl);
        float *dlogits = m->logits;
        memset(m->dres, 0, NC * sizeof(float));
        memset(m->dnarrow, 0, NC * sizeof(float));
        slm_matmul_backward(m->dnarrow, m->g.wte, NULL, dlogits, m->lnf, m->p.wte, N, C, m->vl);
        gpt_tp_allreduce(m, m->dnarrow, NC); /* d(lnf) from every rank's vocabulary rows */
        const float *x_last = m->blocks[l1 - 1].res3;
        slm_layernorm_backward(m->dres, m->g.lnfw, m->g.lnfb, m->dnarrow, x_last, m->p.lnfw,
                               m->lnf_mean, m->lnf_rstd, N, C);
        gpt_after(m, last, SLM_PASS_BACKWARD);
    } /* else the next stage's gradient of this stage's output was written to dres */

    for (int l = l1 - 1; l >= l0; l--) {
        gpt_before(m, block_unit(m, l), SLM_PASS_BACKWARD);
        const gpt_block_views *w = &m->p.blocks[l];
        const gpt_block_views *g = &m->g.blocks[l];
        const gpt_block_acts *a = &m->blocks[l];
        const float *x = l > l0 ? m->blocks[l - 1].res3 : m->encoded;
        if (m->cfg.recompute) block_forward(m, l, x, B, T, 0);
        /* m->dres holds d(res3); res3 = res2 + proj(gelu(fc(ln2(res2)))) */
        memset(m->dwide1, 0, 4 * NCL * sizeof(float));
        slm_matmul_backward(m->dwide1, g->fcprojw, g->fcprojb, m->dres, a->fch_gelu, w->fcprojw,
                            N, 4 * CL, C);
        memset(m->dwide2, 0, 4 * NCL * sizeof(float));
        slm_gelu_backward(m->dwide2, a->fch, m->dwide1, 4 * NCL);
        gpt_poll(m);
        memset(m->dnarrow, 0, NC * sizeof(float));
        slm_matmul_backward(m->dnarrow, g->fcw, g->fcb, m->dwide2, a->ln2, w->fcw, N, C, 4 * CL);
        gpt_tp_allreduce(m, m->dnarrow, NC); /* d(ln2) from every rank's MLP columns */
        slm_layernorm_backward(m->dres, g->ln2w, g->ln2b, m->dnarrow, a->res2, w->ln2w,
                               a->ln2_mean, a->ln2_rstd, N, C);
        /* m->dres holds d(res2); res2 = x + proj(attn(qkv(ln1(x)))) */
        memset(m->dnarrow, 0, NC * sizeof(float));
        slm_matmul_backward(m->dnarrow, g->attprojw, g->attprojb, m->dres, a->atty, w->attprojw,
                            N, CL, C);
        float *dqkv = m->dwide1;
        memset(dqkv, 0, 3 * NCL * sizeof(float));
        gpt_poll(m);
        slm_attention_backward(dqkv, m->datt, m->datt_floats, m->dnarrow, a->qkv, B, T, NH, NH, hs);
        gpt_poll(m);
        memset(m->dnarrow, 0, NC * sizeof(float));
        slm_matmul_backward(m->dnarrow, g->qkvw, g->qkvb, dqkv, a->ln1, w->qkvw, N, C, 3 * CL);
        gpt_tp_allreduce(m, m->dnarrow, NC); /* d(ln1) from every rank's heads */
        slm_layernorm_backward(m->dres, g->ln1w, g->ln1b, m->dnarrow, x, w->ln1w, a->ln1_mean,
                               a->ln1_rstd, N, C);
        /* m->dres now holds d(x), the gradient of the block's input */
        gpt_after(m, block_unit(m, l), SLM_PASS_BACKWARD);
    }
    /* dres holds the gradient of this stage's input */
    if (m->stage.first)
        slm_encoder_backward_rows(m->g.wte, m->v0, m->v0 + m->vl, m->g.wpe, m->dres, m->inputs, B, T, C);
    if (m->has_embed) gpt_after(m, 0, SLM_PASS_BACKWARD);
}
