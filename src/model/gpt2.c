/* gpt2.c - GPT-2: learned positions, pre-LayerNorm blocks with biases, a GELU MLP and
 * the LM head tied to the token embedding.
 *
 * Under tensor parallelism (Megatron's split) a rank holds H/tp heads and F/tp MLP
 * columns: QKV and MLP-up are column-parallel (their outputs are this rank's share), the
 * attention and MLP-down projections row-parallel (their outputs are partial sums,
 * all-reduced over the group, with the bias added by one rank). In backward the gradients
 * of the two LayerNorm outputs, partial sums from the column-parallel layers, are
 * all-reduced the same way. */
#include <math.h>
#include <string.h>
#include "model_impl.h"
#include "shardlm/kernels.h"

/* The table: wte, wpe, then 12 tensors per block in this order, then lnf. */
enum { WTE, WPE, EMBED_TENSORS };
enum { LN1W, LN1B, QKVW, QKVB, PROJW, PROJB, LN2W, LN2B, FCW, FCB, FCPROJW, FCPROJB, BLOCK_TENSORS };
/* A block's activations, in memory order; the last is its output. */
enum { A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATTY, A_RES2, A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_RES3,
       BLOCK_ACTS };


static void defaults(slm_model_config *c)
{
    if (c->n_kv_head <= 0) c->n_kv_head = c->n_head;
    if (c->ffn_hidden <= 0) c->ffn_hidden = 4 * c->d_model;
    if (c->norm_eps <= 0) c->norm_eps = 1e-5;
    c->tie_embeddings = 1; /* always: its head is the token embedding */
}

static slm_status check(const slm_model_config *c, int tp)
{
    SLM_CHECK(c->n_kv_head == c->n_head, SLM_ERR_CONFIG,
              "model.n_kv_head = %d: GPT-2 has as many key/value heads as heads (model.n_head = %d)", c->n_kv_head,
              c->n_head);
    SLM_CHECK(c->rope.kind == SLM_ROPE_NONE && c->rope_theta == 0, SLM_ERR_CONFIG,
              "model.rope_scaling / model.rope_theta: GPT-2 has learned positions, no rotary embeddings");
    SLM_CHECK(fabs(c->norm_eps - 1e-5) < 1e-12, SLM_ERR_CONFIG,
              "model.norm_eps = %g: GPT-2's LayerNorm kernel uses 1e-5", c->norm_eps);
    SLM_CHECK(c->ffn_hidden % tp == 0, SLM_ERR_CONFIG, "parallel.tp = %d does not divide model.ffn_hidden = %d", tp,
              c->ffn_hidden);
    return SLM_OK;
}

/* Weight decay on matrices only; N(0, 0.02) for them, N(0, 0.02/sqrt(2L)) for the two
 * projections into the residual stream; biases 0, LayerNorm weights 1. The token
 * embedding (the tied LM head) is split by vocabulary rows; the position embedding
 * stays whole. */
