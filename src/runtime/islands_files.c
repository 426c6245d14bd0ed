/* islands_files.c - islands that meet through a shared directory (islands.transport =
 * files, docs/islands.md): each island is a job of its own. At an outer step that ends
 * step S, island i writes its parameters θ_i as a checkpoint of /params alone,
 * islands.dir/island<i>/step_<S>.h5 (written under a temporary name and renamed: a file
 * under its final name is complete), and waits for the others' files of S. When all are
 * there, or islands.deadline_s after its own commit, the first island to decide records
 * the islands that take part in islands.dir/decisions/step_<S> (created by link(), so
 * exactly one decision stands) and every island - a late one too - applies the step of
 * that decision: Δ = Σ over the participants, in island order, of anchor − θ_j, read from
 * their files. All islands so compute the same bits, whatever their inner layouts, since
 * the files hold global tensors. An island that comes back after a preemption applies the
 * decisions it missed the same way and goes on from the newest. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shardlm/activity.h"
#include "shardlm/timer.h"
#include "trainer_impl.h"

/* Each island keeps the files of its last outer steps, for islands that catch up. */
#define KEEP_ROUNDS 8
#define MAX_ISLANDS 4096

void slm_trainer_exchange_dir(const trainer *tr, char *out, size_t len)
{
    snprintf(out, len, "%s/island%d", tr->conf->islands.dir, tr->island);
}

static void exchange_file(const trainer *tr, int island, long step, char *out, size_t len)
{
    snprintf(out, len, "%s/island%d/step_%09ld.h5", tr->conf->islands.dir, island, step);
}

static void decision_file(const trainer *tr, long step, char *out, size_t len)
{
    snprintf(out, len, "%s/decisions/step_%09ld", tr->conf->islands.dir, step);
}

/* The participants recorded for step, into in[] (1 = took part); 0 if there is no decision. */
static int read_decision(const trainer *tr, long step, int *in)
{
    char path[SLM_PATH_MAX + 64];
    decision_file(tr, step, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    memset(in, 0, (size_t)tr->islands * sizeof *in);
    int j, any = 0;
    if (fscanf(f, "islands") == 0)
        while (fscanf(f, " %d", &j) == 1)
            if (j >= 0 && j < tr->islands) in[j] = any = 1;
    fclose(f);
    return any;
}

/* Record in[] as the decision of step unless one stands already (then read that one). */
static slm_status decide(const trainer *tr, long step, int *in)
{
    char dir[SLM_PATH_MAX + 32], path[SLM_PATH_MAX + 64], tmp[SLM_PATH_MAX + 96];
    snprintf(dir, sizeof dir, "%s/decisions", tr->conf->islands.dir);
    mkdir(dir, 0777);
    decision_file(tr, step, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s/.step_%09ld.island%d.%ld", dir, step, tr->island, (long)getpid());
    FILE *f = fopen(tmp, "w");
    SLM_CHECK(f, SLM_ERR_IO, "islands.dir: cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "islands");
    for (int j = 0; j < tr->islands; j++)
        if (in[j]) fprintf(f, " %d", j);
    fprintf(f, "\n");
    const int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    fclose(f);
    SLM_CHECK(ok, SLM_ERR_IO, "islands.dir: cannot write %s (disk full?)", tmp);
    const int linked = link(tmp, path) == 0, err = errno;
    unlink(tmp);
    SLM_CHECK(linked || err == EEXIST, SLM_ERR_IO, "islands.dir: cannot create %s: %s", path, strerror(err));
    if (!linked) SLM_CHECK(read_decision(tr, step, in), SLM_ERR_FORMAT, "islands.dir: %s names no island", path);
    return SLM_OK;
}

/* Island rank 0: wait for the other islands' files of step (or for a decision), until
 * deadline_s after this island's commit; in[] receives the decision. */
static slm_status wait_and_decide(const trainer *tr, long step, int *in)
{
    const double t0 = slm_now(), deadline = tr->conf->islands.deadline_s;
    char path[SLM_PATH_MAX + 64];
    for (;;) {
        if (read_decision(tr, step, in)) return SLM_OK;
        int present = 0;
        for (int j = 0; j < tr->islands; j++) {
            exchange_file(tr, j, step, path, sizeof path);
            in[j] = j == tr->island || access(path, R_OK) == 0;
            present += in[j];
        }
        /* a preemption signal ends this island's wait: it decides with the files there
         * now, takes the step, and its checkpoint after it is consistent with the others */
        if (present == tr->islands || slm_now() - t0 >= deadline || slm_signal_pending()) return decide(tr, step, in);
        usleep(20000);
    }
}

/* The outer step of the decision of `step`, from the participants' files (this island's
 * own parameters from memory when `own` and it took part). */
static slm_status apply_decision(trainer *tr, long step, const int *in, int own, slm_islands_stats *st)
{
    slm_outer_t o = tr->outer;
    const int nc = slm_outer_num_chunks(o);
    size_t total = 0;
    for (int c = 0; c < nc; c++) total += slm_outer_chunk(o, c)->count;
    float *theta = malloc((total ? total : 1) * sizeof(float));
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh),
                       theta ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "islands: out of memory for another island's parameters")));
    float **sum = malloc((size_t)(nc ? nc : 1) * sizeof *sum);
    slm_status s = slm_agree(slm_mesh_world(tr->mesh), sum ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "islands: out of memory"));
    if (s != SLM_OK) {
        free(theta);
        return s;
    }
    for (int c = 0; c < nc; c++) { /* the buffers the outer step reads; own Δ computed, then replaced */
        sum[c] = slm_outer_delta(o, c);
        memset(sum[c], 0, slm_outer_chunk(o, c)->count * sizeof(float));
    }
    int n = 0;
    for (int j = 0; j < tr->islands && s == SLM_OK; j++) {
        if (!in[j]) continue;
        n++;
        const int from_memory = own && j == tr->island;
        if (!from_memory) {
            char path[SLM_PATH_MAX + 64];
            exchange_file(tr, j, step, path, sizeof path);
            double bytes = 0;
            slm_activity_set_text("islands: reading island %d's parameters of step %ld", j, step);
            s = slm_trainer_read_params(tr, path, theta, &bytes);
            if (s != SLM_OK) {
                s = slm_error_push(s, __FILE__, __LINE__, __func__);
                break;
            }
            st->bytes += bytes;
        }
        size_t pos = 0;
        for (int c = 0; c < nc; c++) {
            const slm_optim_segment *ch = slm_outer_chunk(o, c);
            const float *a = slm_outer_state_at(o, 0, ch->offset), *t = from_memory ? ch->params : theta + pos;
            for (size_t k = 0; a && k < ch->count; k++) sum[c][k] += a[k] - t[k];
            pos += ch->count;
        }
    }
    if (s == SLM_OK) {
        slm_outer_begin(o, 1.0f / (float)n);
        for (int c = 0; c < nc; c++) slm_outer_apply(o, c, tr->outer_sumsq);
        slm_fsdp_chunks_changed(tr->fsdp);
        st->islands = n;
    }
    free(sum);
    free(theta);
    return s;
}

