/* test_optim.c - the LR schedule at its corners, clipping, and each optimizer over a small
 * tensor table, checked against values worked out by hand in the comments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
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

/* An optimizer of cfg over the whole of a small table, as one segment. */
static slm_optimizer_t over(const slm_optim_config *cfg, slm_tensor_info *t, int nt, float *p, const float *g,
                            size_t n)
{
    for (int i = 0; i < nt; i++) { /* local part = whole, one run */
        t[i].trainable = 1;
        t[i].rows = t[i].ndim == 2 ? t[i].shape[0] : (int64_t)t[i].count;
        t[i].cols = t[i].ndim == 2 ? t[i].shape[1] : 1;
        if (t[i].ndim == 1) t[i].shape[0] = (int64_t)t[i].count, t[i].shape[1] = 1;
        t[i].nruns = 1;
        t[i].runs[0] = (slm_row_run){0, 0, t[i].rows};
    }
    slm_optim_segment seg = {0, n, p, g};
    slm_optimizer_t o = NULL;
    CU_ASSERT_FATAL(slm_optimizer_create(cfg, t, nt, &seg, 1, &o) == SLM_OK);
    return o;
}

static void test_adamw_table(void)
{
    /* Two tensors: a decayed 2-element matrix and a non-decayed 1-element bias.
     * lr 0.1, beta1 0.9, beta2 0.999, eps 1e-8, wd 0.5, t = 1.
     * p=1, g=0.5 (decay): p*(1-0.05)=0.95; m=0.05, v=0.00025; mhat=0.5, vhat=0.25;
     *   update 0.1*0.5/(0.5+1e-8) = 0.09999999800 -> 0.85000000200
     * p=-2, g=-1 (decay): p*0.95=-1.9; mhat=-1, vhat=1 -> -1.9 + 0.1 = -1.80000000100
     * p=3, g=2 (no decay): mhat=2, vhat=4 -> 3 - 0.1 = 2.9 */
    slm_tensor_info t[2] = {{.name = "w", .ndim = 2, .shape = {1, 2}, .offset = 0, .count = 2, .decay = 1},
                            {.name = "b", .ndim = 1, .offset = 2, .count = 1, .decay = 0}};
    float p[3] = {1.0f, -2.0f, 3.0f}, g[3] = {0.5f, -1.0f, 2.0f};
    slm_optim_config c;
    slm_optim_config_defaults(&c);
    c.beta2 = 0.999;
    c.weight_decay = 0.5;
    slm_optimizer_t opt = over(&c, t, 2, p, g, 3);
    CU_ASSERT_STRING_EQUAL(slm_optimizer_name(opt), "adamw");
    slm_optimizer_step(opt, 0.1, 1.0f);
    NEAR(p[0], 0.850000002, 1e-6);
    NEAR(p[1], -1.800000001, 1e-6);
    NEAR(p[2], 2.9, 1e-6);
    CU_ASSERT_EQUAL(slm_optimizer_steps(opt), 1);
    /* t = 2 with the same gradient on the bias: m = 0.9*0.2+0.2 = 0.38, v = 0.999*0.004+0.004
     * = 0.007996; mhat = 0.38/0.19 = 2, vhat = 0.007996/0.001999 = 4 -> 2.9 - 0.1 = 2.8 */
    slm_optimizer_step(opt, 0.1, 1.0f);
    NEAR(p[2], 2.8, 1e-5);
    /* the moments are the groups adam_m and adam_v, at the parameters' positions */
    CU_ASSERT_EQUAL(slm_optimizer_num_groups(opt), 2);
    CU_ASSERT_STRING_EQUAL(slm_optimizer_group(opt, 0, NULL, NULL, NULL), "adam_m");
    NEAR(*slm_optimizer_state_at(opt, 0, 2), 0.38, 1e-6);
    NEAR(*slm_optimizer_state_at(opt, 1, 2), 0.007996, 1e-6); /* 1 - 0.999 in float: 1.00005e-3 */
    CU_ASSERT_EQUAL(slm_optimizer_bytes(opt), 24.0);
    slm_optimizer_destroy(&opt);
    CU_ASSERT_PTR_NULL(opt);
    slm_optimizer_destroy(&opt); /* NULL is a no-op */
}

