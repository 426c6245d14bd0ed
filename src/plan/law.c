/* law.c - loss laws L(N, D) = E + A/N^alpha + B/D^beta and their compute-optimal split. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "shardlm/plan.h"
#include "plan_impl.h"

static const slm_loss_law builtin[] = {
    {"hoffmann", 1.69, 406.4, 410.7, 0.34, 0.28},
    {"besiroglu", 1.8172, 482.01, 2085.43, 0.3478, 0.3658},
};

const slm_loss_law *slm_law_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
        if (!strcmp(name, builtin[i].name)) return &builtin[i];
    return NULL;
}

slm_status slm_law_load(const char *path, slm_loss_law *law)
{
    static const char *const keys[] = {"E", "A", "B", "alpha", "beta"};
    double v[5];
    SLM_CALL(slm_plan_json_numbers(path, keys, 5, v, "a law needs E, A, B, alpha and beta"));
    SLM_CHECK(v[1] > 0 && v[2] > 0 && v[3] > 0 && v[4] > 0 && isfinite(v[0]), SLM_ERR_FORMAT,
              "%s: A, B, alpha and beta must be positive (A %g, B %g, alpha %g, beta %g)", path, v[1], v[2], v[3],
              v[4]);
    const char *base = strrchr(path, '/');
    snprintf(law->name, sizeof law->name, "%s", base ? base + 1 : path);
    law->E = v[0], law->A = v[1], law->B = v[2], law->alpha = v[3], law->beta = v[4];
    return SLM_OK;
}

double slm_law_loss(const slm_loss_law *l, double N, double D)
{
    return l->E + l->A / pow(N, l->alpha) + l->B / pow(D, l->beta);
}

/* G = (alpha A / (beta B))^(1/(alpha+beta)), from setting dL/dN = 0 with D = C/(6N). */
static double g_factor(const slm_loss_law *l)
{
    return pow(l->alpha * l->A / (l->beta * l->B), 1.0 / (l->alpha + l->beta));
}

void slm_law_optimum(const slm_loss_law *l, double C, double *N, double *D)
{
    const double n = g_factor(l) * pow(C / 6.0, l->beta / (l->alpha + l->beta));
    *N = n;
    *D = C / 6.0 / n;
}

double slm_law_budget_for(const slm_loss_law *l, double N)
{
    return 6.0 * pow(N / g_factor(l), (l->alpha + l->beta) / l->beta);
}
