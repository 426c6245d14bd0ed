/* tests/unit/test_kernels.c - CUnit tests for the compute kernels (shardlm/kernels.h).
 *
 * Strategy
 * --------
 * Every forward kernel is compared with a small, independent, naive DOUBLE-precision
 * reference written in this file directly from the math (plain loops; nothing here is
 * derived from src/). Every backward kernel is checked against central finite
 * differences (FD) of that double reference:
 *
 *     L(x) = sum_j r_j * ref_forward(x)_j          (r random: a "random projection")
 *     dL/dx_i ~= (L(x + h e_i) - L(x - h e_i)) / (2h),   h = 1e-5 (in double)
 *
 * and the kernel is called with dout = r, so its analytic float gradient must equal
 * dL/dx for every input and every parameter. Shapes are deliberately odd (T = 1, 5, 7;
 * C = 6 or 12 with NH = 2 or 3; head sizes 3, 6, 10, NH = 6 over NKV = 2 and 3 over 1;
 * V = 11, 13 and the SwiGLU width F = 13, 37 (not multiples of 8); IC x OC = 5 x 7,
 * N not a multiple of 4) so vectorized / blocked code paths with remainder bugs show.
 *
 * The accumulate (+=) convention of kernels.h is checked at the same time: every
 * gradient buffer is pre-filled with GRAD_PREFILL (a nonzero constant), and what is
 * compared with the FD gradient is (buffer - GRAD_PREFILL). A kernel that overwrites
 * (or zeroes first) leaves an error of size GRAD_PREFILL on every element, which gives
 * an NMSE of order 1. The documented exceptions are checked for what they promise:
 * crossentropy_backward (written in place over the logits) must NOT add the old logits,
 * swiglu_backward must write over a garbage-filled dgu, and rope_backward turns the
 * gradient in place.
 *
 * Error metric and tolerance
 * --------------------------
 *     NMSE(a, b) = sum_i (a_i - b_i)^2 / sum_i b_i^2       (b = double reference)
 *
 * NMSE_TOL = 1e-8, i.e. an RMS relative error of 1e-4. Justification: float has unit
 * roundoff 6e-8, so a correct float kernel differs from the double reference by a
 * relative ~1e-7..1e-6 per element (NMSE ~1e-15..1e-12; measured here: <= 2e-12 on all
 * checks, <= 6e-10 over 80 other seeds). The double central FD with h = 1e-5 has
 * truncation error O(h^2 f''') ~ 1e-10 and cancellation error ~1e-16 * |L| / h ~ 1e-10,
 * i.e. NMSE ~1e-20, negligible; so is the rounding of the 0.75 pre-fill (<= 3e-8 absolute
 * vs O(0.1..1) gradients). Real bugs (a missing term, a wrong index, a wrong sign,
 * overwrite instead of accumulate, an off-by-one in a mask or a tail loop) give
 * NMSE >= ~1e-6, usually ~1. 1e-8 leaves orders of magnitude of margin on both sides.
 * (NMSE is relative to the gradient's norm, so degenerate shapes whose gradient nearly
 * cancels, e.g. LayerNorm with C = 3, are avoided: there float cancellation alone can
 * reach 1e-8.)
 *
 * A last test repeats the checks on shapes just above the kernels' OpenMP thresholds
 * (65536 elements), with FD on a sample of elements.
 *
 * All random data come from a fixed-seed xorshift64* generator, reseeded in every
 * test case, so runs are reproducible and independent of test order. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "shardlm/kernels.h"
#include "shardlm/runtime.h"

#define NMSE_TOL 1e-8     /* see header comment */
#define FD_STEP 1e-5      /* central finite-difference step, in double */
#define GRAD_PREFILL 0.75f /* known nonzero pre-fill of gradient buffers (exact in float) */
#define OUT_GARBAGE 1e3f  /* pre-fill of forward outputs: they must be written, not added */
#define LN_EPS 1e-5       /* documented LayerNorm epsilon */

/* ------------------------------------------------------------------------------------ */
/* Deterministic PRNG: xorshift64*.                                                      */

static uint64_t rng_state;

static void rng_seed(uint64_t seed) { rng_state = seed ? seed : 0x9E3779B97F4A7C15ULL; }

static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [-1, 1), exactly representable in float (24 random bits). */
static float rng_uniform(void) {
    return (float)((double)(rng_next() >> 40) / 16777216.0 * 2.0 - 1.0);
}

static int rng_int(int n) { return (int)(rng_next() % (uint64_t)n); }

static void fill_uniform(float *x, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) x[i] = offset + scale * rng_uniform();
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

/* ------------------------------------------------------------------------------------ */
/* Allocation helpers (abort on OOM: a test binary has no better recovery).              */

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}
#define FALLOC(n) ((float *)xcalloc((n), sizeof(float)))
#define DALLOC(n) ((double *)xcalloc((n), sizeof(double)))

static double *to_double(const float *x, size_t n) {
    double *d = DALLOC(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* ------------------------------------------------------------------------------------ */
/* Comparison helpers. Each prints its NMSE so a verbose run documents the margins.      */

static double nmse(const double *a, const double *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY; /* all-zero reference */
    return num / den;
}

static void assert_msg(int ok, unsigned line, const char *msg) {
    /* CUnit copies the condition string, so a stack buffer is fine. */
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, line, msg, __FILE__, "", CU_FALSE);
}

/* got (float) vs ref (double), minus `offset` from got (0 for forwards, GRAD_PREFILL for
 * accumulating gradients). */
static void check_nmse_impl(const char *what, const float *got, float offset,
                            const double *ref, size_t n, unsigned line) {
    double *g = DALLOC(n);
    for (size_t i = 0; i < n; i++) g[i] = (double)got[i] - (double)offset;
    double e = nmse(g, ref, n);
    int ok = e <= NMSE_TOL; /* false for NaN too */
    printf("\n      %-52s nmse=%.2e %s", what, e, ok ? "" : "  <-- FAIL");
    char msg[256];
    snprintf(msg, sizeof msg, "%s: nmse=%.3e > tol=%.1e", what, e, NMSE_TOL);
    assert_msg(ok, line, msg);
    free(g);
}
/* Forward output check. */
#define CHECK_FWD(what, got, ref, n) check_nmse_impl((what), (got), 0.0f, (ref), (n), __LINE__)

#define CHECK_TRUE(cond, ...)                          \
    do {                                               \
        char m_[256];                                  \
        snprintf(m_, sizeof m_, __VA_ARGS__);          \
        assert_msg((cond), __LINE__, m_);              \
    } while (0)

/* Central finite difference of loss(ctx) with respect to x[i] (x lives in ctx). The
 * denominator uses the actually representable step (xp - xm). */
typedef double (*loss_fn)(void *ctx);

static double fd_one(loss_fn loss, void *ctx, double *x, size_t i) {
    double save = x[i];
    double xp = save + FD_STEP, xm = save - FD_STEP;
    x[i] = xp;
    double lp = loss(ctx);
    x[i] = xm;
    double lm = loss(ctx);
    x[i] = save;
    return (lp - lm) / (xp - xm);
}

/* Compare the kernel gradient got[0..n) (minus `offset`) with the central FD gradient of
 * loss with respect to x[0..n). nsamp == 0 checks every element; otherwise nsamp indices
 * drawn from the PRNG are checked (only for the large shapes that exercise the OpenMP
 * branches, where FD on every element would be slow). */
static void check_grad_fd_impl(const char *what, loss_fn loss, void *ctx, double *x, size_t n,
                               const float *got, float offset, size_t nsamp, unsigned line) {
    size_t k = (nsamp == 0 || nsamp >= n) ? n : nsamp;
    double *fd = DALLOC(k);
    float *sel = FALLOC(k);
    for (size_t j = 0; j < k; j++) {
        size_t i = k == n ? j : (size_t)(rng_next() % n);
        fd[j] = fd_one(loss, ctx, x, i);
        sel[j] = got[i];
    }
    char label[128];
    if (k < n)
        snprintf(label, sizeof label, "%s [%zu/%zu]", what, k, n);
    else
        snprintf(label, sizeof label, "%s", what);
    check_nmse_impl(label, sel, offset, fd, k, line);
    free(fd);
    free(sel);
}
/* Accumulated gradient: (got - GRAD_PREFILL) must match the FD gradient. */
#define CHECK_GRAD(what, loss, ctx, x, n, got, nsamp) \
    check_grad_fd_impl((what), (loss), (ctx), (x), (n), (got), GRAD_PREFILL, (nsamp), __LINE__)
/* Written (not accumulated) gradient: got itself must match the FD gradient. */
#define CHECK_GRAD_WRITTEN(what, loss, ctx, x, n, got, nsamp) \
    check_grad_fd_impl((what), (loss), (ctx), (x), (n), (got), 0.0f, (nsamp), __LINE__)

/* Running maximum that stays NaN once a NaN was seen (plain max would drop it). */
static void track_max(double *worst, double x) {
    if (isnan(x) || isnan(*worst))
        *worst = NAN;
    else if (x > *worst)
        *worst = x;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ==================================================================================== */
/* Naive double-precision reference forwards, written from the math.                   */

/* out[b,t,:] = wte[tok[b,t],:] + wpe[t,:] */
static void ref_encoder(double *out, const int32_t *tok, const double *wte, const double *wpe,
                        int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                out[((size_t)b * T + t) * C + c] =
                    wte[(size_t)tok[b * T + t] * C + c] + wpe[(size_t)t * C + c];
}

/* out = (x - mean) / sqrt(var + eps) * w + b, biased variance, per row of C. */
static void ref_layernorm(double *out, double *mean, double *rstd, const double *inp,
                          const double *w, const double *b, int N, int C) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + (size_t)n * C;
        double m = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        double var = 0.0;
        for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
        var /= C;
        double rs = 1.0 / sqrt(var + LN_EPS);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (x[c] - m) * rs * w[c] + b[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = rs;
    }
}

/* out[n,o] = sum_i inp[n,i] * w[o,i] + bias[o] */
static void ref_matmul(double *out, const double *inp, const double *w, const double *bias,
                       int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++) s += inp[(size_t)n * IC + i] * w[(size_t)o * IC + i];
            out[(size_t)n * OC + o] = s;
        }
}

/* Causal grouped-query attention on the packed layout: row (b,t) of qkv holds NH query
 * heads, then NKV key heads, then NKV value heads, hs wide each; query head h reads key /
 * value head h / (NH/NKV). For each (b, h, t), scores s[t2] = q_t . k_t2 / sqrt(hs) for
 * t2 <= t, p = softmax(s), out = sum_t2 p[t2] v_t2. */
static void ref_attention(double *out, const double *qkv, int B, int T, int NH, int NKV, int hs) {
    const size_t ld = (size_t)(NH + 2 * NKV) * hs, ldo = (size_t)NH * hs;
    double scale = 1.0 / sqrt((double)hs);
    double *s = DALLOC((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int kv = h / (NH / NKV);
            const size_t qc = (size_t)h * hs, kc = (size_t)(NH + kv) * hs, vc = (size_t)(NH + NKV + kv) * hs;
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * ld + qc;
                double mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const double *k = qkv + ((size_t)b * T + t2) * ld + kc;
                    double d = 0.0;
                    for (int i = 0; i < hs; i++) d += q[i] * k[i];
                    s[t2] = d * scale;
                    if (s[t2] > mx) mx = s[t2];
                }
                double z = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    s[t2] = exp(s[t2] - mx);
                    z += s[t2];
                }
                for (int t2 = 0; t2 <= t; t2++) s[t2] /= z;
                double *o = out + ((size_t)b * T + t) * ldo + qc;
                for (int i = 0; i < hs; i++) {
                    double acc = 0.0;
                    for (int t2 = 0; t2 <= t; t2++) acc += s[t2] * qkv[((size_t)b * T + t2) * ld + vc + i];
                    o[i] = acc;
                }
            }
        }
    free(s);
}

/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static void ref_gelu(double *out, const double *inp, size_t n) {
    const double k = sqrt(2.0 / 3.14159265358979323846);
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        out[i] = 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
    }
}

/* losses[n] = lse[n] - logits[n, target], lse[n] = log sum_v exp(logits[n, v]). */
static void ref_crossentropy(double *losses, double *lse, const double *logits,
                             const int32_t *targets, int N, int V) {
    for (int n = 0; n < N; n++) {
        const double *x = logits + (size_t)n * V;
        double mx = -INFINITY;
        for (int v = 0; v < V; v++)
            if (x[v] > mx) mx = x[v];
        double z = 0.0;
        for (int v = 0; v < V; v++) z += exp(x[v] - mx);
        double l = mx + log(z);
        if (lse) lse[n] = l;
        losses[n] = l - x[targets[n]];
    }
}

/* ==================================================================================== */
/* Encoder                                                                              */

typedef struct {
    int B, T, C;
    const int32_t *tok;
    double *wte, *wpe, *r, *out;
} enc_ctx;

