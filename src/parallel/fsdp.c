/* fsdp.c - fully sharded data parallelism (ZeRO stages 0-3) over one dp communicator.
 *
 * What each rank holds, N parameters over p ranks (DESIGN note in docs/parallelism.md):
 *   stage 0: parameters N, gradients N, AdamW moments 2N            all-reduce
 *   stage 1: parameters N, gradients N (+ reduced N/p), moments 2N/p  reduce-scatter, all-gather
 *   stage 2: parameters N, gradients N/p (+ unit buffers), 2N/p      reduce-scatter, all-gather
 *   stage 3: parameters N/p (+ gathered units), gradients N/p, 2N/p  gather per unit, reduce-scatter
 * Every unit (embeddings, each block, the final norm) is split in p contiguous chunks, so
 * ranks own the same element ranges at every stage and an uneven size just leaves the last
 * chunks shorter. Stages 0 and 1 accumulate micro-steps in the full gradient and reduce
 * on the last one only; stages 2 and 3 keep no full gradient, so they reduce-scatter each
 * micro-step into the shard. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fsdp_impl.h"
#include "shardlm/timer.h"
#include "shardlm/kernels.h"

static float *alloc_f(size_t n, double *account)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (p && account) *account += (double)n * sizeof(float);
    return p;
}

/* Point the model units of bucket b at params/grads storage holding the bucket (NULL:
 * leave that side). */
static void bind_bucket(slm_fsdp_t f, int b, float *params, float *grads)
{
    const fsdp_unit *bk = &f->u[b];
    for (int mu = bk->first; mu <= bk->last; mu++) {
        size_t off, n;
        slm_model_unit_range(f->model, mu, &off, &n);
        slm_model_bind_unit(f->model, mu, params ? params + (off - bk->off) : NULL,
                          grads ? grads + (off - bk->off) : NULL);
    }
}

/* ---- hooks ------------------------------------------------------------------------- */

static void fatal(slm_fsdp_t f, const char *what)
{
    fprintf(stderr, "shardlm: internal error in the sharded layer: %s\n", what);
    MPI_Abort(f->dp, 1);
}

/* Stage 3: start gathering unit u if it is not there or on its way. */
static void prefetch(slm_fsdp_t f, int u, int must)
{
    fsdp_unit *un = &f->u[u];
    if (un->gathered) return;
    if (u != 0) {
        int s = fsdp_acquire(f, &f->ppool, 0);
        if (s < 0) {
            if (must) fatal(f, "no free parameter buffer");
            return;
        }
        un->pslot = s;
    }
    fsdp_launch(f, OP_GATHER, u, un->pslot);
}

/* Stage 3: make unit u's parameters present and bind the model to them. */
static void require_params(slm_fsdp_t f, int u)
{
    fsdp_unit *un = &f->u[u];
    prefetch(f, u, 1);
    if (un->gathered == 1) fsdp_wait(f, fsdp_find(f, OP_GATHER, u));
    bind_bucket(f, u, fsdp_unit_params(f, u), NULL);
}

static void release_params(slm_fsdp_t f, int u)
{
    fsdp_unit *un = &f->u[u];
    if (un->gathered == 1) fsdp_wait(f, fsdp_find(f, OP_GATHER, u));
    if (u != 0 && un->pslot >= 0) f->ppool.busy[un->pslot] = 0;
    un->pslot = -1;
    un->gathered = 0;
}

static int reduces_now(slm_fsdp_t f) { return f->o.zero_stage >= 2 || f->last_micro; }

/* The model calls with model units; the layer works in buckets of them. */
static void hook_before(void *ctx, int mu, slm_pass pass)
{
    slm_fsdp_t f = ctx;
    const int u = f->bucket_of[mu];
    if (f->o.zero_stage == 3) {
        require_params(f, u);
        /* prefetch the bucket that runs next: forward ascends, backward descends to 1 */
        int next = pass == SLM_PASS_FORWARD ? (u + 1 < f->nunits ? u + 1 : -1) : (u >= 2 ? u - 1 : -1);
        if (next > 0 && f->o.overlap) prefetch(f, next, 0);
    } else if (f->o.zero_stage > 0) { /* the bucket's updated parameters, gathered after the last step */
        int i = fsdp_find(f, OP_ALLGATHER, u);
        if (i >= 0) fsdp_wait(f, i);
    }
    fsdp_unit *un = &f->u[u];
    if (f->o.zero_stage >= 2 && pass == SLM_PASS_BACKWARD && un->gslot < 0) {
        un->gslot = u == 0 ? 0 : fsdp_acquire(f, &f->gpool, 1);
        if (un->gslot < 0) fatal(f, "no free gradient buffer");
        float *g = fsdp_unit_grads(f, u);
        memset(g, 0, un->n * sizeof(float));
        bind_bucket(f, u, NULL, g);
    }
}

