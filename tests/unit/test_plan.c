/* tests/unit/test_plan.c - CUnit tests of the planner's arithmetic (shardlm/plan.h).
 *
 * The compute-optimal split is checked three ways: against a golden-section search for
 * the minimum of L(N, C/(6N)) written here (no closed form involved), against values
 * worked out separately (Python, double precision) for both built-in laws, and by the
 * inverse (the budget for N gives back N). Parameter counts are checked against GPT-2
 * small's published 124,439,808 and against a model actually laid out by the model
 * module; memory per ZeRO stage against the per-parameter byte counts worked by hand. */
#include <math.h>
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

static void test_params(void)
{
    /* GPT-2 small, tied head: 124,439,808 parameters */
    CU_ASSERT_EQUAL(slm_plan_gpt2_params(12, 768, 50257, 1024), 124439808.0);
    /* the model module's own table for odd shapes */
    const slm_gpt_config cfgs[] = {{3, 4, 32, 101, 16, 0}, {2, 3, 24, 37, 9, 1}, {12, 12, 768, 50257, 1024, 0}};
    for (int i = 0; i < 3; i++) {
        slm_gpt_footprint fp;
        CU_ASSERT_FATAL(slm_gpt_measure(&cfgs[i], 2, 1, NULL, omp_get_max_threads(), &fp) == SLM_OK);
        CU_ASSERT_EQUAL((double)fp.params, slm_plan_gpt2_params(cfgs[i].n_layer, cfgs[i].d_model,
                                                                cfgs[i].vocab_size, cfgs[i].seq_len));
        CU_ASSERT_EQUAL(fp.nunits, cfgs[i].n_layer + 2);
        /* ... and the activations of a model really created */
        slm_gpt_t m;
        CU_ASSERT_FATAL(slm_gpt_create(&cfgs[i], 2, 0, NULL, NULL, &m) == SLM_OK);
        CU_ASSERT_EQUAL(fp.activation_bytes, slm_gpt_activation_bytes(m));
        slm_gpt_destroy(&m);
    }
}

static void test_shape(void)
{
    slm_plan_shape s;
    CU_ASSERT_FATAL(slm_plan_shape_for(124439808.0, 50257, 1024, 64, 64, &s) == SLM_OK);
    CU_ASSERT_EQUAL(s.n_layer, 12);
    CU_ASSERT_EQUAL(s.d_model, 768);
    CU_ASSERT_EQUAL(s.n_head, 12);
    CU_ASSERT_EQUAL(s.params, 124439808.0);
    /* a 1.45e9 target: within 10%, d_model a multiple of 64, the aspect near 64 */
    CU_ASSERT_FATAL(slm_plan_shape_for(1.45e9, 50257, 2048, 64, 64, &s) == SLM_OK);
    printf("\n    1.45e9: n_layer %d d_model %d n_head %d, %.4g parameters", s.n_layer, s.d_model, s.n_head, s.params);
    CU_ASSERT(REL(s.params, 1.45e9) <= 0.10);
    CU_ASSERT(s.d_model % 64 == 0 && s.n_head * 64 == s.d_model);
    CU_ASSERT(s.d_model / s.n_layer >= 32 && s.d_model / s.n_layer <= 128);
    /* smaller than the smallest model of the vocabulary: refused */
    CU_ASSERT(slm_plan_shape_for(1e5, 50257, 1024, 64, 64, &s) != SLM_OK);
}

/* Memory per rank by ZeRO stage, worked by hand for a model of N parameters on dp ranks
 * (fp32): stage 0 keeps 4N params + 4N grads + 8N AdamW = 16N; stage 1 shards AdamW (8N/dp)
 * and adds the reduced gradient shard (4N/dp); stage 2 keeps only the gradient shard;
 * stage 3 also the parameter shard. */
static void test_memory_stages(void)
{
    const slm_gpt_config cfg = {4, 4, 64, 256, 32, 0};
    const double N = slm_plan_gpt2_params(4, 64, 256, 32), dp = 4;
    slm_plan_memory m[4];
    for (int z = 0; z < 4; z++) {
        const slm_plan_layout lay = {4, 1, 1, z, 0, 2, 8, 1};
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
    const slm_plan_layout bad = {3, 1, 1, 0, 0, 2, 8, 1}; /* 8 sequences over 3 ranks of 2 */
    slm_plan_memory x;
    CU_ASSERT(slm_plan_memory_for(&cfg, &bad, &x) != SLM_OK);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return (int)CU_get_error();
    CU_pSuite s = CU_add_suite("plan", NULL, NULL);
    if (!s || !CU_add_test(s, "compute-optimal split vs golden-section search", test_optimum) ||
        !CU_add_test(s, "compute-optimal split vs values worked separately", test_worked_values) ||
        !CU_add_test(s, "GPT-2 parameter count", test_params) || !CU_add_test(s, "shape search", test_shape) ||
        !CU_add_test(s, "memory per ZeRO stage", test_memory_stages)) {
        CU_cleanup_registry();
        return (int)CU_get_error();
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures == 0 ? 0 : 1;
}