static double enc_loss(void *p) {
    enc_ctx *c = p;
    ref_encoder(c->out, c->tok, c->wte, c->wpe, c->B, c->T, c->C);
    return dot(c->r, c->out, (size_t)c->B * c->T * c->C);
}

/* Forward vs reference; backward (dwte, dwpe) vs FD, accumulating. wpe has more rows
 * than T (allowed by the header) and tokens repeat, so both "rows beyond T untouched"
 * and "repeated tokens accumulate into the same dwte row" are covered by the FD
 * comparison (FD gives exactly 0 for unused rows). */
static void encoder_case(int B, int T, int C, int V, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    int maxT = T + 3;
    size_t NC = (size_t)B * T * C;
    int32_t *tok = xcalloc((size_t)B * T, sizeof(int32_t));
    for (int i = 0; i < B * T; i++) tok[i] = rng_int(V);
    if (B * T >= 2) tok[B * T - 1] = tok[0]; /* guarantee a repeated token */
    float *wte = FALLOC((size_t)V * C), *wpe = FALLOC((size_t)maxT * C);
    float *out = FALLOC(NC), *r = FALLOC(NC);
    fill_uniform(wte, (size_t)V * C, 1.0f, 0.0f);
    fill_uniform(wpe, (size_t)maxT * C, 1.0f, 0.0f);
    fill_uniform(r, NC, 1.0f, 0.0f);
    fill_const(out, NC, OUT_GARBAGE);

    char what[96];
    printf("\n    encoder B=%d T=%d C=%d V=%d", B, T, C, V);
    slm_encoder_forward(out, tok, wte, wpe, B, T, C);

    enc_ctx c = {B, T, C, tok, to_double(wte, (size_t)V * C), to_double(wpe, (size_t)maxT * C),
                 to_double(r, NC), DALLOC(NC)};
    ref_encoder(c.out, tok, c.wte, c.wpe, B, T, C);
    CHECK_FWD("encoder out", out, c.out, NC);

    float *dwte = FALLOC((size_t)V * C), *dwpe = FALLOC((size_t)maxT * C);
    fill_const(dwte, (size_t)V * C, GRAD_PREFILL);
    fill_const(dwpe, (size_t)maxT * C, GRAD_PREFILL);
    slm_encoder_backward(dwte, dwpe, r, tok, B, T, C);

    CHECK_GRAD("encoder dwte (accumulated)", enc_loss, &c, c.wte, (size_t)V * C, dwte, nsamp);
    snprintf(what, sizeof what, "encoder dwpe (accumulated, %d spare rows)", maxT - T);
    CHECK_GRAD(what, enc_loss, &c, c.wpe, (size_t)maxT * C, dwpe, nsamp);

    free(tok); free(wte); free(wpe); free(out); free(r); free(dwte); free(dwpe);
    free(c.wte); free(c.wpe); free(c.r); free(c.out);
}

static void test_encoder(void) {
    encoder_case(2, 5, 6, 11, 0, 101);
    encoder_case(3, 7, 12, 13, 0, 102);
    encoder_case(1, 1, 5, 3, 0, 103);
}

/* ==================================================================================== */
/* LayerNorm                                                                            */

typedef struct {
    int N, C;
    double *inp, *w, *b, *r, *out;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    ref_layernorm(c->out, NULL, NULL, c->inp, c->w, c->b, c->N, c->C);
    return dot(c->r, c->out, (size_t)c->N * c->C);
}

/* Forward (out, mean, rstd) vs reference; backward (dinp, dw, db) vs FD, accumulating.
 * The backward is fed the kernel's own mean/rstd, as the model will do. */
static void layernorm_case(int N, int C, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    size_t NC = (size_t)N * C;
    float *inp = FALLOC(NC), *w = FALLOC(C), *b = FALLOC(C), *r = FALLOC(NC);
    float *out = FALLOC(NC), *mean = FALLOC(N), *rstd = FALLOC(N);
    fill_uniform(inp, NC, 1.0f, 0.2f); /* nonzero mean */
    fill_uniform(w, C, 0.5f, 1.0f);
    fill_uniform(b, C, 0.5f, 0.0f);
    fill_uniform(r, NC, 1.0f, 0.0f);
    fill_const(out, NC, OUT_GARBAGE);
    fill_const(mean, N, OUT_GARBAGE);
    fill_const(rstd, N, OUT_GARBAGE);

    printf("\n    layernorm N=%d C=%d", N, C);
    slm_layernorm_forward(out, mean, rstd, inp, w, b, N, C);

    ln_ctx c = {N, C, to_double(inp, NC), to_double(w, C), to_double(b, C), to_double(r, NC),
                DALLOC(NC)};
    double *rmean = DALLOC(N), *rrstd = DALLOC(N);
    ref_layernorm(c.out, rmean, rrstd, c.inp, c.w, c.b, N, C);
    CHECK_FWD("layernorm out", out, c.out, NC);
    CHECK_FWD("layernorm mean", mean, rmean, N);
    CHECK_FWD("layernorm rstd", rstd, rrstd, N);

    float *dinp = FALLOC(NC), *dw = FALLOC(C), *db = FALLOC(C);
    fill_const(dinp, NC, GRAD_PREFILL);
    fill_const(dw, C, GRAD_PREFILL);
    fill_const(db, C, GRAD_PREFILL);
    slm_layernorm_backward(dinp, dw, db, r, inp, w, mean, rstd, N, C);

    CHECK_GRAD("layernorm dinp (accumulated)", ln_loss, &c, c.inp, NC, dinp, nsamp);
    CHECK_GRAD("layernorm dw (accumulated)", ln_loss, &c, c.w, C, dw, nsamp);
    CHECK_GRAD("layernorm db (accumulated)", ln_loss, &c, c.b, C, db, nsamp);

    free(inp); free(w); free(b); free(r); free(out); free(mean); free(rstd);
    free(dinp); free(dw); free(db); free(rmean); free(rrstd);
    free(c.inp); free(c.w); free(c.b); free(c.r); free(c.out);
}

static void test_layernorm(void) {
    layernorm_case(10, 12, 0, 201); /* B=2, T=5, C=12 */
    layernorm_case(7, 5, 0, 202);
    layernorm_case(1, 7, 0, 203); /* single row */
}

/* ==================================================================================== */
/* RMSNorm                                                                              */

/* out = x / sqrt(mean(x^2) + eps) * w, per row of C. */
static void ref_rmsnorm(double *out, double *rstd, const double *inp, const double *w, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + (size_t)n * C;
        double ms = 0.0;
        for (int c = 0; c < C; c++) ms += x[c] * x[c];
        ms /= C;
        double rs = 1.0 / sqrt(ms + eps);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = x[c] * rs * w[c];
        if (rstd) rstd[n] = rs;
    }
}

typedef struct {
    int N, C;
    double eps;
    double *inp, *w, *r, *out;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    ref_rmsnorm(c->out, NULL, c->inp, c->w, c->N, c->C, c->eps);
    return dot(c->r, c->out, (size_t)c->N * c->C);
}

/* Forward (out, rstd) vs reference; backward (dinp, dw) vs FD, accumulating, fed the
 * kernel's own rstd. The reference adds eps as the float the kernel is given. */
static void rmsnorm_case(int N, int C, float eps, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    size_t NC = (size_t)N * C;
    float *inp = FALLOC(NC), *w = FALLOC(C), *r = FALLOC(NC), *out = FALLOC(NC), *rstd = FALLOC(N);
    fill_uniform(inp, NC, 1.0f, 0.2f);
    fill_uniform(w, C, 0.5f, 1.0f);
    fill_uniform(r, NC, 1.0f, 0.0f);
    fill_const(out, NC, OUT_GARBAGE);
    fill_const(rstd, N, OUT_GARBAGE);

    printf("\n    rmsnorm N=%d C=%d eps=%g", N, C, (double)eps);
    slm_rmsnorm_forward(out, rstd, inp, w, N, C, eps);
    rms_ctx c = {N, C, (double)eps, to_double(inp, NC), to_double(w, C), to_double(r, NC), DALLOC(NC)};
    double *rrstd = DALLOC(N);
    ref_rmsnorm(c.out, rrstd, c.inp, c.w, N, C, c.eps);
    CHECK_FWD("rmsnorm out", out, c.out, NC);
    CHECK_FWD("rmsnorm rstd", rstd, rrstd, N);

    float *dinp = FALLOC(NC), *dw = FALLOC(C);
    fill_const(dinp, NC, GRAD_PREFILL);
    fill_const(dw, C, GRAD_PREFILL);
    slm_rmsnorm_backward(dinp, dw, r, inp, w, rstd, N, C);
    CHECK_GRAD("rmsnorm dinp (accumulated)", rms_loss, &c, c.inp, NC, dinp, nsamp);
    CHECK_GRAD("rmsnorm dw (accumulated)", rms_loss, &c, c.w, C, dw, nsamp);

    free(inp); free(w); free(r); free(out); free(rstd); free(dinp); free(dw); free(rrstd);
    free(c.inp); free(c.w); free(c.r); free(c.out);
}

static void test_rmsnorm(void) {
    rmsnorm_case(10, 12, 1e-5f, 0, 231);
    rmsnorm_case(7, 5, 1e-6f, 0, 232);
    rmsnorm_case(1, 7, 1e-5f, 0, 233); /* single row */
    rmsnorm_case(6, 10, 0.25f, 0, 234); /* an eps that matters: it must sit under the root */
}

/* Past the OpenMP threshold, one thread and two give the same bits: dinp rows are
 * independent, and dw is summed over the rows in row order whatever the threads. */
static void test_rmsnorm_threads(void) {
    const int N = 1031, C = 67, threads = slm_get_threads(); /* N*C = 69077 */
    const size_t NC = (size_t)N * C;
    rng_seed(235);
    float *inp = FALLOC(NC), *w = FALLOC(C), *dy = FALLOC(NC), *out = FALLOC(NC), *rstd = FALLOC(N);
    float *dinp[2] = {FALLOC(NC), FALLOC(NC)}, *dw[2] = {FALLOC(C), FALLOC(C)};
    fill_uniform(inp, NC, 1.0f, 0.2f);
    fill_uniform(w, C, 0.5f, 1.0f);
    fill_uniform(dy, NC, 1.0f, 0.0f);
    slm_rmsnorm_forward(out, rstd, inp, w, N, C, 1e-5f);
    for (int k = 0; k < 2; k++) {
        slm_set_threads(k + 1);
        fill_const(dinp[k], NC, GRAD_PREFILL);
        fill_const(dw[k], C, GRAD_PREFILL);
        slm_rmsnorm_backward(dinp[k], dw[k], dy, inp, w, rstd, N, C);
    }
    slm_set_threads(threads);
    CHECK_TRUE(memcmp(dinp[0], dinp[1], NC * sizeof(float)) == 0, "rmsnorm dinp differs between 1 and 2 threads");
    CHECK_TRUE(memcmp(dw[0], dw[1], C * sizeof(float)) == 0, "rmsnorm dw differs between 1 and 2 threads");
    free(inp); free(w); free(dy); free(out); free(rstd);
    free(dinp[0]); free(dinp[1]); free(dw[0]); free(dw[1]);
}

/* ==================================================================================== */
/* Matmul                                                                               */

typedef struct {
    int N, IC, OC;
    double *inp, *w, *bias, *r, *out; /* bias may be NULL */
} mm_ctx;

static double mm_loss(void *p) {
    mm_ctx *c = p;
    ref_matmul(c->out, c->inp, c->w, c->bias, c->N, c->IC, c->OC);
    return dot(c->r, c->out, (size_t)c->N * c->OC);
}

/* use_bias: forward with a bias (else NULL). want_dinp / want_dbias: pass a buffer (else
 * NULL, which the header allows). dw is always requested. Each requested gradient is
 * checked against FD and for accumulation. */
