/* tests/unit/test_plan.c - CUnit tests of the planner's arithmetic (shardlm/plan.h).
 *
 * The compute-optimal split is checked three ways: against a golden-section search for
 * the minimum of L(N, C/(6N)) written here (no closed form involved), against values
 * worked out separately (Python, double precision) for both built-in laws, and by the
 * inverse (the budget for N gives back N). Parameter counts are checked against GPT-2
 * small's published 124,439,808 and against a model actually laid out by the model
 * module; memory per ZeRO stage against the per-parameter byte counts worked by hand. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <CUnit/Basic.h>
#include "shardlm/model.h"
#include "shardlm/plan.h"

#define REL(a, b) (fabs((a) - (b)) / fabs(b))

/* argmin over log N of L(N, C/(6N)) by golden-section search: L is unimodal in log N */
static double search_optimum(const slm_loss_law *l, double C)
{
    double lo = log(1e3), hi = log(C / 6.0 / 1e3);
    const double g = (sqrt(5.0) - 1) / 2;
    for (int i = 0; i < 300; i++) {
        double x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo);
        double n1 = exp(x1), n2 = exp(x2);
        if (slm_law_loss(l, n1, C / 6.0 / n1) < slm_law_loss(l, n2, C / 6.0 / n2)) hi = x2;
        else lo = x1;
    }
    return exp((lo + hi) / 2);
}

