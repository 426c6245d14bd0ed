/* gemm_check.c - choosing a GEMM backend on facts: is it correct on this CPU, and how fast
 * is it on the products the model runs. Also which kernels OpenBLAS picked, and which it
 * should have: an OpenBLAS older than the CPU model falls back to generic (SSE3) kernels
 * several times slower than the ones the CPU can run. */
#include "config.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm_impl.h"
#include "shardlm/cpu.h"
#include "shardlm/kernels.h"
#include "shardlm/timer.h"

const char *slm_blas_core(void)
{
#ifdef HAVE_OPENBLAS_GET_CORENAME
    const char *core = openblas_get_corename();
    return core && core[0] ? core : "unknown";
#else
    return "unknown";
#endif
}

static int is_one_of(const char *core, const char *const *list)
{
    for (; *list; list++)
        if (!strcasecmp(core, *list)) return 1;
    return 0;
}

const char *slm_blas_core_for(const char *core, const slm_cpu_info *cpu)
{
    if (!strcmp(core, "unknown")) return NULL; /* not OpenBLAS, or it does not say: nothing to suggest */
    static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    static const char *const avx2_cores[] = {"Haswell",    "Zen",           "Excavator", "SkylakeX",
                                             "Cooperlake", "SapphireRapids", NULL};
    if (cpu->avx512 && !is_one_of(core, avx512_cores)) return "SkylakeX";
    if (cpu->avx2 && cpu->fma && !is_one_of(core, avx2_cores))
        return !strcmp(cpu->vendor, "AuthenticAMD") || !strcmp(cpu->vendor, "HygonGenuine") ? "Zen" : "Haswell";
    return NULL;
}

const char *slm_blas_core_suggested(void) { return slm_blas_core_for(slm_blas_core(), slm_cpu_get()); }

/* A deterministic fill in [-1, 1). */
static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) * (1.0 / 8388608.0)) - 1.0f;
    }
}

static float bf16_round(float x)
{
    uint16_t h;
    slm_bf16_from_f32(&h, &x, 1);
    uint32_t u = (uint32_t)h << 16;
    float y;
    memcpy(&y, &u, sizeof y);
    return y;
}

/* One product as the kernels call it: the selected backend's fp32 or bf16 path. */
static void product(int bf16, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc, uint16_t *Ah, uint16_t *Bh, size_t na,
                    size_t nb)
{
    if (!bf16) {
        slm_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    slm_bf16_from_f32(Ah, A, na);
    slm_bf16_from_f32(Bh, B, nb);
    slm_gemm_bf16(ta, tb, M, N, K, Ah, lda, Bh, ldb, beta, C, ldc);
}

typedef struct {
    int ta, tb, M, N, K, pad;
    float alpha, beta;
} check_case;

/* The worst error of one case relative to its bound, or INFINITY for a NaN or a write
 * outside C; -1 out of memory. */
static double run_case(const check_case *c, int bf16, uint32_t seed)
{
    const int ar = c->ta ? c->K : c->M, ac = c->ta ? c->M : c->K; /* A as stored: ar x ac */
    const int br = c->tb ? c->N : c->K, bc = c->tb ? c->K : c->N;
    const int lda = ac + c->pad, ldb = bc + c->pad, ldc = c->N + c->pad;
    const size_t na = (size_t)ar * lda, nb = (size_t)br * ldb, nc = (size_t)c->M * ldc;
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C),
          *C0 = malloc(nc * sizeof *C0);
    uint16_t *Ah = malloc(na * sizeof *Ah), *Bh = malloc(nb * sizeof *Bh);
    double worst = -1.0;
    if (A && B && C && C0 && Ah && Bh) {
        fill(A, na, seed);
        fill(B, nb, seed * 7 + 1);
        fill(C0, nc, seed * 13 + 5);
        const float sentinel = 12345.0f; /* the padding columns of C must keep it */
        for (int i = 0; i < c->M; i++)
            for (int j = c->N; j < ldc; j++) C0[(size_t)i * ldc + j] = sentinel;
        memcpy(C, C0, nc * sizeof *C);
        product(bf16, c->ta, c->tb, c->M, c->N, c->K, c->alpha, A, lda, B, ldb, c->beta, C, ldc, Ah, Bh, na, nb);
        worst = 0.0;
        const double u = 6e-8; /* fp32 unit roundoff: the error bound is about K u sum|a b| */
        for (int i = 0; i < c->M && isfinite(worst); i++) {
            for (int j = 0; j < ldc; j++) {
                const double got = C[(size_t)i * ldc + j];
                if (j >= c->N) {
                    if (got != sentinel) worst = INFINITY;
                    continue;
                }
                double ref = 0.0, bound = 0.0;
                for (int k = 0; k < c->K; k++) {
                    double a = c->ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                    double b = c->tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                    if (bf16) a = bf16_round((float)a), b = bf16_round((float)b);
                    ref += a * b;
                    bound += fabs(a * b);
                }
                const double c0 = C0[(size_t)i * ldc + j];
                ref = c->alpha * ref + c->beta * c0;
                bound = fabs(c->alpha) * bound + fabs(c->beta * c0);
                const double err = fabs(got - ref) / (2.0 * (c->K + 2) * u * bound + 1e-30);
                if (!isfinite(got) || isnan(err)) worst = INFINITY;
                else if (err > worst) worst = err;
            }
        }
    }
    free(A);
    free(B);
    free(C);
    free(C0);
    free(Ah);
    free(Bh);
    return worst;
}