static void hook_after(void *ctx, int mu, slm_pass pass)
{
    slm_fsdp_t f = ctx;
    const int u = f->bucket_of[mu];
    const fsdp_unit *un = &f->u[u];
    /* a bucket is done when its last unit ran forward, or its first unit ran backward */
    int done = pass == SLM_PASS_FORWARD ? mu == un->last : mu == un->first;
    if (!done) return;
    if (f->o.zero_stage == 3 && (u != 0 || pass == SLM_PASS_BACKWARD)) release_params(f, u);
    if (pass != SLM_PASS_BACKWARD || !reduces_now(f)) return;
    int i = fsdp_launch(f, f->o.zero_stage == 0 ? OP_ALLREDUCE : OP_REDUCE_SCATTER, u, un->gslot);
    if (!f->o.overlap) fsdp_wait(f, i); /* the baseline: communication fully exposed */
}

static void hook_poll(void *ctx) { fsdp_poll(ctx); }

/* ---- lifecycle ----------------------------------------------------------------------- */

/* The reduction of bf16 payloads: add in fp32, round back at every combine. */
static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *type)
{
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    enum { BLK = 256 };
    float fa[BLK], fb[BLK];
    for (int i = 0; i < *len; i += BLK) {
        int n = *len - i < BLK ? *len - i : BLK;
        slm_f32_from_bf16(fa, a + i, (size_t)n);
        slm_f32_from_bf16(fb, b + i, (size_t)n);
        for (int k = 0; k < n; k++) fa[k] += fb[k];
        slm_bf16_from_f32(b + i, fa, (size_t)n);
    }
}

static uint16_t *alloc_h(size_t n, double *account)
{
    uint16_t *p = calloc(n ? n : 1, sizeof(uint16_t));
    if (p && account) *account += (double)n * sizeof(uint16_t);
    return p;
}


/* The optimizer's reducer: sum per-tensor statistics over the ranks that hold the other
 * parts of each tensor - the stage's dp x tp ranks when ZeRO shards the state (each rank
 * holds its own chunk of every bucket), the tensor-parallel group otherwise (each dp rank
 * holds everything) - counting a tensor every tensor-parallel rank holds whole once. */
static void sum_statistics(void *ctx, double *buf, const size_t *start, int ntensors)
{
    slm_fsdp_t f = ctx;
    MPI_Comm comm = f->o.zero_stage > 0 ? f->o.stage : f->o.tp;
    if (comm == MPI_COMM_NULL) return;
    int tp_rank = 0;
    if (f->o.tp != MPI_COMM_NULL) MPI_Comm_rank(f->o.tp, &tp_rank);
    if (tp_rank > 0)
        for (int i = 0; i < ntensors; i++)
            if (!slm_model_tensor(f->model, i)->tp_split)
                for (size_t k = start[i]; k < start[i + 1]; k++) buf[k] = 0.0;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)start[ntensors], MPI_DOUBLE, MPI_SUM, comm);
}

