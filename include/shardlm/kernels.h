/* shardlm/kernels.h - the compute kernels of GPT-2 and Llama-family decoder blocks, on
 * raw float buffers.
 *
 * Kernels know nothing of MPI, files or configuration; they do not validate shapes
 * (callers validate once, where data enters). All buffers are row-major and dense.
 * Shape letters: B batch, T time, C channels, NH (query) heads, NKV key/value heads,
 * hs head size (C/NH in GPT-2), F the MLP's hidden width, V vocabulary, N = B*T rows.
 *
 * Backward convention: every gradient output ACCUMULATES (+=) into its buffer, so the
 * caller zeroes parameter gradients once per optimizer step and activation gradients
 * before each use. Exceptions are marked. */
#ifndef SHARDLM_KERNELS_H
#define SHARDLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/cpu.h"
#include "shardlm/status.h"

/* Token + learned position embedding.
 * out (B,T,C) = wte[tok[b,t]] + wpe[t]; tok (B,T); wte (V,C); wpe (>=T,C). */
void slm_encoder_forward(float *out, const int32_t *tok, const float *wte, const float *wpe,
                         int B, int T, int C);
/* dwte, dwpe accumulate. */
void slm_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                          int B, int T, int C);
/* The same over the vocabulary rows [v0, v1) only (wte holds just those rows): tokens
 * outside contribute no embedding and receive no gradient; wpe / dwpe may be NULL (not
 * added / not accumulated). Summing the outputs over a partition of the vocabulary, with
 * wpe given to one part, gives slm_encoder_forward. */
void slm_encoder_forward_rows(float *out, const int32_t *tok, const float *wte, int v0, int v1,
                              const float *wpe, int B, int T, int C);
void slm_encoder_backward_rows(float *dwte, int v0, int v1, float *dwpe, const float *dout,
                               const int32_t *tok, int B, int T, int C);

/* LayerNorm over the last dimension, eps 1e-5 (as torch.nn.LayerNorm).
 * out (N,C), mean (N), rstd (N) are written; inp (N,C), w (C), b (C). */
void slm_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, int N, int C);
/* dinp (N,C), dw (C), db (C) accumulate. */
void slm_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean,
                            const float *rstd, int N, int C);

/* RMSNorm over the last dimension (Llama): out = inp * rstd * w with rstd =
 * 1/sqrt(mean(inp^2) + eps) per row, the mean of squares accumulated in double and eps
 * added in double. out (N,C), rstd (N) are written; inp (N,C), w (C). */
void slm_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
/* dinp (N,C), dw (C) accumulate; rstd is the forward's. dw is summed over the rows in
 * row order whatever the thread count (bitwise reproducible). */
void slm_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                          const float *rstd, int N, int C);

/* The backend of every matrix product: OpenBLAS (the default), or oneDNN when the
 * library was configured --with-dnnl. With oneDNN the linear layers can also multiply in
 * bf16: operands rounded to bfloat16 (nearest, ties to even), products accumulated and
 * written in fp32; attention's products stay fp32. */
typedef enum slm_gemm_backend { SLM_GEMM_OPENBLAS, SLM_GEMM_DNNL } slm_gemm_backend;
/* 1 when the backend is built in. */
int slm_gemm_available(slm_gemm_backend backend);
/* Use `backend` from now on, with bf16 linear layers if `bf16` (oneDNN only). Returns 0,
 * or -1 (nothing changed) when that is not built in. Not for use while kernels run. */
int slm_gemm_select(slm_gemm_backend backend, int bf16);
/* A backend and whether the linear layers multiply in bf16 with it. */
typedef struct slm_gemm_candidate {
    slm_gemm_backend backend;
    int bf16;
} slm_gemm_candidate;
/* Every such pair there is, built in or not: OpenBLAS sgemm, oneDNN sgemm, oneDNN bf16. */
enum { SLM_GEMM_NCANDIDATES = 3 };
extern const slm_gemm_candidate slm_gemm_candidates[SLM_GEMM_NCANDIDATES];
/* "openblas sgemm", "onednn sgemm" or "onednn bf16 matmul". */
const char *slm_gemm_candidate_name(slm_gemm_candidate c);
/* The name of what the linear layers use now. */
const char *slm_gemm_name(void);
/* The backend selected now. */
slm_gemm_backend slm_gemm_selected(void);
/* The best rate of an n x n x n product with the selected backend and precision over
 * about `seconds`, in GFLOP/s (the peak MFU is measured against); 0 out of memory. */
