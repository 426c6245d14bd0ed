/* matmul_choice.c - the GEMM backend of a run (train.matmul).
 *
 * OpenBLAS picks its kernels from the CPU model it recognises, and falls back to generic
 * SSE3 ones (several times slower) on a CPU newer than itself; old OpenBLAS kernels even
 * compute wrong results on some CPUs. So a backend is used on facts: every candidate built
 * in is first checked for correct products on this CPU (one that fails is never used),
 * then, under `auto`, timed on the model's own products, and the fastest wins. Every rank
 * checks and times; the job agrees (a backend wrong on one rank is out everywhere, the
 * times are summed over ranks), so all ranks use the same backend whatever node measured
 * what. A candidate has to beat the preferred one - the one a resumed checkpoint used,
 * else OpenBLAS - by 5 % and 1 ms per micro-batch: a run does not change its arithmetic
 * on noise. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "shardlm/agree.h"
#include "shardlm/cpu.h"
#include "shardlm/log.h"
#include "shardlm/runtime.h"

/* The candidates, in the order ties go: OpenBLAS first. */
static const slm_gemm_candidate *const all = slm_gemm_candidates;
enum { NCAND = SLM_GEMM_NCANDIDATES };

/* Which candidates may be chosen for train.matmul at this precision, and which are only
 * measured (the fp32 products beside forced bf16 ones, for the warning). */
static void eligible(const char *matmul, int bf16, int *may_choose, int *measure)
{
    int bf16_choosable = 0;
    for (int i = 0; i < NCAND; i++) {
        const slm_gemm_candidate *c = &all[i];
        const int built = slm_gemm_available(c->backend), prec_ok = !c->bf16 || bf16;
        if (!strcmp(matmul, "auto")) may_choose[i] = built && prec_ok;
        else if (!strcmp(matmul, "openblas")) may_choose[i] = c->backend == SLM_GEMM_OPENBLAS;
        else may_choose[i] = c->backend == SLM_GEMM_DNNL && c->bf16 == bf16; /* dnnl */
        bf16_choosable |= may_choose[i] && c->bf16;
    }
    /* bf16 products that may be used are compared with the fp32 ones, for the warning */
    for (int i = 0; i < NCAND; i++)
        measure[i] = may_choose[i] || (bf16_choosable && slm_gemm_available(all[i].backend) && !all[i].bf16);
}

/* The first rank whose candidate i failed its check, and why, on every rank; -1 if none. */
static int first_failure(MPI_Comm comm, int ok, char *why, size_t len)
{
    int rank, size, first;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = ok ? size : rank;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == size) return -1;
    MPI_Bcast(why, (int)len, MPI_CHAR, first, comm);
    return first;
}