/* One optimizer segment per bucket, its owned chunk (stage 0: one over everything). */
static slm_status create_optimizer(slm_fsdp_t f)
{
    const int stage = f->o.zero_stage;
    const int nseg = stage == 0 ? 1 : f->nunits;
    slm_optim_segment *seg = malloc((size_t)nseg * sizeof *seg);
    SLM_CHECK(seg, SLM_ERR_NOMEM, "cannot allocate the optimizer's segments");
    if (stage == 0) {
        seg[0] = (slm_optim_segment){0, f->nparams, f->bf16 ? f->master : f->full_params, f->full_grads};
    } else {
        for (int u = 0; u < f->nunits; u++) {
            const fsdp_unit *un = &f->u[u];
            float *p = stage == 3 ? f->shard_params + un->shard_off
                       : f->bf16  ? f->master + un->shard_off
                                  : f->full_params + un->off + un->own_lo;
            seg[u] = (slm_optim_segment){un->off + un->own_lo, un->own_n, p, f->shard_grads + un->shard_off};
        }
    }
    slm_status st = slm_optimizer_create(&f->o.optim, slm_model_tensor(f->model, 0), slm_model_num_tensors(f->model),
                                         seg, nseg, &f->opt);
    free(seg);
    if (st == SLM_OK) f->mem.optimizer = slm_optimizer_bytes(f->opt);
    return st;
}
slm_status slm_fsdp_create(slm_model_t model, MPI_Comm dp, const slm_fsdp_options *opt,
                           slm_fsdp_t *out)
{
    *out = NULL;
    slm_fsdp_t f = calloc(1, sizeof *f);
    SLM_CHECK(f, SLM_ERR_NOMEM, "out of memory");
    f->model = model;
    f->dp = dp;
    f->o = *opt;
    f->bf16 = opt->bf16;
    f->bf16_sum = MPI_OP_NULL;
    f->clip_scale = 1.0f;
    MPI_Comm_rank(dp, &f->rank);
    MPI_Comm_size(dp, &f->size);
    const int nmu = slm_model_num_units(model);
    f->nparams = slm_model_num_params(model);
    f->u = calloc((size_t)nmu, sizeof *f->u);
    f->bucket_of = calloc((size_t)nmu, sizeof *f->bucket_of);
    SLM_CHECK(f->u && f->bucket_of, SLM_ERR_NOMEM, "out of memory");
    size_t *sizes = calloc((size_t)nmu, sizeof *sizes);
    SLM_CHECK(sizes, SLM_ERR_NOMEM, "out of memory");
    for (int mu = 0; mu < nmu; mu++) {
        size_t off;
        slm_model_unit_range(model, mu, &off, &sizes[mu]);
    }
    int *groups = malloc((size_t)nmu * sizeof(int));
    SLM_CHECK(groups, SLM_ERR_NOMEM, "out of memory");
    f->nunits = slm_fsdp_group_units(sizes, slm_fsdp_unit_groups(model, opt->ep, groups), nmu, opt->bucket_mb,
                                     f->bucket_of);
    free(groups);
    free(sizes);
    for (int mu = 0; mu < nmu; mu++) {
        size_t off, n;
        slm_model_unit_range(model, mu, &off, &n);
        fsdp_unit *un = &f->u[f->bucket_of[mu]];
        if (!un->n) un->first = mu, un->off = off;
        un->last = mu;
        un->n += n;
    }
    for (int i = 0; i < FSDP_MAX_OPS; i++) f->req[i] = MPI_REQUEST_NULL;
    const int stage = opt->zero_stage;
    size_t max_block = 0, max_chunk = 0;
    for (int u = 0; u < f->nunits; u++) {
        fsdp_unit *un = &f->u[u];
        /* experts reduce and shard over the ranks that hold the same experts */
        un->expert = opt->ep > 1 && slm_model_unit_reduce(model, un->first) == SLM_REDUCE_EXPERT_DATA;
        un->comm = un->expert ? opt->edp : dp;
        MPI_Comm_rank(un->comm, &un->rank);
        MPI_Comm_size(un->comm, &un->size);
        const int p = un->size;
        SLM_CHECK(un->n <= INT_MAX, SLM_ERR_UNSUPPORTED,
                  "a bucket of %zu parameters is more than an MPI count holds: lower parallel.bucket_mb", un->n);
        un->chunk = (un->n + (size_t)p - 1) / (size_t)p;
        un->counts = calloc((size_t)p, sizeof(int));
        un->displs = calloc((size_t)p, sizeof(int));
        SLM_CHECK(un->counts && un->displs, SLM_ERR_NOMEM, "out of memory");
        for (int r = 0; r < p; r++) {
            size_t lo = (size_t)r * un->chunk, hi = lo + un->chunk;
            if (lo > un->n) lo = un->n;
            if (hi > un->n) hi = un->n;
            un->counts[r] = (int)(hi - lo);
            un->displs[r] = (int)lo;
        }
        un->own_lo = (size_t)un->displs[un->rank];
        un->own_n = (size_t)un->counts[un->rank];
        if (u != 0 && un->n / (size_t)p + 1 > max_chunk) max_chunk = un->n / (size_t)p + 1; /* what recv holds */
        un->shard_off = f->shard_total;
        f->shard_total += un->chunk;
        un->pslot = un->gslot = -1;
        if (u != 0 && un->n > max_block) max_block = un->n;
    }
    const size_t n0 = f->u[0].n;
    int ok = 1;
    if (stage < 3) ok &= (f->full_params = alloc_f(f->nparams, &f->mem.params)) != NULL;
    else ok &= (f->shard_params = alloc_f(f->shard_total, &f->mem.params)) != NULL;
    if (stage < 2) ok &= (f->full_grads = alloc_f(f->nparams, &f->mem.grads)) != NULL;
    if (stage >= 1) ok &= (f->shard_grads = alloc_f(f->shard_total, &f->mem.grads)) != NULL;
    if (stage >= 2) {
        ok &= (f->unit0_grads = alloc_f(n0, &f->mem.grad_buckets)) != NULL;
        ok &= (f->unit0_recv = alloc_f(f->u[0].chunk, &f->mem.grad_buckets)) != NULL;
        f->gpool.size = max_block;
        for (int s = 0; s < FSDP_SLOTS && ok; s++) {
            ok &= (f->gpool.buf[s] = alloc_f(max_block, &f->mem.grad_buckets)) != NULL;
            ok &= (f->gpool.recv[s] = alloc_f(max_chunk, &f->mem.grad_buckets)) != NULL;
        }
    }
    if (stage == 3) {
        ok &= (f->unit0_params = alloc_f(n0, &f->mem.gathered)) != NULL;
        f->ppool.size = max_block;
        for (int s = 0; s < FSDP_SLOTS && ok; s++)
            ok &= (f->ppool.buf[s] = alloc_f(max_block, &f->mem.gathered)) != NULL;
    }
    if (f->bf16) { /* masters and wire staging; see fsdp_impl.h */
        MPI_Op_create(bf16_sum_fn, 1, &f->bf16_sum);
        if (stage == 0) ok &= (f->master = alloc_f(f->nparams, &f->mem.params)) != NULL;
        if (stage == 1 || stage == 2) ok &= (f->master = alloc_f(f->shard_total, &f->mem.params)) != NULL;
        if (stage < 3) ok &= (f->wire = alloc_h(f->nparams, &f->mem.grad_buckets)) != NULL;
        if (stage == 1 || stage == 3) ok &= (f->wire_shard = alloc_h(f->shard_total, &f->mem.grad_buckets)) != NULL;
        if (stage >= 2) {
            ok &= (f->unit0_wire = alloc_h(n0, &f->mem.grad_buckets)) != NULL;
            ok &= (f->unit0_wire_recv = alloc_h(f->u[0].chunk, &f->mem.grad_buckets)) != NULL;
            for (int s = 0; s < FSDP_SLOTS && ok; s++) {
                ok &= (f->gpool.wire[s] = alloc_h(max_block, &f->mem.grad_buckets)) != NULL;
                ok &= (f->gpool.wire_recv[s] = alloc_h(max_chunk, &f->mem.grad_buckets)) != NULL;
            }
        }
        if (stage == 3) {
            ok &= (f->unit0_pwire = alloc_h(n0, &f->mem.gathered)) != NULL;
            for (int s = 0; s < FSDP_SLOTS && ok; s++)
                ok &= (f->ppool.wire[s] = alloc_h(max_block, &f->mem.gathered)) != NULL;
        }
    }
    if (ok && create_optimizer(f) != SLM_OK) ok = 0;
    if (!ok) {
        double gib = (f->mem.params + f->mem.grads + f->mem.gathered + f->mem.grad_buckets +
                      f->mem.optimizer) / (1 << 30);
        slm_fsdp_destroy(&f);
        return SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the sharded training state (%.2f GiB so far)", gib);
    }
    for (int u = 0; u < f->nunits; u++)
        bind_bucket(f, u, stage < 3 ? fsdp_unit_params(f, u) : NULL, stage < 2 ? fsdp_unit_grads(f, u) : NULL);
    slm_model_hooks hooks = {hook_before, hook_after, hook_poll, f};
    slm_model_set_hooks(model, &hooks);
    f->last_micro = 1;
    *out = f;
    return SLM_OK;
}

