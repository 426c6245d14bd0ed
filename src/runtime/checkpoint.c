/* checkpoint.c - wiring the sharded training state to HDF5 checkpoints: which ranges this
 * rank saves and restores, the metadata, when to save, and the log lines. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/agree.h"
#include "shardlm/ckpt.h"
#include "shardlm/hf.h"
#include "shardlm/log.h"
#include "trainer_impl.h"

/* The sharded layer's ranges as checkpoint pieces (the same fields). Tensors other ranks
 * write too are left out of what this rank writes (slm_trainer_writes). */
static slm_ckpt_piece *pieces_of(trainer *tr, int for_read, int *n)
{
    const int nt = slm_model_num_tensors(tr->model);
    const int cap = 2 * slm_fsdp_num_buckets(tr->fsdp);
    slm_fsdp_range *r = malloc((size_t)cap * sizeof *r);
    slm_ckpt_piece *p = malloc((size_t)(cap + nt) * sizeof *p); /* (range, tensor) overlaps: <= ranges + tensors */
    if (!r || !p) {
        free(r);
        free(p);
        return NULL;
    }
    const int nr = slm_fsdp_state_ranges(tr->fsdp, for_read, r);
    slm_optimizer_t opt = slm_fsdp_optimizer(tr->fsdp);
    const int adamw = !strcmp(slm_optimizer_name(opt), "adamw"); /* the groups the file format has so far */
#define M(o) (r[i].optimizer && adamw ? slm_optimizer_state_at(opt, 0, o) : NULL)
#define V(o) (r[i].optimizer && adamw ? slm_optimizer_state_at(opt, 1, o) : NULL)
    /* does this rank hold anything it must not write? */
    int all_mine = 1;
    for (int k = 0; k < nt; k++) all_mine &= slm_model_tensor(tr->model, k)->count == 0 ||
                                             slm_trainer_writes(tr, slm_model_tensor(tr->model, k));
    *n = 0;
    for (int i = 0; i < nr; i++) {
        if (for_read || all_mine) {
            p[(*n)++] = (slm_ckpt_piece){r[i].offset, r[i].count, r[i].params, M(r[i].offset), V(r[i].offset)};
            continue;
        }
        for (int k = 0; k < nt; k++) {
            const slm_tensor_info *t = slm_model_tensor(tr->model, k);
            size_t lo = t->offset > r[i].offset ? t->offset : r[i].offset;
            size_t hi = t->offset + t->count < r[i].offset + r[i].count ? t->offset + t->count : r[i].offset + r[i].count;
            if (!slm_trainer_writes(tr, t) || lo >= hi) continue;
            const size_t d = lo - r[i].offset;
            p[(*n)++] = (slm_ckpt_piece){lo, hi - lo, r[i].params ? r[i].params + d : NULL, M(lo), V(lo)};
        }
    }
    free(r);
    return p;
}

static void meta_of(trainer *tr, long step, slm_ckpt_meta *m)
{
    const slm_conf *c = tr->conf;
    memset(m, 0, sizeof *m);
    m->step = step;
    m->samples = tr->samples;
    m->tokens = tr->samples * (long long)tr->T;
    m->adam_t = slm_optimizer_steps(slm_fsdp_optimizer(tr->fsdp));
    m->seed = c->train.seed;
    m->model = *slm_model_config_of(tr->model);
    m->model.recompute = 0; /* a run choice, not part of the model */
    snprintf(m->layout, sizeof m->layout, "dp=%d tp=%d pp=%d zero_stage=%d precision=%s", tr->dp,
             c->parallel.tp, c->parallel.pp, c->parallel.zero_stage, c->train.precision);
    snprintf(m->matmul, sizeof m->matmul, "%s", tr->matmul.choice);
    slm_conf_to_ini(c, m->config, sizeof m->config);
}

/* Fill what this rank holds of a fresh run's parameters from outside weights, with fill
 * called for each range the sharded layer hands out; every rank agrees on the outcome.
 * Collective. */