static void matmul_case(int N, int IC, int OC, int use_bias, int want_dinp, int want_dbias,
                        size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    size_t NI = (size_t)N * IC, NO = (size_t)N * OC, WI = (size_t)OC * IC;
    float *inp = FALLOC(NI), *w = FALLOC(WI), *bias = use_bias ? FALLOC(OC) : NULL;
    float *out = FALLOC(NO), *r = FALLOC(NO);
    fill_uniform(inp, NI, 1.0f, 0.0f);
    fill_uniform(w, WI, 1.0f, 0.0f);
    if (bias) fill_uniform(bias, OC, 1.0f, 0.0f);
    fill_uniform(r, NO, 1.0f, 0.0f);
    fill_const(out, NO, OUT_GARBAGE);

    printf("\n    matmul N=%d IC=%d OC=%d bias=%s dinp=%s dbias=%s", N, IC, OC,
           use_bias ? "yes" : "NULL", want_dinp ? "yes" : "NULL", want_dbias ? "yes" : "NULL");
    slm_matmul_forward(out, inp, w, bias, N, IC, OC);

    mm_ctx c = {N, IC, OC, to_double(inp, NI), to_double(w, WI),
                bias ? to_double(bias, OC) : NULL, to_double(r, NO), DALLOC(NO)};
    ref_matmul(c.out, c.inp, c.w, c.bias, N, IC, OC);
    CHECK_FWD("matmul out", out, c.out, NO);

    float *dinp = want_dinp ? FALLOC(NI) : NULL;
    float *dw = FALLOC(WI);
    float *dbias = want_dbias ? FALLOC(OC) : NULL;
    if (dinp) fill_const(dinp, NI, GRAD_PREFILL);
    fill_const(dw, WI, GRAD_PREFILL);
    if (dbias) fill_const(dbias, OC, GRAD_PREFILL);
    slm_matmul_backward(dinp, dw, dbias, r, inp, w, N, IC, OC);

    CHECK_GRAD("matmul dw (accumulated)", mm_loss, &c, c.w, WI, dw, nsamp);
    if (dinp) CHECK_GRAD("matmul dinp (accumulated)", mm_loss, &c, c.inp, NI, dinp, nsamp);
    if (dbias) {
        /* Without a bias in the forward, dbias is still d/dbias of (inp w^T + bias): FD it
         * on a temporary zero bias. */
        double *tmp = NULL;
        if (!c.bias) c.bias = tmp = DALLOC(OC);
        CHECK_GRAD("matmul dbias (accumulated)", mm_loss, &c, c.bias, OC, dbias, nsamp);
        if (tmp) {
            c.bias = NULL;
            free(tmp);
        }
    }

    free(inp); free(w); free(bias); free(out); free(r); free(dinp); free(dw); free(dbias);
    free(c.inp); free(c.w); free(c.bias); free(c.r); free(c.out);
}

static void test_matmul(void) {
    matmul_case(7, 5, 7, 1, 1, 1, 0, 301);    /* odd everything, full backward */
    matmul_case(10, 12, 37, 1, 1, 1, 0, 302); /* N = 2*5, OC odd and > 32 */
    matmul_case(1, 3, 5, 1, 1, 1, 0, 303);    /* single row */
}

static void test_matmul_null_bias(void) {
    /* Forward with bias == NULL, backward with dbias == NULL. */
    matmul_case(7, 5, 7, 0, 1, 0, 0, 311);
    matmul_case(10, 12, 37, 0, 1, 0, 0, 312);
}

static void test_matmul_null_dinp(void) {
    /* dinp == NULL (e.g. first layer): dw and dbias must still be right. */
    matmul_case(7, 5, 7, 1, 0, 1, 0, 321);
    /* dinp == NULL and dbias == NULL: only dw. */
    matmul_case(9, 5, 3, 0, 0, 0, 0, 322);
    /* bias used in forward but dbias skipped. */
    matmul_case(9, 5, 3, 1, 1, 0, 0, 323);
}

/* ==================================================================================== */
/* Attention                                                                            */

typedef struct {
    int B, T, NH, NKV, hs;
    double *qkv, *r, *out;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    ref_attention(c->out, c->qkv, c->B, c->T, c->NH, c->NKV, c->hs);
    return dot(c->r, c->out, (size_t)c->B * c->T * c->NH * c->hs);
}

/* Forward out vs reference, whatever garbage the scratch held; backward dqkv vs FD,
 * accumulating. scratch is exactly slm_attention_scratch_floats(T, 2) floats, as documented.
 * T past SLM_ATTN_TILE exercises several query tiles, the last one partial. NKV < NH is
 * grouped-query attention: every key/value head's gradient collects NH/NKV query heads'. */
static void attention_case(int B, int T, int NH, int NKV, int hs, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    size_t NQ = (size_t)B * T * (NH + 2 * NKV) * hs, NO = (size_t)B * T * NH * hs;
    size_t NS = slm_attention_scratch_floats(T, 2);
    float *qkv = FALLOC(NQ), *out = FALLOC(NO), *scratch = FALLOC(NS), *r = FALLOC(NO);
    fill_uniform(qkv, NQ, 1.5f, 0.0f); /* non-trivial softmax */
    fill_uniform(r, NO, 1.0f, 0.0f);
    fill_const(out, NO, OUT_GARBAGE);
    fill_const(scratch, NS, OUT_GARBAGE);

    printf("\n    attention B=%d T=%d NH=%d NKV=%d hs=%d", B, T, NH, NKV, hs);
    slm_attention_forward(out, scratch, NS, qkv, B, T, NH, NKV, hs);

    att_ctx c = {B, T, NH, NKV, hs, to_double(qkv, NQ), to_double(r, NO), DALLOC(NO)};
    ref_attention(c.out, c.qkv, B, T, NH, NKV, hs);
    CHECK_FWD("attention out", out, c.out, NO);

    float *dqkv = FALLOC(NQ);
    fill_const(dqkv, NQ, GRAD_PREFILL);
    fill_const(scratch, NS, OUT_GARBAGE);
    slm_attention_backward(dqkv, scratch, NS, r, qkv, B, T, NH, NKV, hs);
    CHECK_GRAD("attention dqkv (accumulated)", att_loss, &c, c.qkv, NQ, dqkv, nsamp);

    free(qkv); free(out); free(scratch); free(r); free(dqkv);
    free(c.qkv); free(c.r); free(c.out);
}

static void test_attention(void) {
    attention_case(2, 5, 3, 3, 4, 0, 401); /* C = 12 */
    attention_case(2, 7, 2, 2, 3, 0, 402); /* C = 6 */
    attention_case(2, 1, 2, 2, 3, 0, 403); /* T = 1: p = [1], out = v, dq = dk = 0 */
    attention_case(1, 7, 3, 3, 4, 0, 404);
    attention_case(1, SLM_ATTN_TILE, 2, 2, 4, 400, 406);          /* exactly one full tile */
    attention_case(2, 2 * SLM_ATTN_TILE + 22, 2, 2, 4, 400, 407); /* three tiles, the last partial */
    attention_case(3, SLM_ATTN_TILE + 5, 3, 3, 4, 400, 408);      /* 9 (batch, head) pairs over the threads */
}

/* Grouped-query attention: three query heads per key/value head, or all on one. */
static void test_attention_gqa(void) {
    attention_case(2, 5, 6, 2, 10, 0, 411);
    attention_case(2, 7, 3, 1, 6, 0, 412);
    attention_case(2, 1, 6, 2, 6, 0, 413); /* T = 1 */
    attention_case(3, SLM_ATTN_TILE + 9, 6, 2, 6, 400, 414);      /* two tiles, 6 groups over the threads */
    attention_case(1, 2 * SLM_ATTN_TILE + 3, 3, 1, 10, 400, 415); /* one group: a single worker */
}

/* Grouped-query attention is multi-head attention with each key/value head repeated for
 * its query heads. Forward: GQA on (B,T,(NH+2*NKV)*hs) and MHA (NKV = NH) on the same q with
 * the k, v heads copied out are the same products on the same numbers, only at other
 * strides, so the outputs are bitwise equal, and so is dq. dk and dv of a shared head are
 * the sum of the copies' (to rounding: the terms are grouped differently). And with one
 * thread and with two (set as the trainer sets them, OpenBLAS's and OpenMP's) the results
 * are the same bits, forward and backward: no two workers write one element, and a shared
 * head's terms are added in the same order. Every case has at least two (batch, key/value
 * head) groups, so two threads means two workers each with single-threaded products; with
 * one group the products get the threads, and OpenBLAS's threaded sgemm may round
 * differently from its serial one (kernels.h). */
static void gqa_vs_mha_case(int B, int T, int NH, int NKV, int hs, uint64_t seed) {
    rng_seed(seed);
    const int rep = NH / NKV;
    const size_t ldg = (size_t)(NH + 2 * NKV) * hs, ldm = (size_t)3 * NH * hs, N = (size_t)B * T;
    const size_t NG = N * ldg, NM = N * ldm, NO = N * NH * hs, NKVS = N * 2 * NKV * hs;
    float *g = FALLOC(NG), *m = FALLOC(NM), *outg = FALLOC(NO), *outm = FALLOC(NO), *dy = FALLOC(NO);
    float *dg = FALLOC(NG), *dm = FALLOC(NM), *dg1 = FALLOC(NG), *out1 = FALLOC(NO);
    fill_uniform(g, NG, 1.5f, 0.0f);
    fill_uniform(dy, NO, 1.0f, 0.0f);
    for (size_t r = 0; r < N; r++) /* MHA's row: q as is, then head h's k and v = its group's */
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < hs; i++) {
                const int kv = h / rep;
                m[r * ldm + (size_t)h * hs + i] = g[r * ldg + (size_t)h * hs + i];
                m[r * ldm + (size_t)(NH + h) * hs + i] = g[r * ldg + (size_t)(NH + kv) * hs + i];
                m[r * ldm + (size_t)(2 * NH + h) * hs + i] = g[r * ldg + (size_t)(NH + NKV + kv) * hs + i];
            }
    const size_t NS = slm_attention_scratch_floats(T, 2);
    float *scratch = FALLOC(NS);
    printf("\n    attention GQA vs MHA B=%d T=%d NH=%d NKV=%d hs=%d", B, T, NH, NKV, hs);
    fill_const(dg, NG, GRAD_PREFILL);
    fill_const(dm, NM, GRAD_PREFILL);
    fill_const(dg1, NG, GRAD_PREFILL);
    slm_set_threads(2);
    slm_attention_forward(outg, scratch, NS, g, B, T, NH, NKV, hs);
    slm_attention_forward(outm, scratch, NS, m, B, T, NH, NH, hs);
    slm_attention_backward(dg, scratch, NS, dy, g, B, T, NH, NKV, hs);
    slm_attention_backward(dm, scratch, NS, dy, m, B, T, NH, NH, hs);
    slm_set_threads(1);
    slm_attention_forward(out1, scratch, NS, g, B, T, NH, NKV, hs);
    slm_attention_backward(dg1, scratch, NS, dy, g, B, T, NH, NKV, hs);
    CHECK_TRUE(memcmp(outg, outm, NO * sizeof(float)) == 0, "GQA forward differs from MHA on repeated k, v");
    CHECK_TRUE(memcmp(outg, out1, NO * sizeof(float)) == 0, "GQA forward differs between 1 and 2 threads");
    CHECK_TRUE(memcmp(dg, dg1, NG * sizeof(float)) == 0, "GQA backward differs between 1 and 2 threads");
    int dq_same = 1;
    double *sum = DALLOC(NKVS);
    float *kvpart = FALLOC(NKVS);
    for (size_t r = 0; r < N; r++) {
        for (size_t i = 0; i < (size_t)NH * hs; i++) dq_same &= dg[r * ldg + i] == dm[r * ldm + i];
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < hs; i++)
                for (int part = 0; part < 2; part++) { /* 0: k, 1: v */
                    const size_t to = r * 2 * NKV * hs + (size_t)(part * NKV + h / rep) * hs + i;
                    sum[to] += (double)dm[r * ldm + (size_t)((1 + part) * NH + h) * hs + i] - GRAD_PREFILL;
                    kvpart[to] = dg[r * ldg + (size_t)(NH + part * NKV + h / rep) * hs + i];
                }
    }
    CHECK_TRUE(dq_same, "GQA dq differs from MHA's on repeated k, v");
    check_nmse_impl("GQA dk, dv vs the sum of MHA's over the group", kvpart, GRAD_PREFILL, sum, NKVS, __LINE__);
    free(g); free(m); free(outg); free(outm); free(dy); free(dg); free(dm); free(dg1); free(out1);
    free(scratch); free(sum); free(kvpart);
}

static void test_attention_gqa_bitwise(void) {
    const int threads = slm_get_threads();
    gqa_vs_mha_case(2, 9, 6, 2, 10, 421);
    gqa_vs_mha_case(3, SLM_ATTN_TILE + 17, 6, 2, 6, 422);
    gqa_vs_mha_case(2, 2 * SLM_ATTN_TILE + 1, 3, 1, 10, 423);
    gqa_vs_mha_case(2, 11, 4, 4, 6, 424); /* NKV = NH: the same kernel both ways */
    /* Groups that two threads dealt (batch, query head) pairs in halves would split, the
     * second thread starting on the group's last head while the first is still busy with
     * earlier ones: a kernel racing on a shared dk, dv adds the heads' terms in another
     * order and differs from one thread here. Long enough that a head takes milliseconds,
     * longer than a thread takes to start. */
    gqa_vs_mha_case(1, 520, 6, 3, 16, 425);
    gqa_vs_mha_case(3, 300, 4, 1, 16, 426);
    slm_set_threads(threads);
}

/* Causality: perturbing qkv (q, k and v of every head) at times t' > t must leave the
 * output at every time <= t unchanged. Checked for every cut point t, with a large
 * perturbation so that any leak is visible, and a tight tolerance (a correct kernel
 * performs the identical arithmetic for rows <= t, so differences are 0 in practice).
 * Three query heads on one key/value head. */