/* What makes islands one run: their shared settings. A directory of another run's files
 * and decisions would be taken for this run's, so the first island to start records
 * this in islands.dir/run and every island checks it. */
static void run_tag(const trainer *tr, char *out, size_t len)
{
    const slm_conf *c = tr->conf;
    const slm_model_config *mc = slm_model_config_of(tr->model);
    snprintf(out, len,
             "islands %d sync_every %ld outer_lr %.9g outer_momentum %.9g nesterov %d seed %llu global_batch %d "
             "model %s n_layer %d d_model %d n_head %d vocab_size %d seq_len %d params %zu\n",
             c->islands.count, c->islands.sync_every, c->islands.outer_lr, c->islands.outer_momentum,
             c->islands.nesterov, (unsigned long long)c->train.seed, c->train.global_batch, mc->arch, mc->n_layer,
             mc->d_model, mc->n_head, mc->vocab_size, mc->seq_len, slm_model_num_global_params(tr->model));
}

slm_status slm_trainer_files_check_run(trainer *tr)
{
    slm_status s = SLM_OK;
    if (tr->rank == 0) {
        char want[1024], have[1024] = "", path[SLM_PATH_MAX + 32], tmp[SLM_PATH_MAX + 64];
        run_tag(tr, want, sizeof want);
        snprintf(path, sizeof path, "%s/run", tr->conf->islands.dir);
        snprintf(tmp, sizeof tmp, "%s/.run.island%d.%ld", tr->conf->islands.dir, tr->island, (long)getpid());
        FILE *f = fopen(tmp, "w");
        const int written = f && fputs(want, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
        if (f) fclose(f);
        if (!written) s = SLM_ERROR(SLM_ERR_IO, "islands.dir: cannot write %s: %s", tmp, strerror(errno));
        if (s == SLM_OK && link(tmp, path) != 0 && errno != EEXIST)
            s = SLM_ERROR(SLM_ERR_IO, "islands.dir: cannot create %s: %s", path, strerror(errno));
        unlink(tmp);
        f = s == SLM_OK ? fopen(path, "r") : NULL;
        if (f) {
            if (!fgets(have, sizeof have, f)) have[0] = 0;
            fclose(f);
        }
        if (s == SLM_OK && strcmp(have, want))
            s = SLM_ERROR(SLM_ERR_CONFIG,
                          "islands.dir = %s belongs to another run: its run file says '%.*s', this island's settings "
                          "say '%.*s' - give each run a directory of its own",
                          tr->conf->islands.dir, (int)strcspn(have, "\n"), have, (int)strcspn(want, "\n"), want);
    }
    return slm_agree(slm_mesh_world(tr->mesh), s);
}

slm_status slm_trainer_files_outer_step(trainer *tr, long step, slm_islands_stats *st)
{
    const long done = step + 1;
    memset(st, 0, sizeof *st);
    slm_fsdp_settle(tr->fsdp);
    char dir[SLM_PATH_MAX + 32];
    slm_trainer_exchange_dir(tr, dir, sizeof dir);
    double t0 = slm_now();
    slm_activity_set_text("islands: writing this island's parameters of step %ld to %s", done, dir);
    SLM_CALL(slm_trainer_write_params(tr, dir, done, KEEP_ROUNDS, &st->bytes));
    st->comm_ms = (slm_now() - t0) * 1e3;
    /* island rank 0 waits and decides; the island learns the decision from it */
    int in[MAX_ISLANDS];
    slm_activity_set_text("islands: waiting for the other islands' files of step %ld (deadline %g s)", done,
                          tr->conf->islands.deadline_s);
    t0 = slm_now();
    slm_status s = tr->rank == 0 ? wait_and_decide(tr, done, in) : SLM_OK;
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), s));
    MPI_Bcast(in, tr->islands, MPI_INT, 0, slm_mesh_world(tr->mesh));
    st->wait_ms = (slm_now() - t0) * 1e3;
    t0 = slm_now();
    SLM_CALL(apply_decision(tr, done, in, 1, st));
    st->comm_ms += (slm_now() - t0) * 1e3;
    if (!in[tr->island] && tr->rank == 0)
        printf("outer     step %ld: this island was late and is left out of it; it takes the others' step\n", done);
    slm_activity_set("forward and backward", -1);
    return SLM_OK;
}

