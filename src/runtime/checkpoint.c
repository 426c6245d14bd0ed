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

/* A checkpoint holds /params, the optimizer's state groups (docs/optimizers.md) and the
 * MoE routers' state (docs/moe.md). */
#define MAX_GROUPS SLM_TRAIN_MAX_CKPT_GROUPS

int slm_train_moe_ckpt_group(const slm_model_config *mc, slm_tensor_info *t, slm_ckpt_group *out)
{
    const int nmoe = slm_model_num_moe_layers(mc);
    if (!nmoe) return 0;
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "bias");
    t->ndim = 2;
    t->shape[0] = t->rows = nmoe;
    t->shape[1] = t->cols = mc->n_experts;
    t->count = (size_t)nmoe * mc->n_experts;
    t->nruns = 1;
    t->runs[0] = (slm_row_run){0, 0, nmoe};
    t->block = t->unit = -1;
    *out = (slm_ckpt_group){"moe_router", t, 1, NULL, 0};
    return 1;
}

int slm_train_ckpt_groups(const slm_optim_config *optim, const slm_tensor_info *tensors, int ntensors,
                          slm_ckpt_group *out, slm_optim_group_info *info)
{
    const int n = slm_optim_describe_groups(optim, tensors, ntensors, info);
    if (n < 0) return -1;
    out[0] = (slm_ckpt_group){"params", tensors, ntensors, NULL, 0};
    for (int g = 0; g < n; g++) {
        out[1 + g] = (slm_ckpt_group){.tensors = info[g].datasets, .ntensors = info[g].ndatasets};
        snprintf(out[1 + g].name, sizeof out[1 + g].name, "%s", info[g].name);
    }
    return 1 + n;
}

/* What this rank saves or restores: the groups, and their pieces in one block (each
 * group's pieces are one run of it). */
typedef struct {
    slm_ckpt_group groups[MAX_GROUPS];
    int ngroups;
    slm_ckpt_piece *pieces;
    int npieces;
} ckpt_state;

static void state_free(ckpt_state *s)
{
    free(s->pieces);
    s->pieces = NULL;
    s->npieces = 0;
}

/* The rank that writes a replicated optimizer vector of tensor t (every rank holding part
 * of t keeps all of it): data-parallel rank 0 (for an expert, the rank of the first
 * expert-parallel group that holds it), tensor-parallel rank 0, and of the tied
 * embedding's two copies the first stage's. */
static int writes_replicated(const trainer *tr, const slm_tensor_info *t)
{
    const int holders = t->reduce == SLM_REDUCE_EXPERT_DATA ? slm_mesh_ep_size(tr->mesh) : 1; /* an expert: its rank */
    return slm_mesh_dp_rank(tr->mesh) < holders && slm_mesh_tp_rank(tr->mesh) == 0 && slm_trainer_writes(tr, t);
}

/* Group g's pieces (g = 0: the parameters, else the optimizer's group g - 1) from the
 * sharded layer's ranges r: one per (range, tensor) overlap, left out when writing where
 * another rank writes the same elements (slm_trainer_writes). */
static void elementwise_pieces(trainer *tr, const slm_fsdp_range *r, int nr, int for_read, int g, ckpt_state *s)
{
    slm_optimizer_t opt = slm_fsdp_optimizer(tr->fsdp);
    const int nt = slm_model_num_tensors(tr->model);
    for (int i = 0; i < nr; i++) {
        if (g == 0 ? !r[i].params : !r[i].optimizer) continue;
        for (int k = 0; k < nt; k++) {
            const slm_tensor_info *t = slm_model_tensor(tr->model, k);
            size_t lo, hi;
            if (!slm_tensor_overlap(t, r[i].offset, r[i].count, &lo, &hi) || (!for_read && !slm_trainer_writes(tr, t)))
                continue;
            float *data = g == 0 ? r[i].params + (lo - r[i].offset) : slm_optimizer_state_at(opt, g - 1, lo);
            if (data) s->pieces[s->npieces++] = (slm_ckpt_piece){lo, hi - lo, data};
        }
    }
}