static void test_sgd(void)
{
    /* p 1, g 0.5, lr 0.1, momentum 0.9, Nesterov. Step 1: b = d = 0.5 (PyTorch starts the
     * buffer at the first gradient), d = 0.5 + 0.9*0.5 = 0.95, p = 1 - 0.095 = 0.905. Step 2:
     * b = 0.9*0.5 + 0.5 = 0.95, d = 0.5 + 0.9*0.95 = 1.355, p = 0.905 - 0.1355 = 0.7695. */
    slm_tensor_info t[1] = {{.name = "b", .ndim = 1, .offset = 0, .count = 1}};
    float p[1] = {1.0f}, g[1] = {0.5f};
    slm_optim_config c;
    slm_optim_config_defaults(&c);
    strcpy(c.name, "sgd");
    c.sgd.momentum = 0.9;
    c.sgd.nesterov = 1;
    slm_optimizer_t o = over(&c, t, 1, p, g, 1);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 0.905, 1e-7);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 0.7695, 1e-6);
    slm_optimizer_destroy(&o);
    /* dampening 0.5, no Nesterov, weight decay 0.2 on a decayed tensor (L2: d = g + 0.2 p):
     * step 1 d = 0.5 + 0.2 = 0.7 = b, p = 1 - 0.07 = 0.93; step 2 d = 0.5 + 0.186 = 0.686,
     * b = 0.9*0.7 + 0.5*0.686 = 0.973, p = 0.93 - 0.0973 = 0.8327 */
    t[0].decay = 1;
    p[0] = 1.0f;
    c.sgd.nesterov = 0;
    c.sgd.dampening = 0.5;
    c.weight_decay = 0.2;
    o = over(&c, t, 1, p, g, 1);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 0.93, 1e-7);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 0.8327, 1e-6);
    slm_optimizer_destroy(&o);
    /* without momentum: no state at all */
    c.sgd.momentum = 0;
    o = over(&c, t, 1, p, g, 1);
    CU_ASSERT_EQUAL(slm_optimizer_num_groups(o), 0);
    CU_ASSERT_EQUAL(slm_optimizer_bytes(o), 0.0);
    slm_optimizer_destroy(&o);
}

static void test_lamb(void)
{
    /* p = (3, 4), |p| = 5; g = (1, -1); step 1, eps 0, no decay: m^ = g, v^ = g^2, so
     * r = (1, -1), |r| = sqrt 2, trust = 5/sqrt 2; lr 0.1: p -= 0.1 * 3.5355339 * r */
    slm_tensor_info t[1] = {{.name = "w", .ndim = 2, .shape = {1, 2}, .offset = 0, .count = 2}};
    float p[2] = {3.0f, 4.0f}, g[2] = {1.0f, -1.0f};
    slm_optim_config c;
    slm_optim_config_defaults(&c);
    strcpy(c.name, "lamb");
    c.eps = 0;
    c.beta2 = 0.999;
    slm_optimizer_t o = over(&c, t, 1, p, g, 2);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 3.0 - 0.35355339, 1e-6);
    NEAR(p[1], 4.0 + 0.35355339, 1e-6);
    slm_optimizer_destroy(&o);
    /* clamped to 2: p = (2.8, 4.2) */
    p[0] = 3.0f, p[1] = 4.0f;
    c.lamb.max_trust = 2;
    o = over(&c, t, 1, p, g, 2);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], 2.8, 1e-5); /* m^ = g up to float rounding of 1 - 0.9 */
    NEAR(p[1], 4.2, 1e-5);
    slm_optimizer_destroy(&o);
    /* a zero parameter: trust 1 (p = -0.1 r) */
    p[0] = p[1] = 0.0f;
    c.lamb.max_trust = 0;
    o = over(&c, t, 1, p, g, 2);
    slm_optimizer_step(o, 0.1, 1.0f);
    NEAR(p[0], -0.1, 1e-6);
    NEAR(p[1], 0.1, 1e-6);
    slm_optimizer_destroy(&o);
}