static int cmp_long(const void *a, const void *b)
{
    const long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

slm_status slm_trainer_files_catch_up(trainer *tr)
{
    /* the decisions after this island's checkpoint, oldest first (rank 0 lists them) */
    long *steps = NULL;
    int n = 0, cap = 0, ok = 1;
    if (tr->rank == 0) {
        char dir[SLM_PATH_MAX + 32];
        snprintf(dir, sizeof dir, "%s/decisions", tr->conf->islands.dir);
        DIR *d = opendir(dir);
        struct dirent *e;
        while (ok && d && (e = readdir(d)) != NULL) {
            long s;
            char rest;
            if (sscanf(e->d_name, "step_%ld%c", &s, &rest) != 1 || s <= tr->start_step || s > tr->conf->train.steps)
                continue;
            if (n == cap) {
                long *more = realloc(steps, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *steps);
                if (!more) ok = 0;
                else steps = more;
            }
            if (ok) steps[n++] = s;
        }
        if (d) closedir(d);
        if (n) qsort(steps, (size_t)n, sizeof *steps, cmp_long);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, slm_mesh_world(tr->mesh));
    MPI_Bcast(&n, 1, MPI_INT, 0, slm_mesh_world(tr->mesh));
    if (ok && tr->rank != 0 && n > 0) ok = (steps = malloc((size_t)n * sizeof *steps)) != NULL;
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh),
                       ok ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "islands: out of memory for the list of decisions")));
    MPI_Bcast(steps, n, MPI_LONG, 0, slm_mesh_world(tr->mesh));
    for (int i = 0; i < n; i++) {
        int in[MAX_ISLANDS];
        int ok = tr->rank == 0 ? read_decision(tr, steps[i], in) : 1;
        MPI_Bcast(&ok, 1, MPI_INT, 0, slm_mesh_world(tr->mesh));
        MPI_Bcast(in, tr->islands, MPI_INT, 0, slm_mesh_world(tr->mesh));
        if (!ok) {
            const long bad = steps[i];
            free(steps);
            return SLM_ERROR(SLM_ERR_FORMAT, "islands.dir: the decision of step %ld cannot be read", bad);
        }
        slm_islands_stats st = {0};
        slm_status s = apply_decision(tr, steps[i], in, 0, &st);
        if (s != SLM_OK) {
            free(steps);
            char why[1024];
            snprintf(why, sizeof why, "%s", slm_error_message());
            slm_error_clear();
            return SLM_ERROR(s, "island %d cannot catch up with the outer step of step %ld: %s (each island keeps "
                                "the files of its last %d outer steps; resume this island from a newer checkpoint "
                                "of another island with ckpt.resume)",
                             tr->island, steps[i], why, KEEP_ROUNDS);
        }
        tr->start_step = steps[i];
        tr->samples = (long long)steps[i] * tr->conf->train.global_batch * tr->islands;
        if (tr->rank == 0) {
            printf("rejoin    took the islands' outer step of step %ld (islands", steps[i]);
            for (int j = 0; j < tr->islands; j++)
                if (in[j]) printf(" %d", j);
            printf(") from %s: this island goes on from step %ld\n", tr->conf->islands.dir, steps[i]);
            fflush(stdout);
        }
    }
    free(steps);
    if (n > 0) SLM_CALL(slm_trainer_save(tr, tr->start_step - 1, 1)); /* where it rejoined, durable */
    return SLM_OK;
}