static void test_optimum(void)
{
    const char *names[] = {"hoffmann", "besiroglu"};
    const double budgets[] = {1e15, 6e20, 5.76e23, 1e26};
    for (int k = 0; k < 2; k++) {
        const slm_loss_law *l = slm_law_builtin(names[k]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(l);
        for (int i = 0; i < 4; i++) {
            double N, D;
            slm_law_optimum(l, budgets[i], &N, &D);
            const double ref = search_optimum(l, budgets[i]);
            printf("\n    %s C %.3g: N %.6g (search %.6g), D %.6g", names[k], budgets[i], N, ref, D);
            CU_ASSERT(REL(N, ref) < 1e-6);
            CU_ASSERT(REL(6.0 * N * D, budgets[i]) < 1e-12);
            CU_ASSERT(REL(slm_law_budget_for(l, N), budgets[i]) < 1e-9); /* the inverse */
        }
    }
}

/* Values worked out separately in double precision (Python):
 *   G = (alpha A / (beta B))^(1/(alpha+beta)),  N = G (C/6)^(beta/(alpha+beta)). */
static void test_worked_values(void)
{
    double N, D;
    slm_law_optimum(slm_law_builtin("hoffmann"), 6e20, &N, &D);
    CU_ASSERT(REL(N, 1448394632.2367449) < 1e-12);
    CU_ASSERT(REL(D, 69041957056.66953) < 1e-12);
    CU_ASSERT(fabs(slm_law_loss(slm_law_builtin("hoffmann"), N, D) - 2.381012349799401) < 1e-12);
    slm_law_optimum(slm_law_builtin("besiroglu"), 5.76e23, &N, &D);
    CU_ASSERT(REL(N, 72248702500.38242) < 1e-12);
    CU_ASSERT(REL(D / N, 18.39124495531415) < 1e-12); /* the replication's ~20 tokens per parameter */
    CU_ASSERT(fabs(slm_law_loss(slm_law_builtin("besiroglu"), N, D) - 1.974441108397412) < 1e-12);
    CU_ASSERT_PTR_NULL(slm_law_builtin("kaplan"));
}

#define GPT2(L, H, C, V, T, R) \
    {.arch = "gpt2", .n_layer = L, .n_head = H, .d_model = C, .vocab_size = V, .seq_len = T, .recompute = R}
#define LLAMA(L, H, KV, C, F, V, T, TIE) \
    {.arch = "llama", .n_layer = L, .n_head = H, .n_kv_head = KV, .d_model = C, .ffn_hidden = F, .vocab_size = V, \
     .seq_len = T, .tie_embeddings = TIE}

static double params_of(slm_model_config c)
{
    slm_model_config_defaults(&c);
    return slm_model_params_of(&c);
}

static void test_params(void)
{
    /* published counts: GPT-2 small (tied head) 124,439,808; Llama 3.2 1B (tied, GQA 32/8)
     * 1,235,814,400; TinyLlama 1.1B (untied, GQA 32/4) 1,100,048,384 */
    CU_ASSERT_EQUAL(params_of((slm_model_config)GPT2(12, 12, 768, 50257, 1024, 0)), 124439808.0);
    CU_ASSERT_EQUAL(params_of((slm_model_config)LLAMA(16, 32, 8, 2048, 8192, 128256, 2048, 1)), 1235814400.0);
    CU_ASSERT_EQUAL(params_of((slm_model_config)LLAMA(22, 32, 4, 2048, 5632, 32000, 2048, 0)), 1100048384.0);
    /* the model module's own table for odd shapes, against the formula */
    const slm_model_config cfgs[] = {GPT2(3, 4, 32, 101, 16, 0), GPT2(2, 3, 24, 37, 9, 1),
                                     GPT2(12, 12, 768, 50257, 1024, 0), LLAMA(3, 6, 2, 36, 52, 101, 16, 0),
                                     LLAMA(2, 4, 4, 24, 0, 37, 9, 1)};
    for (int i = 0; i < (int)(sizeof cfgs / sizeof cfgs[0]); i++) {
        slm_model_footprint fp;
        CU_ASSERT_FATAL(slm_model_measure(&cfgs[i], 2, 1, 1, NULL, omp_get_max_threads(), &fp) == SLM_OK);
        CU_ASSERT_EQUAL((double)fp.params, params_of(cfgs[i]));
        CU_ASSERT_EQUAL(fp.nunits, cfgs[i].n_layer + 2);
        /* ... and the activations of a model really created */
        slm_model_t m;
        CU_ASSERT_FATAL(slm_model_create(&cfgs[i], 2, 0, NULL, NULL, NULL, &m) == SLM_OK);
        CU_ASSERT_EQUAL(fp.activation_bytes, slm_model_activation_bytes(m));
        slm_model_destroy(&m);
    }
}

static void test_shape(void)
{
    slm_plan_shape s;
    const slm_model_config gpt2 = GPT2(1, 1, 64, 50257, 1024, 0);
    CU_ASSERT_FATAL(slm_plan_shape_for(124439808.0, &gpt2, 64, 64, &s) == SLM_OK);
    CU_ASSERT_EQUAL(s.model.n_layer, 12);
    CU_ASSERT_EQUAL(s.model.d_model, 768);
    CU_ASSERT_EQUAL(s.model.n_head, 12);
    CU_ASSERT_EQUAL(s.params, 124439808.0);
    /* a 1.45e9 target: within 10%, d_model a multiple of 64, the aspect near 64 */
    slm_model_config wide = gpt2;
    wide.seq_len = 2048;
    CU_ASSERT_FATAL(slm_plan_shape_for(1.45e9, &wide, 64, 64, &s) == SLM_OK);
    printf("\n    1.45e9: n_layer %d d_model %d n_head %d, %.4g parameters", s.model.n_layer, s.model.d_model,
           s.model.n_head, s.params);
    CU_ASSERT(REL(s.params, 1.45e9) <= 0.10);
    CU_ASSERT(s.model.d_model % 64 == 0 && s.model.n_head * 64 == s.model.d_model);
    CU_ASSERT(s.model.d_model / s.model.n_layer >= 32 && s.model.d_model / s.model.n_layer <= 128);
    /* Llama 3.2 1B's count with its grouping (4 query heads per key/value head): the
     * shape keeps the grouping and the architecture's MLP width, and lands within 10% */
    const slm_model_config llama = LLAMA(1, 32, 8, 2048, 0, 128256, 2048, 1);
    CU_ASSERT_FATAL(slm_plan_shape_for(1235814400.0, &llama, 64, 128, &s) == SLM_OK);
    printf("\n    llama 1.24e9: n_layer %d d_model %d n_head %d n_kv_head %d ffn %d, %.4g parameters", s.model.n_layer,
           s.model.d_model, s.model.n_head, s.model.n_kv_head, s.model.ffn_hidden, s.params);
    CU_ASSERT(REL(s.params, 1235814400.0) <= 0.10);
    CU_ASSERT(s.model.n_head == 4 * s.model.n_kv_head && s.model.ffn_hidden % 256 == 0);
    CU_ASSERT(s.model.ffn_hidden >= 8 * s.model.d_model / 3 && s.model.ffn_hidden < 8 * s.model.d_model / 3 + 256);
    CU_ASSERT_EQUAL(s.params, params_of(s.model));
    /* smaller than the smallest model of the vocabulary: refused */
    CU_ASSERT(slm_plan_shape_for(1e5, &gpt2, 64, 64, &s) != SLM_OK);
}

/* Memory per rank by ZeRO stage, worked by hand for a model of N parameters on dp ranks
 * (fp32): stage 0 keeps 4N params + 4N grads + 8N AdamW = 16N; stage 1 shards AdamW (8N/dp)
 * and adds the reduced gradient shard (4N/dp); stage 2 keeps only the gradient shard;
 * stage 3 also the parameter shard. */
static void test_memory_stages(void)
{
    const slm_model_config cfg = GPT2(4, 4, 64, 256, 32, 0);
    const double N = params_of((slm_model_config)GPT2(4, 4, 64, 256, 32, 0)), dp = 4;
    slm_plan_memory m[4];
    for (int z = 0; z < 4; z++) {
        const slm_plan_layout lay = {4, 1, 1, z, 0, 2, 8, 1, 0};
        CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &lay, &m[z]) == SLM_OK);
    }
    const double slack = 4.0 * 16 * 6; /* each unit's shard is rounded up: at most a few floats per unit */
    CU_ASSERT(fabs(m[0].params + m[0].grads + m[0].optimizer - 16 * N) < 1);
    CU_ASSERT(fabs(m[1].params - 4 * N) < 1 && fabs(m[1].grads - (4 * N + 4 * N / dp)) < slack);
    CU_ASSERT(fabs(m[1].optimizer - 8 * N / dp) < slack);
    CU_ASSERT(fabs(m[2].params - 4 * N) < 1 && fabs(m[2].grads - 4 * N / dp) < slack);
    CU_ASSERT(fabs(m[3].params - 4 * N / dp) < slack && fabs(m[3].grads - 4 * N / dp) < slack);
    /* the buffers of stages 2-3, by hand for this model: the embeddings unit is
     * V*C + T*C = 256*64 + 32*64 = 18432 floats, a block 12*64^2 + 13*64 = 49984; a gradient
     * pool holds 3 slots of a block and its received quarter (+1), the embeddings apart;
     * stage 3 gathers into 3 block slots and the embeddings. */
    CU_ASSERT_EQUAL(m[2].grad_buffers, 4.0 * (18432 + 4608 + 3 * (49984 + 12496 + 1)));
    CU_ASSERT_EQUAL(m[3].gathered, 4.0 * (18432 + 3 * 49984));
    CU_ASSERT(m[0].gathered == 0 && m[1].gathered == 0 && m[2].gathered == 0);
    CU_ASSERT(m[0].grad_buffers == 0 && m[1].grad_buffers == 0);
    /* layouts that do not divide are refused */
    const slm_plan_layout bad = {3, 1, 1, 0, 0, 2, 8, 1, 0}; /* 8 sequences over 3 ranks of 2 */
    slm_plan_memory x;
    CU_ASSERT(slm_plan_memory_for(&cfg, &bad, &x) != SLM_OK);
}