void slm_fsdp_destroy(slm_fsdp_t *fp)
{
    slm_fsdp_t f = *fp;
    if (!f) return;
    if (f->model) slm_model_set_hooks(f->model, NULL);
    for (int i = 0; i < FSDP_MAX_OPS; i++)
        if (f->req[i] != MPI_REQUEST_NULL) MPI_Wait(&f->req[i], MPI_STATUS_IGNORE);
    for (int u = 0; f->u && u < f->nunits; u++) {
        free(f->u[u].counts);
        free(f->u[u].displs);
    }
    free(f->u);
    free(f->bucket_of);
    free(f->full_params);
    free(f->full_grads);
    free(f->shard_params);
    free(f->shard_grads);
    free(f->unit0_params);
    free(f->unit0_grads);
    free(f->unit0_recv);
    free(f->master);
    free(f->wire);
    free(f->wire_shard);
    free(f->unit0_wire);
    free(f->unit0_wire_recv);
    free(f->unit0_pwire);
    for (int s = 0; s < FSDP_SLOTS; s++) {
        free(f->ppool.buf[s]);
        free(f->gpool.buf[s]);
        free(f->gpool.recv[s]);
        free(f->ppool.wire[s]);
        free(f->gpool.wire[s]);
        free(f->gpool.wire_recv[s]);
    }
    if (f->bf16_sum != MPI_OP_NULL) MPI_Op_free(&f->bf16_sum);
    slm_optimizer_destroy(&f->opt);
    free(f);
    *fp = NULL;
}