static void test_attention_causal(void) {
    const int B = 2, T = 7, NH = 3, NKV = 1, hs = 4, C = NH * hs, W = (NH + 2 * NKV) * hs;
    rng_seed(405);
    size_t NQ = (size_t)B * T * W, NO = (size_t)B * T * C;
    float *qkv = FALLOC(NQ), *qkv2 = FALLOC(NQ), *out = FALLOC(NO), *out2 = FALLOC(NO);
    const size_t NS = slm_attention_scratch_floats(T, 2);
    float *scratch = FALLOC(NS);
    fill_uniform(qkv, NQ, 1.0f, 0.0f);
    slm_attention_forward(out, scratch, NS, qkv, B, T, NH, NKV, hs);
    double worst = 0.0;
    int changed_future = 1;
    for (int t = 0; t < T - 1; t++) {
        memcpy(qkv2, qkv, NQ * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int t2 = t + 1; t2 < T; t2++)
                for (int j = 0; j < W; j++)
                    qkv2[((size_t)b * T + t2) * W + j] += 3.0f * rng_uniform();
        slm_attention_forward(out2, scratch, NS, qkv2, B, T, NH, NKV, hs);
        for (int b = 0; b < B; b++) {
            for (int t1 = 0; t1 <= t; t1++)
                for (int j = 0; j < C; j++) {
                    size_t i = ((size_t)b * T + t1) * C + j;
                    track_max(&worst, fabs((double)out2[i] - out[i]));
                }
            /* sanity: the perturbation does reach the future rows (test is not vacuous) */
            double dfut = 0.0;
            for (int j = 0; j < C; j++) {
                size_t i = ((size_t)b * T + T - 1) * C + j;
                dfut += fabs((double)out2[i] - out[i]);
            }
            if (dfut == 0.0) changed_future = 0;
        }
    }
    printf("\n      %-52s max|dout(past)|=%.2e", "attention causality", worst);
    CHECK_TRUE(worst <= 1e-6, "attention is not causal: past output changed by %.3e", worst);
    CHECK_TRUE(changed_future, "attention causality test vacuous: future output unchanged");
    free(qkv); free(qkv2); free(out); free(out2); free(scratch);
}

/* ==================================================================================== */
/* GELU                                                                                 */

typedef struct {
    size_t n;
    double *inp, *r, *out;
} gelu_ctx;

static double gelu_loss(void *p) {
    gelu_ctx *c = p;
    ref_gelu(c->out, c->inp, c->n);
    return dot(c->r, c->out, c->n);
}

/* Forward vs reference; backward dinp vs FD, accumulating. Inputs span [-4, 4] plus a
 * few exact points (0, +-1) and large magnitudes (+-10, +-20) where naive formulas
 * (cosh overflow) could produce NaN. n = 37 is not a multiple of any SIMD width. */
static void gelu_case(size_t n, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    float *inp = FALLOC(n), *out = FALLOC(n), *r = FALLOC(n), *dinp = FALLOC(n);
    fill_uniform(inp, n, 4.0f, 0.0f);
    const float special[] = {0.0f, 1.0f, -1.0f, 10.0f, -10.0f, 20.0f, -20.0f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) inp[i * 5] = special[i];
    fill_uniform(r, n, 1.0f, 0.0f);
    fill_const(out, n, OUT_GARBAGE);
    fill_const(dinp, n, GRAD_PREFILL);

    printf("\n    gelu n=%zu", n);
    slm_gelu_forward(out, inp, n);
    gelu_ctx c = {n, to_double(inp, n), to_double(r, n), DALLOC(n)};
    ref_gelu(c.out, c.inp, n);
    CHECK_FWD("gelu out", out, c.out, n);

    slm_gelu_backward(dinp, inp, r, n);
    CHECK_GRAD("gelu dinp (accumulated)", gelu_loss, &c, c.inp, n, dinp, nsamp);

    /* n = 0 must be a no-op (and not crash). */
    slm_gelu_forward(out, inp, 0);
    slm_gelu_backward(dinp, inp, r, 0);

    free(inp); free(out); free(r); free(dinp); free(c.inp); free(c.r); free(c.out);
}

static void test_gelu(void) { gelu_case(37, 0, 501); }

/* ==================================================================================== */
/* Rotary position embeddings                                                           */

#define ROPE_TWO_PI 6.28318530717958647692

/* Meta's Llama 3.1 frequency rule, written from its description: wavelength 2 pi / f;
 * below original / high kept, above original / low divided by factor, between blended.
 * band[i] says which: 0 kept, 1 blended, 2 divided. */
static void ref_llama3_freqs(double *f, int *band, int hs, double theta, double factor, double low, double high,
                             int original) {
    for (int i = 0; i < hs / 2; i++) {
        const double base = 1.0 / pow(theta, (double)(2 * i) / hs), wl = ROPE_TWO_PI / base;
        if (wl < original / high) {
            f[i] = base;
            band[i] = 0;
        } else if (wl > original / low) {
            f[i] = base / factor;
            band[i] = 2;
        } else {
            const double smooth = (original / wl - low) / (high - low);
            f[i] = (1.0 - smooth) * base / factor + smooth * base;
            band[i] = 1;
        }
    }
}

/* Plain frequencies theta^(-2i/hs); the Llama 3.1 scaling on a case with frequencies in
 * all three bands (hs 16, theta 500000: wavelengths 6.3, 32.4, 167, ... against 16 and 64,
 * i.e. one kept, one blended, six divided); kind NONE is no scaling. */
static void test_rope_freqs(void) {
    double got[8], want[8], plain[8], none[8];
    int band[8], count[3] = {0, 0, 0};
    slm_rope_freqs(plain, 16, 10000.0, NULL);
    double worst = 0.0;
    for (int i = 0; i < 8; i++) track_max(&worst, fabs(plain[i] * pow(10000.0, i / 8.0) - 1.0));
    printf("\n      %-52s max rel err=%.2e", "rope inv_freq, theta 10000, hs 16", worst);
    CHECK_TRUE(worst <= 1e-14, "rope inv_freq: relative error %.3e", worst);

    const slm_rope_scaling llama3 = {SLM_ROPE_LLAMA3, 8.0, 1.0, 4.0, 64};
    slm_rope_freqs(got, 16, 500000.0, &llama3);
    ref_llama3_freqs(want, band, 16, 500000.0, 8.0, 1.0, 4.0, 64);
    worst = 0.0;
    for (int i = 0; i < 8; i++) {
        count[band[i]]++;
        track_max(&worst, fabs(got[i] / want[i] - 1.0));
    }
    printf("\n      %-52s kept %d blended %d divided %d, max rel err=%.2e", "rope llama3 scaling", count[0],
           count[1], count[2], worst);
    CHECK_TRUE(count[0] == 1 && count[1] == 1 && count[2] == 6, "llama3 case not in all three bands: %d %d %d",
               count[0], count[1], count[2]);
    CHECK_TRUE(worst <= 1e-14, "rope llama3 scaling: relative error %.3e", worst);
    /* the blended frequency lies strictly between its two neighbours' rules */
    const double b1 = 1.0 / pow(500000.0, 2.0 / 16);
    CHECK_TRUE(got[1] < b1 && got[1] > b1 / 8.0, "llama3 blended frequency %.17g not inside (f/8, f)", got[1]);

    const slm_rope_scaling off = {SLM_ROPE_NONE, 8.0, 1.0, 4.0, 64};
    slm_rope_freqs(none, 16, 500000.0, &off);
    slm_rope_freqs(plain, 16, 500000.0, NULL);
    CHECK_TRUE(memcmp(none, plain, sizeof none) == 0, "rope kind NONE changed the frequencies");
}

/* Rotate-half on the packed layout in double: for the first NH + NKV heads of each row
 * (q, then k), x[i], x[i + hs/2] turn by t * inv_freq[i]; v is copied. */
static void ref_rope(double *out, const double *qkv, int B, int T, int NH, int NKV, int hs, const double *inv_freq) {
    const int half = hs / 2;
    const size_t ld = (size_t)(NH + 2 * NKV) * hs;
    memcpy(out, qkv, (size_t)B * T * ld * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH + NKV; h++) {
                const size_t o = ((size_t)b * T + t) * ld + (size_t)h * hs;
                for (int i = 0; i < half; i++) {
                    const double a = t * inv_freq[i], x1 = qkv[o + i], x2 = qkv[o + half + i];
                    out[o + i] = x1 * cos(a) - x2 * sin(a);
                    out[o + half + i] = x2 * cos(a) + x1 * sin(a);
                }
            }
}

typedef struct {
    int B, T, NH, NKV, hs;
    const double *inv_freq;
    double *qkv, *r, *out;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    ref_rope(c->out, c->qkv, c->B, c->T, c->NH, c->NKV, c->hs, c->inv_freq);
    return dot(c->r, c->out, (size_t)c->B * c->T * (c->NH + 2 * c->NKV) * c->hs);
}

/* The table vs double cos / sin (each a float rounding away); forward vs the double
 * reference, v bitwise untouched; backward, in place over a copy of r, vs FD of
 * r . rope(x) over all of qkv (v's gradient passes through unchanged). */
static void rope_case(int B, int T, int NH, int NKV, int hs, const slm_rope_scaling *scaling, size_t nsamp,
                      uint64_t seed) {
    rng_seed(seed);
    const int half = hs / 2;
    const size_t ld = (size_t)(NH + 2 * NKV) * hs, NQ = (size_t)B * T * ld, NT = (size_t)T * half;
    double *inv = DALLOC(half);
    slm_rope_freqs(inv, hs, 10000.0, scaling);
    float *ct = FALLOC(NT), *st = FALLOC(NT), *x = FALLOC(NQ), *orig = FALLOC(NQ), *d = FALLOC(NQ);
    fill_const(ct, NT, OUT_GARBAGE);
    fill_const(st, NT, OUT_GARBAGE);
    slm_rope_table(ct, st, T, hs, inv);
    double worst = 0.0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            track_max(&worst, fabs(ct[(size_t)t * half + i] - cos(t * inv[i])));
            track_max(&worst, fabs(st[(size_t)t * half + i] - sin(t * inv[i])));
        }
    printf("\n    rope B=%d T=%d NH=%d NKV=%d hs=%d%s", B, T, NH, NKV, hs, scaling ? " llama3" : "");
    printf("\n      %-52s max|err|=%.2e", "rope table vs double cos, sin", worst);
    CHECK_TRUE(worst <= 0x1p-24, "rope table off by %.3e", worst);

    fill_uniform(x, NQ, 1.0f, 0.0f);
    memcpy(orig, x, NQ * sizeof(float));
    slm_rope_forward(x, B, T, NH, NKV, hs, ct, st);
    rope_ctx c = {B, T, NH, NKV, hs, inv, to_double(orig, NQ), DALLOC(NQ), DALLOC(NQ)};
    ref_rope(c.out, c.qkv, B, T, NH, NKV, hs, inv);
    CHECK_FWD("rope q, k rotated (v copied)", x, c.out, NQ);
    int v_same = 1;
    for (size_t r = 0; r < (size_t)B * T; r++)
        v_same &= memcmp(x + r * ld + (size_t)(NH + NKV) * hs, orig + r * ld + (size_t)(NH + NKV) * hs,
                         (size_t)NKV * hs * sizeof(float)) == 0;
    CHECK_TRUE(v_same, "rope forward changed the v heads");

    fill_uniform(d, NQ, 1.0f, 0.0f);
    for (size_t i = 0; i < NQ; i++) c.r[i] = d[i];
    slm_rope_backward(d, B, T, NH, NKV, hs, ct, st);
    CHECK_GRAD_WRITTEN("rope dqkv (in place)", rope_loss, &c, c.qkv, NQ, d, nsamp);

    free(inv); free(ct); free(st); free(x); free(orig); free(d); free(c.qkv); free(c.r); free(c.out);
}

static void test_rope(void) {
    const slm_rope_scaling llama3 = {SLM_ROPE_LLAMA3, 8.0, 1.0, 4.0, 16};
    rope_case(2, 5, 6, 2, 10, NULL, 0, 441);
    rope_case(1, 7, 3, 1, 6, NULL, 0, 442);
    rope_case(2, 1, 3, 1, 6, NULL, 0, 443); /* T = 1: position 0, no turn */
    rope_case(2, 9, 6, 2, 10, &llama3, 0, 444);
    rope_case(1, 2000, 1, 1, 6, NULL, 200, 445); /* angles up to 2000 rad */
}

/* Interleaved RoPE (Meta's checkpoints) in double: dimensions 2i and 2i+1 of each head
 * turn by t * inv_freq[i]. x (n_heads * hs) in place. */