static void test_adafactor(void)
{
    /* g = [[1, 2], [3, 4]], p all 1, step 1: beta2_1 = 1 - 1^-0.8 = 0, so R = row means of g^2
     * = (2.5, 12.5), C = column means = (5, 10), mean R = 7.5, V = R_i C_j / 7.5 =
     * [[5/3, 10/3], [25/3, 50/3]], u = g / sqrt V = [[0.7745967, 1.0954451], [1.0392305,
     * 0.9797959]]; RMS(u) = sqrt(0.96) < 1: no clipping. Relative step min(1e-2, 1) times
     * RMS(p) = 1: p = 1 - 0.01 u. */
    slm_tensor_info t[2] = {{.name = "w", .ndim = 2, .shape = {2, 2}, .offset = 0, .count = 4},
                            {.name = "b", .ndim = 1, .offset = 4, .count = 2}};
    float p[6] = {1, 1, 1, 1, 2, 2}, g[6] = {1, 2, 3, 4, 0.5f, -0.5f};
    slm_optim_config c;
    slm_optim_config_defaults(&c);
    strcpy(c.name, "adafactor");
    slm_optimizer_t o = over(&c, t, 2, p, g, 6);
    slm_optimizer_step(o, 123.0, 1.0f); /* the schedule's lr is not used */
    const double u[4] = {0.7745967, 1.0954451, 1.0392305, 0.9797959};
    for (int i = 0; i < 4; i++) NEAR(p[i], 1.0 - 0.01 * u[i], 1e-7);
    /* the bias, unfactored: V = g^2, u = +-1, RMS(p) = 2: p = 2 -+ 0.02 */
    NEAR(p[4], 1.98, 1e-6);
    NEAR(p[5], 2.02, 1e-6);
    NEAR(slm_optimizer_step_size(o), 0.01, 1e-15);
    /* the factored state: R and C of the matrix, V of the bias */
    size_t n;
    const char *names[3] = {"adafactor_row", "adafactor_col", "adafactor_v"};
    const double want[3][2] = {{2.5, 12.5}, {5, 10}, {0.25, 0.25}};
    for (int k = 0; k < 3; k++) {
        slm_optim_state_kind kind;
        CU_ASSERT_STRING_EQUAL(slm_optimizer_group(o, k, &kind, NULL, NULL), names[k]);
        const float *v = kind == SLM_OPT_STATE_REPLICATED ? slm_optimizer_replicated(o, k, &n)
                                                          : slm_optimizer_state_at(o, k, 4);
        NEAR(v[0], want[k][0], 1e-6);
        NEAR(v[1], want[k][1], 1e-6);
    }
    CU_ASSERT_PTR_NULL(slm_optimizer_state_at(o, 2, 0)); /* no unfactored moment for the matrix */
    /* its bytes are those the planner counts */
    const slm_optim_segment whole = {0, 6, NULL, NULL};
    CU_ASSERT_EQUAL(slm_optimizer_bytes(o), slm_optim_bytes_for(&c, t, 2, &whole, 1));
    slm_optimizer_destroy(&o);
    /* update clipping: g = (4, 0) on the unfactored bias gives u = (1, 0) on step 1 (V = g^2 +
     * 1e-30), RMS sqrt(1/2) -> with clip_threshold 0.5 divided by sqrt(2) */
    float q[2] = {1, 1}, h[2] = {4, 0};
    slm_tensor_info b[1] = {{.name = "b", .ndim = 1, .offset = 0, .count = 2}};
    c.adafactor.clip_threshold = 0.5;
    c.adafactor.scale_parameter = 0;
    o = over(&c, b, 1, q, h, 2);
    slm_optimizer_step(o, 0, 1.0f);
    NEAR(q[0], 1.0 - 0.01 / sqrt(2.0), 1e-7);
    CU_ASSERT_EQUAL(q[1], 1.0f);
    slm_optimizer_destroy(&o);
}