static void build(slm_model_t m)
{
    const int64_t C = m->cfg.d_model, V = m->cfg.vocab_size;
    const double std = 0.02, std_proj = 0.02 / sqrt(2.0 * m->cfg.n_layer);
    const tensor_spec wte = {"wte", V, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1};
    const tensor_spec wpe = {"wpe", m->cfg.max_pos, C, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_NORMAL, std, 1};
    slm_model_add_tensor(m, -1, HELD_EMBED, &wte);
    slm_model_add_tensor(m, -1, HELD_EMBED, &wpe);
    slm_model_end_unit(m, 0);
    const tensor_spec block[FCW] = {
        {"ln1.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0},
        {"ln1.bias", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ZEROS, 0, 0},
        {"attn.qkv.weight", 3 * C, C, SLM_SPLIT_ROWS, 3, NULL, SLM_INIT_NORMAL, std, 1},
        {"attn.qkv.bias", 3 * C, 0, SLM_SPLIT_ROWS, 3, NULL, SLM_INIT_ZEROS, 0, 0},
        {"attn.proj.weight", C, C, SLM_SPLIT_COLS, 1, NULL, SLM_INIT_NORMAL, std_proj, 1},
        {"attn.proj.bias", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ZEROS, 0, 0},
        {"ln2.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0},
        {"ln2.bias", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ZEROS, 0, 0},
    };
    for (int l = 0; l < m->cfg.n_layer; l++) {
        for (int k = 0; k < FCW; k++) slm_model_add_tensor(m, l, HELD_BLOCK, &block[k]);
        slm_model_add_block_mlp(m, l);
    }
    const tensor_spec lnfw = {"lnf.weight", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ONES, 0, 0};
    const tensor_spec lnfb = {"lnf.bias", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ZEROS, 0, 0};
    slm_model_add_tensor(m, -1, HELD_HEAD, &lnfw);
    slm_model_add_tensor(m, -1, HELD_HEAD, &lnfb);
    slm_model_end_unit(m, slm_after_blocks(m));
}

/* The MLP at width F: fc (column-parallel) and proj (row-parallel), with biases. */
static int mlp_tensors(const slm_model_config *c, int64_t F, tensor_spec *out)
{
    const int64_t C = c->d_model;
    const double std = 0.02, std_proj = 0.02 / sqrt(2.0 * c->n_layer);
    const tensor_spec mlp[4] = {
        {"fc.weight", F, C, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_NORMAL, std, 1},
        {"fc.bias", F, 0, SLM_SPLIT_ROWS, 1, NULL, SLM_INIT_ZEROS, 0, 0},
        {"proj.weight", C, F, SLM_SPLIT_COLS, 1, NULL, SLM_INIT_NORMAL, std_proj, 1},
        {"proj.bias", C, 0, SLM_SPLIT_NONE, 1, NULL, SLM_INIT_ZEROS, 0, 0},
    };
    memcpy(out, mlp, sizeof mlp);
    return 4;
}

static void mlp_hidden(int FL, size_t *h1, size_t *h2) { *h1 = *h2 = (size_t)FL; }

static void mlp_forward(slm_model_t m, float *const *w, const float *x, int n, int FL, float *h1, float *h2, float *y)
{
    const int C = m->cfg.d_model;
    slm_matmul_forward(h1, x, w[0], w[1], n, C, FL);
    slm_model_poll(m);
    slm_gelu_forward(h2, h1, (size_t)n * FL);
    if (y) slm_matmul_forward(y, h2, w[2], m->tp.rank == 0 ? w[3] : NULL, n, FL, C);
}

static void mlp_backward(slm_model_t m, float *const *w, float *const *g, const float *x, const float *h1,
                         const float *h2, const float *dy, int n, int FL, float *dx, float *dh1, float *dh2)
{
    const int C = m->cfg.d_model;
    const size_t nf = (size_t)n * FL;
    memset(dh2, 0, nf * sizeof(float));
    slm_matmul_backward(dh2, g[2], g[3], dy, h2, w[2], n, FL, C);
    memset(dh1, 0, nf * sizeof(float));
    slm_gelu_backward(dh1, h1, dh2, nf);
    slm_model_poll(m);
    slm_matmul_backward(dx, g[0], g[1], dh1, x, w[0], n, C, FL);
}

static double mlp_params(const slm_model_config *c, double F, int with_vectors)
{
    return 2.0 * c->d_model * F + (with_vectors ? F + c->d_model : 0.0);
}

static int block_acts(const slm_model_t m, size_t *w)
{
    const size_t C = (size_t)m->cfg.d_model, CL = C / (size_t)m->tp.size;
    const size_t FL = (size_t)m->cfg.ffn_hidden / (size_t)m->tp.size;
    const size_t widths[BLOCK_ACTS] = {C, 1, 1, 3 * CL, CL, C, C, 1, 1, FL, FL, C};
    memcpy(w, widths, sizeof widths);
    return BLOCK_ACTS;
}

/* dwide1 holds d(QKV) and the MLP's widths; dwide2 the MLP's. */
static size_t grad_width(const slm_model_t m)
{
    const size_t CL3 = 3 * (size_t)m->cfg.d_model / (size_t)m->tp.size;
    const size_t FL = (size_t)m->cfg.ffn_hidden / (size_t)m->tp.size;
    return FL > CL3 ? FL : CL3;
}

static void embed_forward(slm_model_t m, int B, int T)
{
    slm_encoder_forward_rows(m->encoded, m->inputs, PV(m, WTE), m->v0, m->v0 + m->vl,
                             m->tp.rank == 0 ? PV(m, WPE) : NULL, B, T, m->cfg.d_model);
}

static void embed_backward(slm_model_t m, int B, int T)
{
    slm_encoder_backward_rows(GV(m, WTE), m->v0, m->v0 + m->vl, GV(m, WPE), m->dres, m->inputs, B, T,
                              m->cfg.d_model);
}

/* Block l's forward from its input x into its activation views; with output false
 * (recompute before backward) it stops at the MLP's GELU, which is all backward reads. */
static void block_forward(slm_model_t m, int l, const float *x, int B, int T, int output)
{
    const int C = m->cfg.d_model, NH = m->cfg.n_head / m->tp.size, CL = C / m->tp.size, N = B * T;
    const int FL = m->cfg.ffn_hidden / m->tp.size;
    float *const *w = &m->pv[slm_block_tensor(m, l, 0)];
    float *a[BLOCK_ACTS];
    for (int k = 0; k < BLOCK_ACTS; k++) a[k] = slm_block_act(m, l, k);
    slm_layernorm_forward(a[A_LN1], a[A_LN1_MEAN], a[A_LN1_RSTD], x, w[LN1W], w[LN1B], N, C);
    slm_matmul_forward(a[A_QKV], a[A_LN1], w[QKVW], w[QKVB], N, C, 3 * CL);
    slm_model_poll(m);
    slm_attention_forward(a[A_ATTY], m->datt, m->datt_floats, a[A_QKV], B, T, NH, NH, C / m->cfg.n_head);
    slm_model_poll(m);
    slm_model_row_parallel_forward(m, a[A_RES2], a[A_ATTY], w[PROJW], w[PROJB], N, CL, C);
    slm_residual_forward(a[A_RES2], a[A_RES2], x, (size_t)N * C);
    slm_layernorm_forward(a[A_LN2], a[A_LN2_MEAN], a[A_LN2_RSTD], a[A_RES2], w[LN2W], w[LN2B], N, C);
    if (slm_model_is_moe_block(&m->cfg, l)) {
        slm_moe_forward(m, l, a[A_LN2], output ? a[A_RES3] : NULL, N, output);
        if (output) slm_residual_forward(a[A_RES3], a[A_RES3], a[A_RES2], (size_t)N * C);
        return;
    }
    mlp_forward(m, &w[FCW], a[A_LN2], N, FL, a[A_FCH], a[A_FCH_GELU], output ? a[A_RES3] : NULL);
    if (!output) return;
    slm_model_tp_allreduce(m, a[A_RES3], (size_t)N * C); /* row-parallel: every rank's MLP columns */
    slm_residual_forward(a[A_RES3], a[A_RES3], a[A_RES2], (size_t)N * C);
}

static void block_backward(slm_model_t m, int l, const float *x, int B, int T)
{
    const int C = m->cfg.d_model, NH = m->cfg.n_head / m->tp.size, CL = C / m->tp.size, N = B * T;
    const int FL = m->cfg.ffn_hidden / m->tp.size;
    const size_t NC = (size_t)N * C, NCL = (size_t)N * CL;
    float *const *w = &m->pv[slm_block_tensor(m, l, 0)];
    float *const *g = &m->gv[slm_block_tensor(m, l, 0)];
    float *a[BLOCK_ACTS];
    for (int k = 0; k < BLOCK_ACTS; k++) a[k] = slm_block_act(m, l, k);
    /* m->dres holds d(res3); res3 = res2 + proj(gelu(fc(ln2(res2)))), or + moe(ln2(res2)) */
    memset(m->dnarrow, 0, NC * sizeof(float));
    if (slm_model_is_moe_block(&m->cfg, l)) slm_moe_backward(m, l, a[A_LN2], m->dres, m->dnarrow, N);
    else mlp_backward(m, &w[FCW], &g[FCW], a[A_LN2], a[A_FCH], a[A_FCH_GELU], m->dres, N, FL, m->dnarrow, m->dwide2,
                      m->dwide1);
    slm_model_tp_allreduce(m, m->dnarrow, NC); /* d(ln2) from every rank's MLP columns */
    slm_layernorm_backward(m->dres, g[LN2W], g[LN2B], m->dnarrow, a[A_RES2], w[LN2W], a[A_LN2_MEAN],
                           a[A_LN2_RSTD], N, C);
    /* m->dres holds d(res2); res2 = x + proj(attn(qkv(ln1(x)))) */
    memset(m->dnarrow, 0, NC * sizeof(float));
    slm_matmul_backward(m->dnarrow, g[PROJW], g[PROJB], m->dres, a[A_ATTY], w[PROJW], N, CL, C);
    float *dqkv = m->dwide1;
    memset(dqkv, 0, 3 * NCL * sizeof(float));
    slm_model_poll(m);
    slm_attention_backward(dqkv, m->datt, m->datt_floats, m->dnarrow, a[A_QKV], B, T, NH, NH, C / m->cfg.n_head);
    slm_model_poll(m);
    memset(m->dnarrow, 0, NC * sizeof(float));
    slm_matmul_backward(m->dnarrow, g[QKVW], g[QKVB], dqkv, a[A_LN1], w[QKVW], N, C, 3 * CL);
    slm_model_tp_allreduce(m, m->dnarrow, NC); /* d(ln1) from every rank's heads */
    slm_layernorm_backward(m->dres, g[LN1W], g[LN1B], m->dnarrow, x, w[LN1W], a[A_LN1_MEAN], a[A_LN1_RSTD], N, C);
    /* m->dres now holds d(x), the gradient of the block's input */
}

static void final_norm_forward(slm_model_t m, const float *x, int N)
{
    const int f = slm_after_blocks(m);
    slm_layernorm_forward(m->fnorm, m->fstat1, m->fstat2, x, PV(m, f), PV(m, f + 1), N, m->cfg.d_model);
}

static void final_norm_backward(slm_model_t m, const float *x, const float *dout, int N)
{
    const int f = slm_after_blocks(m);
    slm_layernorm_backward(m->dres, GV(m, f), GV(m, f + 1), dout, x, PV(m, f), m->fstat1, m->fstat2, N,
                           m->cfg.d_model);
}

static int head_tensor(const slm_model_t m)
{
    (void)m;
    return WTE; /* tied */
}

/* 6 x (L (4C^2 + 2CF) + VC) + 12 L C T: the matrix weights a token passes through, and the
 * attention's scores and values. */
static double flops_per_token(const slm_model_config *c)
{
    double L = c->n_layer, C = c->d_model, V = c->vocab_size, T = c->seq_len, F = c->ffn_hidden;
    return 6.0 * (L * C * (4.0 * C + 2.0 * F) + V * C) + 12.0 * L * C * T;
}

static double params_of(const slm_model_config *c)
{
    double L = c->n_layer, C = c->d_model, V = c->vocab_size, F = c->ffn_hidden;
    return V * C + (double)c->max_pos * C + L * (4.0 * C * C + 2.0 * C * F + 9.0 * C + F) + 2.0 * C;
}

static int gemm_shapes(slm_model_t m, int B, slm_gemm_shape *out, int max)
{
    const int T = m->cfg.seq_len, N = B * T, C = m->cfg.d_model, CL = C / m->tp.size;
    const int FL = m->cfg.ffn_hidden / m->tp.size;
    const int NH = m->cfg.n_head / m->tp.size, hs = C / m->cfg.n_head, L = m->stage.n_layers;
    int n = 0;
    n = slm_gemm_add_linear(out, n, max, N, C, 3 * CL, L);
    n = slm_gemm_add_linear(out, n, max, N, CL, C, L);
    n = slm_gemm_add_linear(out, n, max, N, C, FL, L);
    n = slm_gemm_add_linear(out, n, max, N, FL, C, L);
    n = slm_gemm_add_attention(out, n, max, B, T, NH, hs, L);
    if (m->stage.last) n = slm_gemm_add_linear(out, n, max, N, C, m->vl, 1); /* the head, this rank's vocabulary */
    return n;
}

const slm_arch slm_arch_gpt2 = {
    .name = "gpt2",
    .defaults = defaults,
    .check = check,
    .build = build,
    .block_acts = block_acts,
    .grad_width = grad_width,
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
    .mlp_first = FCW,
    .mlp_tensors = mlp_tensors,
    .mlp_acts = 1u << A_FCH | 1u << A_FCH_GELU,
    .mlp_hidden = mlp_hidden,
    .mlp_forward = mlp_forward,
    .mlp_backward = mlp_backward,
    .mlp_params = mlp_params,
    .hf = &slm_hf_gpt2,
};