slm_status slm_matmul_choose(MPI_Comm comm, const char *matmul, int bf16, slm_model_t model, int B,
                             const char *prefer, slm_matmul_choice *out)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    memset(out, 0, sizeof *out);
    const double t0 = MPI_Wtime();
    int may_choose[NCAND], measure[NCAND], n_choosable = 0;
    eligible(matmul, bf16, may_choose, measure);
    for (int i = 0; i < NCAND; i++) n_choosable += may_choose[i];
    slm_gemm_shape shapes[64];
    const int nshapes = slm_model_gemm_shapes(model, B, shapes, 64);
    double seconds[NCAND];
    int ok[NCAND];
    for (int i = 0; i < NCAND; i++) {
        char *why = out->why[i];
        seconds[i] = INFINITY;
        ok[i] = measure[i] && slm_gemm_check(all[i].backend, all[i].bf16, why, sizeof out->why[i]) == 0;
        if (!measure[i]) continue;
        out->failed_rank[i] = first_failure(comm, ok[i], why, sizeof out->why[i]);
        ok[i] = out->failed_rank[i] < 0;
    }
    /* time only when there is a choice to make or a rate to report */
    int timed = 0;
    for (int i = 0; i < NCAND; i++) timed += ok[i] && measure[i];
    if (timed > 1 || (timed == 1 && n_choosable > 1)) {
        slm_gemm_candidate cands[NCAND];
        double s[NCAND], g[NCAND];
        int which[NCAND], nc = 0;
        for (int i = 0; i < NCAND; i++)
            if (ok[i]) which[nc] = i, cands[nc++] = all[i];
        slm_gemm_time_shapes(cands, nc, shapes, nshapes, s, g);
        for (int k = 0; k < nc; k++) seconds[which[k]] = s[k], out->gflops[which[k]] = g[k];
    }
    MPI_Allreduce(MPI_IN_PLACE, seconds, NCAND, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, out->gflops, NCAND, MPI_DOUBLE, MPI_SUM, comm);
    int pick = -1;
    for (int i = 0; i < NCAND; i++) { /* the preferred one first */
        if (!may_choose[i] || !ok[i]) continue;
        if (pick < 0 || (prefer && !strcmp(prefer, slm_gemm_candidate_name(all[i])))) pick = i;
        if (prefer && !strcmp(prefer, slm_gemm_candidate_name(all[i]))) break;
    }
    const int preferred = pick;
    for (int i = 0; i < NCAND && preferred >= 0; i++) {
        if (!may_choose[i] || !ok[i] || i == preferred) continue;
        const double base = seconds[pick], gain = (base - seconds[i]) / size; /* per rank and micro-batch */
        if (seconds[i] < 0.95 * base && gain > 1e-3) pick = i;
    }
    for (int i = 0; i < NCAND; i++) {
        out->gflops[i] /= size;
        out->measured[i] = measure[i];
        out->ok[i] = ok[i];
        snprintf(out->name[i], sizeof out->name[i], "%s", slm_gemm_candidate_name(all[i]));
    }
    out->ncand = NCAND;
    out->timed = timed > 1 || (timed == 1 && n_choosable > 1);
    out->probe_s = MPI_Wtime() - t0;
    if (pick < 0) { /* every rank knows the same: no collective follows the error */
        char msg[1024] = "";
        for (int i = 0; i < NCAND; i++)
            if (may_choose[i] && !ok[i])
                snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s%s on rank %d: %s", msg[0] ? "; " : "",
                         slm_gemm_candidate_name(all[i]), out->failed_rank[i], out->why[i]);
        const char *fix = slm_blas_core_suggested();
        char hint[160] = "";
        if (fix) snprintf(hint, sizeof hint, "; OpenBLAS runs its generic %s kernels here: OPENBLAS_CORETYPE=%s may help",
                          slm_blas_core(), fix);
        if (!strcmp(matmul, "auto"))
            return SLM_ERROR(SLM_ERR_UNSUPPORTED, "train.matmul = auto: no GEMM backend passes its check on this CPU "
                             "(%s)%s", msg, hint);
        return SLM_ERROR(SLM_ERR_UNSUPPORTED, "train.matmul = %s fails its check on this CPU (%s); train.matmul = auto "
                         "uses a backend that passes%s", matmul, msg, hint);
    }
    out->chosen = pick;
    snprintf(out->choice, sizeof out->choice, "%s", slm_gemm_candidate_name(all[pick]));
    slm_gemm_select(all[pick].backend, all[pick].bf16);
    /* the fastest fp32 and bf16 rates, for the warning */
    for (int i = 0; i < NCAND; i++) {
        if (!ok[i] || !out->timed) continue;
        double *best = all[i].bf16 ? &out->bf16_gflops : &out->fp32_gflops;
        if (out->gflops[i] > *best) *best = out->gflops[i];
    }
    return SLM_OK;
}

void slm_matmul_report(const slm_matmul_choice *c, const char *matmul, int bf16, FILE *f)
{
    fprintf(f, "matmul    %s:", matmul);
    for (int i = 0; i < c->ncand; i++) {
        if (!c->measured[i]) continue;
        if (!c->ok[i]) fprintf(f, " %s failed its check (rank %d: %s);", c->name[i], c->failed_rank[i], c->why[i]);
        else if (c->timed) fprintf(f, " %s %.1f GFLOP/s;", c->name[i], c->gflops[i]);
        else fprintf(f, " %s checked;", c->name[i]);
    }
    fprintf(f, " -> %s (%s; OpenBLAS core %s; %.2f s)\n", c->choice,
            c->timed ? "checked, then timed on this model's products" : "checked", slm_blas_core(), c->probe_s);
    fflush(f); /* the warnings go to stderr: after this line */
    const char *fix = slm_blas_core_suggested();
    if (fix) {
        char cpu[256];
        slm_cpu_describe(cpu, sizeof cpu);
        slm_warn("OpenBLAS runs its generic %s kernels on this CPU, %s, which has faster ones: set "
                 "OPENBLAS_CORETYPE=%s (launch/run does when it is not set)", slm_blas_core(), cpu, fix);
    }
    if (bf16 && c->bf16_gflops > 0 && c->fp32_gflops > c->bf16_gflops)
        slm_warn("train.precision = bf16: on this CPU the bf16 products run at %.1f GFLOP/s, slower than fp32's "
                 "%.1f GFLOP/s; %s", c->bf16_gflops, c->fp32_gflops,
                 strcmp(c->choice, "onednn bf16 matmul") ? "the linear layers multiply in fp32"
                                                         : "train.matmul = auto would multiply in fp32");
}