/* ---- the step ------------------------------------------------------------------------ */

void slm_fsdp_init_params(slm_fsdp_t f, uint64_t seed)
{
    if (f->o.zero_stage < 3) {
        slm_model_init_range(f->model, seed, 0, f->nparams, f->full_params);
        if (!f->bf16) return;
        if (f->o.zero_stage == 0) memcpy(f->master, f->full_params, f->nparams * sizeof(float));
        else
            for (int u = 0; u < f->nunits; u++) {
                const fsdp_unit *un = &f->u[u];
                memcpy(f->master + un->shard_off, f->full_params + un->off + un->own_lo, un->own_n * sizeof(float));
            }
        slm_bf16_round(f->full_params, f->nparams); /* the model computes with bf16 values */
        return;
    }
    for (int u = 0; u < f->nunits; u++) {
        const fsdp_unit *un = &f->u[u];
        slm_model_init_range(f->model, seed, un->off + un->own_lo, un->own_n, f->shard_params + un->shard_off);
    }
}

void slm_fsdp_begin_step(slm_fsdp_t f)
{
    if (f->full_grads) memset(f->full_grads, 0, f->nparams * sizeof(float));
    if (f->shard_grads) memset(f->shard_grads, 0, f->shard_total * sizeof(float));
}

void slm_fsdp_set_last_micro(slm_fsdp_t f, int last) { f->last_micro = last; }

slm_status slm_fsdp_finish_backward(slm_fsdp_t f)
{
    fsdp_wait_all(f);
    return SLM_OK;
}

/* Sums of squares of g, the gradients of [off, off+n), over the tensors split across the
 * tensor-parallel group (*split) and over the tensors every rank of it holds whole
 * (*whole). */
static void sumsq_by_split(slm_fsdp_t f, const float *g, size_t off, size_t n, double *split, double *whole)
{
    const int nt = slm_model_num_tensors(f->model);
    for (int i = 0; i < nt; i++) {
        const slm_tensor_info *t = slm_model_tensor(f->model, i);
        size_t lo, hi;
        if (slm_tensor_overlap(t, off, n, &lo, &hi))
            *(t->tp_split ? split : whole) += slm_sumsq(g + (lo - off), hi - lo);
    }
}

/* With model parallelism the norm counts each tensor-parallel split tensor's parts once
 * from every rank of the group and each whole tensor once (every rank of the group holds
 * the same), every pipeline stage's tensors, and the tied embedding once. */
static double grad_norm_model_parallel(slm_fsdp_t f)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0}; /* split, whole; the same of the experts' buckets */
    const int skip = f->o.count_tied ? -1 : slm_model_tied_unit(f->model);
    for (int u = 0; u < f->nunits; u++) {
        if (u == skip) continue;
        const fsdp_unit *un = &f->u[u];
        double *d = un->expert ? s + 2 : s;
        if (f->o.zero_stage == 0) sumsq_by_split(f, f->full_grads + un->off, un->off, un->n, &d[0], &d[1]);
        else sumsq_by_split(f, f->shard_grads + un->shard_off, un->off + un->own_lo, un->own_n, &d[0], &d[1]);
    }
    /* sharded, every element is one dp rank's; whole, each expert is on one rank of an ep group */
    if (f->o.zero_stage > 0) MPI_Allreduce(MPI_IN_PLACE, s, 4, MPI_DOUBLE, MPI_SUM, f->dp);
    else if (f->o.ep > 1) MPI_Allreduce(MPI_IN_PLACE, s + 2, 2, MPI_DOUBLE, MPI_SUM, f->o.ep_comm);
    s[0] += s[2];
    s[1] += s[3];
    if (f->o.tp != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &s[0], 1, MPI_DOUBLE, MPI_SUM, f->o.tp);
    double total = s[0] + s[1];
    if (f->o.pp != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_DOUBLE, MPI_SUM, f->o.pp);
    return sqrt(total);
}

double slm_fsdp_sum_tied(slm_fsdp_t f)
{
    const int tied = slm_model_tied_unit(f->model);
    if (f->o.tied == MPI_COMM_NULL || tied < 0) return 0.0;
    const fsdp_unit *un = &f->u[tied];
    float *g = f->o.zero_stage == 0 ? f->full_grads + un->off : f->shard_grads + un->shard_off;
    size_t n = f->o.zero_stage == 0 ? un->n : un->own_n;
    MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, f->o.tied);
    return (double)n * sizeof(float); /* 2(p-1)/p x size with p = 2 */
}

