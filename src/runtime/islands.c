/* islands.c - the training loop's side of islands (docs/islands.md): each island's own
 * output paths, its outer optimizer over the sharding layer's owned chunks, and the outer
 * step every islands.sync_every steps with its log line and metrics. */
#define _GNU_SOURCE /* fopencookie */
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/log.h"
#include "trainer_impl.h"

/* ckpt.resume names one file every island may start from (a synchronous run's checkpoint,
 * say), so it is left as it is. path with ".island<i>" before its extension (a file) or "/island<i>" after it (a
 * directory): one job's islands must not write over each other. */
static slm_status island_path(char *path, size_t len, int island, int directory, const char *key)
{
    if (!path[0]) return SLM_OK;
    char out[SLM_PATH_MAX];
    int n;
    if (directory) {
        n = snprintf(out, sizeof out, "%s/island%d", path, island);
    } else {
        const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
        if (!dot || (slash && dot < slash) || dot == path || (slash && dot == slash + 1)) dot = path + strlen(path);
        n = snprintf(out, sizeof out, "%.*s.island%d%s", (int)(dot - path), path, island, dot);
    }
    SLM_CHECK(n > 0 && (size_t)n < sizeof out && (size_t)n < len, SLM_ERR_CONFIG,
              "%s = %s: too long once the island's number is added", key, path);
    memcpy(path, out, (size_t)n + 1);
    return SLM_OK;
}

slm_status slm_island_conf(const slm_conf *c, int island, slm_conf *out)
{
    *out = *c;
    if (c->islands.count <= 1) return SLM_OK;
    SLM_CALL(island_path(out->ckpt.dir, sizeof out->ckpt.dir, island, 1, "ckpt.dir"));
    SLM_CALL(island_path(out->log.metrics, sizeof out->log.metrics, island, 0, "log.metrics"));
    SLM_CALL(island_path(out->log.dump, sizeof out->log.dump, island, 0, "log.dump"));
    return SLM_OK;
}

/* Standard output of an island's ranks: every line starts with "[island i] ", so the
 * islands of one job can be told apart in its log. */
typedef struct {
    FILE *to;
    char prefix[32];
    int at_line_start;
} prefixed;

static ssize_t prefixed_write(void *cookie, const char *buf, size_t n)
{
    prefixed *p = cookie;
    for (size_t i = 0; i < n; i++) {
        if (p->at_line_start) fputs(p->prefix, p->to);
        fputc(buf[i], p->to);
        p->at_line_start = buf[i] == '\n';
    }
    fflush(p->to);
    return (ssize_t)n;
}

static int prefixed_close(void *cookie)
{
    free(cookie);
    return 0;
}

FILE *slm_island_stream(FILE *to, int island)
{
    prefixed *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->to = to;
    p->at_line_start = 1;
    snprintf(p->prefix, sizeof p->prefix, "[island %d] ", island);
    cookie_io_functions_t io = {NULL, prefixed_write, NULL, prefixed_close};
    FILE *f = fopencookie(p, "w", io);
    if (!f) free(p);
    else setvbuf(f, NULL, _IOLBF, 0);
    return f;
}

slm_status slm_trainer_islands_init(trainer *tr)
{
    const slm_conf *c = tr->conf;
    if (c->islands.count <= 1) return SLM_OK;
    const int n = slm_fsdp_num_buckets(tr->fsdp);
    slm_optim_segment *chunks = malloc((size_t)n * sizeof *chunks);
    tr->outer_sumsq = calloc((size_t)slm_model_num_tensors(tr->model), sizeof *tr->outer_sumsq);
    SLM_CHECK(chunks && tr->outer_sumsq, SLM_ERR_NOMEM, "cannot allocate the outer optimizer's tables");
    const int nc = slm_fsdp_owned_chunks(tr->fsdp, chunks);
    const slm_outer_config oc = slm_conf_outer(c);
    slm_status s = slm_outer_create(&oc, slm_model_tensor(tr->model, 0), slm_model_num_tensors(tr->model), chunks, nc,
                                    &tr->outer);
    free(chunks);
    return s;
}

void slm_trainer_islands_free(trainer *tr)
{
    slm_outer_destroy(&tr->outer);
    free(tr->outer_sumsq);
    tr->outer_sumsq = NULL;
}

/* Whether `step` ends with an outer step: every islands.sync_every steps, and the last. */
static int outer_due(const trainer *tr, long step)
{
    const slm_conf *c = tr->conf;
    return tr->outer && ((step + 1) % c->islands.sync_every == 0 || step + 1 == c->train.steps);
}

slm_status slm_trainer_outer_step(trainer *tr, long step, double loss, slm_step_metrics *m)
{
    if (!outer_due(tr, step)) return SLM_OK;
    const int nt = slm_model_num_tensors(tr->model);
    memset(tr->outer_sumsq, 0, (size_t)nt * sizeof *tr->outer_sumsq);
    slm_islands_stats st;
    if (tr->across != MPI_COMM_NULL) { /* one job: the exchange over MPI */
        slm_fsdp_settle(tr->fsdp);
        SLM_CALL(slm_islands_outer_step(tr->across, tr->outer, slm_islands_wire_named(tr->conf->islands.compress),
                                        tr->outer_sumsq, &st));
        slm_fsdp_chunks_changed(tr->fsdp);
    } else { /* one job per island: through islands.dir */
        SLM_CALL(slm_trainer_files_outer_step(tr, step, &st));
    }
    /* the norm of the anchor's step: each element counted once (whole tensors on tensor-
     * parallel rank 0, the tied embedding on the first stage), summed over the island */
    double sumsq = 0.0;
    for (int i = 0; i < nt; i++)
        if (slm_trainer_writes(tr, slm_model_tensor(tr->model, i))) sumsq += tr->outer_sumsq[i];
    MPI_Allreduce(MPI_IN_PLACE, &sumsq, 1, MPI_DOUBLE, MPI_SUM, slm_mesh_world(tr->mesh));
    const long round = slm_outer_steps(tr->outer);
    m->outer_step = round;
    m->outer_islands = st.islands;
    m->island = tr->island;
    m->outer_bytes = st.bytes;
    m->outer_norm = sqrt(sumsq);
    m->outer_wait_ms = st.wait_ms;
    m->outer_ms = st.comm_ms;
    /* every island's loss of this step, for the one line job rank 0 prints (one job per
     * island: each prints its own) */
    double all[4096]; /* islands.count's upper bound */
    all[0] = loss;
    if (tr->across != MPI_COMM_NULL) MPI_Gather(&loss, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, 0, tr->across);
    if (tr->rank == 0 && (tr->island == 0 || tr->across == MPI_COMM_NULL)) {
        const int shown = tr->across == MPI_COMM_NULL ? 1 : tr->islands < 16 ? tr->islands : 16;
        char list[16 * 16] = "";
        for (int i = 0; i < shown; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%.4f", i ? " " : "", all[i]);
        printf("outer     step %ld (outer step %ld) | islands %d/%d | loss%s %s%s | update norm %.4g | %.2f MB %s | "
               "wait %.1f ms | exchange %.1f ms\n",
               step + 1, round, st.islands, tr->islands, shown > 1 ? "es" : "", list, shown > 1 && tr->islands > shown ? " ..." : "",
               m->outer_norm,
               st.bytes / 1e6, tr->across != MPI_COMM_NULL ? "sent" : "written and read", st.wait_ms, st.comm_ms);
        fflush(stdout);
    }
    return SLM_OK;
}