/* The step-time model on cases worked by hand: GPT-2 of 4 layers, d_model 64, vocab 256,
 * seq_len 32 has 218,496 parameters and 1,376,256 FLOPs per token; a step of 8 sequences
 * is 256 tokens. */
static void test_step_time(void)
{
    const slm_model_config cfg = GPT2(4, 4, 64, 256, 32, 0);
    const slm_calibration cal = {10.0, 20.0, 1e-5, 2e9, 1e9, 4, 1, 1};
    /* dp 4: compute 1376256 * 256 / 4 / 1e10 s; the gradient all-reduce moves 2 * 3/4 of
     * 218496 * 4 bytes at 1 GB/s, in 6 buckets (the embeddings, 4 blocks, the final norm)
     * of 2 * 3 latencies each */
    slm_plan_layout lay = {4, 1, 1, 0, 0, 2, 8, 1, 0};
    slm_plan_memory mem;
    slm_plan_time t;
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &lay, &mem) == SLM_OK);
    CU_ASSERT_EQUAL(mem.nparams, 218496.0);
    CU_ASSERT_EQUAL(mem.buckets, 6);
    slm_plan_step_time(&cfg, &lay, &mem, &cal, &t);
    CU_ASSERT(REL(t.compute_s, 8.8080384e-3) < 1e-12);
    CU_ASSERT(REL(t.dp_comm_s, 1.310976e-3 + 3.6e-4) < 1e-12);
    CU_ASSERT(t.bubble_s == 0 && t.tp_comm_s == 0 && t.pp_comm_s == 0);
    CU_ASSERT(REL(t.step_s, 8.8080384e-3 + 1.670976e-3) < 1e-12);
    CU_ASSERT(REL(t.overlapped_s, 8.8080384e-3) < 1e-12); /* hidden behind the backward */
    /* bf16 halves the bytes on the wire. Stage 3 gathers for forward and for backward (not
     * the 18432 embedding parameters again) and reduce-scatters: 3 - 18432/218496 halves of
     * an all-reduce of 218496 * 2 bytes, and 3 collectives of 3 latencies per bucket */
    lay.bf16 = 1, lay.zero_stage = 3;
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &lay, &mem) == SLM_OK);
    CU_ASSERT_EQUAL(mem.embed_params, 18432.0);
    slm_plan_step_time(&cfg, &lay, &mem, &cal, &t);
    CU_ASSERT(REL(t.dp_comm_s, (3.0 - 18432.0 / 218496) * 3 / 4 * 436992 / 1e9 + 3 * 3 * 6 * 1e-5) < 1e-12);
    /* stage 2 on dp 2 with 2 micro-steps: a reduce-scatter each, then one all-gather:
     * 3 halves of 218496 * 4 bytes, 3 collectives of 1 latency per bucket */
    slm_plan_layout z2 = {2, 1, 1, 2, 0, 2, 8, 1, 0};
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &z2, &mem) == SLM_OK);
    slm_plan_step_time(&cfg, &z2, &mem, &cal, &t);
    CU_ASSERT(REL(t.dp_comm_s, 3.0 / 2 * 873984 / 1e9 + 3 * 6 * 1e-5) < 1e-12);
    /* buckets of 0.3 MiB (78643 floats): the embeddings alone, then blocks of 49984 floats
     * join a bucket until it holds 0.3 MiB, so two by two, and the final norm finds the last
     * pair's bucket full: 1 + 2 + 1. At 0.4 MiB (104858 floats) three blocks fit before a
     * bucket is full, and the norm joins the fourth block: 1 + 1 + 1. */
    lay.bucket_mb = 0.3;
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &lay, &mem) == SLM_OK);
    CU_ASSERT_EQUAL(mem.buckets, 4);
    lay.bucket_mb = 0.4;
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &lay, &mem) == SLM_OK);
    CU_ASSERT_EQUAL(mem.buckets, 3);
    /* pp 2 x dp 2: 2 micro-batches per step, bubble half the compute; 2 messages of
     * 2 * 32 * 64 floats per micro-batch at 2 GB/s plus a latency each */
    slm_plan_layout pp = {2, 1, 2, 0, 0, 2, 8, 1, 0};
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &pp, &mem) == SLM_OK);
    slm_plan_step_time(&cfg, &pp, &mem, &cal, &t);
    CU_ASSERT(REL(t.compute_s, 8.8080384e-3) < 1e-12);
    CU_ASSERT(REL(t.bubble_s, 8.8080384e-3 / 2) < 1e-12);
    CU_ASSERT(REL(t.pp_comm_s, 2 * 2 * (1e-5 + 16384 / 2e9)) < 1e-12);
    /* tp 2 x dp 2: 4 all-reduces of 2 * 32 * 64 floats per layer per micro-batch (2 of them) */
    slm_plan_layout tp = {2, 2, 1, 0, 0, 2, 8, 1, 0};
    CU_ASSERT_FATAL(slm_plan_memory_for(&cfg, &tp, &mem) == SLM_OK);
    slm_plan_step_time(&cfg, &tp, &mem, &cal, &t);
    CU_ASSERT(REL(t.tp_comm_s, 4 * 4 * 2 * (2.0 * 1 / 2 * 16384 / 1e9 + 2 * 1e-5)) < 1e-12);
}

