/* llama.c - the Llama family: RMSNorm, rotary position embeddings (with the llama3
 * frequency scaling), grouped-query attention, a SwiGLU MLP, no biases, and an LM head
 * that is the token embedding or a tensor of its own.
 *
 * Rotary embeddings pair dimension i with i + hs/2 (the "rotate-half" order Hugging Face
 * checkpoints use); weights in the interleaved order of Meta's original checkpoints are
 * permuted where they come in (slm_rope_permute_rows).
 *
 * The q, k and v projections are three tensors stored one after the other, so this rank's
 * rows of all three form one (H_r + 2 K_r) hs x C matrix and one product computes them;
 * the same for the gate and up projections. Under tensor parallelism a rank holds H/tp
 * query heads, K/tp key/value heads (tp divides K) and F/tp MLP columns; the output and
 * down projections are row-parallel, as in GPT-2. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model_impl.h"
#include "shardlm/kernels.h"

/* The table: the embedding, 9 tensors per block, the final norm, then the head if untied. */
enum { EMBED };
enum { ATTN_NORM, WQ, WK, WV, WO, MLP_NORM, WGATE, WUP, WDOWN, BLOCK_TENSORS };
/* A block's activations, in memory order; the last is its output. */
enum { A_XN1, A_RSTD1, A_QKV, A_ATTY, A_RES2, A_XN2, A_RSTD2, A_GU, A_H, A_OUT, BLOCK_ACTS };


typedef struct {
    float *cos, *sin; /* (seq_len, hs/2) */
} llama_priv;

static void defaults(slm_model_config *c)
{
    if (c->n_kv_head <= 0) c->n_kv_head = c->n_head;
    if (c->ffn_hidden <= 0) { /* 2/3 of 4 d_model, rounded up to a multiple of 256 */
        const int f = (8 * c->d_model + 2) / 3;
        c->ffn_hidden = (f + 255) / 256 * 256;
    }
    if (c->norm_eps <= 0) c->norm_eps = 1e-5;
    if (c->rope_theta <= 0) c->rope_theta = 10000;
    if (c->rope.kind == SLM_ROPE_LLAMA3) { /* Llama 3.1's values */
        if (c->rope.factor <= 0) c->rope.factor = 8;
        if (c->rope.low_freq_factor <= 0) c->rope.low_freq_factor = 1;
        if (c->rope.high_freq_factor <= 0) c->rope.high_freq_factor = 4;
        if (c->rope.original_max_pos <= 0) c->rope.original_max_pos = 8192;
    }
}

static slm_status check(const slm_model_config *c, int tp)
{
    const int hs = c->d_model / c->n_head;
    SLM_CHECK(c->n_kv_head >= 1 && c->n_head % c->n_kv_head == 0, SLM_ERR_CONFIG,
              "model.n_kv_head = %d does not divide model.n_head = %d", c->n_kv_head, c->n_head);
    SLM_CHECK(hs % 2 == 0, SLM_ERR_CONFIG,
              "model.d_model / model.n_head = %d: rotary embeddings need an even head size", hs);
    SLM_CHECK(c->n_kv_head % tp == 0, SLM_ERR_CONFIG,
              "parallel.tp = %d does not divide model.n_kv_head = %d: each rank needs whole key/value heads", tp,
              c->n_kv_head);
    SLM_CHECK(c->ffn_hidden % tp == 0, SLM_ERR_CONFIG, "parallel.tp = %d does not divide model.ffn_hidden = %d", tp,
              c->ffn_hidden);
    SLM_CHECK(c->norm_eps > 0, SLM_ERR_CONFIG, "model.norm_eps = %g must be positive", c->norm_eps);
    SLM_CHECK(c->rope_theta > 1, SLM_ERR_CONFIG, "model.rope_theta = %g must be larger than 1", c->rope_theta);
    if (c->rope.kind == SLM_ROPE_LLAMA3) {
        SLM_CHECK(c->rope.factor >= 1, SLM_ERR_CONFIG, "model.rope_factor = %g must be at least 1", c->rope.factor);
        SLM_CHECK(c->rope.low_freq_factor > 0 && c->rope.high_freq_factor > c->rope.low_freq_factor, SLM_ERR_CONFIG,
                  "model.rope_low_freq_factor = %g and model.rope_high_freq_factor = %g: need 0 < low < high",
                  c->rope.low_freq_factor, c->rope.high_freq_factor);
        SLM_CHECK(c->rope.original_max_pos > 0, SLM_ERR_CONFIG, "model.rope_original_max_pos = %d must be positive",
                  c->rope.original_max_pos);
    }
    return SLM_OK;
}