int slm_gemm_check(slm_gemm_backend b, int bf16, char *why, size_t len)
{
    /* The products the kernels run (linear forward NT, input gradient NN, weight gradient
     * TN; attention's scaled scores and strided heads), at odd sizes; the last one is
     * large enough that OpenBLAS splits it over its threads. */
    static const check_case cases[] = {
        {0, 1, 37, 29, 53, 0, 1.0f, 0.0f},    {0, 0, 29, 53, 37, 3, 1.0f, 1.0f},
        {1, 0, 53, 37, 29, 0, 1.0f, 1.0f},    {0, 1, 1, 67, 130, 5, 0.125f, 0.0f},
        {1, 1, 17, 19, 23, 2, 1.0f, 1.0f},    {0, 0, 193, 251, 317, 1, 1.0f, 1.0f},
        {0, 1, 130, 257, 96, 0, 1.0f, 1.0f},
    };
    const slm_gemm_backend was_backend = slm_gemm_selected();
    const int was_bf16 = slm_gemm_linear_bf16();
    int rc = -1;
    if (slm_gemm_select(b, bf16) != 0) {
        snprintf(why, len, "not built in");
        return -1;
    }
    rc = 0;
    /* with bf16 the linear layers' bf16 products and attention's fp32 ones are both used */
    for (int pass = bf16 ? 1 : 0; pass >= 0 && rc == 0; pass--) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases && rc == 0; i++) {
            const check_case *c = &cases[i];
            if (pass == 1 && c->alpha != 1.0f) continue; /* the bf16 path multiplies with alpha 1 only */
            const double worst = run_case(c, pass, (uint32_t)(i + 1) * 2654435761u);
            char failure[256];
            if (slm_kernel_failure_take(failure, sizeof failure)) { /* the backend could not run it at all */
                snprintf(why, len, "%s", failure);
                rc = -1;
            } else if (worst < 0) {
                snprintf(why, len, "out of memory for the check");
                rc = -1;
            } else if (!(worst <= 1.0)) {
                snprintf(why, len, "a %s %dx%dx%d product (%c%c) is %s", pass ? "bf16" : "fp32", c->M, c->N, c->K,
                         c->ta ? 'T' : 'N', c->tb ? 'T' : 'N',
                         isfinite(worst) ? "wrong beyond rounding"
                                         : "not finite or wrote outside its output");
                if (isfinite(worst))
                    snprintf(why + strlen(why), len - strlen(why), " (%.3g times the rounding bound)", worst);
                rc = -1;
            }
        }
    }
    slm_gemm_select(was_backend, was_bf16);
    return rc;
}

/* Cut a product down to at most `flop` FLOPs: first its tokens, to no fewer than 256 (with
 * fewer rows oneDNN's kernels ran at half their speed on a 384-wide layer, and what is
 * timed must rank backends as training will), then by halving its largest dimension,
 * keeping every dimension at 64 or more (or what it was). */
static slm_gemm_shape cut_down(slm_gemm_shape s, double flop)
{
    int *dims[3] = {&s.M, &s.N, &s.K}, *tokens = dims[s.token_dim >= 0 && s.token_dim < 3 ? s.token_dim : 0];
    const double per_token = 2.0 * s.M * s.N * (double)s.K / *tokens;
    if (*tokens > 256 && per_token * *tokens > flop) {
        const double fit = flop / per_token;
        *tokens = fit > 256 ? (int)fit : 256;
    }
    for (;;) {
        int *big = s.M >= s.N && s.M >= s.K ? &s.M : s.N >= s.K ? &s.N : &s.K;
        if (2.0 * s.M * s.N * s.K <= flop || *big < 128) return s;
        *big /= 2;
    }
}