/* Standard normal deviates from a fixed-seed xorshift64* and Box-Muller. */
static uint64_t rng_state = 88172645463325252ull;
static double uniform01(void)
{
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ull) >> 11) * 0x1p-53;
}
static double gauss(void) { return sqrt(-2 * log(1 - uniform01())) * cos(2 * M_PI * uniform01()); }

/* Losses generated from a known law on a grid of 8 model sizes (1e6-1e9) x 8 token
 * counts (1e7-1e11): the fit recovers the law exactly without noise, and closely with
 * 0.3% multiplicative noise and a few wild runs (which the Huber loss must shrug off). */
static void fit_case(double sigma, int outliers, double tol_exp, double tol_e, double tol_opt)
{
    const slm_loss_law k = {"known", 1.8, 480.0, 2000.0, 0.35, 0.37};
    slm_loss_point pts[64];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            const double N = 1e6 * pow(1e3, i / 7.0), D = 1e7 * pow(1e4, j / 7.0);
            pts[i * 8 + j] = (slm_loss_point){N, D, slm_law_loss(&k, N, D) * exp(sigma * gauss())};
        }
    for (int o = 0; o < outliers; o++) pts[o * 13 % 64].loss *= 1.5; /* diverged runs */
    slm_loss_law fit;
    double obj;
    CU_ASSERT_FATAL(slm_law_fit(pts, 64, 1e-3, &fit, &obj) == SLM_OK);
    double Nk, Dk, Nf, Df;
    slm_law_optimum(&k, 1e21, &Nk, &Dk);
    slm_law_optimum(&fit, 1e21, &Nf, &Df);
    printf("\n    noise %.3f, %d outliers: E %.4f A %.1f B %.1f alpha %.4f beta %.4f (objective %.3g); "
           "N_opt(1e21) %.4g vs %.4g",
           sigma, outliers, fit.E, fit.A, fit.B, fit.alpha, fit.beta, obj, Nf, Nk);
    CU_ASSERT(fabs(fit.alpha - k.alpha) <= tol_exp && fabs(fit.beta - k.beta) <= tol_exp);
    CU_ASSERT(fabs(fit.E - k.E) <= tol_e);
    CU_ASSERT(REL(Nf, Nk) <= tol_opt);
}