double slm_gemm_peak_gflops(int n, double seconds);

/* One matrix product a model runs, C (M,N) = op(A) (M,K) op(B) (K,N), ta / tb: A / B stored
 * transposed; `count` times per micro-batch. linear: a linear layer's product (in bf16 when
 * the linear layers multiply in bf16), else attention's (always fp32). token_dim: which of
 * M (0), N (1), K (2) counts tokens; the others are the weights' (the ones a backend's
 * blocking and packing depend on). */
typedef struct slm_gemm_shape {
    int ta, tb, M, N, K, linear, token_dim;
    double count;
} slm_gemm_shape;

/* Check that backend b (with bf16: its bf16 linear products, and its fp32 ones) computes
 * correct products with the current thread count: a few odd shapes, transposed and
 * strided operands, alpha and beta as the kernels use them, against a double-precision
 * reference, with nothing written outside C. Returns 0, or -1 with what was wrong in
 * `why` (old OpenBLAS kernels compute wrong results on some CPUs). Leaves the selected
 * backend as it was. Local. */
int slm_gemm_check(slm_gemm_backend b, int bf16, char *why, size_t len);
enum { SLM_GEMM_MAX_CANDIDATES = 8 };
/* The seconds each of nc candidates (at most SLM_GEMM_MAX_CANDIDATES) takes for one
 * micro-batch's products, n shapes, into seconds[c], and the shapes' FLOPs over that time
 * into gflops[c]. Each shape is timed at a size cut down to its share of about 4 GFLOP (by
 * its FLOPs; tokens first, to no fewer than 256), the candidates taking turns: a warm-up,
 * then the best of three; its time is scaled up by its FLOPs. A candidate that cannot run
 * a product gets INFINITY. Leaves the selected backend as it was. Local. */
void slm_gemm_time_shapes(const slm_gemm_candidate *cands, int nc, const slm_gemm_shape *shapes, int n,
                          double *seconds, double *gflops);

/* The OpenBLAS kernels in use ("Haswell", "SkylakeX", "Prescott", ...: openblas_get_corename),
 * or "unknown" for a BLAS that does not say. */
const char *slm_blas_core(void);
/* When OpenBLAS fell back to kernels older than the CPU (a generic core on a CPU with
 * AVX2 or AVX-512, as an OpenBLAS older than the CPU model does), the OPENBLAS_CORETYPE
 * that matches the CPU's flags ("SkylakeX", "Haswell", "Zen"); NULL when the kernels in
 * use fit the CPU. */
const char *slm_blas_core_suggested(void);
/* The same for OpenBLAS core `core` on the CPU `cpu` (the rule, apart from this machine). */
const char *slm_blas_core_for(const char *core, const slm_cpu_info *cpu);

/* A kernel that cannot go on (an allocation, a oneDNN primitive that fails to build)
 * records the first such failure and skips its work instead of aborting; the caller
 * checks at the step boundary, where every rank can agree on it. SLM_OK, or the recorded
 * failure raised as an error (it stays recorded). */
slm_status slm_kernels_status(void);

/* Linear layer through the selected GEMM backend, weights laid out as torch.nn.Linear:
 * out (N,OC) = inp (N,IC) @ w(OC,IC)^T + bias (OC, may be NULL). out is written. */
void slm_matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                        int N, int IC, int OC);
/* dinp (N,IC), dw (OC,IC), dbias (OC) accumulate; dinp or dbias may be NULL to skip. */
void slm_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, int N, int IC, int OC);

/* Time spent in the model's kernels since it was last reset, by kind, and the floating-point
 * operations of the matrix products. Every kernel adds its own wall time when it returns;
 * the model calls kernels from one thread. */
typedef struct slm_kernel_time {
    double matmul_s, matmul_flop;       /* linear layers (GEMM, bias) */
    double attention_s, attention_flop; /* causal attention (its sgemms and softmax) */
    double elementwise_s;               /* norms, activations, RoPE, residual, embedding, cross-entropy */
} slm_kernel_time;
extern slm_kernel_time slm_kernel_clock;