double slm_fsdp_grad_norm(slm_fsdp_t f)
{
    if (f->o.tp != MPI_COMM_NULL || f->o.pp != MPI_COMM_NULL || !f->o.count_tied || f->o.ep > 1)
        return grad_norm_model_parallel(f);
    if (f->o.zero_stage == 0) return sqrt(slm_sumsq(f->full_grads, f->nparams));
    double local = 0.0, total = 0.0;
    for (int u = 0; u < f->nunits; u++)
        local += slm_sumsq(f->shard_grads + f->u[u].shard_off, f->u[u].own_n);
    MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, f->dp);
    return sqrt(total);
}

void slm_fsdp_clip(slm_fsdp_t f, double norm, double max_norm) { f->clip_scale = slm_clip_factor(norm, max_norm); }

slm_status slm_fsdp_optimizer_step(slm_fsdp_t f, double lr)
{
    const slm_optim_reducer red = {sum_statistics, f};
    slm_optimizer_begin_step(f->opt, lr, f->clip_scale, &red);
    f->clip_scale = 1.0f;
    if (f->o.zero_stage == 0) {
        slm_optimizer_update(f->opt, 0);
        if (f->bf16) { /* every rank has the same master: round it locally */
            memcpy(f->full_params, f->master, f->nparams * sizeof(float));
            slm_bf16_round(f->full_params, f->nparams);
        }
        return SLM_OK;
    }
    /* Stages 1-2: each bucket's all-gather starts as soon as its update is done and runs
     * behind the updates of the next buckets and the next forward, which waits for a
     * bucket only when it reaches it (hook_before). */
    for (int u = 0; u < f->nunits; u++) {
        slm_optimizer_update(f->opt, u);
        if (f->o.zero_stage == 3) continue;
        int i = fsdp_launch(f, OP_ALLGATHER, u, -1);
        if (!f->o.overlap) fsdp_wait(f, i);
        else fsdp_poll(f);
    }
    if (f->o.zero_stage == 3) /* gathered copies are stale now */
        for (int u = 0; u < f->nunits; u++) release_params(f, u);
    return SLM_OK;
}

slm_status slm_fsdp_gather(slm_fsdp_t f, int grads, float *full)
{
    fsdp_wait_all(f);
    const int root = f->rank < (f->o.ep > 1 ? f->o.ep : 1); /* dp rank 0, and the first ep for their experts */
    const int stage = f->o.zero_stage;
    if (!grads && stage < 3 && !(f->bf16 && stage > 0)) { /* a whole (master) vector is here */
        if (root) memcpy(full, f->bf16 ? f->master : f->full_params, f->nparams * sizeof(float));
        return SLM_OK;
    }
    if (grads && f->o.zero_stage == 0) {
        if (root) memcpy(full, f->full_grads, f->nparams * sizeof(float));
        return SLM_OK;
    }
    const float *shard = grads ? f->shard_grads : stage == 3 ? f->shard_params : f->master;
    for (int u = 0; u < f->nunits; u++) {
        const fsdp_unit *un = &f->u[u];
        MPI_Gatherv(shard + un->shard_off, (int)un->own_n, MPI_FLOAT, un->rank == 0 ? full + un->off : NULL,
                    un->counts, un->displs, MPI_FLOAT, 0, un->comm);
    }
    return SLM_OK;
}

/* ---- checkpoint state ------------------------------------------------------------------ */

int slm_fsdp_state_ranges(slm_fsdp_t f, int for_read, slm_fsdp_range *out)
{
    fsdp_wait_all(f); /* no parameter all-gather may still be writing */
    const int stage = f->o.zero_stage;
    int n = 0;
    for (int u = 0; u < f->nunits; u++) {
        const fsdp_unit *un = &f->u[u];
        const size_t own = un->off + un->own_lo;
        if (stage == 0) { /* the whole vector everywhere: write the owned chunk, read all */
            float *p = f->bf16 ? f->master : f->full_params;
            size_t off = for_read ? un->off : own, cnt = for_read ? un->n : un->own_n;
            out[n++] = (slm_fsdp_range){off, cnt, p + off, 1};
        } else if (stage == 3) {
            out[n++] = (slm_fsdp_range){own, un->own_n, f->shard_params + un->shard_off, 1};
        } else if (!for_read) { /* stages 1-2 write the master chunk they own */
            float *p = f->bf16 ? f->master + un->shard_off : f->full_params + own;
            out[n++] = (slm_fsdp_range){own, un->own_n, p, 1};
        } else { /* ... and read the whole replicated vector plus their optimizer state */
            out[n++] = (slm_fsdp_range){un->off, un->n, f->full_params + un->off, 0};
            out[n++] = (slm_fsdp_range){own, un->own_n, NULL, 1};
        }
    }
    return n;
}