static void test_fit(void)
{
    fit_case(0, 0, 1e-4, 1e-4, 1e-3);
    fit_case(0.003, 0, 0.03, 0.05, 0.3);
    fit_case(0.003, 3, 0.03, 0.05, 0.3);
    slm_loss_law l;
    const slm_loss_point few[3] = {{1e6, 1e7, 5}, {1e7, 1e8, 4}, {1e8, 1e9, 3}};
    CU_ASSERT(slm_law_fit(few, 3, 1e-3, &l, NULL) != SLM_OK); /* 5 constants need 5 runs */
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return (int)CU_get_error();
    CU_pSuite s = CU_add_suite("plan", NULL, NULL);
    if (!s || !CU_add_test(s, "compute-optimal split vs golden-section search", test_optimum) ||
        !CU_add_test(s, "compute-optimal split vs values worked separately", test_worked_values) ||
        !CU_add_test(s, "GPT-2 parameter count", test_params) || !CU_add_test(s, "shape search", test_shape) ||
        !CU_add_test(s, "memory per ZeRO stage", test_memory_stages) ||
        !CU_add_test(s, "step time on cases worked by hand", test_step_time) ||
        !CU_add_test(s, "law fit recovers known constants", test_fit)) {
        CU_cleanup_registry();
        return (int)CU_get_error();
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures == 0 ? 0 : 1;
}