static slm_status import_weights(trainer *tr, slm_status (*fill)(void *src, size_t offset, size_t count, float *dst),
                                 void *src)
{
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 1, &n);
    slm_status s = pieces ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "model.init_from: out of memory for the list of pieces");
    for (int i = 0; i < n && s == SLM_OK; i++)
        if (pieces[i].params) s = fill(src, pieces[i].offset, pieces[i].count, pieces[i].params);
    free(pieces);
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), s));
    slm_fsdp_after_load(tr->fsdp, 0);
    return SLM_OK;
}

typedef struct {
    slm_llmc_t llmc;
    slm_model_t model;
} llmc_source;

static slm_status fill_llmc(void *src, size_t offset, size_t count, float *dst)
{
    llmc_source *l = src;
    slm_llmc_fill(l->llmc, slm_model_tensor(l->model, 0), slm_model_num_tensors(l->model), offset, count, dst);
    return SLM_OK;
}

/* A fresh run that starts from llm.c weights: every rank copies the ranges it holds. */
static slm_status init_from_llmc(trainer *tr)
{
    const slm_conf *c = tr->conf;
    slm_llmc_t llmc = NULL;
    slm_status s = slm_llmc_open(c->model.init_from, slm_model_config_of(tr->model), &llmc);
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), s));
    llmc_source src = {llmc, tr->model};
    s = import_weights(tr, fill_llmc, &src);
    slm_llmc_close(&llmc);
    SLM_CALL(s);
    if (tr->rank == 0) printf("init      weights from %s (llm.c GPT-2 checkpoint)\n", c->model.init_from);
    return SLM_OK;
}

static slm_status fill_hf(void *src, size_t offset, size_t count, float *dst)
{
    return slm_hf_fill(src, offset, count, dst);
}

/* A fresh run that starts from a Hugging Face model directory: every rank checks the
 * model's whole tensor table against the files, all agree on that before anything else,
 * and each reads only what it holds. */
static slm_status init_from_hf(trainer *tr)
{
    const slm_conf *c = tr->conf;
    slm_rope_pairing pairing = SLM_ROPE_PAIRING_HALF;
    slm_rope_pairing_parse(c->model.init_rope_pairing, &pairing); /* resolved and validated with the configuration */
    slm_hf_t hf = NULL;
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), slm_hf_open(c->model.init_from, tr->model, pairing, &hf)));
    slm_status s = import_weights(tr, fill_hf, hf);
    if (s == SLM_OK && tr->rank == 0) {
        const char *first = NULL;
        const int unused = slm_hf_unused(hf, &first);
        printf("init      weights from %s (%s%s)\n", c->model.init_from, slm_hf_describe(hf),
               pairing == SLM_ROPE_PAIRING_INTERLEAVED ? ", q and k rows interleaved" : "");
        if (unused)
            printf("init      %d tensor%s of the files the model does not use, left alone (the first: %s)\n", unused,
                   unused > 1 ? "s" : "", first);
    }
    slm_hf_close(&hf);
    SLM_CALL(s);
    return SLM_OK;
}

slm_status slm_trainer_restore(trainer *tr)
{
    const slm_conf *c = tr->conf;
    MPI_Comm comm = slm_mesh_world(tr->mesh);
    char path[4096];
    slm_ckpt_meta meta, want;
    meta_of(tr, 0, &want);
    /* the newest checkpoint that verifies and holds exactly this model's tensors */
    const slm_ckpt_expect expect = {&want, slm_model_tensor(tr->model, 0), slm_model_num_tensors(tr->model)};
    SLM_CALL(slm_ckpt_find(comm, c->ckpt.dir, c->ckpt.resume, &expect, path, sizeof path));
    if (!path[0]) /* nothing to resume: a fresh run */
        return !c->model.init_from[0]                       ? SLM_OK
               : slm_hf_is_model_dir(c->model.init_from) ? init_from_hf(tr)
                                                          : init_from_llmc(tr);
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 1, &n);
    SLM_CALL(slm_agree(comm, pieces ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "resume: out of memory for the list of pieces")));
    slm_ckpt_stats st;
    slm_status s = slm_ckpt_load(comm, path, slm_model_tensor(tr->model, 0), slm_model_num_tensors(tr->model), pieces,
                                 n, &meta, &st);
    free(pieces);
    SLM_CALL(s);
    SLM_CHECK(meta.step <= c->train.steps, SLM_ERR_CONFIG,
              "%s is at step %ld, past train.steps = %ld", path, meta.step, c->train.steps);
    slm_fsdp_after_load(tr->fsdp, meta.adam_t);
    tr->start_step = meta.step;
    tr->samples = meta.samples;
    snprintf(tr->resumed_matmul, sizeof tr->resumed_matmul, "%s", meta.matmul);
    if (tr->rank == 0)
        printf("resume    %s: step %ld, %lld tokens, written by %s; read in %.2f s\n", path, meta.step,
               meta.tokens, meta.layout, st.seconds);
    return SLM_OK;
}

