/* fit.c - fitting L(N, D) = E + A/N^alpha + B/D^beta to measured losses, the way Hoffmann
 * et al. 2022 fit theirs and Besiroglu et al. 2024 refit it: in log space, with
 * E = e^e, A = e^a, B = e^b, the model of log L is
 *     m(N, D) = LSE(a - alpha log N, b - beta log D, e)
 * and the objective is the Huber loss (delta) of m - log L summed over the runs. It is
 * minimised with BFGS (analytic gradient, backtracking line search) from every point of a
 * grid of starts; the best minimum wins. The replication found the original fit stopped
 * early, so every start runs to a small gradient, not to an iteration budget. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/plan.h"

enum { P = 5 }; /* a, b, e, alpha, beta */

typedef struct fit_data {
    const double *lN, *lD, *lL; /* the runs' logs of N, D and loss */
    int n;
    double delta;
} fit_data;

static double huber(double r, double d) { return fabs(r) <= d ? 0.5 * r * r : d * (fabs(r) - 0.5 * d); }
static double huber_slope(double r, double d) { return fabs(r) <= d ? r : (r > 0 ? d : -d); }

/* objective and its gradient g at x */
static double objective(const fit_data *f, const double *x, double *g)
{
    double sum = 0;
    if (g) memset(g, 0, P * sizeof *g);
    for (int i = 0; i < f->n; i++) {
        const double lN = f->lN[i], lD = f->lD[i];
        const double u = x[0] - x[3] * lN, v = x[1] - x[4] * lD, w = x[2];
        const double mx = fmax(u, fmax(v, w));
        const double eu = exp(u - mx), ev = exp(v - mx), ew = exp(w - mx), s = eu + ev + ew;
        const double r = mx + log(s) - f->lL[i];
        sum += huber(r, f->delta);
        if (g) {
            const double h = huber_slope(r, f->delta) / s;
            g[0] += h * eu;
            g[1] += h * ev;
            g[2] += h * ew;
            g[3] -= h * eu * lN;
            g[4] -= h * ev * lD;
        }
    }
    return sum;
}

/* BFGS from x (updated in place); returns the objective at the end */
static double bfgs(const fit_data *f, double *x)
{
    double H[P][P] = {{0}}, g[P], gn[P], xn[P], s[P], y[P], d[P];
    for (int i = 0; i < P; i++) H[i][i] = 1;
    double fx = objective(f, x, g);
    for (int it = 0; it < 1000; it++) {
        double gnorm = 0;
        for (int i = 0; i < P; i++) gnorm += g[i] * g[i];
        if (sqrt(gnorm) < 1e-11) break;
        double slope = 0;
        for (int i = 0; i < P; i++) {
            d[i] = 0;
            for (int j = 0; j < P; j++) d[i] -= H[i][j] * g[j];
            slope += d[i] * g[i];
        }
        if (slope >= 0) { /* not a descent direction: restart from steepest descent */
            memset(H, 0, sizeof H);
            for (int i = 0; i < P; i++) H[i][i] = 1, d[i] = -g[i];
            slope = -gnorm;
        }
        double t = 1, fn = 0;
        for (int k = 0; k < 60; k++, t *= 0.5) { /* Armijo backtracking */
            for (int i = 0; i < P; i++) xn[i] = x[i] + t * d[i];
            fn = objective(f, xn, gn);
            if (isfinite(fn) && fn <= fx + 1e-4 * t * slope) break;
        }
        if (!(isfinite(fn) && fn <= fx)) break; /* no progress along d */
        double sy = 0;
        for (int i = 0; i < P; i++) s[i] = xn[i] - x[i], y[i] = gn[i] - g[i], sy += s[i] * y[i];
        const double improvement = fx - fn;
        memcpy(x, xn, sizeof xn);
        memcpy(g, gn, sizeof gn);
        fx = fn;
        if (sy > 1e-300) { /* H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T */
            const double rho = 1 / sy;
            double Hy[P], yHy = 0;
            for (int i = 0; i < P; i++) {
                Hy[i] = 0;
                for (int j = 0; j < P; j++) Hy[i] += H[i][j] * y[j];
                yHy += y[i] * Hy[i];
            }
            for (int i = 0; i < P; i++)
                for (int j = 0; j < P; j++)
                    H[i][j] += rho * ((1 + rho * yHy) * s[i] * s[j] - Hy[i] * s[j] - s[i] * Hy[j]);
        }
        if (improvement <= 1e-18 * (1 + fx) && t < 1e-12) break;
    }
    return fx;
}

slm_status slm_law_fit(const slm_loss_point *pts, int n, double delta, slm_loss_law *out, double *objective_out)
{
    SLM_CHECK(n >= P, SLM_ERR_ARG, "a fit of the 5 constants needs at least 5 runs, not %d", n);
    for (int i = 0; i < n; i++)
        SLM_CHECK(pts[i].N > 1 && pts[i].D > 1 && pts[i].loss > 0 && isfinite(pts[i].loss), SLM_ERR_ARG,
                  "run %d: parameters %g, tokens %g and loss %g must be positive", i + 1, pts[i].N, pts[i].D,
                  pts[i].loss);
    SLM_CHECK(delta > 0, SLM_ERR_ARG, "the Huber delta %g must be positive", delta);
    double *logs = malloc(3 * (size_t)n * sizeof *logs);
    SLM_CHECK(logs, SLM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        logs[i] = log(pts[i].N), logs[n + i] = log(pts[i].D), logs[2 * n + i] = log(pts[i].loss);
    const fit_data f = {logs, logs + n, logs + 2 * n, n, delta};
    /* the grid of starts: log A and log B 0 to 24, log E -1 to 1, exponents 0.2 to 1.4 */
    static const double ab[] = {0, 8, 16, 24}, es[] = {-1, 0, 1}, ex[] = {0.2, 0.6, 1.0, 1.4};
    double best[P] = {0}, best_f = INFINITY;
    for (int ia = 0; ia < 4; ia++)
        for (int ib = 0; ib < 4; ib++)
            for (int ie = 0; ie < 3; ie++)
                for (int il = 0; il < 4; il++)
                    for (int ibt = 0; ibt < 4; ibt++) {
                        double x[P] = {ab[ia], ab[ib], es[ie], ex[il], ex[ibt]};
                        const double fx = bfgs(&f, x);
                        if (fx < best_f) best_f = fx, memcpy(best, x, sizeof best);
                    }
    free(logs);
    SLM_CHECK(isfinite(best_f), SLM_ERR_ARG, "the fit found no finite minimum");
    snprintf(out->name, sizeof out->name, "fit");
    out->E = exp(best[2]), out->A = exp(best[0]), out->B = exp(best[1]), out->alpha = best[3], out->beta = best[4];
    if (objective_out) *objective_out = best_f;
    return SLM_OK;
}