static void ref_rope_interleaved(double *x, int n_heads, int hs, int t, const double *inv_freq) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hs / 2; i++) {
            double *p = x + (size_t)h * hs + 2 * i;
            const double a = t * inv_freq[i], x1 = p[0], x2 = p[1];
            p[0] = x1 * cos(a) - x2 * sin(a);
            p[1] = x2 * cos(a) + x1 * sin(a);
        }
}

/* The row permutation between the two pairings. Round trips either way are the identity
 * (bitwise: rows are moved, not computed), and it moves rows. Then the point of it: with
 * q and k projections W (interleaved), and W' = permute(W, to_half), the rotate-half
 * kernel on W' u gives the interleaved RoPE of W u, rows reordered the same way (so the
 * inverse permutation of each rotated q, k vector, cols = 1, gives it back), and the
 * attention scores q . k are the same. */
static void test_rope_permute(void) {
    enum { NH = 3, NKV = 1, hs = 10, half = hs / 2, cols = 7, T = 9 };
    const size_t WQ = (size_t)NH * hs * cols, WK = (size_t)NKV * hs * cols, ld = (size_t)(NH + 2 * NKV) * hs;
    rng_seed(451);
    float *wq = FALLOC(WQ), *wk = FALLOC(WK), *wq2 = FALLOC(WQ), *wk2 = FALLOC(WK), *back = FALLOC(WQ);
    float *u = FALLOC((size_t)T * cols), *qkv = FALLOC(T * ld), *ct = FALLOC(T * half), *st = FALLOC(T * half);
    fill_uniform(wq, WQ, 1.0f, 0.0f);
    fill_uniform(wk, WK, 1.0f, 0.0f);
    fill_uniform(u, (size_t)T * cols, 1.0f, 0.0f);
    slm_rope_permute_rows(wq2, wq, NH, hs, cols, 1);
    slm_rope_permute_rows(back, wq2, NH, hs, cols, 0);
    CHECK_TRUE(memcmp(back, wq, WQ * sizeof(float)) == 0, "rope permute: to rotate-half and back is not the identity");
    CHECK_TRUE(memcmp(wq2, wq, WQ * sizeof(float)) != 0, "rope permute moved nothing");
    slm_rope_permute_rows(back, wq, NH, hs, cols, 0);
    slm_rope_permute_rows(wq2, back, NH, hs, cols, 1);
    CHECK_TRUE(memcmp(wq2, wq, WQ * sizeof(float)) == 0, "rope permute: to interleaved and back is not the identity");

    slm_rope_permute_rows(wq2, wq, NH, hs, cols, 1);
    slm_rope_permute_rows(wk2, wk, NKV, hs, cols, 1);
    double inv[half];
    slm_rope_freqs(inv, hs, 10000.0, NULL);
    slm_rope_table(ct, st, T, hs, inv);
    const size_t NQK = (size_t)T * (NH + NKV) * hs;
    double *ref = DALLOC(NQK), *scores_ref = DALLOC((size_t)NH * T * T);
    float *got = FALLOC(NQK), *scores = FALLOC((size_t)NH * T * T);
    for (int t = 0; t < T; t++) {
        double *q = ref + (size_t)t * (NH + NKV) * hs, *k = q + NH * hs;
        for (int o = 0; o < NH * hs; o++) { /* interleaved: W u, then turn */
            double a = 0.0, a2 = 0.0;
            for (int j = 0; j < cols; j++) {
                a += (double)wq[(size_t)o * cols + j] * u[(size_t)t * cols + j];
                a2 += (double)wq2[(size_t)o * cols + j] * u[(size_t)t * cols + j];
            }
            q[o] = a;
            qkv[(size_t)t * ld + o] = (float)a2;
        }
        for (int o = 0; o < NKV * hs; o++) {
            double a = 0.0, a2 = 0.0;
            for (int j = 0; j < cols; j++) {
                a += (double)wk[(size_t)o * cols + j] * u[(size_t)t * cols + j];
                a2 += (double)wk2[(size_t)o * cols + j] * u[(size_t)t * cols + j];
            }
            k[o] = a;
            qkv[(size_t)t * ld + NH * hs + o] = (float)a2;
        }
        ref_rope_interleaved(q, NH, hs, t, inv);
        ref_rope_interleaved(k, NKV, hs, t, inv);
    }
    slm_rope_forward(qkv, 1, T, NH, NKV, hs, ct, st);
    for (int t = 0; t < T; t++) { /* back to the interleaved order, one vector at a time */
        slm_rope_permute_rows(got + (size_t)t * (NH + NKV) * hs, qkv + (size_t)t * ld, NH, hs, 1, 0);
        slm_rope_permute_rows(got + (size_t)t * (NH + NKV) * hs + NH * hs, qkv + (size_t)t * ld + NH * hs, NKV, hs,
                              1, 0);
    }
    CHECK_FWD("rope rotate-half on permuted W vs interleaved on W", got, ref, NQK);
    for (int h = 0; h < NH; h++) /* scores of query head h against the one k head */
        for (int t = 0; t < T; t++)
            for (int t2 = 0; t2 < T; t2++) {
                const double *qr = ref + (size_t)t * (NH + NKV) * hs + h * hs;
                const double *kr = ref + (size_t)t2 * (NH + NKV) * hs + NH * hs;
                const float *qh = qkv + (size_t)t * ld + h * hs, *kh = qkv + (size_t)t2 * ld + NH * hs;
                double a = 0.0, b = 0.0;
                for (int i = 0; i < hs; i++) {
                    a += qr[i] * kr[i];
                    b += (double)qh[i] * kh[i];
                }
                scores_ref[((size_t)h * T + t) * T + t2] = a;
                scores[((size_t)h * T + t) * T + t2] = (float)b;
            }
    CHECK_FWD("rope scores, rotate-half on permuted W vs interleaved", scores, scores_ref, (size_t)NH * T * T);
    free(wq); free(wk); free(wq2); free(wk2); free(back); free(u); free(qkv); free(ct); free(st);
    free(ref); free(scores_ref); free(got); free(scores);
}

/* ==================================================================================== */
/* SwiGLU                                                                               */

/* out[n, j] = silu(gate) * up, gate = gu[n, j], up = gu[n, F + j], silu(x) = x / (1 + e^-x). */
static void ref_swiglu(double *out, const double *gu, int N, int F) {
    for (int n = 0; n < N; n++)
        for (int j = 0; j < F; j++) {
            const double x = gu[(size_t)n * 2 * F + j];
            out[(size_t)n * F + j] = x / (1.0 + exp(-x)) * gu[(size_t)n * 2 * F + F + j];
        }
}

typedef struct {
    int N, F;
    double *gu, *r, *out;
} swiglu_ctx;

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    ref_swiglu(c->out, c->gu, c->N, c->F);
    return dot(c->r, c->out, (size_t)c->N * c->F);
}

/* Forward vs reference; backward vs FD, written (dgu pre-filled with garbage). Gates span
 * [-6, 6] plus exact and large points (0, +-1, +-20, +-100, +-1000). */
static void swiglu_case(int N, int F, size_t nsamp, uint64_t seed) {
    rng_seed(seed);
    const size_t NG = (size_t)N * 2 * F, NO = (size_t)N * F;
    float *gu = FALLOC(NG), *out = FALLOC(NO), *r = FALLOC(NO), *dgu = FALLOC(NG);
    fill_uniform(gu, NG, 6.0f, 0.0f);
    const float special[] = {0.0f, 1.0f, -1.0f, 20.0f, -20.0f, 100.0f, -100.0f, 1000.0f, -1000.0f};
    for (size_t i = 0; i < sizeof special / sizeof *special && i < (size_t)F; i++) gu[i] = special[i];
    fill_uniform(r, NO, 1.0f, 0.0f);
    fill_const(out, NO, OUT_GARBAGE);
    fill_const(dgu, NG, OUT_GARBAGE);

    printf("\n    swiglu N=%d F=%d", N, F);
    slm_swiglu_forward(out, gu, N, F);
    swiglu_ctx c = {N, F, to_double(gu, NG), to_double(r, NO), DALLOC(NO)};
    ref_swiglu(c.out, c.gu, N, F);
    CHECK_FWD("swiglu out", out, c.out, NO);
    slm_swiglu_backward(dgu, gu, r, N, F);
    CHECK_GRAD_WRITTEN("swiglu dgu (written)", swiglu_loss, &c, c.gu, NG, dgu, nsamp);
    free(gu); free(out); free(r); free(dgu); free(c.gu); free(c.r); free(c.out);
}

static void test_swiglu(void) {
    swiglu_case(7, 13, 0, 461); /* F not a multiple of 8 */
    swiglu_case(3, 37, 0, 462);
    swiglu_case(1, 1, 0, 463);
}

/* Gates far out on both sides, up to +-FLT_MAX: silu is x (positive) or 0 (negative), its
 * derivative 1 or 0, all finite; the values are compared to the limits with a tolerance
 * of float's rounding. */
static void test_swiglu_extremes(void) {
    const float g[] = {-FLT_MAX, -1e30f, -1e5f, -200.0f, -88.0f, -87.0f, -30.0f, 30.0f,
                       87.0f,    88.0f,  200.0f, 1e5f,  1e30f, FLT_MAX};
    enum { F = sizeof g / sizeof *g };
    float gu[2 * F], out[F], dout[F], dgu[2 * F];
    for (int j = 0; j < F; j++) {
        gu[j] = g[j];
        gu[F + j] = 0.5f;
        dout[j] = 1.0f;
    }
    slm_swiglu_forward(out, gu, 1, F);
    slm_swiglu_backward(dgu, gu, dout, 1, F);
    int ok = 1;
    for (int j = 0; j < F; j++) {
        const double x = g[j];
        /* silu, its derivative, from the stable forms in double; exp(-x) and exp(x) may be inf */
        const double s = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        const double sc = x >= 0 ? exp(-x) / (1.0 + exp(-x)) : 1.0 / (1.0 + exp(x));
        const double silu = x * s, dsilu = s + x * s * sc;
        const double e_out = fabs(out[j] - 0.5 * silu), e_dg = fabs(dgu[j] - 0.5 * dsilu);
        const double e_du = fabs(dgu[F + j] - silu);
        const int good = isfinite(out[j]) && isfinite(dgu[j]) && isfinite(dgu[F + j]) &&
                         e_out <= 1e-6 * fabs(0.5 * silu) + 1e-30 && e_dg <= 1e-6 * fabs(0.5 * dsilu) + 1e-30 &&
                         e_du <= 1e-6 * fabs(silu) + 1e-30;
        if (!good)
            printf("\n      swiglu gate %g: out %g (want %g), dgate %g (want %g), dup %g (want %g)", x,
                   (double)out[j], 0.5 * silu, (double)dgu[j], 0.5 * dsilu, (double)dgu[F + j], silu);
        ok &= good;
    }
    CHECK_TRUE(ok, "swiglu wrong or not finite for large |gate|");
}

/* ==================================================================================== */
/* Residual                                                                             */

/* out = a + b, exactly (one float add per element), also with out aliasing a or b. */
static void residual_case(size_t n, uint64_t seed) {
    rng_seed(seed);
    float *a = FALLOC(n), *b = FALLOC(n), *out = FALLOC(n), *expect = FALLOC(n);
    fill_uniform(a, n, 1.0f, 0.0f);
    fill_uniform(b, n, 1.0f, 0.0f);
    for (size_t i = 0; i < n; i++) expect[i] = a[i] + b[i];
    fill_const(out, n, OUT_GARBAGE);
    slm_residual_forward(out, a, b, n);
    CHECK_TRUE(memcmp(out, expect, n * sizeof(float)) == 0, "residual: out != a + b");

    float *a2 = FALLOC(n), *b2 = FALLOC(n);
    memcpy(a2, a, n * sizeof(float));
    memcpy(b2, b, n * sizeof(float));
    slm_residual_forward(a2, a2, b, n); /* out aliases a */
    CHECK_TRUE(memcmp(a2, expect, n * sizeof(float)) == 0, "residual: out==a alias wrong");
    slm_residual_forward(b2, a, b2, n); /* out aliases b */
    CHECK_TRUE(memcmp(b2, expect, n * sizeof(float)) == 0, "residual: out==b alias wrong");
    free(a); free(b); free(out); free(expect); free(a2); free(b2);
}

static void test_residual(void) { residual_case(29, 601); }

/* ==================================================================================== */
/* Cross-entropy                                                                        */

typedef struct {
    int N, V;
    const int32_t *targets;
    double scale;
    double *logits, *losses;
} ce_ctx;

/* L = scale * sum_n losses[n]: exactly the quantity whose gradient the backward writes. */
static double ce_loss(void *p) {
    ce_ctx *c = p;
    ref_crossentropy(c->losses, NULL, c->logits, c->targets, c->N, c->V);
    double s = 0.0;
    for (int n = 0; n < c->N; n++) s += c->losses[n];
    return c->scale * s;
}