/* A checkpoint being written in the background (ckpt.async): a snapshot of what this rank
 * holds, written collectively on a communicator of its own by a thread of its own, while
 * training goes on. Only one is in flight; the next save, and the end of the run, wait for
 * it. */
struct slm_async_save {
    MPI_Comm comm;
    pthread_t thread;
    int running, threaded; /* threaded: written by its own thread (else it was written in the foreground) */
    float *buf;
    size_t cap;
    slm_ckpt_piece *pieces;
    int n;
    slm_ckpt_meta meta;
    const slm_tensor_info *tensors;
    int ntensors, keep;
    long keep_every;
    char dir[4096];
    slm_status result;
    char error[1024];
    slm_ckpt_stats stats;
    double stall;
};

static void *write_in_background(void *arg)
{
    struct slm_async_save *a = arg;
    a->result = slm_ckpt_save(a->comm, a->dir, &a->meta, a->tensors, a->ntensors, a->pieces, a->n, a->keep,
                              a->keep_every, &a->stats);
    if (a->result != SLM_OK) snprintf(a->error, sizeof a->error, "%s", slm_error_message());
    return NULL;
}

/* Wait for the background write (if any) and report it. Collective in effect: every rank
 * joins at the same step, and the write agreed on its outcome across ranks. */
static slm_status join_async(trainer *tr)
{
    struct slm_async_save *a = tr->async;
    if (!a || !a->running) return SLM_OK;
    double t0 = MPI_Wtime();
    if (a->threaded) pthread_join(a->thread, NULL);
    a->running = 0;
    double waited = MPI_Wtime() - t0;
    SLM_CHECK(a->result == SLM_OK, a->result, "%s", a->error);
    if (tr->rank == 0)
        printf("ckpt      step %ld -> %s/step_%09ld.h5 committed in the background: %.1f MB in %.2f s (%.0f MB/s); "
               "training stalled %.3f s (snapshot) + %.3f s (waiting for it)\n",
               a->meta.step, a->dir, a->meta.step, a->stats.bytes / 1e6, a->stats.seconds,
               a->stats.bytes / 1e6 / (a->stats.seconds > 0 ? a->stats.seconds : 1), a->stall, waited);
    return SLM_OK;
}

slm_status slm_trainer_finish_saves(trainer *tr)
{
    slm_status s = join_async(tr);
    struct slm_async_save *a = tr->async;
    if (a) {
        if (a->comm != MPI_COMM_NULL) MPI_Comm_free(&a->comm);
        free(a->buf);
        free(a->pieces);
        free(a);
        tr->async = NULL;
    }
    return s;
}

/* The snapshot's buffer for `need` floats (it grows, and is then reused). Local. */
static slm_status snapshot_buffer(trainer *tr, size_t need)
{
    struct slm_async_save *a = tr->async;
    if (!a) {
        a = tr->async = calloc(1, sizeof *a);
        SLM_CHECK(a, SLM_ERR_NOMEM, "ckpt.async: out of memory");
        a->comm = MPI_COMM_NULL;
    }
    if (need > a->cap) {
        free(a->buf);
        a->buf = malloc((need ? need : 1) * sizeof(float));
        a->cap = a->buf ? need : 0;
        SLM_CHECK(a->buf, SLM_ERR_NOMEM, "ckpt.async: cannot allocate a %.1f MB snapshot", 4.0 * (double)need / 1e6);
    }
    return SLM_OK;
}

