/* checkpoint.c - wiring the sharded training state to HDF5 checkpoints: which ranges this
 * rank saves and restores, the metadata, when to save, and the log lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/ckpt.h"
#include "shardlm/log.h"
#include "trainer_impl.h"

/* The sharded layer's ranges as checkpoint pieces (the same fields). */
static slm_ckpt_piece *pieces_of(trainer *tr, int for_read, int *n)
{
    int cap = 2 * slm_fsdp_num_buckets(tr->fsdp);
    slm_fsdp_range *r = malloc((size_t)cap * sizeof *r);
    slm_ckpt_piece *p = malloc((size_t)cap * sizeof *p);
    if (!r || !p) {
        free(r);
        free(p);
        return NULL;
    }
    *n = slm_fsdp_state_ranges(tr->fsdp, for_read, r);
    for (int i = 0; i < *n; i++) p[i] = (slm_ckpt_piece){r[i].offset, r[i].count, r[i].params, r[i].m, r[i].v};
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
    m->adam_t = slm_fsdp_adam_steps(tr->fsdp);
    m->seed = c->train.seed;
    m->n_layer = c->model.n_layer;
    m->n_head = c->model.n_head;
    m->d_model = c->model.d_model;
    m->vocab_size = c->model.vocab_size;
    m->seq_len = c->model.seq_len;
    snprintf(m->layout, sizeof m->layout, "dp=%d tp=%d pp=%d zero_stage=%d precision=%s", tr->dp,
             c->parallel.tp, c->parallel.pp, c->parallel.zero_stage, c->train.precision);
    slm_conf_to_ini(c, m->config, sizeof m->config);
}

/* A fresh run that starts from llm.c weights: every rank copies the ranges it holds. */
static slm_status init_from_llmc(trainer *tr)
{
    const slm_conf *c = tr->conf;
    slm_gpt_config mc = {c->model.n_layer, c->model.n_head, c->model.d_model, c->model.vocab_size,
                         c->model.seq_len};
    slm_llmc_t llmc = NULL;
    slm_status s = slm_llmc_open(c->model.init_from, &mc, &llmc);
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), s));
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 1, &n);
    if (!pieces) {
        slm_llmc_close(&llmc);
        return SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++)
        if (pieces[i].params)
            slm_llmc_fill(llmc, slm_gpt_tensor(tr->model, 0), slm_gpt_num_tensors(tr->model), pieces[i].offset,
                          pieces[i].count, pieces[i].params);
    free(pieces);
    slm_llmc_close(&llmc);
    slm_fsdp_after_load(tr->fsdp, 0);
    if (tr->rank == 0) printf("init      weights from %s (llm.c GPT-2 checkpoint)\n", c->model.init_from);
    return SLM_OK;
}

slm_status slm_trainer_restore(trainer *tr)
{
    const slm_conf *c = tr->conf;
    MPI_Comm comm = slm_mesh_world(tr->mesh);
    char path[4096];
    SLM_CALL(slm_ckpt_find(comm, c->ckpt.dir, c->ckpt.resume, path, sizeof path));
    if (!path[0]) /* nothing to resume: a fresh run */
        return c->model.init_from[0] ? init_from_llmc(tr) : SLM_OK;
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 1, &n);
    SLM_CHECK(pieces, SLM_ERR_NOMEM, "out of memory");
    slm_ckpt_meta meta, want;
    meta_of(tr, 0, &want);
    slm_ckpt_stats st;
    slm_status s = slm_ckpt_verify(comm, path, &want, &meta); /* the model shape must match */
    if (s == SLM_OK)
        s = slm_ckpt_load(comm, path, slm_gpt_tensor(tr->model, 0), slm_gpt_num_tensors(tr->model), pieces, n,
                          &meta, &st);
    free(pieces);
    SLM_CALL(s);
    SLM_CHECK(meta.step <= c->train.steps, SLM_ERR_CONFIG,
              "%s is at step %ld, past train.steps = %ld", path, meta.step, c->train.steps);
    slm_fsdp_after_load(tr->fsdp, meta.adam_t);
    tr->start_step = meta.step;
    tr->samples = meta.samples;
    if (tr->rank == 0)
        printf("resume    %s: step %ld, %lld tokens, written by %s; read in %.2f s\n", path, meta.step,
               meta.tokens, meta.layout, st.seconds);
    return SLM_OK;
}

slm_status slm_trainer_maybe_save(trainer *tr, long step)
{
    const slm_conf *c = tr->conf;
    const long done = step + 1;
    if (!c->ckpt.dir[0]) return SLM_OK;
    if (!(done == c->train.steps || done == c->train.stop_after || (c->ckpt.every > 0 && done % c->ckpt.every == 0)))
        return SLM_OK;
    int n = 0;
    slm_ckpt_piece *pieces = pieces_of(tr, 0, &n);
    SLM_CHECK(pieces, SLM_ERR_NOMEM, "out of memory");
    slm_ckpt_meta meta;
    meta_of(tr, done, &meta);
    slm_ckpt_stats st;
    slm_status s = slm_ckpt_save(slm_mesh_world(tr->mesh), c->ckpt.dir, &meta, slm_gpt_tensor(tr->model, 0),
                                 slm_gpt_num_tensors(tr->model), pieces, n, c->ckpt.keep, c->ckpt.keep_every, &st);
    free(pieces);
    SLM_CALL(s);
    if (tr->rank == 0)
        printf("ckpt      step %ld -> %s/step_%09ld.h5: %.1f MB in %.2f s (%.0f MB/s), training stalled %.2f s\n",
               done, c->ckpt.dir, done, st.bytes / 1e6, st.seconds, st.bytes / 1e6 / (st.seconds > 0 ? st.seconds : 1),
               st.seconds);
    return SLM_OK;
}