/* Adafactor and LAMB sum their statistics in parallel - rows, blocks of columns, blocks of
 * elements - each in an order that does not depend on the threads: a 400 x 200 matrix
 * (80000 elements) and a 5000-element vector end bitwise the same on 1 and 2 threads. A
 * race in those sums shows here (most runs); a thread-dependent order in double sums
 * seldom reaches the float parameters, and may not. */
static void test_thread_independent(void)
{
    const char *names[2] = {"adafactor", "lamb"};
    for (int k = 0; k < 2; k++) {
        float *p[2], *g = malloc(85000 * sizeof(float));
        for (size_t i = 0; i < 85000; i++) g[i] = (float)sin(0.37 * (double)i) * (1.0f + (float)(i % 7));
        for (int run = 0; run < 2; run++) {
            slm_tensor_info t[2] = {{.name = "w", .ndim = 2, .shape = {400, 200}, .offset = 0, .count = 80000, .decay = 1},
                                    {.name = "b", .ndim = 1, .offset = 80000, .count = 5000}};
            p[run] = malloc(85000 * sizeof(float));
            for (size_t i = 0; i < 85000; i++) p[run][i] = (float)cos(0.11 * (double)i);
            slm_optim_config c;
            slm_optim_config_defaults(&c);
            strcpy(c.name, names[k]);
            c.adafactor.beta1 = 0.9;
            omp_set_num_threads(run + 1);
            slm_optimizer_t o = over(&c, t, 2, p[run], g, 85000);
            for (int step = 0; step < 3; step++) slm_optimizer_step(o, 1e-2, 0.5f);
            slm_optimizer_destroy(&o);
        }
        CU_ASSERT(memcmp(p[0], p[1], 85000 * sizeof(float)) == 0);
        CU_ASSERT(p[0][0] != 1.0f); /* it moved */
        free(p[0]);
        free(p[1]);
        free(g);
    }
    omp_set_num_threads(1);
}

static void test_config(void)
{
    slm_optim_config c;
    slm_optim_config_defaults(&c);
    CU_ASSERT_EQUAL(slm_optim_config_check(&c), SLM_OK);
    strcpy(c.name, "adam");
    CU_ASSERT_EQUAL(slm_optim_config_check(&c), SLM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(slm_error_message(), "train.optimizer = adam"));
    strcpy(c.name, "sgd");
    c.sgd.nesterov = 1;
    CU_ASSERT_EQUAL(slm_optim_config_check(&c), SLM_ERR_CONFIG); /* Nesterov without momentum */
    CU_ASSERT_PTR_NOT_NULL(strstr(slm_error_message(), "sgd.nesterov"));
    strcpy(c.name, "adafactor");
    c.adafactor.decay_rate = 0.5;
    CU_ASSERT_EQUAL(slm_optim_config_check(&c), SLM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(slm_error_message(), "adafactor.decay_rate"));
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
    CU_add_test(s, "sgd: momentum, nesterov, dampening, L2", test_sgd);
    CU_add_test(s, "lamb: trust ratio and its clamp", test_lamb);
    CU_add_test(s, "adafactor: factored moment, relative step, clipping", test_adafactor);
    CU_add_test(s, "optimizer settings refused by key", test_config);
    CU_add_test(s, "adafactor and lamb: the same bits on 1 and 2 threads", test_thread_independent);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures != 0;
}