/* Forward (losses, lse) vs reference, logits unchanged by the forward; backward vs FD of
 * scale * sum(losses). The backward buffer holds the logits on entry, so an
 * implementation that accumulated (logits += grad) instead of writing would be off by
 * the logits themselves (NMSE ~ 1) and fail. `offset` shifts all logits to exercise
 * max-subtraction (exp(100) overflows float). */
static void crossentropy_case(int N, int V, float scale, float offset, size_t nsamp,
                              uint64_t seed) {
    rng_seed(seed);
    size_t NV = (size_t)N * V;
    float *logits = FALLOC(NV), *orig = FALLOC(NV), *losses = FALLOC(N), *lse = FALLOC(N);
    int32_t *targets = xcalloc((size_t)N, sizeof(int32_t));
    fill_uniform(logits, NV, 3.0f, offset);
    for (int n = 0; n < N; n++) targets[n] = rng_int(V);
    targets[0] = 0;
    if (N > 1) targets[N - 1] = V - 1; /* both ends of the row, incl. the tail past 8k */
    memcpy(orig, logits, NV * sizeof(float));
    fill_const(losses, N, OUT_GARBAGE);
    fill_const(lse, N, OUT_GARBAGE);

    printf("\n    crossentropy N=%d V=%d scale=%g offset=%g", N, V, scale, offset);
    slm_crossentropy_forward(losses, lse, logits, targets, N, V);
    CHECK_TRUE(memcmp(orig, logits, NV * sizeof(float)) == 0,
               "crossentropy_forward modified the logits");

    ce_ctx c = {N, V, targets, scale, to_double(logits, NV), DALLOC(N)};
    double *rloss = DALLOC(N), *rlse = DALLOC(N);
    ref_crossentropy(rloss, rlse, c.logits, targets, N, V);
    CHECK_FWD("crossentropy losses", losses, rloss, N);
    CHECK_FWD("crossentropy lse", lse, rlse, N);

    slm_crossentropy_backward(logits, lse, targets, scale, N, V); /* in place */
    CHECK_GRAD_WRITTEN("crossentropy dlogits (written in place)", ce_loss, &c, c.logits, NV,
                       logits, nsamp);

    free(logits); free(orig); free(losses); free(lse); free(targets);
    free(c.logits); free(c.losses); free(rloss); free(rlse);
}

static void test_crossentropy(void) {
    crossentropy_case(10, 11, 1.0f / 10.0f, 0.0f, 0, 701); /* V = 11, not a multiple of 8 */
    crossentropy_case(7, 13, 0.37f, 0.0f, 0, 702);         /* V = 13 */
    crossentropy_case(3, 8, 1.0f, 0.0f, 0, 703);           /* V = 8, exact multiple */
    crossentropy_case(5, 21, 0.5f, 0.0f, 0, 704);          /* V = 21 = 16 + 5 */
    crossentropy_case(1, 2, 1.0f, 0.0f, 0, 705);           /* minimal */
}

/* Numerical stability: logits around +-100 (exp overflows/underflows float) must give
 * finite, correct losses and gradients. FD still works in double around the offset. */
static void test_crossentropy_large_logits(void) {
    crossentropy_case(7, 13, 1.0f / 7.0f, 100.0f, 0, 711);
    crossentropy_case(7, 13, 1.0f / 7.0f, -100.0f, 0, 712);
}

/* ==================================================================================== */
/* AdamW                                                                                */

/* Hand computation, lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, three scalars
 * p0 = (1.0, -2.0, 0.5), gradients g(t=1) = (0.5, -1.0, 0.0), g(t=2) = (0.25, 1.0, 0.0).
 *
 * Step t = 1 (bias corrections 1-0.9 = 0.1 and 1-0.999 = 0.001):
 *   p=1.0,  g=0.5 : m = 0.1*0.5 = 0.05,  v = 0.001*0.25 = 0.00025
 *                   mhat = 0.05/0.1 = 0.5, vhat = 0.00025/0.001 = 0.25, sqrt = 0.5
 *                   update = 0.1 * 0.5/(0.5+1e-8) = 0.099999998
 *                   wd=0  : p = 1.0 - 0.099999998            = 0.900000002
 *                   wd=.1 : p = 1.0*(1-0.01) - 0.099999998   = 0.890000002
 *   p=-2.0, g=-1.0: m = -0.1, v = 0.001, mhat = -1, vhat = 1, update = -0.099999999
 *                   wd=0  : p = -2.0 + 0.099999999           = -1.900000001
 *                   wd=.1 : p = -2.0*0.99 + 0.099999999      = -1.880000001
 *   p=0.5,  g=0.0 : m = v = 0, update = 0/(0+eps) = 0 -> only weight decay acts
 *                   wd=0  : p = 0.5;  wd=.1 : p = 0.5*0.99   = 0.495
 *
 * Step t = 2 (bias corrections 1-0.81 = 0.19 and 1-0.998001 = 0.001999):
 *   g=0.25: m = 0.9*0.05 + 0.1*0.25 = 0.07
 *           v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225
 *           mhat = 0.07/0.19 = 0.368421053, vhat = 0.00031225/0.001999 = 0.156203102
 *           sqrt(vhat) = 0.395225381, update = 0.1*0.368421053/0.395225381 = 0.093217962
 *           wd=0  : p = 0.900000002 - 0.093217962        = 0.806782040
 *           wd=.1 : p = 0.890000002*0.99 - 0.093217962   = 0.787882040
 *   g=1.0 : m = 0.9*(-0.1) + 0.1*1 = 0.01, v = 0.999*0.001 + 0.001*1 = 0.001999
 *           mhat = 0.01/0.19 = 0.052631579, vhat = 0.001999/0.001999 = 1
 *           update = 0.1*0.052631579/(1+1e-8) = 0.005263158
 *           wd=0  : p = -1.900000001 - 0.005263158       = -1.905263159
 *           wd=.1 : p = -1.880000001*0.99 - 0.005263158  = -1.866463159
 *   g=0.0 : m = v = 0; wd=0 : p = 0.5; wd=.1 : p = 0.495*0.99 = 0.49005
 *
 * The g = 0 scalar also distinguishes decoupled weight decay from L2 regularisation
 * (g += wd*p would give a full lr-sized step: 0.5 -> ~0.4). Tolerances: p, 1e-6 absolute
 * (values are O(1), a float step is exact to a few ulps ~1e-7); m, 1e-7 relative; v, 1e-4
 * relative, because 0.999f is not exact and (1 - 0.999f) = 0.00099998713 is 1.3e-5 off
 * in relative terms (the bias correction cancels this in p). */
static void adamw_check(float wd, const double expect_p[2][3]) {
    const double expect_m[2][3] = {{0.05, -0.1, 0.0}, {0.07, 0.01, 0.0}};
    const double expect_v[2][3] = {{0.00025, 0.001, 0.0}, {0.00031225, 0.001999, 0.0}};
    const float g[2][3] = {{0.5f, -1.0f, 0.0f}, {0.25f, 1.0f, 0.0f}};
    float p[3] = {1.0f, -2.0f, 0.5f}, m[3] = {0}, v[3] = {0};
    for (int t = 1; t <= 2; t++) {
        slm_adamw_update(p, g[t - 1], 1.0f, m, v, 3, 0.1f, 0.9f, 0.999f, 1e-8f, wd, t);
        for (int i = 0; i < 3; i++) {
            printf("\n      adamw wd=%.1f t=%d p[%d]=%.9f (expect %.9f)", wd, t, i, p[i],
                   expect_p[t - 1][i]);
            CHECK_TRUE(fabs(p[i] - expect_p[t - 1][i]) <= 1e-6,
                       "adamw wd=%g t=%d p[%d]: got %.9f expected %.9f", wd, t, i, p[i],
                       expect_p[t - 1][i]);
            CHECK_TRUE(fabs(m[i] - expect_m[t - 1][i]) <= 1e-7 * (1 + fabs(expect_m[t - 1][i])),
                       "adamw wd=%g t=%d m[%d]: got %.9g expected %.9g", wd, t, i, m[i],
                       expect_m[t - 1][i]);
            CHECK_TRUE(fabs(v[i] - expect_v[t - 1][i]) <= 1e-4 * fabs(expect_v[t - 1][i]) + 1e-12,
                       "adamw wd=%g t=%d v[%d]: got %.9g expected %.9g", wd, t, i, v[i],
                       expect_v[t - 1][i]);
        }
    }
}

static void test_adamw(void) {
    const double no_wd[2][3] = {{0.900000002, -1.900000001, 0.5},
                                {0.806782040, -1.905263159, 0.5}};
    const double with_wd[2][3] = {{0.890000002, -1.880000001, 0.495},
                                  {0.787882040, -1.866463159, 0.49005}};
    adamw_check(0.0f, no_wd);
    adamw_check(0.1f, with_wd);

    /* eps placement: the formula adds eps OUTSIDE the square root. With a tiny gradient
     * g = 1e-6 at t = 1 (lr = 0.1, wd = 0, p = 0): mhat = 1e-6, vhat = 1e-12,
     * sqrt(vhat) = 1e-6, update = 0.1 * 1e-6 / (1e-6 + 1e-8) = 0.1 / 1.01 = 0.0990099,
     * so p = -0.0990099. (eps inside the sqrt would give 0.1 * 1e-6 / 1.00005e-4 = 0.001.)
     * The relative 3e-8 rounding of 1e-6f changes the ratio by < 1e-9. */
    float p = 0.0f, g = 1e-6f, m = 0.0f, v = 0.0f;
    slm_adamw_update(&p, &g, 1.0f, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1);
    printf("\n      adamw eps placement p=%.9f (expect %.9f)", p, -0.1 / 1.01);
    CHECK_TRUE(fabs(p - (-0.1 / 1.01)) <= 1e-6, "adamw eps placement: got %.9f expected %.9f",
               p, -0.1 / 1.01);
}

/* AdamW on many elements (odd n, several steps, random data) vs a double loop written
 * from the header formula: catches tail-loop / indexing bugs the 3-scalar case cannot. */
static void adamw_vector_case(size_t n, uint64_t seed) {
    rng_seed(seed);
    float *p = FALLOC(n), *g = FALLOC(n), *m = FALLOC(n), *v = FALLOC(n);
    double *pd = DALLOC(n), *md = DALLOC(n), *vd = DALLOC(n);
    fill_uniform(p, n, 1.0f, 0.0f);
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
    for (int t = 1; t <= 5; t++) {
        fill_uniform(g, n, 1.0f, 0.0f);
        slm_adamw_update(p, g, 1.0f, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps,
                         (float)wd, t);
        for (size_t i = 0; i < n; i++) {
            pd[i] -= (double)(float)lr * (double)(float)wd * pd[i];
            md[i] = (double)(float)b1 * md[i] + (1.0 - (double)(float)b1) * g[i];
            vd[i] = (double)(float)b2 * vd[i] + (1.0 - (double)(float)b2) * g[i] * g[i];
            double mh = md[i] / (1.0 - pow((double)(float)b1, t));
            double vh = vd[i] / (1.0 - pow((double)(float)b2, t));
            pd[i] -= (double)(float)lr * mh / (sqrt(vh) + (double)(float)eps);
        }
    }
    printf("\n    adamw n=%zu, 5 steps", n);
    CHECK_FWD("adamw p", p, pd, n);
    CHECK_FWD("adamw m", m, md, n);
    CHECK_FWD("adamw v", v, vd, n);
    free(p); free(g); free(m); free(v); free(pd); free(md); free(vd);
}

static void test_adamw_vector(void) { adamw_vector_case(1003, 801); }

/* ==================================================================================== */
/* sumsq and scale                                                                      */

/* sumsq must accumulate in double: with n = 100003 values, float accumulation would be
 * off by ~1e-5 relative; a double loop (any order) agrees to ~1e-13. Tolerance 1e-10. */
static void test_sumsq(void) {
    const size_t n = 100003;
    rng_seed(901);
    float *x = FALLOC(n);
    fill_uniform(x, n, 1.0f, 0.3f);
    double ref = 0.0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * (double)x[i];
    double got = slm_sumsq(x, n);
    double rel = fabs(got - ref) / ref;
    printf("\n      %-52s rel=%.2e", "sumsq n=100003", rel);
    CHECK_TRUE(rel <= 1e-10, "sumsq: got %.17g expected %.17g", got, ref);

    const float small[5] = {1.0f, -2.0f, 3.0f, 0.5f, -0.25f}; /* 1+4+9+0.25+0.0625 */
    CHECK_TRUE(slm_sumsq(small, 5) == 14.3125, "sumsq small: got %.17g expected 14.3125",
               slm_sumsq(small, 5));
    CHECK_TRUE(slm_sumsq(small, 0) == 0.0, "sumsq n=0 must be 0");
    free(x);
}