/* Weight decay on matrices; N(0, 0.02) for them and N(0, 0.02/sqrt(2L)) for the two
 * projections into the residual stream (GPT-2's rule, which Llama trainers also use);
 * norm weights 1. */
static void build(slm_model_t m)
{
    const slm_model_config *c = &m->cfg;
    const int64_t C = c->d_model, V = c->vocab_size, hs = C / c->n_head;
    const int64_t Q = c->n_head * hs, KV = c->n_kv_head * hs;
    const double std = 0.02, std_proj = 0.02 / sqrt(2.0 * c->n_layer);
    const tensor_spec embed = {"embed.weight", V, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1};
    slm_model_add_tensor(m, -1, HELD_EMBED, &embed);
    slm_model_end_unit(m, EMBED);
    const tensor_spec block[WGATE] = {
        {"attn_norm.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0},
        {"attn.q.weight", Q, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"attn.k.weight", KV, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"attn.v.weight", KV, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"attn.o.weight", C, Q, SLM_SPLIT_COLS, 1, NULL, SLM_INIT_NORMAL, std_proj, 1},
        {"mlp_norm.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0},
    };
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < WGATE; k++) slm_model_add_tensor(m, l, HELD_BLOCK, &block[k]);
        slm_model_add_block_mlp(m, l);
    }
    const tensor_spec norm = {"norm.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0};
    const tensor_spec head = {"head.weight", V, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1};
    slm_model_add_tensor(m, -1, HELD_HEAD, &norm);
    if (!c->tie_embeddings) slm_model_add_tensor(m, -1, HELD_HEAD, &head);
    slm_model_end_unit(m, slm_after_blocks(m));
}

/* This rank's widths: query heads, key/value heads (each hs wide) and MLP columns. */
static void local_widths(const slm_model_t m, int *NHl, int *NKVl, int *hs, int *FL)
{
    *NHl = m->cfg.n_head / m->tp.size;
    *NKVl = m->cfg.n_kv_head / m->tp.size;
    *hs = m->cfg.d_model / m->cfg.n_head;
    *FL = m->cfg.ffn_hidden / m->tp.size;
}

/* The MLP at width F: gate and up (column-parallel, stored one after the other so one
 * product computes both), down (row-parallel); no biases. */
static int mlp_tensors(const slm_model_config *c, int64_t F, tensor_spec *out)
{
    const int64_t C = c->d_model;
    const double std = 0.02, std_proj = 0.02 / sqrt(2.0 * c->n_layer);
    const tensor_spec mlp[3] = {
        {"gate.weight", F, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"up.weight", F, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"down.weight", C, F, SLM_SPLIT_COLS, 1, NULL, SLM_INIT_NORMAL, std_proj, 1},
    };
    memcpy(out, mlp, sizeof mlp);
    return 3;
}

static void mlp_hidden(int FL, size_t *h1, size_t *h2)
{
    *h1 = 2 * (size_t)FL;
    *h2 = (size_t)FL;
}

static void mlp_forward(slm_model_t m, float *const *w, const float *x, int n, int FL, float *h1, float *h2, float *y)
{
    const int C = m->cfg.d_model;
    slm_matmul_forward(h1, x, w[0], NULL, n, C, 2 * FL); /* gate and up at once */
    slm_model_poll(m);
    slm_swiglu_forward(h2, h1, n, FL);
    if (y) slm_matmul_forward(y, h2, w[2], NULL, n, FL, C);
}

static void mlp_backward(slm_model_t m, float *const *w, float *const *g, const float *x, const float *h1,
                         const float *h2, const float *dy, int n, int FL, float *dx, float *dh1, float *dh2)
{
    const int C = m->cfg.d_model;
    memset(dh2, 0, (size_t)n * FL * sizeof(float));
    slm_matmul_backward(dh2, g[2], NULL, dy, h2, w[2], n, FL, C);
    slm_swiglu_backward(dh1, h1, dh2, n, FL); /* written */
    slm_model_poll(m);
    slm_matmul_backward(dx, g[0], NULL, dh1, x, w[0], n, C, 2 * FL);
}

static double mlp_params(const slm_model_config *c, double F, int with_vectors)
{
    (void)with_vectors; /* no biases */
    return 3.0 * c->d_model * F;
}

static int block_acts(const slm_model_t m, size_t *w)
{
    int NH, NKV, hs, FL;
    local_widths(m, &NH, &NKV, &hs, &FL);
    const size_t C = (size_t)m->cfg.d_model, QKV = (size_t)(NH + 2 * NKV) * hs;
    const size_t widths[BLOCK_ACTS] = {C, 1, QKV, (size_t)NH * hs, C, C, 1, 2 * (size_t)FL, (size_t)FL, C};
    memcpy(w, widths, sizeof widths);
    return BLOCK_ACTS;
}

/* dwide1 holds d(MLP hidden) and then d(QKV); dwide2 d(gate, up). */
static size_t grad_width(const slm_model_t m)
{
    int NH, NKV, hs, FL;
    local_widths(m, &NH, &NKV, &hs, &FL);
    const size_t qkv = (size_t)(NH + 2 * NKV) * hs, gu = 2 * (size_t)FL;
    return qkv > gu ? qkv : gu;
}

static slm_status setup(slm_model_t m)
{
    const int T = m->cfg.seq_len, hs = m->cfg.d_model / m->cfg.n_head;
    llama_priv *p = calloc(1, sizeof *p);
    m->priv = p; /* teardown frees whatever was allocated */
    if (p) {
        p->cos = malloc((size_t)T * (size_t)(hs / 2) * sizeof(float));
        p->sin = malloc((size_t)T * (size_t)(hs / 2) * sizeof(float));
    }
    double *freq = malloc((size_t)(hs / 2) * sizeof(double));
    const int ok = p && p->cos && p->sin && freq;
    if (ok) {
        slm_rope_freqs(freq, hs, m->cfg.rope_theta, &m->cfg.rope);
        slm_rope_table(p->cos, p->sin, T, hs, freq);
    }
    free(freq);
    SLM_CHECK(ok, SLM_ERR_NOMEM, "cannot allocate the rotary tables");
    return SLM_OK;
}

static void teardown(slm_model_t m)
{
    llama_priv *p = m->priv;
    if (!p) return;
    free(p->cos);
    free(p->sin);
    free(p);
    m->priv = NULL;
}

static void embed_forward(slm_model_t m, int B, int T)
{
    slm_encoder_forward_rows(m->encoded, m->inputs, PV(m, EMBED), m->v0, m->v0 + m->vl, NULL, B, T, m->cfg.d_model);
}

static void embed_backward(slm_model_t m, int B, int T)
{
    slm_encoder_backward_rows(GV(m, EMBED), m->v0, m->v0 + m->vl, NULL, m->dres, m->inputs, B, T, m->cfg.d_model);
}

static void block_forward(slm_model_t m, int l, const float *x, int B, int T, int output)
{
    const llama_priv *p = m->priv;
    const int C = m->cfg.d_model, N = B * T;
    const float eps = (float)m->cfg.norm_eps;
    int NH, NKV, hs, FL;
    local_widths(m, &NH, &NKV, &hs, &FL);
    float *const *w = &m->pv[slm_block_tensor(m, l, 0)];
    float *a[BLOCK_ACTS];
    for (int k = 0; k < BLOCK_ACTS; k++) a[k] = slm_block_act(m, l, k);
    slm_rmsnorm_forward(a[A_XN1], a[A_RSTD1], x, w[ATTN_NORM], N, C, eps);
    slm_matmul_forward(a[A_QKV], a[A_XN1], w[WQ], NULL, N, C, (NH + 2 * NKV) * hs); /* q, k, v at once */
    slm_rope_forward(a[A_QKV], B, T, NH, NKV, hs, p->cos, p->sin);
    slm_model_poll(m);
    slm_attention_forward(a[A_ATTY], m->datt, m->datt_floats, a[A_QKV], B, T, NH, NKV, hs);
    slm_model_poll(m);
    slm_model_row_parallel_forward(m, a[A_RES2], a[A_ATTY], w[WO], NULL, N, NH * hs, C);
    slm_residual_forward(a[A_RES2], a[A_RES2], x, (size_t)N * C);
    slm_rmsnorm_forward(a[A_XN2], a[A_RSTD2], a[A_RES2], w[MLP_NORM], N, C, eps);
    if (slm_model_is_moe_block(&m->cfg, l)) {
        slm_moe_forward(m, l, a[A_XN2], output ? a[A_OUT] : NULL, N, output);
        if (output) slm_residual_forward(a[A_OUT], a[A_OUT], a[A_RES2], (size_t)N * C);
        return;
    }
    mlp_forward(m, &w[WGATE], a[A_XN2], N, FL, a[A_GU], a[A_H], output ? a[A_OUT] : NULL);
    if (!output) return;
    slm_model_tp_allreduce(m, a[A_OUT], (size_t)N * C); /* row-parallel: every rank's MLP columns */
    slm_residual_forward(a[A_OUT], a[A_OUT], a[A_RES2], (size_t)N * C);
}

static void block_backward(slm_model_t m, int l, const float *x, int B, int T)
{
    const llama_priv *p = m->priv;
    const int C = m->cfg.d_model, N = B * T;
    int NH, NKV, hs, FL;
    local_widths(m, &NH, &NKV, &hs, &FL);
    const int QKV = (NH + 2 * NKV) * hs;
    const size_t NC = (size_t)N * C;
    float *const *w = &m->pv[slm_block_tensor(m, l, 0)];
    float *const *g = &m->gv[slm_block_tensor(m, l, 0)];
    float *a[BLOCK_ACTS];
    for (int k = 0; k < BLOCK_ACTS; k++) a[k] = slm_block_act(m, l, k);
    /* m->dres holds d(out); out = res2 + down(swiglu(gate_up(rms(res2)))), or + moe(rms(res2)) */
    memset(m->dnarrow, 0, NC * sizeof(float));
    if (slm_model_is_moe_block(&m->cfg, l)) slm_moe_backward(m, l, a[A_XN2], m->dres, m->dnarrow, N);
    else mlp_backward(m, &w[WGATE], &g[WGATE], a[A_XN2], a[A_GU], a[A_H], m->dres, N, FL, m->dnarrow, m->dwide2,
                      m->dwide1);
    slm_model_tp_allreduce(m, m->dnarrow, NC); /* d(rms2) from every rank's MLP columns */
    slm_rmsnorm_backward(m->dres, g[MLP_NORM], m->dnarrow, a[A_RES2], w[MLP_NORM], a[A_RSTD2], N, C);
    /* m->dres holds d(res2); res2 = x + o(attn(rope(qkv(rms(x))))) */
    memset(m->dnarrow, 0, NC * sizeof(float));
    slm_matmul_backward(m->dnarrow, g[WO], NULL, m->dres, a[A_ATTY], w[WO], N, NH * hs, C);
    float *dqkv = m->dwide1;
    memset(dqkv, 0, (size_t)N * QKV * sizeof(float));
    slm_model_poll(m);
    slm_attention_backward(dqkv, m->datt, m->datt_floats, m->dnarrow, a[A_QKV], B, T, NH, NKV, hs);
    slm_rope_backward(dqkv, B, T, NH, NKV, hs, p->cos, p->sin);
    slm_model_poll(m);
    memset(m->dnarrow, 0, NC * sizeof(float));
    slm_matmul_backward(m->dnarrow, g[WQ], NULL, dqkv, a[A_XN1], w[WQ], N, C, QKV);
    slm_model_tp_allreduce(m, m->dnarrow, NC); /* d(rms1) from every rank's heads */
    slm_rmsnorm_backward(m->dres, g[ATTN_NORM], m->dnarrow, x, w[ATTN_NORM], a[A_RSTD1], N, C);
}

static void final_norm_forward(slm_model_t m, const float *x, int N)
{
    const int f = slm_after_blocks(m);
    slm_rmsnorm_forward(m->fnorm, m->fstat1, x, PV(m, f), N, m->cfg.d_model, (float)m->cfg.norm_eps);
}

static void final_norm_backward(slm_model_t m, const float *x, const float *dout, int N)
{
    const int f = slm_after_blocks(m);
    slm_rmsnorm_backward(m->dres, GV(m, f), dout, x, PV(m, f), m->fstat1, N, m->cfg.d_model);
}

static int head_tensor(const slm_model_t m)
{
    return m->cfg.tie_embeddings ? EMBED : slm_after_blocks(m) + 1;
}

/* 6 x (the matrix weights a token passes through) + 12 L C T for the attention. */
static double flops_per_token(const slm_model_config *c)
{
    const double L = c->n_layer, C = c->d_model, V = c->vocab_size, T = c->seq_len, F = c->ffn_hidden;
    const double KV = (double)c->n_kv_head * (c->d_model / c->n_head);
    return 6.0 * (L * (2.0 * C * C + 2.0 * C * KV + 3.0 * C * F) + V * C) + 12.0 * L * C * T;
}

static double params_of(const slm_model_config *c)
{
    const double L = c->n_layer, C = c->d_model, V = c->vocab_size, F = c->ffn_hidden;
    const double KV = (double)c->n_kv_head * (c->d_model / c->n_head);
    return V * C * (c->tie_embeddings ? 1 : 2) + L * (2.0 * C * C + 2.0 * C * KV + 3.0 * C * F + 2.0 * C) + C;
}

static int gemm_shapes(slm_model_t m, int B, slm_gemm_shape *out, int max)
{
    int NH, NKV, hs, FL;
    local_widths(m, &NH, &NKV, &hs, &FL);
    const int T = m->cfg.seq_len, N = B * T, C = m->cfg.d_model, L = m->stage.n_layers;
    int n = 0;
    n = slm_gemm_add_linear(out, n, max, N, C, (NH + 2 * NKV) * hs, L);
    n = slm_gemm_add_linear(out, n, max, N, NH * hs, C, L);
    n = slm_gemm_add_linear(out, n, max, N, C, 2 * FL, L);
    n = slm_gemm_add_linear(out, n, max, N, FL, C, L);
    n = slm_gemm_add_attention(out, n, max, B, T, NH, hs, L);
    if (m->stage.last) n = slm_gemm_add_linear(out, n, max, N, C, m->vl, 1);
    return n;
}

const slm_arch slm_arch_llama = {
    .name = "llama",
    .defaults = defaults,
    .check = check,
    .build = build,
    .block_acts = block_acts,
    .grad_width = grad_width,
    .setup = setup,
    .teardown = teardown,
    .embed_forward = embed_forward,
    .embed_backward = embed_backward,
    .block_forward = block_forward,
    .block_backward = block_backward,
    .final_norm_forward = final_norm_forward,
    .final_norm_backward = final_norm_backward,
    .head_tensor = head_tensor,
    .flops_per_token = flops_per_token,
    .params_of = params_of,
    .gemm_shapes = gemm_shapes,
    .mlp_first = WGATE,
    .mlp_tensors = mlp_tensors,
    .mlp_acts = 1u << A_GU | 1u << A_H,
    .mlp_hidden = mlp_hidden,
    .mlp_forward = mlp_forward,
    .mlp_backward = mlp_backward,
    .mlp_params = mlp_params,
    .hf = &slm_hf_llama,
};