/* Causal grouped-query self-attention with softmax scale 1/sqrt(hs): NH query heads share
 * NKV key/value heads (NKV divides NH), query head h using key/value head h / (NH/NKV);
 * NKV = NH is multi-head attention. qkv (B,T,(NH+2*NKV)*hs) holds in each row the query
 * heads, then the key heads, then the value heads, head j of each at columns
 * [j*hs, (j+1)*hs) of its part. out (B,T,NH*hs) is written (heads concatenated). Queries
 * are processed SLM_ATTN_TILE rows at a time against the keys they may see; no T x T
 * matrix is formed or kept, and backward recomputes the probabilities. Up to `threads`
 * OpenMP threads share the work when the scratch (scratch_floats floats, clobbered) has
 * slm_attention_scratch_floats(T, threads) for them: 2 x min(T, tile) x T per thread.
 * Forward deals out (batch, query head) pairs, backward (batch, key/value head) groups
 * (a group's query heads in order, in one thread): every element is written by one
 * thread, its terms added in an order the thread count does not change. With a single
 * pair or group the products themselves run threaded instead, and their rounding is the
 * BLAS's (OpenBLAS's threaded sgemm can differ from its serial one in the last bits). */
#define SLM_ATTN_TILE 128
size_t slm_attention_scratch_floats(int T, int threads);
void slm_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv, int B, int T, int NH,
                           int NKV, int hs);
/* dqkv (B,T,(NH+2*NKV)*hs), laid out as qkv, accumulates; dout (B,T,NH*hs). */
void slm_attention_backward(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *qkv,
                            int B, int T, int NH, int NKV, int hs);

/* Rotary position embeddings (RoPE), rotate-half convention (Hugging Face's Llama):
 * dimension i of a head pairs with i + hs/2 (i < hs/2, hs even) and the pair turns by the
 * angle t * inv_freq[i] at position t. */
typedef enum slm_rope_kind { SLM_ROPE_NONE, SLM_ROPE_LLAMA3 } slm_rope_kind;
/* How the frequencies are rescaled for a longer context. SLM_ROPE_LLAMA3 (Meta's
 * Llama 3.1 rule): with wavelength w = 2 pi / f, frequencies with w < original_max_pos /
 * high_freq_factor are kept, those with w > original_max_pos / low_freq_factor divided by
 * factor, and in between blended: (1 - smooth) f / factor + smooth f with smooth =
 * (original_max_pos / w - low_freq_factor) / (high_freq_factor - low_freq_factor). */
typedef struct slm_rope_scaling {
    int kind; /* SLM_ROPE_NONE, SLM_ROPE_LLAMA3 */
    double factor, low_freq_factor, high_freq_factor;
    int original_max_pos;
} slm_rope_scaling;
/* inv_freq (hs/2) = theta^(-2i/hs), then scaled by s (NULL: no scaling). A set-up helper,
 * not timed. */
void slm_rope_freqs(double *inv_freq, int hs, double theta, const slm_rope_scaling *s);
/* cos_tab, sin_tab (T, hs/2) are written: the cosine and sine of t * inv_freq[i], computed
 * in double and rounded to float. */
void slm_rope_table(float *cos_tab, float *sin_tab, int T, int hs, const double *inv_freq);
/* Rotates, in place, the q and k heads of qkv (B,T,(NH+2*NKV)*hs), laid out as
 * slm_attention_forward reads it; the v heads are untouched. For each head and pair,
 * x1 = x[i], x2 = x[i + hs/2], with c, s the table's entries at the row's position t:
 * x[i] = x1 c - x2 s, x[i + hs/2] = x2 c + x1 s. */
void slm_rope_forward(float *qkv, int B, int T, int NH, int NKV, int hs, const float *cos_tab, const float *sin_tab);
/* The transpose of that rotation over the q and k parts of a gradient dqkv (laid out as
 * qkv), in place (an exception to the accumulate rule): d1 = dqkv[i], d2 = dqkv[i + hs/2]
 * become d1 c + d2 s, d2 c - d1 s, the gradient of the unrotated q and k. */
void slm_rope_backward(float *dqkv, int B, int T, int NH, int NKV, int hs, const float *cos_tab,
                       const float *sin_tab);