/* scale: x[i] *= s, bit-exact vs the same float multiply; n = 0 is a no-op. */
static void scale_case(size_t n, uint64_t seed) {
    rng_seed(seed);
    float *x = FALLOC(n), *expect = FALLOC(n);
    fill_uniform(x, n, 1.0f, 0.0f);
    const float s = 0.3f;
    for (size_t i = 0; i < n; i++) expect[i] = x[i] * s;
    slm_scale(x, s, n);
    CHECK_TRUE(memcmp(x, expect, n * sizeof(float)) == 0, "scale: x != x*s");
    memcpy(expect, x, n * sizeof(float));
    slm_scale(x, s, 0);
    CHECK_TRUE(memcmp(x, expect, n * sizeof(float)) == 0, "scale n=0 modified x");
    free(x); free(expect);
}

static void test_scale(void) { scale_case(37, 902); }

/* ==================================================================================== */
/* Large shapes                                                                         */

/* The kernels switch to OpenMP parallel loops above 65536 elements (and matmul's dbias
 * works in column blocks of 128). The small odd shapes above never take those branches,
 * so the same checks are repeated once on shapes just past the threshold (still odd).
 * Forwards are compared in full; gradients on 64 FD-sampled elements per buffer, as a
 * full FD sweep would cost O(size^2). */
#define LARGE_SAMPLES 64

static void test_large_shapes(void) {
    encoder_case(2, 301, 113, 11, LARGE_SAMPLES, 1001);  /* B*T*C = 68026 */
    layernorm_case(1031, 67, LARGE_SAMPLES, 1002);       /* N*C = 69077 */
    matmul_case(509, 5, 131, 1, 1, 1, LARGE_SAMPLES, 1003); /* N*OC = 66679, OC = 128 + 3 */
    attention_case(1, 263, 2, 2, 3, LARGE_SAMPLES, 1004); /* T*T = 69169 */
    gelu_case(70001, LARGE_SAMPLES, 1005);
    rmsnorm_case(1031, 67, 1e-5f, LARGE_SAMPLES, 1010);     /* N*C = 69077 */
    rope_case(3, 301, 6, 2, 10, NULL, LARGE_SAMPLES, 1011); /* B*T*(NH+NKV)*hs = 72240 */
    swiglu_case(1031, 67, LARGE_SAMPLES, 1012);             /* N*F = 69077 */
    crossentropy_case(1031, 67, 1.0f / 1031.0f, 0.0f, LARGE_SAMPLES, 1006); /* N*V = 69077 */
    residual_case(70001, 1007);
    adamw_vector_case(70001, 1008);
    scale_case(70001, 1009);
}

/* ==================================================================================== */
/* bf16 conversion: bit patterns worked out by hand. A bf16 is the top 16 bits of a float;
 * between 1 and 2 its spacing is 2^-7, so 1 + 2^-8 is exactly halfway between 0x3F80 (1)
 * and 0x3F81 (1 + 2^-7): ties go to the even pattern 0x3F80. 1 + 3*2^-8 lies halfway
 * between 0x3F81 and 0x3F82 and goes to 0x3F82. Anything above a half rounds up. */
static uint16_t bits_of(float f)
{
    uint16_t h;
    slm_bf16_from_f32(&h, &f, 1);
    return h;
}

static void test_bf16(void)
{
    CU_ASSERT_EQUAL(bits_of(1.0f), 0x3F80);
    CU_ASSERT_EQUAL(bits_of(-2.0f), 0xC000);
    CU_ASSERT_EQUAL(bits_of(1.0f + 0x1p-8f), 0x3F80);
    CU_ASSERT_EQUAL(bits_of(1.0f + 3 * 0x1p-8f), 0x3F82);
    CU_ASSERT_EQUAL(bits_of(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
    CU_ASSERT_EQUAL(bits_of(1.0f + 0x1p-8f - 0x1p-20f), 0x3F80);
    CU_ASSERT_EQUAL(bits_of(INFINITY), 0x7F80);
    CU_ASSERT_EQUAL(bits_of(FLT_MAX), 0x7F80); /* rounds past the largest bf16 */
    uint16_t nan_bits = bits_of(NAN);
    CU_ASSERT((nan_bits & 0x7F80) == 0x7F80 && (nan_bits & 0x7F) != 0);
    /* every finite bf16 survives the trip to fp32 and back */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7F80) == 0x7F80) continue;
        uint16_t in = (uint16_t)h, out;
        float f;
        slm_f32_from_bf16(&f, &in, 1);
        slm_bf16_from_f32(&out, &f, 1);
        bad += out != in;
    }
    CU_ASSERT_EQUAL(bad, 0);
    float x[3] = {1.0f + 3 * 0x1p-8f, 0.1f, -7.0f};
    slm_bf16_round(x, 3);
    CU_ASSERT_EQUAL(x[0], 1.0f + 0x1p-6f);
    CU_ASSERT(fabsf(x[1] - 0.1f) <= 0.1f * 0x1p-9f && x[1] != 0.1f);
    CU_ASSERT_EQUAL(x[2], -7.0f);
}

/* int8 blockwise quantization: values worked out by hand. A block of 256 whose largest
 * magnitude is 12.7 has the scale 0.1; x = 0.26 is 2.6 steps, so q = 3; -12.7 is -127; the
 * second block (4 values, all zero) has scale 0 and q 0. Dequantizing adds q x scale. */
static void test_q8(void)
{
    float x[260] = {0}, back[260] = {0};
    int8_t q[260];
    float scale[2];
    x[0] = 0.26f;
    x[1] = -12.7f;
    x[3] = 0.15f; /* about 1.5 steps: 2 */
    CU_ASSERT_EQUAL(slm_q8_blocks(260), 2);
    CU_ASSERT_EQUAL(slm_q8_blocks(256), 1);
    slm_q8_quantize(x, 260, q, scale);
    CU_ASSERT_DOUBLE_EQUAL(scale[0], 12.7 / 127, 1e-7);
    CU_ASSERT_EQUAL(scale[1], 0.0f);
    CU_ASSERT_EQUAL(q[0], 3);
    CU_ASSERT_EQUAL(q[1], -127);
    CU_ASSERT_EQUAL(q[3], 2);
    CU_ASSERT_EQUAL(q[4], 0);
    CU_ASSERT_EQUAL(q[259], 0);
    back[0] = 1.0f;
    slm_q8_dequantize_add(q, scale, 260, back);
    CU_ASSERT_DOUBLE_EQUAL(back[0], 1.0 + 3 * 0.1, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(back[1], -12.7, 1e-5);
    for (int i = 0; i < 260; i++) CU_ASSERT(fabsf(back[i] - (i == 0 ? 1.0f + x[0] : x[i])) <= 0.05f + 1e-6f);
    uint16_t h[2] = {0x3F80, 0xC000}; /* 1 and -2 */
    float acc[2] = {0.5f, 0.5f};
    slm_bf16_add(h, 2, acc);
    CU_ASSERT_EQUAL(acc[0], 1.5f);
    CU_ASSERT_EQUAL(acc[1], -1.5f);
}

/* ==================================================================================== */
/* oneDNN backend                                                                       */

/* The linear layers and attention again, every product through oneDNN's sgemm: the same
 * double references and finite differences, the same tolerance. */
static void test_dnnl_f32(void) {
    CU_ASSERT_FATAL(slm_gemm_select(SLM_GEMM_DNNL, 0) == 0);
    CU_ASSERT_STRING_EQUAL(slm_gemm_name(), "onednn sgemm");
    test_matmul();
    test_matmul_null_bias();
    test_matmul_null_dinp();
    matmul_case(509, 5, 131, 1, 1, 1, LARGE_SAMPLES, 1003);
    test_attention();
    test_attention_gqa();
    attention_case(1, 263, 2, 2, 3, LARGE_SAMPLES, 1004);
    slm_gemm_select(SLM_GEMM_OPENBLAS, 0);
}

/* x rounded to the nearest bfloat16 (8 significant bits), ties to even: written from the
 * definition with frexp and rint (the default rounding mode rounds ties to even), not with
 * the bit arithmetic the library uses. */
static double bf16_nearest(float x) {
    int e;
    double m = frexp((double)x, &e); /* x = m 2^e, 0.5 <= |m| < 1 */
    return ldexp(rint(ldexp(m, 8)), e - 8);
}

static double *bf16_rounded(const float *x, size_t n) {
    double *r = DALLOC(n);
    for (size_t i = 0; i < n; i++) r[i] = bf16_nearest(x[i]);
    return r;
}

/* With bf16 linear layers, each product must be the double product of its operands
 * rounded to bf16, to fp32 accumulation error (NMSE_TOL), and must differ from the
 * unrounded product by about bf16's error (proof the rounding happens at all). The bias
 * and its gradient stay fp32: dbias is the plain sum of dout. */
static void bf16_matmul_case(int N, int IC, int OC, int use_bias, uint64_t seed) {
    rng_seed(seed);
    size_t NI = (size_t)N * IC, NO = (size_t)N * OC, WI = (size_t)OC * IC;
    float *inp = FALLOC(NI), *w = FALLOC(WI), *bias = use_bias ? FALLOC(OC) : NULL, *out = FALLOC(NO);
    float *r = FALLOC(NO), *dinp = FALLOC(NI), *dw = FALLOC(WI), *dbias = FALLOC(OC);
    fill_uniform(inp, NI, 1.0f, 0.0f);
    fill_uniform(w, WI, 1.0f, 0.0f);
    if (bias) fill_uniform(bias, OC, 1.0f, 0.0f);
    fill_uniform(r, NO, 1.0f, 0.0f);
    fill_const(out, NO, OUT_GARBAGE);
    fill_const(dinp, NI, GRAD_PREFILL);
    fill_const(dw, WI, GRAD_PREFILL);
    fill_const(dbias, OC, GRAD_PREFILL);
    printf("\n    bf16 matmul N=%d IC=%d OC=%d bias=%s", N, IC, OC, use_bias ? "yes" : "NULL");
    slm_matmul_forward(out, inp, w, bias, N, IC, OC);
    slm_matmul_backward(dinp, dw, dbias, r, inp, w, N, IC, OC);

    double *xi = bf16_rounded(inp, NI), *xw = bf16_rounded(w, WI), *xr = bf16_rounded(r, NO);
    double *xb = bias ? to_double(bias, OC) : NULL, *ref = DALLOC(NO), *exact = DALLOC(NO);
    double *ref_dinp = DALLOC(NI), *ref_dw = DALLOC(WI), *ref_dbias = DALLOC(OC);
    ref_matmul(ref, xi, xw, xb, N, IC, OC);
    CHECK_FWD("bf16 matmul out vs bf16-rounded operands", out, ref, NO);
    double *di = to_double(inp, NI), *dwd = to_double(w, WI);
    ref_matmul(exact, di, dwd, xb, N, IC, OC);
    double *got = to_double(out, NO);
    const double off = nmse(got, exact, NO);
    CHECK_TRUE(off > 1e-7 && off < 1e-4, "bf16 matmul out vs unrounded operands: NMSE %.2e, want bf16's ~1e-6", off);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            const double d = xr[(size_t)i * OC + o], g = r[(size_t)i * OC + o];
            for (int k = 0; k < IC; k++) {
                ref_dinp[(size_t)i * IC + k] += d * xw[(size_t)o * IC + k];
                ref_dw[(size_t)o * IC + k] += d * xi[(size_t)i * IC + k];
            }
            ref_dbias[o] += g;
        }
    check_nmse_impl("bf16 matmul dinp (accumulated)", dinp, GRAD_PREFILL, ref_dinp, NI, __LINE__);
    check_nmse_impl("bf16 matmul dw (accumulated)", dw, GRAD_PREFILL, ref_dw, WI, __LINE__);
    check_nmse_impl("bf16 matmul dbias, unrounded (accumulated)", dbias, GRAD_PREFILL, ref_dbias, OC, __LINE__);
    free(inp); free(w); free(bias); free(out); free(r); free(dinp); free(dw); free(dbias);
    free(xi); free(xw); free(xr); free(xb); free(ref); free(exact); free(ref_dinp); free(ref_dw); free(ref_dbias);
    free(di); free(dwd); free(got);
}

static void test_dnnl_bf16(void) {
    CU_ASSERT_EQUAL(slm_gemm_select(SLM_GEMM_OPENBLAS, 1), -1); /* bf16 products are oneDNN's */
    CU_ASSERT_FATAL(slm_gemm_select(SLM_GEMM_DNNL, 1) == 0);
    CU_ASSERT_STRING_EQUAL(slm_gemm_name(), "onednn bf16 matmul");
    bf16_matmul_case(7, 5, 7, 1, 1101);
    bf16_matmul_case(37, 70, 131, 0, 1102);
    bf16_matmul_case(37, 70, 131, 1, 1103); /* the same shape again: a kept primitive */
    bf16_matmul_case(300, 96, 250, 1, 1104);
    slm_gemm_select(SLM_GEMM_OPENBLAS, 0);
}