/* The outer optimizer's groups (islands): its chunks' pieces, as elementwise_pieces. */
static void outer_pieces(trainer *tr, int for_read, int g, ckpt_state *s)
{
    const int nt = slm_model_num_tensors(tr->model);
    for (int c = 0; c < slm_outer_num_chunks(tr->outer); c++) {
        const slm_optim_segment *ch = slm_outer_chunk(tr->outer, c);
        for (int k = 0; k < nt; k++) {
            const slm_tensor_info *t = slm_model_tensor(tr->model, k);
            size_t lo, hi;
            if (!slm_tensor_overlap(t, ch->offset, ch->count, &lo, &hi) || (!for_read && !slm_trainer_writes(tr, t)))
                continue;
            float *data = slm_outer_state_at(tr->outer, g, lo);
            if (data) s->pieces[s->npieces++] = (slm_ckpt_piece){lo, hi - lo, data};
        }
    }
}

int slm_train_outer_ckpt_groups(const slm_conf *c, const slm_tensor_info *tensors, int ntensors, slm_ckpt_group *out)
{
    if (c->islands.count <= 1) return 0;
    const char *names[3];
    const slm_outer_config oc = slm_conf_outer(c);
    const int n = slm_outer_group_names(&oc, names);
    for (int g = 0; g < n; g++) {
        out[g] = (slm_ckpt_group){.tensors = tensors, .ntensors = ntensors};
        snprintf(out[g].name, sizeof out[g].name, "%s", names[g]);
    }
    return n;
}

/* The groups of this run's checkpoints with this rank's pieces (for_read: what it
 * restores, else what it saves). Local. */
static slm_status state_of(trainer *tr, int for_read, ckpt_state *s)
{
    memset(s, 0, sizeof *s);
    slm_optimizer_t opt = slm_fsdp_optimizer(tr->fsdp);
    const int nt = slm_model_num_tensors(tr->model), nopt = slm_optimizer_num_groups(opt);
    s->ngroups = 1 + nopt;
    s->groups[0] = (slm_ckpt_group){"params", slm_model_tensor(tr->model, 0), nt, NULL, 0};
    for (int g = 0; g < nopt; g++) {
        slm_ckpt_group *cg = &s->groups[1 + g];
        snprintf(cg->name, sizeof cg->name, "%s", slm_optimizer_group(opt, g, NULL, &cg->tensors, &cg->ntensors));
    }
    const int moe = slm_train_moe_ckpt_group(slm_model_config_of(tr->model), &tr->moe_table, &s->groups[s->ngroups]);
    s->ngroups += moe;
    const int first_outer = s->ngroups;
    s->ngroups += slm_train_outer_ckpt_groups(tr->conf, slm_model_tensor(tr->model, 0), nt, &s->groups[s->ngroups]);
    const int cap = 2 * slm_fsdp_num_buckets(tr->fsdp);
    slm_fsdp_range *r = malloc((size_t)cap * sizeof *r);
    /* at most one piece per (range, tensor) overlap - ranges + tensors - per group */
    s->pieces = r ? malloc(((size_t)s->ngroups * (size_t)(cap + nt) + 1) * sizeof *s->pieces) : NULL;
    if (!s->pieces) {
        free(r);
        return SLM_ERROR(SLM_ERR_NOMEM, "checkpoint: out of memory for the list of pieces");
    }
    const int nr = slm_fsdp_state_ranges(tr->fsdp, for_read, r);
    for (int g = 0; g < s->ngroups; g++) {
        const int first = s->npieces;
        if (g >= first_outer) { /* the islands' outer optimizer */
            outer_pieces(tr, for_read, g - first_outer, s);
            s->groups[g].pieces = s->pieces + first;
            s->groups[g].npieces = s->npieces - first;
            continue;
        }
        if (moe && g == first_outer - 1) { /* the routers' biases: whole on every rank, written by rank 0 */
            if (for_read || tr->rank == 0)
                s->pieces[s->npieces++] = (slm_ckpt_piece){0, tr->moe_table.count, tr->moe_bias};
            s->groups[g].pieces = s->pieces + first;
            s->groups[g].npieces = s->npieces - first;
            continue;
        }
        slm_optim_state_kind kind = SLM_OPT_STATE_ELEMENTS;
        if (g > 0) slm_optimizer_group(opt, g - 1, &kind, NULL, NULL);
        if (kind == SLM_OPT_STATE_ELEMENTS) {
            elementwise_pieces(tr, r, nr, for_read, g, s);
        } else { /* read whole; written per tensor by one rank */
            size_t n;
            float *data = slm_optimizer_replicated(opt, g - 1, &n);
            const slm_ckpt_group *cg = &s->groups[g];
            if (for_read && n) s->pieces[s->npieces++] = (slm_ckpt_piece){0, n, data};
            for (int d = 0; !for_read && d < cg->ntensors; d++)
                if (cg->tensors[d].count && writes_replicated(tr, &cg->tensors[d]))
                    s->pieces[s->npieces++] =
                        (slm_ckpt_piece){cg->tensors[d].offset, cg->tensors[d].count, data + cg->tensors[d].offset};
        }
        s->groups[g].pieces = s->pieces + first;
        s->groups[g].npieces = s->npieces - first;
    }
    free(r);
    return SLM_OK;
}

