/* test_optim.c - the LR schedule at its corners, clipping, and AdamW over a tensor
 * table, checked against values worked out by hand in the comments. */
#include <math.h>
#include <CUnit/Basic.h>
#include "shardlm/optim.h"

#define NEAR(a, b, tol) CU_ASSERT(fabs((double)(a) - (double)(b)) <= (tol))

static void test_lr_warmup(void)
{
    /* lr 1e-3, 10 warmup of 100 steps: step 0 -> 1e-4, step 4 -> 5e-4, step 9 -> 1e-3 */
    NEAR(slm_lr_at(0, 100, 10, 1e-3, 1e-4), 1e-4, 1e-15);
    NEAR(slm_lr_at(4, 100, 10, 1e-3, 1e-4), 5e-4, 1e-15);
    NEAR(slm_lr_at(9, 100, 10, 1e-3, 1e-4), 1e-3, 1e-15);
}

static void test_lr_cosine(void)
{
    /* after warmup: r = (step-10)/90. step 10: r=0 -> lr. step 55: r=0.5 -> midpoint
     * 5.5e-4. step 100 (past the end): r clamped to 1 -> min_lr. */
    NEAR(slm_lr_at(10, 100, 10, 1e-3, 1e-4), 1e-3, 1e-15);
    NEAR(slm_lr_at(55, 100, 10, 1e-3, 1e-4), 5.5e-4, 1e-15);
    NEAR(slm_lr_at(100, 100, 10, 1e-3, 1e-4), 1e-4, 1e-15);
    NEAR(slm_lr_at(1000, 100, 10, 1e-3, 1e-4), 1e-4, 1e-15);
    /* step 99 of 100: r = 89/90; 1e-4 + 0.5*(1+cos(pi*89/90))*9e-4 */
    NEAR(slm_lr_at(99, 100, 10, 1e-3, 1e-4), 1e-4 + 0.5 * (1 + cos(M_PI * 89.0 / 90.0)) * 9e-4, 1e-15);
}

static void test_lr_corners(void)
{
    /* no warmup: step 0 is the peak */
    NEAR(slm_lr_at(0, 50, 0, 2e-3, 0.0), 2e-3, 1e-15);
    /* warmup as long as the run: every step is warmup */
    NEAR(slm_lr_at(4, 5, 5, 1.0, 0.5), 1.0, 1e-15);
    NEAR(slm_lr_at(0, 5, 5, 1.0, 0.5), 0.2, 1e-15);
    /* one step after warmup when steps == warmup + 1: r = 0 -> lr */
    NEAR(slm_lr_at(5, 6, 5, 1.0, 0.5), 1.0, 1e-15);
    /* min_lr == lr: constant after warmup */
    NEAR(slm_lr_at(30, 100, 10, 3e-4, 3e-4), 3e-4, 1e-15);
    /* a single-step run without warmup */
    NEAR(slm_lr_at(0, 1, 0, 1e-3, 1e-5), 1e-3, 1e-15);
}

static void test_clip(void)
{
    /* g = (3,4): norm 5. clip to 1: factor 1/(5+1e-6). */
    float g[2] = {3.0f, 4.0f};
    slm_clip_grads(g, 2, 5.0, 1.0);
    NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-7);
    /* below the threshold: untouched; max_norm 0: off */
    float h[2] = {0.3f, 0.4f};
    slm_clip_grads(h, 2, 0.5, 1.0);
    CU_ASSERT_EQUAL(h[0], 0.3f);
    slm_clip_grads(g, 2, 1000.0, 0.0);
    NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
}

static void test_adamw_table(void)
{
    /* Two tensors: a decayed 2-element matrix and a non-decayed 1-element bias.
     * lr 0.1, beta1 0.9, beta2 0.999, eps 1e-8, wd 0.5, t = 1.
     * p=1, g=0.5 (decay): p*(1-0.05)=0.95; m=0.05, v=0.00025; mhat=0.5, vhat=0.25;
     *   update 0.1*0.5/(0.5+1e-8) = 0.09999999800 -> 0.85000000200
     * p=-2, g=-1 (decay): p*0.95=-1.9; mhat=-1, vhat=1 -> -1.9 + 0.1 = -1.80000000100
     * p=3, g=2 (no decay): mhat=2, vhat=4 -> 3 - 0.1 = 2.9 */
    slm_tensor_info t[2] = {{.name = "w", .ndim = 2, .offset = 0, .count = 2, .decay = 1},
                            {.name = "b", .ndim = 1, .offset = 2, .count = 1, .decay = 0}};
    float p[3] = {1.0f, -2.0f, 3.0f}, g[3] = {0.5f, -1.0f, 2.0f};
    slm_adamw_t opt = NULL;
    CU_ASSERT_FATAL(slm_adamw_create(3, 0.9, 0.999, 1e-8, 0.5, &opt) == SLM_OK);
    slm_adamw_step(opt, p, g, t, 2, 0.1);
    NEAR(p[0], 0.850000002, 1e-6);
    NEAR(p[1], -1.800000001, 1e-6);
    NEAR(p[2], 2.9, 1e-6);
    CU_ASSERT_EQUAL(slm_adamw_steps(opt), 1);
    /* t = 2 with the same gradient on the bias: m = 0.9*0.2+0.2 = 0.38, v = 0.999*0.004+0.004
     * = 0.007996; mhat = 0.38/0.19 = 2, vhat = 0.007996/0.001999 = 4 -> 2.9 - 0.1 = 2.8 */
    slm_adamw_step(opt, p, g, t, 2, 0.1);
    NEAR(p[2], 2.8, 1e-5);
    slm_adamw_destroy(&opt);
    CU_ASSERT_PTR_NULL(opt);
    slm_adamw_destroy(&opt); /* NULL is a no-op */
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("optim", NULL, NULL);
    CU_add_test(s, "lr warmup", test_lr_warmup);
    CU_add_test(s, "lr cosine", test_lr_cosine);
    CU_add_test(s, "lr corners", test_lr_corners);
    CU_add_test(s, "grad clipping", test_clip);
    CU_add_test(s, "adamw over a tensor table", test_adamw_table);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures != 0;
}