/* On a CPU where oneDNN has no bf16 matmul (AVX2 without AVX-512, with the oneDNN Debian 12
 * ships), its check must say so and take the failure back: nothing recorded for the run. */
static void test_dnnl_bf16_unavailable(void) {
    char why[256] = "";
    CU_ASSERT_EQUAL(slm_gemm_check(SLM_GEMM_DNNL, 1, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "oneDNN"));
    CU_ASSERT_EQUAL(slm_kernels_status(), SLM_OK);
    CU_ASSERT_EQUAL(slm_gemm_selected(), SLM_GEMM_OPENBLAS); /* the check left the selection alone */
}

/* The backend check: the real backends pass; a backend made wrong by one element of one
 * product (the test hook) fails, naming the product; nothing is left recorded. */
static void test_gemm_check(void) {
    char why[256] = "";
    CU_ASSERT_EQUAL(slm_gemm_check(SLM_GEMM_OPENBLAS, 0, why, sizeof why), 0);
    if (slm_gemm_available(SLM_GEMM_DNNL)) CU_ASSERT_EQUAL(slm_gemm_check(SLM_GEMM_DNNL, 0, why, sizeof why), 0);
    setenv("SLM_TEST_GEMM_CORRUPT", "openblas", 1);
    CU_ASSERT_EQUAL(slm_gemm_check(SLM_GEMM_OPENBLAS, 0, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "wrong beyond rounding"));
    unsetenv("SLM_TEST_GEMM_CORRUPT");
    CU_ASSERT_EQUAL(slm_gemm_check(SLM_GEMM_OPENBLAS, 0, why, sizeof why), 0);
    CU_ASSERT_EQUAL(slm_kernels_status(), SLM_OK);
    CU_ASSERT_EQUAL(slm_gemm_select(SLM_GEMM_OPENBLAS, 0), 0);
}

/* Timing a model's shapes: finite, positive, and the rate is their FLOPs over the time. */
static void test_gemm_time_shapes(void) {
    const slm_gemm_shape shapes[2] = {{0, 1, 256, 384, 128, 1, 0, 2.0}, {1, 0, 384, 128, 256, 1, 2, 1.0}};
    double gflops = 0.0, s = 0.0;
    const slm_gemm_candidate openblas = {SLM_GEMM_OPENBLAS, 0};
    slm_gemm_time_shapes(&openblas, 1, shapes, 2, &s, &gflops);
    CU_ASSERT(isfinite(s) && s > 0);
    CU_ASSERT(gflops > 0);
    const double flop = 2.0 * 256 * 384 * 128 * 3.0;
    CU_ASSERT_DOUBLE_EQUAL(gflops, flop / s / 1e9, 1e-9 * gflops);
}

/* Which OPENBLAS_CORETYPE a CPU needs, on described CPUs: the Xeon OpenBLAS 0.3.21 does not
 * know (family 6 model 207) falls back to Prescott and needs SkylakeX; a Zen 3 recognised
 * as Zen needs nothing, as Prescott it needs Zen; an Intel AVX2 CPU on Nehalem kernels
 * needs Haswell; an AVX-512 CPU on Haswell kernels is told SkylakeX; a CPU without AVX2
 * and a BLAS that does not name its core get no advice. */
static void test_blas_core_rule(void) {
    slm_cpu_info xeon = {.vendor = "GenuineIntel", .family = 6, .model_id = 207, .avx = 1, .avx2 = 1, .fma = 1,
                         .avx512 = 1, .avx512_bf16 = 1};
    slm_cpu_info zen3 = {.vendor = "AuthenticAMD", .family = 25, .model_id = 1, .avx = 1, .avx2 = 1, .fma = 1};
    slm_cpu_info haswell = {.vendor = "GenuineIntel", .family = 6, .model_id = 63, .avx = 1, .avx2 = 1, .fma = 1};
    slm_cpu_info sandy = {.vendor = "GenuineIntel", .family = 6, .model_id = 42, .avx = 1};
    CU_ASSERT_STRING_EQUAL(slm_blas_core_for("Prescott", &xeon), "SkylakeX");
    CU_ASSERT_STRING_EQUAL(slm_blas_core_for("Haswell", &xeon), "SkylakeX");
    CU_ASSERT_PTR_NULL(slm_blas_core_for("SkylakeX", &xeon));
    CU_ASSERT_PTR_NULL(slm_blas_core_for("Cooperlake", &xeon));
    CU_ASSERT_PTR_NULL(slm_blas_core_for("Zen", &zen3));
    CU_ASSERT_STRING_EQUAL(slm_blas_core_for("Prescott", &zen3), "Zen");
    CU_ASSERT_STRING_EQUAL(slm_blas_core_for("Nehalem", &haswell), "Haswell");
    CU_ASSERT_PTR_NULL(slm_blas_core_for("Haswell", &haswell));
    CU_ASSERT_PTR_NULL(slm_blas_core_for("Sandybridge", &sandy));
    CU_ASSERT_PTR_NULL(slm_blas_core_for("unknown", &xeon));
}

/* The vocabulary-split kernels against the whole-vocabulary ones (checked above by FD):
 * over a partition of the vocabulary into uneven parts, the embeddings sum to the whole
 * embedding, the gradients land in the right rows, the cross-entropy parts combine to the
 * whole losses, and each part's logit gradient is its slice of the whole gradient. */
static void test_vocab_split(void) {
    enum { B = 2, T = 3, C = 5, V = 11, N = B * T };
    const int cut[3] = {0, 4, V}; /* parts [0,4) and [4,11) */
    int32_t tok[N], tgt[N];
    for (int i = 0; i < N; i++) tok[i] = rng_int(V), tgt[i] = rng_int(V);
    tok[0] = 3, tok[1] = 4; /* both sides of the cut */
    float wte[V * C], wpe[T * C], whole[N * C], sum[N * C] = {0}, part[N * C];
    fill_uniform(wte, V * C, 1.0f, 0.0f);
    fill_uniform(wpe, T * C, 1.0f, 0.0f);
    slm_encoder_forward(whole, tok, wte, wpe, B, T, C);
    for (int p = 0; p < 2; p++) {
        fill_const(part, N * C, OUT_GARBAGE);
        slm_encoder_forward_rows(part, tok, wte + cut[p] * C, cut[p], cut[p + 1], p == 0 ? wpe : NULL, B, T, C);
        for (int i = 0; i < N * C; i++) sum[i] += part[i];
    }
    for (int i = 0; i < N * C; i++) CU_ASSERT(sum[i] == whole[i]); /* x + 0 and x + y, in the same order */
    float dout[N * C], dwte[V * C] = {0}, dwpe[T * C] = {0}, dwte_p[V * C] = {0}, dwpe_p[T * C] = {0};
    fill_uniform(dout, N * C, 1.0f, 0.0f);
    slm_encoder_backward(dwte, dwpe, dout, tok, B, T, C);
    for (int p = 0; p < 2; p++)
        slm_encoder_backward_rows(dwte_p + cut[p] * C, cut[p], cut[p + 1], p == 0 ? dwpe_p : NULL, dout, tok, B, T, C);
    for (int i = 0; i < V * C; i++) CU_ASSERT(dwte_p[i] == dwte[i]);
    for (int i = 0; i < T * C; i++) CU_ASSERT(dwpe_p[i] == dwpe[i]);

    float logits[N * V], losses[N], lse[N], grad[N * V];
    fill_uniform(logits, N * V, 4.0f, 0.0f);
    slm_crossentropy_forward(losses, lse, logits, tgt, N, V);
    memcpy(grad, logits, sizeof grad);
    slm_crossentropy_backward(grad, lse, tgt, 0.25f, N, V);
    float mx[N], acc[2 * N] = {0};
    for (int i = 0; i < N; i++) mx[i] = -INFINITY;
    float sub[2][N * V];
    for (int p = 0; p < 2; p++) { /* each part holds its columns, row-major */
        const int w = cut[p + 1] - cut[p];
        for (int i = 0; i < N; i++) memcpy(sub[p] + i * w, logits + i * V + cut[p], (size_t)w * sizeof(float));
        float m[N];
        slm_rowmax(m, sub[p], N, w);
        for (int i = 0; i < N; i++) mx[i] = m[i] > mx[i] ? m[i] : mx[i];
    }
    for (int p = 0; p < 2; p++) {
        float part2[2 * N];
        slm_crossentropy_part(part2, sub[p], mx, tgt, cut[p], N, cut[p + 1] - cut[p]);
        for (int i = 0; i < 2 * N; i++) acc[i] += part2[i];
    }
    for (int i = 0; i < N; i++) {
        float l = mx[i] + (float)log(acc[2 * i]);
        CU_ASSERT(fabsf(l - lse[i]) <= 1e-6f * fabsf(lse[i]) + 1e-6f);
        CU_ASSERT(fabsf((l - acc[2 * i + 1]) - losses[i]) <= 1e-5f * fabsf(losses[i]) + 1e-6f);
    }
    for (int p = 0; p < 2; p++) {
        const int w = cut[p + 1] - cut[p];
        slm_crossentropy_backward_part(sub[p], lse, tgt, cut[p], 0.25f, N, w);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < w; j++) CU_ASSERT(sub[p][i * w + j] == grad[i * V + cut[p] + j]);
    }
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return (int)CU_get_error();
    CU_pSuite s = CU_add_suite("kernels", NULL, NULL);
    if (!s) {
        CU_cleanup_registry();
        return (int)CU_get_error();
    }
    struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"encoder forward/backward vs double FD", test_encoder},
        {"layernorm forward/backward vs double FD", test_layernorm},
        {"rmsnorm forward/backward vs double FD", test_rmsnorm},
        {"rmsnorm backward, 1 vs 2 threads (bitwise)", test_rmsnorm_threads},
        {"matmul forward/backward vs double FD", test_matmul},
        {"matmul NULL bias / NULL dbias", test_matmul_null_bias},
        {"matmul NULL dinp", test_matmul_null_dinp},
        {"attention forward/backward vs double FD", test_attention},
        {"attention (grouped-query) forward/backward vs double FD", test_attention_gqa},
        {"attention GQA vs MHA on repeated k/v, 1 vs 2 threads (bitwise)", test_attention_gqa_bitwise},
        {"attention causality", test_attention_causal},
        {"rope frequencies, llama3 scaling in all three bands", test_rope_freqs},
        {"rope table, forward/backward vs double FD", test_rope},
        {"rope interleaved <-> rotate-half weight permutation", test_rope_permute},
        {"gelu forward/backward vs double FD", test_gelu},
        {"swiglu forward/backward vs double FD", test_swiglu},
        {"swiglu large gates", test_swiglu_extremes},
        {"residual", test_residual},
        {"crossentropy forward/backward vs double FD", test_crossentropy},
        {"crossentropy large logits", test_crossentropy_large_logits},
        {"vocabulary-split embedding and cross-entropy vs whole", test_vocab_split},
        {"adamw hand-computed steps", test_adamw},
        {"adamw vector vs double loop", test_adamw_vector},
        {"sumsq", test_sumsq},
        {"scale", test_scale},
        {"large shapes (OpenMP branches)", test_large_shapes},
        {"bf16 conversion", test_bf16},
        {"int8 blockwise quantization", test_q8},
        {"GEMM backend check: correct passes, a wrong product fails", test_gemm_check},
        {"GEMM timing of a model's shapes", test_gemm_time_shapes},
        {"OpenBLAS core advice for described CPUs", test_blas_core_rule},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) {
            CU_cleanup_registry();
            return (int)CU_get_error();
        }
    }
    /* the oneDNN backend's tests exist only in a build that has it (say so) */
    if (slm_gemm_available(SLM_GEMM_DNNL)) {
        /* oneDNN's bf16 matmul exists on some CPUs only: where its check fails, that it fails
         * cleanly is what is tested */
        char why[256];
        const int bf16 = slm_gemm_check(SLM_GEMM_DNNL, 1, why, sizeof why) == 0;
        if (!bf16) printf("oneDNN has no bf16 matmul on this CPU (%s): testing that it is refused cleanly\n", why);
        if (!CU_add_test(s, "oneDNN sgemm: matmul and attention vs double FD", test_dnnl_f32) ||
            !CU_add_test(s, bf16 ? "oneDNN bf16 matmul vs bf16-rounded double products"
                                 : "oneDNN bf16 matmul refused by its check on this CPU",
                         bf16 ? test_dnnl_bf16 : test_dnnl_bf16_unavailable)) {
            CU_cleanup_registry();
            return (int)CU_get_error();
        }
    } else {
        printf("built without oneDNN: its backend has no tests in this build\n");
    }
    printf("NMSE tolerance %.0e, FD step %.0e (double), gradient prefill %g\n", NMSE_TOL,
           FD_STEP, (double)GRAD_PREFILL);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    /* CU_basic_run_tests() returns CUE_SUCCESS even when assertions fail: the exit status
     * must come from the failure count, read before the registry is cleaned up. */
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures == 0 ? 0 : 1;
}