static void meta_of(trainer *tr, long step, slm_ckpt_meta *m)
{
    const slm_conf *c = tr->conf;
    memset(m, 0, sizeof *m);
    m->step = step;
    m->samples = tr->samples;
    m->tokens = tr->samples * (long long)tr->T;
    slm_optimizer_t opt = slm_fsdp_optimizer(tr->fsdp);
    snprintf(m->optimizer, sizeof m->optimizer, "%s", slm_optimizer_name(opt));
    m->optimizer_step = slm_optimizer_steps(opt);
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
    ckpt_state state;
    slm_status s = state_of(tr, 1, &state);
    const slm_ckpt_group *params = &state.groups[0];
    for (int i = 0; i < params->npieces && s == SLM_OK; i++)
        s = fill(src, params->pieces[i].offset, params->pieces[i].count, params->pieces[i].data);
    state_free(&state);
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
    /* the newest checkpoint that verifies and holds exactly this model's tensors and this
     * optimizer's state (with ckpt.reset_optimizer: its parameters; the state is not read) */
    const int reset = c->ckpt.reset_optimizer;
    ckpt_state state;
    SLM_CALL(slm_agree(comm, state_of(tr, 1, &state)));
    const slm_ckpt_expect expect = {&want, state.groups, state.ngroups, reset};
    slm_status s = slm_ckpt_find(comm, c->ckpt.dir, c->ckpt.resume, &expect, path, sizeof path);
    if (s != SLM_OK || !path[0]) { /* an error, or nothing to resume: a fresh run */
        state_free(&state);
        SLM_CALL(s);
        if (c->model.init_from[0])
            SLM_CALL(slm_hf_is_model_dir(c->model.init_from) ? init_from_hf(tr) : init_from_llmc(tr));
        if (tr->outer) slm_outer_reset(tr->outer); /* the first round starts from the imported weights */
        return SLM_OK;
    }
    slm_ckpt_stats st;
    s = slm_ckpt_load(comm, path, state.groups, reset ? 1 : state.ngroups, &meta, &st);
    state_free(&state);
    SLM_CALL(s);
    SLM_CHECK(meta.step <= c->train.steps, SLM_ERR_CONFIG,
              "%s is at step %ld, past train.steps = %ld", path, meta.step, c->train.steps);
    slm_fsdp_after_load(tr->fsdp, reset ? 0 : meta.optimizer_step);
    if (!reset) slm_trainer_moe_scatter_bias(tr);
    if (tr->outer && reset) slm_outer_reset(tr->outer); /* a new first round from the loaded parameters */
    /* The outer steps taken are not in the file: step / H undercounts when a run's last
     * step (not a multiple of H) ended with one. What matters is whether the next step is
     * the first, where SGD sets its momentum instead of decaying it; with a momentum still
     * zero both give the same bits, so after any step the count is at least 1. */
    else if (tr->outer) {
        const long done = meta.step / c->islands.sync_every;
        slm_outer_set_steps(tr->outer, meta.step > 0 && done < 1 ? 1 : done);
    }
    tr->start_step = meta.step;
    tr->samples = meta.samples;
    snprintf(tr->resumed_matmul, sizeof tr->resumed_matmul, "%s", meta.matmul);
    if (tr->rank == 0) {
        printf("resume    %s: step %ld, %lld tokens, written by %s; read in %.2f s", path, meta.step, meta.tokens,
               meta.layout, st.seconds);
        if (reset)
            printf("; optimizer state reset (ckpt.reset_optimizer): %s starts afresh, the checkpoint's %s at its step "
                   "%ld is not used", want.optimizer, meta.optimizer, meta.optimizer_step);
        printf("\n");
    }
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
    ckpt_state state; /* its pieces point into buf */
    slm_ckpt_meta meta;
    int keep;
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
    a->result = slm_ckpt_save(a->comm, a->dir, &a->meta, a->state.groups, a->state.ngroups, a->keep, a->keep_every,
                              &a->stats);
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
        state_free(&a->state);
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

/* Copy what this rank saves - every piece of every group - into the snapshot buffer and
 * start the writer thread; it takes over state. Collective. */
static slm_status save_async(trainer *tr, ckpt_state *state, const slm_ckpt_meta *meta)
{
    const slm_conf *c = tr->conf;
    slm_status s = join_async(tr); /* one in flight at a time; its outcome was agreed */
    double t0 = MPI_Wtime();
    size_t need = 0;
    for (int i = 0; i < state->npieces; i++) need += state->pieces[i].count;
    if (s == SLM_OK) s = slm_agree(slm_mesh_world(tr->mesh), snapshot_buffer(tr, need));
    if (s != SLM_OK) {
        state_free(state);
        return slm_error_push(s, __FILE__, __LINE__, __func__);
    }
    struct slm_async_save *a = tr->async;
    if (a->comm == MPI_COMM_NULL) MPI_Comm_dup(slm_mesh_world(tr->mesh), &a->comm);
    state_free(&a->state);
    a->state = *state; /* the groups point into state->pieces, which moves over whole */
    float *dst = a->buf;
    for (int i = 0; i < a->state.npieces; i++) {
        slm_ckpt_piece *p = &a->state.pieces[i];
        memcpy(dst, p->data, p->count * sizeof(float));
        p->data = dst;
        dst += p->count;
    }
    a->meta = *meta;
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

slm_status slm_trainer_write_params(trainer *tr, const char *dir, long step, int keep, double *bytes)
{
    ckpt_state state;
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), state_of(tr, 0, &state)));
    slm_ckpt_meta meta;
    meta_of(tr, step, &meta);
    slm_ckpt_stats st = {0, 0};
    slm_status s = slm_ckpt_save(slm_mesh_world(tr->mesh), dir, &meta, state.groups, 1, keep, 0, &st);
    state_free(&state);
    *bytes = st.bytes;
    return s;
}