/* Copy what this rank saves into the snapshot buffer and start the writer thread; it
 * keeps pieces. Collective. */
static slm_status save_async(trainer *tr, slm_ckpt_piece *pieces, int n, const slm_ckpt_meta *meta)
{
    const slm_conf *c = tr->conf;
    slm_status s = join_async(tr); /* one in flight at a time; its outcome was agreed */
    double t0 = MPI_Wtime();
    size_t need = 0;
    for (int i = 0; i < n; i++) need += 3 * pieces[i].count;
    if (s == SLM_OK) s = slm_agree(slm_mesh_world(tr->mesh), snapshot_buffer(tr, need));
    if (s != SLM_OK) {
        free(pieces);
        return slm_error_push(s, __FILE__, __LINE__, __func__);
    }
    struct slm_async_save *a = tr->async;
    if (a->comm == MPI_COMM_NULL) MPI_Comm_dup(slm_mesh_world(tr->mesh), &a->comm);
    free(a->pieces);
    a->pieces = pieces;
    a->n = n;
    float *dst = a->buf;
    for (int i = 0; i < n; i++) {
        float **src[3] = {&pieces[i].params, &pieces[i].m, &pieces[i].v};
        for (int k = 0; k < 3; k++) {
            memcpy(dst, *src[k], pieces[i].count * sizeof(float));
            *src[k] = dst;
            dst += pieces[i].count;
        }
    }
    a->meta = *meta;
    a->tensors = slm_model_tensor(tr->model, 0);
    a->ntensors = slm_model_num_tensors(tr->model);
    a->keep = c->ckpt.keep;
    a->keep_every = c->ckpt.keep_every;
    snprintf(a->dir, sizeof a->dir, "%s", c->ckpt.dir);
    a->stall = MPI_Wtime() - t0;
    a->running = 1;
    a->threaded = pthread_create(&a->thread, NULL, write_in_background, a) == 0;
    /* No thread here while the other ranks' writers start: write this rank's part now, in
     * the foreground, so the collective write completes all the same. */
    if (!a->threaded) write_in_background(a);
    return SLM_OK;
}

slm_status slm_trainer_save(trainer *tr, long step, int force)
{
    const slm_conf *c = tr->conf;
    const long done = step + 1;
    if (!c->ckpt.dir[0] || tr->saved_step == done) return SLM_OK;
    if (!force &&
        !(done == c->train.steps || done == c->train.stop_after || (c->ckpt.every > 0 && done % c->ckpt.every == 0)))
        return SLM_OK;
    tr->saved_step = done;
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 0, &n);
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh),
                       pieces ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "checkpoint: out of memory for the list of pieces")));
    slm_ckpt_meta meta;
    meta_of(tr, done, &meta);
    if (c->ckpt.async && !force) return save_async(tr, pieces, n, &meta); /* it keeps pieces */
    SLM_CALL(join_async(tr)); /* a forced save is written now; one in flight commits first */
    slm_ckpt_stats st;
    slm_status s = slm_ckpt_save(slm_mesh_world(tr->mesh), c->ckpt.dir, &meta, slm_model_tensor(tr->model, 0),
                                 slm_model_num_tensors(tr->model), pieces, n, c->ckpt.keep, c->ckpt.keep_every, &st);
    free(pieces);
    SLM_CALL(s);
    if (tr->rank == 0)
        printf("ckpt      step %ld -> %s/step_%09ld.h5: %.1f MB in %.2f s (%.0f MB/s), training stalled %.2f s\n",
               done, c->ckpt.dir, done, st.bytes / 1e6, st.seconds, st.bytes / 1e6 / (st.seconds > 0 ? st.seconds : 1),
               st.seconds);
    return SLM_OK;
}