/* How far each shape is cut down to be timed: the products share a budget of about 4
 * GFLOP in proportion to their FLOPs in a micro-batch, so the shapes that dominate (an LM
 * head over a large vocabulary, say) are timed near their real size, where backends rank
 * as they will in training, and the whole takes a fraction of a second (at least 20
 * MFLOP each, so a small shape is not timed at a size where the call overhead decides). */
static double timing_budget(const slm_gemm_shape *shapes, int n, int i)
{
    double total = 0.0;
    for (int k = 0; k < n; k++) total += 2.0 * shapes[k].M * shapes[k].N * (double)shapes[k].K * shapes[k].count;
    const double mine = 2.0 * shapes[i].M * shapes[i].N * (double)shapes[i].K * shapes[i].count;
    const double share = total > 0 ? 4e9 * mine / total / (shapes[i].count > 0 ? shapes[i].count : 1) : 0;
    return share > 2e7 ? share : 2e7;
}

void slm_gemm_time_shapes(const slm_gemm_candidate *cands, int nc, const slm_gemm_shape *shapes, int n,
                          double *seconds, double *gflops)
{
    const slm_gemm_backend was_backend = slm_gemm_selected();
    const int was_bf16 = slm_gemm_linear_bf16();
    size_t need_a = 1, need_b = 1, need_c = 1;
    for (int i = 0; i < n; i++) {
        slm_gemm_shape s = cut_down(shapes[i], timing_budget(shapes, n, i));
        if ((size_t)s.M * s.K > need_a) need_a = (size_t)s.M * s.K;
        if ((size_t)s.K * s.N > need_b) need_b = (size_t)s.K * s.N;
        if ((size_t)s.M * s.N > need_c) need_c = (size_t)s.M * s.N;
    }
    float *A = malloc(need_a * sizeof *A), *B = malloc(need_b * sizeof *B), *C = calloc(need_c, sizeof *C);
    uint16_t *Ah = malloc(need_a * sizeof *Ah), *Bh = malloc(need_b * sizeof *Bh);
    const int ok = A && B && C && Ah && Bh;
    double total_flop = 0.0;
    for (int c = 0; c < nc; c++) seconds[c] = ok ? 0.0 : INFINITY, gflops[c] = 0.0;
    if (ok) {
        fill(A, need_a, 3);
        fill(B, need_b, 5);
        slm_bf16_from_f32(Ah, A, need_a);
        slm_bf16_from_f32(Bh, B, need_b);
    }
    enum { REPS = 4 }; /* a warm-up (oneDNN builds its kernel), then the best of three */
    for (int i = 0; i < n && ok; i++) {
        const slm_gemm_shape full = shapes[i], s = cut_down(full, timing_budget(shapes, n, i));
        const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
        double best[SLM_GEMM_MAX_CANDIDATES];
        for (int c = 0; c < nc; c++) best[c] = INFINITY;
        /* the candidates take turns, so a machine that is busier for a moment slows them alike */
        for (int rep = 0; rep < REPS; rep++) {
            for (int c = 0; c < nc; c++) {
                if (slm_gemm_select(cands[c].backend, cands[c].bf16) != 0) continue;
                double t0 = slm_now();
                if (cands[c].bf16 && s.linear) slm_gemm_bf16(s.ta, s.tb, s.M, s.N, s.K, Ah, lda, Bh, ldb, 0.0f, C, s.N);
                else slm_gemm_f32(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A, lda, B, ldb, 0.0f, C, s.N);
                double dt = slm_now() - t0;
                char failure[256];
                if (slm_kernel_failure_take(failure, sizeof failure)) best[c] = NAN; /* it cannot run this product */
                else if (rep > 0 && dt < best[c]) best[c] = dt;
            }
        }
        const double flop = 2.0 * full.M * full.N * (double)full.K * full.count;
        for (int c = 0; c < nc; c++) seconds[c] += isnan(best[c]) ? INFINITY : best[c] * flop / (2.0 * s.M * s.N * (double)s.K);
        total_flop += flop;
    }
    for (int c = 0; c < nc; c++) gflops[c] = seconds[c] > 0 && isfinite(seconds[c]) ? total_flop / seconds[c] / 1e9 : 0.0;
    free(A);
    free(B);
    free(C);
    free(Ah);
    free(Bh);
    slm_gemm_select(was_backend, was_bf16);
}