slm_status slm_trainer_read_params(trainer *tr, const char *path, float *into, double *bytes)
{
    const int nt = slm_model_num_tensors(tr->model), nc = slm_outer_num_chunks(tr->outer);
    slm_ckpt_piece *pieces = malloc(((size_t)nc + (size_t)nt + 1) * sizeof *pieces);
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh),
                       pieces ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "islands: out of memory for the list of pieces")));
    int n = 0;
    size_t pos = 0;
    for (int c = 0; c < nc; c++) {
        const slm_optim_segment *ch = slm_outer_chunk(tr->outer, c);
        for (int k = 0; k < nt; k++) {
            size_t lo, hi;
            if (slm_tensor_overlap(slm_model_tensor(tr->model, k), ch->offset, ch->count, &lo, &hi))
                pieces[n++] = (slm_ckpt_piece){lo, hi - lo, into + pos + (lo - ch->offset)};
        }
        pos += ch->count;
    }
    const slm_ckpt_group params = {"params", slm_model_tensor(tr->model, 0), nt, pieces, n};
    slm_ckpt_meta meta;
    slm_ckpt_stats st = {0, 0};
    slm_status s = slm_ckpt_load(slm_mesh_world(tr->mesh), path, &params, 1, &meta, &st);
    free(pieces);
    *bytes = st.bytes;
    return s;
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
    slm_trainer_moe_gather_bias(tr);
    ckpt_state state;
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), state_of(tr, 0, &state)));
    slm_ckpt_meta meta;
    meta_of(tr, done, &meta);
    if (c->ckpt.async && !force) return save_async(tr, &state, &meta); /* it takes over state */
    slm_status s = join_async(tr); /* a forced save is written now; one in flight commits first */
    slm_ckpt_stats st;
    if (s == SLM_OK)
        s = slm_ckpt_save(slm_mesh_world(tr->mesh), c->ckpt.dir, &meta, state.groups, state.ngroups, c->ckpt.keep,
                          c->ckpt.keep_every, &st);
    state_free(&state);
    SLM_CALL(s);
    if (tr->rank == 0)
        printf("ckpt      step %ld -> %s/step_%09ld.h5: %.1f MB in %.2f s (%.0f MB/s), training stalled %.2f s\n",
               done, c->ckpt.dir, done, st.bytes / 1e6, st.seconds, st.bytes / 1e6 / (st.seconds > 0 ? st.seconds : 1),
               st.seconds);
    return SLM_OK;
}