/* Reorders the rows of a q or k projection weight (n_heads*hs, cols), or its bias
 * (cols = 1), between the interleaved pairing of Meta's original checkpoints (dimensions
 * 2i, 2i+1) and rotate-half, so that the model computes the same with slm_rope_forward.
 * to_half = 1, interleaved to rotate-half: within each head, new row i = old row 2i and
 * new row hs/2 + i = old row 2i + 1; to_half = 0 is the inverse. dst (n_heads*hs, cols)
 * is written and must not overlap src. A conversion helper, not timed. */
void slm_rope_permute_rows(float *dst, const float *src, int n_heads, int hs, int cols, int to_half);

/* SwiGLU (Llama's MLP): gu (N,2F) holds each row's gate then up projection, [gate(F) |
 * up(F)]; out (N,F) = silu(gate) * up, silu(x) = x / (1 + e^-x), written. Finite for any
 * finite gate. */
void slm_swiglu_forward(float *out, const float *gu, int N, int F);
/* dgu (N,2F), laid out as gu, is WRITTEN, not accumulated (an exception): gu is the
 * output of one product whose gradient the caller would otherwise zero first. */
void slm_swiglu_backward(float *dgu, const float *gu, const float *dout, int N, int F);

/* GELU, tanh approximation (GPT-2; torch gelu(approximate="tanh")). out written. */
void slm_gelu_forward(float *out, const float *inp, size_t n);
/* dinp accumulates. */
void slm_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* out = a + b (out may alias a or b). */
void slm_residual_forward(float *out, const float *a, const float *b, size_t n);

/* Fused softmax + cross-entropy over logits (N,V) with targets (N).
 * Writes losses (N) = -log softmax(logits)[target] and lse (N) = logsumexp of each row;
 * logits are left unchanged. */
void slm_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V);
/* Gradient of sum_i scale*losses[i] with respect to the logits, written (not
 * accumulated) IN PLACE over logits: logits[i] becomes (softmax - onehot) * scale. */
void slm_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                               float scale, int N, int V);
/* Cross-entropy with the vocabulary split in parts: logits (N,V) hold the columns
 * [v0, v0+V) of the whole. Step 1: rowmax (N) of this part. Step 2, given the maximum
 * over all parts: part (N,2) = {sum of exp(z - max) over this part, the target's logit
 * when the target is in this part, else 0}. Summed over the parts, lse = max + log(sum)
 * and loss = lse - logit. */
void slm_rowmax(float *rowmax, const float *logits, int N, int V);
void slm_crossentropy_part(float *part, const float *logits, const float *rowmax, const int32_t *targets,
                           int v0, int N, int V);
/* slm_crossentropy_backward for columns [v0, v0+V) of the whole. */
void slm_crossentropy_backward_part(float *logits, const float *lse, const int32_t *targets, int v0,
                                    float scale, int N, int V);

/* One AdamW step (torch.optim.AdamW semantics, decoupled weight decay) on n elements,
 * each gradient multiplied by gscale as it is read (g = gscale * g[i]; 1 for none):
 * p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 * p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). t counts from 1. */
void slm_adamw_update(float *p, const float *g, float gscale, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, int t);

/* bfloat16 (the top 16 bits of an IEEE float) conversion. To bf16 rounds to nearest,
 * ties to even; NaN stays NaN. Exact in the other direction. */
void slm_bf16_from_f32(uint16_t *dst, const float *src, size_t n);
void slm_f32_from_bf16(float *dst, const uint16_t *src, size_t n);
/* x = float(bf16(x)): what a value looks like after a trip through bf16. */
void slm_bf16_round(float *x, size_t n);
/* acc += the bf16 values h (n of them). */
void slm_bf16_add(const uint16_t *h, size_t n, float *acc);

/* 8-bit blockwise quantization (islands.compress = int8): block b of SLM_Q8_BLOCK values
 * gets scale[b] = max |x| / 127 over it, and q = x / scale[b] rounded to the nearest
 * integer (ties to even). slm_q8_blocks: the scales n values need. */
#define SLM_Q8_BLOCK 256
size_t slm_q8_blocks(size_t n);
void slm_q8_quantize(const float *x, size_t n, int8_t *q, float *scale);
/* acc += q * scale, block by block. */
void slm_q8_dequantize_add(const int8_t *q, const float *scale, size_t n, float *acc);

/* Sum of squares of x in double precision (for global grad norms). */
double slm_sumsq(const float *x, size_t n);
/* x *= s. */
void slm_scale(float *x, float s, size_t n);

#endif
