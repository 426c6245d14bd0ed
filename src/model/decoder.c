/* decoder.c - forward and backward of a decoder-only transformer on one micro-batch and
 * pipeline slot, for any architecture: the embedding, the blocks with the sharding
 * layer's hooks and optional recompute, the final norm, the LM head and the loss. The
 * architecture (slm_arch) supplies the embedding, the blocks and the final norm.
 *
 * Under tensor parallelism the embedding and the head are split by vocabulary rows: the
 * embedding sums each rank's rows, the head gives each rank its columns of the logits,
 * and the cross-entropy combines the rows' maxima and exponential sums over the group.
 * Norms and the residual stream run whole and identically on every rank of the group. */
#include <math.h>
#include <string.h>
#include "model_impl.h"
#include "shardlm/kernels.h"

/* The hooks around block l: its unit and, for an MoE block, its experts' unit. Before
 * runs both; after closes the experts last in forward and first in backward, so a bucket
 * holding both closes at the end of the block either way. */
static void block_hooks(slm_model_t m, int l, slm_pass pass, int before)
{
    const int bu = m->block_unit[l], xu = m->expert_unit[l];
    if (before) {
        slm_model_before(m, bu, pass);
        if (xu >= 0) slm_model_before(m, xu, pass);
        return;
    }
    if (pass == SLM_PASS_BACKWARD && xu >= 0) slm_model_after(m, xu, pass);
    slm_model_after(m, bu, pass);
    if (pass == SLM_PASS_FORWARD && xu >= 0) slm_model_after(m, xu, pass);
}

float slm_model_forward(slm_model_t m, const int32_t *inputs, const int32_t *targets, int B, int T)
{
    return slm_model_forward_slot(m, 0, inputs, targets, B, T);
}

/* The mean cross-entropy of the logits (N, this rank's vocabulary columns). */
static float loss_forward(slm_model_t m, const int32_t *targets, int N)
{
    if (m->tp.size == 1) slm_crossentropy_forward(m->losses, m->lse, m->logits, targets, N, m->cfg.vocab_size);
    else { /* over the vocabulary split: maxima, then sums of exponentials and target logits */
        slm_rowmax(m->lse, m->logits, N, m->vl);
        m->tp.allreduce_max(m->tp.ctx, m->lse, (size_t)N);
        slm_crossentropy_part(m->ce_part, m->logits, m->lse, targets, m->v0, N, m->vl);
        slm_model_tp_allreduce(m, m->ce_part, 2 * (size_t)N);
        for (int i = 0; i < N; i++) {
            m->lse[i] += (float)log(m->ce_part[2 * i]);
            m->losses[i] = m->lse[i] - m->ce_part[2 * i + 1];
        }
    }
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->losses[i];
    return (float)(sum / N);
}

float slm_model_forward_slot(slm_model_t m, int slot, const int32_t *inputs, const int32_t *targets, int B, int T)
{
    const int C = m->cfg.d_model, N = B * T;
    m->slot_B[slot] = B;
    m->slot_T[slot] = T;
    slm_model_select_slot(m, slot);
    memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    if (targets) memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));
    const int l0 = m->stage.first_layer, l1 = l0 + m->stage.n_layers;

    if (m->has_embed) slm_model_before(m, 0, SLM_PASS_FORWARD);
    if (m->stage.first) {
        m->arch->embed_forward(m, B, T);
        slm_model_tp_allreduce(m, m->encoded, (size_t)N * C);
    } /* else the previous stage's output was written there */
    const float *x = m->encoded; /* residual stream entering the block, (N,C) */
    for (int l = l0; l < l1; l++) {
        block_hooks(m, l, SLM_PASS_FORWARD, 1);
        m->arch->block_forward(m, l, x, B, T, 1);
        block_hooks(m, l, SLM_PASS_FORWARD, 0);
        x = slm_block_out(m, l);
    }
    if (!m->stage.last) { /* x is the output the next stage reads */
        if (m->has_embed) slm_model_after(m, 0, SLM_PASS_FORWARD);
        return 0.0f;
    }
    const int last = slm_model_last_unit(m), head = m->arch->head_tensor(m);
    slm_model_before(m, last, SLM_PASS_FORWARD);
    m->arch->final_norm_forward(m, x, N);
    slm_matmul_forward(m->logits, m->fnorm, PV(m, head), NULL, N, C, m->vl);
    slm_model_after(m, last, SLM_PASS_FORWARD);
    if (m->has_embed) slm_model_after(m, 0, SLM_PASS_FORWARD);
    return targets ? loss_forward(m, targets, N) : 0.0f;
}

void slm_model_backward(slm_model_t m, float loss_scale) { slm_model_backward_slot(m, 0, loss_scale); }

void slm_model_backward_slot(slm_model_t m, int slot, float loss_scale)
{
    slm_model_select_slot(m, slot);
    const int C = m->cfg.d_model, B = m->B, T = m->T, N = B * T;
    const int l0 = m->stage.first_layer, l1 = l0 + m->stage.n_layers;
    const size_t NC = (size_t)N * C;
    m->loss_scale = loss_scale;

    if (m->has_embed) slm_model_before(m, 0, SLM_PASS_BACKWARD);
    if (m->stage.last) {
        const int last = slm_model_last_unit(m), head = m->arch->head_tensor(m);
        slm_model_before(m, last, SLM_PASS_BACKWARD);
        slm_crossentropy_backward_part(m->logits, m->lse, m->targets, m->v0, loss_scale, N, m->vl);
        float *dlogits = m->logits;
        memset(m->dres, 0, NC * sizeof(float));
        memset(m->dnarrow, 0, NC * sizeof(float));
        slm_matmul_backward(m->dnarrow, GV(m, head), NULL, dlogits, m->fnorm, PV(m, head), N, C, m->vl);
        slm_model_tp_allreduce(m, m->dnarrow, NC); /* d(final norm) from every rank's vocabulary rows */
        m->arch->final_norm_backward(m, slm_block_out(m, l1 - 1), m->dnarrow, N);
        slm_model_after(m, last, SLM_PASS_BACKWARD);
    } /* else the next stage's gradient of this stage's output was written to dres */

    for (int l = l1 - 1; l >= l0; l--) {
        block_hooks(m, l, SLM_PASS_BACKWARD, 1);
        const float *x = l > l0 ? slm_block_out(m, l - 1) : m->encoded;
        if (m->cfg.recompute) m->arch->block_forward(m, l, x, B, T, 0);
        m->arch->block_backward(m, l, x, B, T); /* dres: d(output) in, d(x) out */
        block_hooks(m, l, SLM_PASS_BACKWARD, 0);
    }
    /* dres holds the gradient of this stage's input */
    if (m->stage.first) m->arch->embed_backward(m, B, T);
    if (m->has_embed) slm_model_after(m, 0, SLM_PASS_BACKWARD);
}