/* The fp32 values of a bucket's owned chunk (the master copy when bf16). */
static float *owned_params(slm_fsdp_t f, const fsdp_unit *un)
{
    switch (f->o.zero_stage) {
    case 0: return (f->bf16 ? f->master : f->full_params) + un->off + un->own_lo;
    case 3: return f->shard_params + un->shard_off;
    default: return f->bf16 ? f->master + un->shard_off : f->full_params + un->off + un->own_lo;
    }
}

int slm_fsdp_owned_chunks(slm_fsdp_t f, slm_optim_segment *out)
{
    fsdp_wait_all(f); /* no parameter all-gather may still be writing */
    for (int u = 0; u < f->nunits; u++) {
        const fsdp_unit *un = &f->u[u];
        out[u] = (slm_optim_segment){un->off + un->own_lo, un->own_n, owned_params(f, un), NULL};
    }
    return f->nunits;
}

void slm_fsdp_settle(slm_fsdp_t f) { fsdp_wait_all(f); }

void slm_fsdp_chunks_changed(slm_fsdp_t f)
{
    const int stage = f->o.zero_stage;
    if (stage == 3) { /* gathered copies are stale */
        for (int u = 0; u < f->nunits; u++) release_params(f, u);
        return;
    }
    if (stage == 0) { /* every rank keeps the whole (master) vector: exchange the chunks exactly */
        float *whole = f->bf16 ? f->master : f->full_params;
        for (int u = 0; u < f->nunits; u++) {
            const fsdp_unit *un = &f->u[u];
            MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, whole + un->off, un->counts, un->displs, MPI_FLOAT,
                           un->comm);
        }
        if (f->bf16) {
            memcpy(f->full_params, f->master, f->nparams * sizeof(float));
            slm_bf16_round(f->full_params, f->nparams);
        }
        return;
    }
    for (int u = 0; u < f->nunits; u++) fsdp_wait(f, fsdp_launch(f, OP_ALLGATHER, u, -1)); /* as after an update */
}

void slm_fsdp_after_load(slm_fsdp_t f, long optimizer_steps)
{
    slm_optimizer_set_steps(f->opt, optimizer_steps);
    const int stage = f->o.zero_stage;
    if (stage == 3) {
        for (int u = 0; u < f->nunits; u++) release_params(f, u);
        return;
    }
    if (!f->bf16) return;
    if (stage == 0) memcpy(f->full_params, f->master, f->nparams * sizeof(float));
    else
        for (int u = 0; u < f->nunits; u++) { /* the exact values arrived in the whole vector */
            const fsdp_unit *un = &f->u[u];
            memcpy(f->master + un->shard_off, f->full_params + un->off + un->own_lo, un->own_n * sizeof(float));
        }
    slm_bf16_round(f->full_params, f->nparams);
}

slm_optimizer_t slm_fsdp_optimizer(slm_fsdp_t f) { return f->opt; }

slm_fsdp_stats slm_fsdp_take_stats(slm_fsdp_t f)
{
    if (f->inflight > 0) { /* a collective still in flight: count its time up to now */
        double now = slm_now();
        f->stats.comm_ms += (now - f->busy_since) * 1e3;
        f->busy_since = now;
    }
    slm_fsdp_stats s = f->stats;
    memset(&f->stats, 0, sizeof f->stats);
    return s;
}

slm_fsdp_memory slm_fsdp_memory_of(slm_fsdp_t f) { return f->mem; }
int slm_fsdp_num_buckets(slm_fsdp_t f) { return f->nunits; }

double slm_fsdp_expected_bytes(size_t nparams, size_t experts, int dp, int ep, int zero_stage, int bf16,
                               double optimizer_bytes)
{
    const double n = (double)nparams;
    /* an element's share of the sharded state: 1/dp, for experts 1/(dp/ep) */
    const double share = ep > 1 ? ((double)(nparams - experts) / dp + (double)experts * ep / dp) : n / dp;
    /* bf16 keeps the fp32 masters apart from the computed-with copy at stages 0-2; stage 1
     * keeps the whole local gradient and receives the reduced chunk beside it */
    switch (zero_stage) {
    case 0: return (bf16 ? 12.0 : 8.0) * n + optimizer_bytes;
    case 1: return 8.0 * n + (bf16 ? 8.0 : 4.0) * share + optimizer_bytes;
    case 2: return 4.0 * n + (bf16 ? 8.0 : 4.0) * share + optimizer_bytes;
    default: return 8.0 * share + optimizer_bytes;
    }
}

const int *slm_fsdp_unit_groups(slm_model_t model, int ep, int *group)
{
    if (ep <= 1) return NULL;
    for (int u = 0; u < slm_model_num_units(model); u++)
        group[u] = slm_model_unit_reduce(model, u) == SLM_REDUCE_EXPERT_DATA;
    return group;
}

int slm_fsdp_group_units(const size_t *size, const int *group, int n, double bucket_mb, int *bucket_of)
{
    /* the embeddings alone: they finish last in backward and the head needs them first */
    const double cap = bucket_mb * (1 << 20) / sizeof(float);
    int buckets = 0;
    double open = 0;
    for (int u = 0; u < n; u++) {
        if (u <= 1 || open >= cap || (group && group[u] != group[u - 1])) buckets++, open = 0;
        open += (double)size[u];
        if (bucket_of) bucket_of[u] = buckets - 1;
    }
    return buckets;
}

int slm_fsdp_rank_segments(slm_model_t model, double bucket_mb, int dp, int ep, int rank, int zero_stage,
                           slm_optim_segment *out)
{
    const int nmu = slm_model_num_units(model);
    if (zero_stage == 0) {
        out[0] = (slm_optim_segment){0, slm_model_num_params(model), NULL, NULL};
        return 1;
    }
    size_t sizes[nmu], offs[nmu];
    int of[nmu], groups[nmu], expert[nmu];
    for (int mu = 0; mu < nmu; mu++) slm_model_unit_range(model, mu, &offs[mu], &sizes[mu]);
    const int nb = slm_fsdp_group_units(sizes, slm_fsdp_unit_groups(model, ep, groups), nmu, bucket_mb, of);
    for (int b = 0; b < nb; b++) out[b] = (slm_optim_segment){0, 0, NULL, NULL};
    for (int mu = nmu - 1; mu >= 0; mu--) { /* a bucket starts at its first unit */
        out[of[mu]].offset = offs[mu];
        out[of[mu]].count += sizes[mu];
        expert[of[mu]] = ep > 1 && slm_model_unit_reduce(model, mu) == SLM_REDUCE_EXPERT_DATA;
    }
    for (int b = 0; b < nb; b++) { /* the bucket's elements in p chunks of ceil(n / p), as create cuts them */
        const int p = expert[b] ? dp / ep : dp, r = expert[b] ? rank / ep : rank;
        const size_t n = out[b].count, chunk = (n + (size_t)p - 1) / (size_t)p;
        size_t lo = (size_t)r * chunk, hi = lo + chunk;
        if (lo > n) lo = n;
        if (hi > n) hi = n;
        out[b].offset += lo;
        out[b].count = hi - lo;
    }
    return nb;
}

slm_fsdp_memory slm_fsdp_memory_for(size_t nparams, size_t experts, size_t bucket0, size_t max_bucket,
                                    size_t max_expert_bucket, int nbuckets, int dp, int ep, int zero_stage, int bf16,
                                    double optimizer_bytes)
{
    /* the allocations of slm_fsdp_create, one line each, with a shard of ceil(n/p) per bucket */
    const double n = (double)nparams, p = dp, f = 4.0, h = 2.0, slots = FSDP_SLOTS;
    const double pe = ep > 1 ? (double)(dp / ep) : p, ne = ep > 1 ? (double)experts : 0.0;
    const double shard = ceil((n - ne) / p) + ceil(ne / pe) + nbuckets, chunk0 = ceil((double)bucket0 / p);
    const double mxe = ep > 1 ? (double)max_expert_bucket : 0.0, mx = fmax((double)max_bucket, mxe);
    /* the receive buffers hold the largest chunk of any bucket (over its own ranks) plus one */
    const double recv = fmax(floor((double)max_bucket / p), floor(mxe / pe)) + 1;
    const double pool = zero_stage >= 2 ? bucket0 + chunk0 + slots * (mx + recv) : 0;
    const double gathered = zero_stage == 3 ? bucket0 + slots * mx : 0;
    slm_fsdp_memory m = {0, 0, 0, 0, 0};
    m.params = f * (zero_stage < 3 ? n : shard);
    m.grads = (zero_stage < 2 ? f * n : 0) + (zero_stage >= 1 ? f * shard : 0);
    m.grad_buckets = f * pool;
    m.gathered = f * gathered;
    if (bf16) {
        if (zero_stage == 0) m.params += f * n;
        if (zero_stage == 1 || zero_stage == 2) m.params += f * shard;
        if (zero_stage < 3) m.grad_buckets += h * n;
        if (zero_stage == 1 || zero_stage == 3) m.grad_buckets += h * shard;
        m.grad_buckets += h * pool;
        m.gathered += h * gathered;
    }
    m.optimizer = optimizer_bytes;
    return m;
}
