/* train.c - the training loop: data -> forward -> loss -> backward (gradients reduced by
 * the sharded layer as each unit finishes) -> clip -> AdamW on the shards -> metrics,
 * with the configuration table, model and memory summary, and a text sample around it. */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "shardlm/activity.h"
#include "shardlm/agree.h"
#include "shardlm/kernels.h"
#include "shardlm/log.h"
#include "shardlm/optim.h"
#include "shardlm/parallel.h"
#include "shardlm/runtime.h"
#include "shardlm/timer.h"
#include "shardlm/writable.h"
#include "trainer_impl.h"

/* Synthetic text is generated for the whole run up front, up to this many tokens;
 * longer runs wrap around. */
#define SYNTH_MAX_TOKENS ((size_t)1 << 28)



static int uses_bf16(const slm_conf *c) { return !strcmp(c->train.precision, "bf16"); }

static void format_eta(double s, char *buf, size_t len)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* Everything the run will write to can be written, on every rank that writes it: the
 * checkpoint directory (all ranks write checkpoints together) and the dump (rank 0; it is
 * created only after the model is initialized or resumed). Found now, not at the first
 * save hours later. The metrics file is simply opened at set-up. */
static slm_status check_outputs(const trainer *tr)
{
    const slm_conf *c = tr->conf;
    if (c->ckpt.dir[0]) SLM_CALL(slm_check_writable_dir("ckpt.dir", c->ckpt.dir, tr->rank));
    if (c->islands.count > 1 && !strcmp(c->islands.transport, "files")) { /* this island's exchange directory */
        char dir[SLM_PATH_MAX + 32];
        slm_trainer_exchange_dir(tr, dir, sizeof dir);
        SLM_CALL(slm_check_writable_dir("islands.dir", dir, tr->rank));
    }
    if (tr->rank == 0 && c->log.dump[0]) SLM_CALL(slm_check_writable_file("log.dump", c->log.dump));
    return SLM_OK;
}

/* Set-up that touches nothing shared: data, model, sharded state. */
static slm_status setup_local(trainer *tr)
{
    const slm_conf *c = tr->conf;
    slm_model_config mc = slm_conf_model(c);
    tr->B = c->train.micro_batch;
    tr->T = c->model.seq_len;
    /* the one stream all islands read from: k global batches per step */
    size_t need = (size_t)c->train.steps * (size_t)c->train.global_batch * (size_t)tr->islands * (size_t)tr->T +
                  (size_t)tr->T + 1;
    if (need > SYNTH_MAX_TOKENS) need = SYNTH_MAX_TOKENS;
    /* Every rank opens the same data the same way, so a bad file fails everywhere alike,
     * before the first collective. */
    SLM_CALL(slm_dataset_open(c->data.train, c->model.vocab_size, tr->T, c->train.seed, 0, need, &tr->data));
    slm_dataset_set_shuffle(tr->data, c->data.shuffle);
    if (c->data.tokenizer[0]) SLM_CALL(slm_dataset_set_tokenizer(tr->data, c->data.tokenizer));
    if (c->data.val[0]) { /* evaluated in file order: the same windows every time */
        size_t need_val = (size_t)c->eval.batches * (size_t)c->train.global_batch * (size_t)(tr->T + 1) + 1;
        SLM_CALL(slm_dataset_open(c->data.val, c->model.vocab_size, tr->T, c->train.seed, 1, need_val, &tr->val));
    }
    tr->best_val = INFINITY;
    slm_model_tp tp = {slm_mesh_tp_rank(tr->mesh), slm_mesh_tp_size(tr->mesh), slm_mesh_tp_allreduce,
                     slm_mesh_tp_allreduce_max, tr->mesh};
    /* pipeline stage s of P runs layers [s*L/P, (s+1)*L/P) and keeps P - s micro-batches */
    const int P = slm_mesh_pp_size(tr->mesh), s = slm_mesh_pp_rank(tr->mesh), L = c->model.n_layer;
    tr->pipe_slots = P - s < tr->accum ? P - s : tr->accum;
    slm_model_stage stage = {s * L / P, (s + 1) * L / P - s * L / P, s == 0, s == P - 1, tr->pipe_slots};
    slm_model_ep ep = {slm_mesh_ep_rank(tr->mesh), slm_mesh_ep_size(tr->mesh), slm_mesh_ep_counts, slm_mesh_ep_rows,
                       tr->mesh};
    SLM_CALL(slm_model_create(&mc, tr->B, 0, &tp, &ep, &stage, &tr->model));
    slm_fsdp_options fo = {c->parallel.zero_stage, c->parallel.overlap, c->parallel.bucket_mb, uses_bf16(c),
                           slm_conf_optim(c),
                           tp.size > 1 ? slm_mesh_tp_comm(tr->mesh) : MPI_COMM_NULL,
                           slm_mesh_stage_comm(tr->mesh),
                           P > 1 ? slm_mesh_pp_comm(tr->mesh) : MPI_COMM_NULL,
                           slm_model_has_tied(&mc) ? slm_mesh_tied_comm(tr->mesh) : MPI_COMM_NULL,
                           !(P > 1 && s == P - 1), ep.size, slm_mesh_ep_comm(tr->mesh),
                           slm_mesh_edp_comm(tr->mesh)};
    SLM_CALL(slm_fsdp_create(tr->model, tr->dp_comm, &fo, &tr->fsdp));
    slm_fsdp_init_params(tr->fsdp, c->train.seed);
    SLM_CALL(slm_trainer_islands_init(tr)); /* its first anchor: these parameters */
    size_t BT = (size_t)tr->B * tr->T;
    tr->windows = malloc((size_t)tr->B * (tr->T + 1) * sizeof(int32_t));
    tr->inputs = malloc(BT * sizeof(int32_t));
    tr->targets = malloc(BT * sizeof(int32_t));
    size_t ns = (size_t)c->train.steps + 1;
    tr->losses = calloc(ns, sizeof(float));
    tr->lrs = calloc(ns, sizeof(double));
    tr->norms = calloc(ns, sizeof(double));
    SLM_CHECK(tr->windows && tr->inputs && tr->targets && tr->losses && tr->lrs && tr->norms,
              SLM_ERR_NOMEM, "cannot allocate the batch buffers");
    SLM_CALL(slm_trainer_moe_init(tr));
    if (P > 1) { /* the 1F1B schedule's buffers, allocated once here rather than every step */
        const size_t n = (size_t)tr->B * tr->T * (size_t)c->model.d_model;
        tr->pipe_act_sent = malloc((size_t)tr->pipe_slots * sizeof *tr->pipe_act_sent);
        tr->pipe_grad_sent = malloc((size_t)tr->pipe_slots * sizeof *tr->pipe_grad_sent);
        tr->pipe_grad_buf = malloc((size_t)tr->pipe_slots * n * sizeof(float));
        SLM_CHECK(tr->pipe_act_sent && tr->pipe_grad_sent && tr->pipe_grad_buf, SLM_ERR_NOMEM,
                  "cannot allocate the pipeline's buffers (%.1f MB)", 4.0 * (double)tr->pipe_slots * (double)n / 1e6);
    }
    SLM_CHECK(!c->ckpt.async || slm_mpi_thread_level >= MPI_THREAD_MULTIPLE, SLM_ERR_UNSUPPORTED,
              "ckpt.async = true needs an MPI with MPI_THREAD_MULTIPLE; this one provides level %d",
              slm_mpi_thread_level);
    SLM_CALL(check_outputs(tr));
    if (tr->rank == 0 && c->log.metrics[0]) {
        tr->metrics = fopen(c->log.metrics, "w");
        SLM_CHECK(tr->metrics, SLM_ERR_IO, "log.metrics: cannot write %s: %s", c->log.metrics, strerror(errno));
    }
    return SLM_OK;
}

/* Set-up that communicates. */
static slm_status setup_shared(trainer *tr)
{
    const slm_conf *c = tr->conf;
    slm_model_config mc = slm_conf_model(c);
    /* MFU and timings mean nothing when ranks and threads outnumber the cores */
    const int local = slm_mesh_local_size(tr->mesh);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (tr->rank == 0 && cores > 0 && (long)local * slm_get_threads() > cores)
        slm_warn("%d ranks x %d threads share %ld cores on this node: timings and MFU are not meaningful",
                 local, slm_get_threads(), cores);
    tr->flops_per_token = slm_model_flops_per_token(&mc);
    SLM_CALL(slm_matmul_choose(slm_mesh_world(tr->mesh), c->train.matmul, uses_bf16(c), tr->model, tr->B,
                               tr->resumed_matmul[0] ? tr->resumed_matmul : NULL, &tr->matmul));
    tr->peak_gflops = c->log.peak_gflops;
    if (tr->peak_gflops <= 0) tr->peak_gflops = slm_gemm_peak_gflops(1024, 0.3);
    /* MFU is per rank against one rank's peak: every rank measures, all agree on the mean */
    MPI_Allreduce(MPI_IN_PLACE, &tr->peak_gflops, 1, MPI_DOUBLE, MPI_SUM, slm_mesh_world(tr->mesh));
    tr->peak_gflops /= tr->world;
    return SLM_OK;
}

int slm_trainer_writes(const trainer *tr, const slm_tensor_info *t)
{
    if (!t->tp_split && slm_mesh_tp_rank(tr->mesh) > 0) return 0;
    const int P = slm_mesh_pp_size(tr->mesh);
    if (P > 1 && slm_mesh_pp_rank(tr->mesh) == P - 1 && t->tied) return 0; /* the first stage's copy counts */
    return 1;
}

/* The whole model's parameters (grads = 0) or gradients (1) for the oracle dump, on rank
 * 0; returns the vector there. Under tensor or pipeline parallelism the ranks of the first
 * data-parallel group place their parts at global positions and sum them to rank 0, each
 * element coming from one rank (slm_trainer_writes). Collective. */
static slm_status gather_whole(trainer *tr, int grads, float **out)
{
    SLM_CALL(slm_fsdp_gather(tr->fsdp, grads, tr->full));
    *out = tr->full;
    const int ep = slm_mesh_ep_size(tr->mesh);
    if (!tr->whole || tr->dp_rank >= ep) return SLM_OK;
    /* each element from one rank: dp rank 0's, and each expert from the first ep ranks' */
    const size_t ng = slm_model_num_global_params(tr->model);
    memset(tr->whole, 0, ng * sizeof(float));
    for (int i = 0; i < slm_model_num_tensors(tr->model); i++) {
        const slm_tensor_info *t = slm_model_tensor(tr->model, i);
        if (!slm_trainer_writes(tr, t) || (t->reduce != SLM_REDUCE_EXPERT_DATA && tr->dp_rank != 0)) continue;
        for (size_t j = 0; j < t->count; j++) tr->whole[t->goffset + slm_tensor_global_index(t, j)] = tr->full[t->offset + j];
    }
    SLM_CHECK(ng <= INT_MAX, SLM_ERR_UNSUPPORTED, "log.dump: the model is too large to dump");
    MPI_Reduce(tr->rank == 0 ? MPI_IN_PLACE : tr->whole, tr->whole, (int)ng, MPI_FLOAT, MPI_SUM, 0, tr->dump_comm);
    *out = tr->whole;
    return SLM_OK;
}

/* The parameters of this rank's experts (their gradients reduce over the expert-data-parallel group). */
static size_t expert_params(slm_model_t model)
{
    size_t n = 0;
    for (int i = 0; i < slm_model_num_tensors(model); i++)
        if (slm_model_tensor(model, i)->reduce == SLM_REDUCE_EXPERT_DATA) n += slm_model_tensor(model, i)->count;
    return n;
}

/* The oracle dump starts with the parameters the run starts from (fresh, imported or
 * resumed). */
static slm_status setup_dump(trainer *tr)
{
    const slm_conf *c = tr->conf;
    if (!c->log.dump[0]) return SLM_OK;
    /* the gathers are collective: every rank takes part, and all agree on the buffers */
    int ok = 1;
    const int ep = slm_mesh_ep_size(tr->mesh);
    /* the ranks that hold a whole model between them: dp rank 0, and the first ep for the experts */
    MPI_Comm_split(slm_mesh_world(tr->mesh), tr->dp_rank < ep ? 0 : MPI_UNDEFINED, tr->rank, &tr->dump_comm);
    if (tr->dp_rank < ep) {
        ok = (tr->full = malloc(slm_model_num_params(tr->model) * sizeof(float))) != NULL;
        if (slm_mesh_tp_size(tr->mesh) > 1 || slm_mesh_pp_size(tr->mesh) > 1 || ep > 1)
            ok &= (tr->whole = malloc(slm_model_num_global_params(tr->model) * sizeof(float))) != NULL;
    }
    if (tr->dp == 1 && tr->start_step == 0) { /* step 0's logits, gathered whatever the layout */
        const size_t n = (size_t)tr->B * tr->T * (size_t)c->model.vocab_size;
        SLM_CHECK(n <= INT_MAX, SLM_ERR_UNSUPPORTED, "log.dump: step 0's logits are too many to dump");
        ok &= (tr->logits0 = calloc(n, sizeof(float))) != NULL;
    }
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh),
                       ok ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "log.dump: cannot allocate a parameter vector")));
    float *v;
    SLM_CALL(gather_whole(tr, 0, &v));
    SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), tr->rank == 0 ? slm_dump_create(c->log.dump, c, tr->model, v,
                                                                                  tr->accum, tr->dp, tr->island, &tr->dump)
                                                                : SLM_OK));
    return SLM_OK;
}

static void teardown(trainer *tr)
{
    slm_dump_destroy(&tr->dump);
    slm_dataset_destroy(&tr->val);
    if (tr->metrics) fclose(tr->metrics);
    slm_fsdp_destroy(&tr->fsdp);
    slm_model_destroy(&tr->model);
    slm_dataset_destroy(&tr->data);
    free(tr->windows);
    free(tr->inputs);
    free(tr->targets);
    free(tr->full);
    free(tr->whole);
    if (tr->dump_comm != MPI_COMM_NULL) MPI_Comm_free(&tr->dump_comm);
    free(tr->logits0);
    free(tr->losses);
    free(tr->lrs);
    free(tr->norms);
    slm_trainer_moe_free(tr);
    slm_trainer_islands_free(tr);
    free(tr->pipe_act_sent);
    free(tr->pipe_grad_sent);
    free(tr->pipe_grad_buf);
}

static void print_summary(const trainer *tr)
{
    const slm_conf *c = tr->conf;
    if (tr->rank != 0) return;
    const double mib = 1 << 20;
    size_t n = slm_model_num_params(tr->model);
    slm_fsdp_memory m = slm_fsdp_memory_of(tr->fsdp);
    printf("shardlm %s: training configuration\n", PACKAGE_VERSION);
    slm_conf_print(c, stdout);
    slm_matmul_report(&tr->matmul, c->train.matmul, uses_bf16(c), stdout);
    /* the resolved configuration (the architecture's defaults filled in) and the exact
     * count, which bench/vs-pytorch compares with its PyTorch model's */
    const slm_model_config *mc = slm_model_config_of(tr->model);
    const size_t ng = slm_model_num_global_params(tr->model);
    printf("model     %s L=%d H=%d KV=%d C=%d F=%d V=%d T=%d%s: %.3fM parameters (%zu", mc->arch, mc->n_layer,
           mc->n_head, mc->n_kv_head, mc->d_model, mc->ffn_hidden, mc->vocab_size, mc->seq_len,
           mc->tie_embeddings ? ", tied head" : "", (double)ng / 1e6, ng);
    if (n != ng) printf("; %zu on rank 0", n);
    printf(")\n");
    printf("layout    %d rank%s = dp %d x tp %d x pp %d, zero stage %d, %s, %d buckets, overlap %s; micro_batch %d x "
           "grad_accum %d x dp %d = global_batch %d; %d thread%s per rank\n",
           tr->world, tr->world > 1 ? "s" : "", tr->dp, c->parallel.tp, c->parallel.pp, c->parallel.zero_stage,
           c->train.precision,
           slm_fsdp_num_buckets(tr->fsdp), c->parallel.overlap ? "on" : "off", tr->B, tr->accum, tr->dp,
           c->train.global_batch,
           slm_get_threads(), slm_get_threads() > 1 ? "s" : "");
    const slm_optim_config oc = slm_conf_optim(c);
    double opt_expected = 0.0;
    slm_optim_segment *seg = malloc((size_t)slm_model_num_units(tr->model) * sizeof *seg);
    if (seg) {
        const int ns = slm_fsdp_rank_segments(tr->model, c->parallel.bucket_mb, tr->dp, c->parallel.ep, 0,
                                              c->parallel.zero_stage, seg);
        opt_expected = slm_optim_bytes_for(&oc, slm_model_tensor(tr->model, 0), slm_model_num_tensors(tr->model), seg, ns);
    }
    free(seg);
    printf("memory    per rank: params %.1f + grads %.1f + %s %.1f = %.1f MiB of training state "
           "(stage %d expects %.1f MiB), gathered units %.1f MiB, gradient buffers %.1f MiB, "
           "activations %.1f MiB\n",
           m.params / mib, m.grads / mib, oc.name, m.optimizer / mib, (m.params + m.grads + m.optimizer) / mib,
           c->parallel.zero_stage,
           slm_fsdp_expected_bytes(n, expert_params(tr->model), tr->dp, c->parallel.ep, c->parallel.zero_stage,
                                   uses_bf16(c), opt_expected) / mib,
           m.gathered / mib, m.grad_buckets / mib, (double)slm_model_activation_bytes(tr->model) / mib);
    const int P = c->parallel.pp, L = c->model.n_layer;
    if (P > 1) {
        printf("pipeline  ");
        printf("stage 0 of %d: layers 0-%d", P, L / P - 1);
        for (int s = 1; s < P; s++) printf("; stage %d: layers %d-%d", s, s * L / P, (s + 1) * L / P - 1);
        printf("; ");
        printf("%d micro-batches per step (1F1B), ideal bubble (pp-1)/(micro-batches+pp-1) = %.0f%%\n", tr->accum,
               100.0 * (P - 1) / (tr->accum + P - 1));
    }
    if (tr->islands > 1) {
        printf("islands   %d islands (%s), this one of %d rank%s; outer step every %ld steps and at the last: SGD lr %g, "
               "momentum %g%s, pseudo-gradients as %s; this is island %d, reading global batch %d of every %d\n",
               tr->islands, tr->across != MPI_COMM_NULL ? "one MPI job" : "jobs of their own, through islands.dir",
               tr->world, tr->world > 1 ? "s" : "", c->islands.sync_every, c->islands.outer_lr,
               c->islands.outer_momentum, c->islands.nesterov && c->islands.outer_momentum > 0 ? " (Nesterov)" : "",
               c->islands.compress, tr->island, tr->island, tr->islands);
    }
    printf("data      %s\n", slm_dataset_describe(tr->data));
    printf("compute   %.3g GFLOP per token (6 x the matrix weights a token passes through + 12*L*C*T), linear "
           "layers by %s, peak %.1f "
           "GFLOP/s per rank (%s)\n",
           tr->flops_per_token / 1e9, slm_gemm_name(), tr->peak_gflops,
           c->log.peak_gflops > 0 ? "log.peak_gflops" : "its 1024^3 product measured at start-up");
    fflush(stdout);
}

/* Fill inputs/targets with this rank's part of micro-batch `micro` (counted over the
 * data-parallel ranks) of the samples of ds from index `first` on. */
static void fill_batch(trainer *tr, slm_dataset_t ds, uint64_t first, uint64_t micro)
{
    const int T = tr->T;
    const uint64_t g0 = first + (micro * (uint64_t)tr->dp + (uint64_t)tr->dp_rank) * (uint64_t)tr->B;
    for (int b = 0; b < tr->B; b++) {
        int32_t *w = tr->windows + (size_t)b * (T + 1);
        slm_dataset_sample(ds, g0 + (uint64_t)b, w);
        memcpy(tr->inputs + (size_t)b * T, w, (size_t)T * sizeof(int32_t));
        memcpy(tr->targets + (size_t)b * T, w + 1, (size_t)T * sizeof(int32_t));
    }
}

/* Fill inputs/targets for micro-step `micro` of `step` on this rank. Sample indices
 * count through the global batch, so every rank count sees the same samples. */
void slm_trainer_load_batch(trainer *tr, long step, int micro)
{
    const double t0 = slm_now();
    /* island i of k reads the i-th of k consecutive global batches of the one stream */
    const uint64_t first = (uint64_t)tr->samples + (uint64_t)tr->island * (uint64_t)tr->conf->train.global_batch;
    fill_batch(tr, tr->data, first, (uint64_t)micro);
    tr->data_s += slm_now() - t0;
    if (tr->dump && tr->dp == 1) slm_trainer_defer(tr, slm_dump_tokens(tr->dump, step, micro, tr->windows));
}

void slm_trainer_defer(trainer *tr, slm_status s)
{
    if (s == SLM_OK || tr->deferred != SLM_OK) return;
    tr->deferred = s;
    snprintf(tr->deferred_msg, sizeof tr->deferred_msg, "%s", slm_error_message());
    slm_error_clear();
}

/* What went wrong on this rank during the step without stopping it (a kernel's recorded
 * failure, a deferred write), agreed by all ranks: the step boundary is where a rank-local
 * failure becomes everyone's error instead of a hang in the next collective. */
static slm_status step_outcome(trainer *tr)
{
    slm_status s = slm_kernels_status();
    if (s == SLM_OK && tr->deferred != SLM_OK) s = SLM_ERROR(tr->deferred, "%s", tr->deferred_msg);
    slm_activity_set("MPI_Allreduce: agreeing on the step's outcome", -1);
    return slm_agree(slm_mesh_world(tr->mesh), s);
}

void slm_trainer_keep_logits(trainer *tr, long step, int micro)
{
    if (!tr->logits0 || step != 0 || micro != 0) return;
    int v0, vl;
    slm_model_vocab_rows(tr->model, &v0, &vl);
    const size_t V = (size_t)tr->conf->model.vocab_size, N = (size_t)tr->B * tr->T;
    const float *l = slm_model_logits(tr->model);
    for (size_t n = 0; n < N; n++) memcpy(tr->logits0 + n * V + (size_t)v0, l + n * (size_t)vl, (size_t)vl * sizeof(float));
}

/* Step 0's first logits to the dump: each rank of the last pipeline stage holds its
 * vocabulary columns (the others zeros), summed to rank 0. Collective over the
 * model-parallel group, which is the world when there is a dump of logits (dp 1). */
static void dump_logits(trainer *tr)
{
    const int n = (int)((size_t)tr->B * tr->T * (size_t)tr->conf->model.vocab_size);
    slm_activity_set("MPI_Reduce: step 0's logits for the dump", -1);
    MPI_Reduce(tr->rank == 0 ? MPI_IN_PLACE : tr->logits0, tr->logits0, n, MPI_FLOAT, MPI_SUM, 0,
               slm_mesh_mp_comm(tr->mesh));
    if (tr->rank == 0) slm_trainer_defer(tr, slm_dump_logits(tr->dump, tr->logits0));
}

/* One optimizer step; returns the mean loss of the global batch. */
static slm_status one_step(trainer *tr, long step, double *loss_out, double *norm_out, double *lr_out)
{
    const slm_conf *c = tr->conf;
    double loss = 0.0;
    slm_fsdp_begin_step(tr->fsdp);
    slm_trainer_moe_discard(tr); /* evaluation and sampling route tokens too */
    const int pipelined = slm_mesh_pp_size(tr->mesh) > 1;
    if (pipelined) {
        slm_trainer_pipeline_step(tr, step, &loss, &tr->pipe_wait_s, &tr->pipe_bytes);
        SLM_CALL(slm_fsdp_finish_backward(tr->fsdp));
        slm_activity_set("MPI_Allreduce: tied embedding gradient", -1);
        tr->pipe_bytes += slm_fsdp_sum_tied(tr->fsdp);
    }
    for (int micro = 0; !pipelined && micro < tr->accum; micro++) {
        slm_activity_set("forward and backward", -1);
        slm_trainer_load_batch(tr, step, micro);
        slm_fsdp_set_last_micro(tr->fsdp, micro == tr->accum - 1);
        loss += slm_model_forward(tr->model, tr->inputs, tr->targets, tr->B, tr->T);
        slm_trainer_keep_logits(tr, step, micro); /* before backward overwrites them */
        slm_model_backward(tr->model, 1.0f / ((float)tr->B * tr->T * tr->accum * tr->dp));
        SLM_CALL(slm_fsdp_finish_backward(tr->fsdp));
    }
    if (step == 0 && tr->logits0) dump_logits(tr);
    slm_activity_set("MPI_Allreduce: loss", -1);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, tr->dp_comm);
    if (pipelined) /* only the last stage has it */
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, slm_mesh_pp_comm(tr->mesh));
    loss /= (double)tr->accum * tr->dp;
    slm_trainer_moe_step(tr, step);
    SLM_CHECK(isfinite(loss), SLM_ERR_INTERNAL,
              "the loss became %g at step %ld: lower train.lr (%g) or check the data", loss, step, c->train.lr);
    slm_activity_set("gradient norm (MPI_Allreduce)", -1);
    double t_optim = slm_now();
    double norm = slm_fsdp_grad_norm(tr->fsdp);
    if (c->log.dump[0] && step == 0) { /* the gather is collective: every rank takes part */
        float *v;
        SLM_CALL(gather_whole(tr, 1, &v));
        if (tr->rank == 0) slm_trainer_defer(tr, slm_dump_step0(tr->dump, loss, v));
    }
    slm_fsdp_clip(tr->fsdp, norm, c->train.grad_clip);
    double lr = slm_lr_at(step, c->train.steps, c->train.warmup_steps, c->train.lr, c->train.min_lr);
    slm_activity_set("optimizer step (parameter all-gather)", -1);
    SLM_CALL(slm_fsdp_optimizer_step(tr->fsdp, lr));
    lr = slm_optimizer_step_size(slm_fsdp_optimizer(tr->fsdp)); /* Adafactor's relative step replaces it */
    tr->optim_s = slm_now() - t_optim;
    *loss_out = loss;
    *norm_out = norm;
    *lr_out = lr;
    return SLM_OK;
}

/* A signal may have reached only some ranks: all agree at the step boundary, then save
 * and stop together. */
static slm_status check_preemption(trainer *tr, long step)
{
    int sig = slm_signal_pending(), any = 0;
    slm_activity_set("MPI_Allreduce: preemption flag", -1);
    MPI_Allreduce(&sig, &any, 1, MPI_INT, MPI_MAX, slm_mesh_world(tr->mesh));
    if (tr->across != MPI_COMM_NULL) {
        /* Islands agree one step late: this step's flags travel between them while the next
         * step computes, so the slow link adds no wait to a step, and all of them stop after
         * the same step (the one after the signal). */
        int decided = 0;
        if (tr->preempt_req != MPI_REQUEST_NULL) {
            MPI_Wait(&tr->preempt_req, MPI_STATUS_IGNORE);
            decided = tr->preempt_any;
        }
        tr->preempt_sent = any;
        MPI_Iallreduce(&tr->preempt_sent, &tr->preempt_any, 1, MPI_INT, MPI_MAX, tr->job, &tr->preempt_req);
        any = decided;
        /* stopping: every island posted this step's flags too, so all can complete them */
        if (any) MPI_Wait(&tr->preempt_req, MPI_STATUS_IGNORE);
    }
    if (!any) return SLM_OK;
    const slm_conf *c = tr->conf;
    SLM_CHECK(c->ckpt.dir[0], SLM_ERR_IO, "signal %d after step %ld, but ckpt.dir is not set: nothing was saved",
              any, step + 1);
    SLM_CALL(slm_trainer_save(tr, step, 1));
    SLM_CALL(slm_trainer_finish_saves(tr));
    return SLM_ERROR(SLM_PREEMPTED, "signal %d: checkpoint of step %ld committed in %s; exit status %d asks to "
                     "be requeued and resumed", any, step + 1, c->ckpt.dir, SLM_EXIT_PREEMPTED);
}

/* One forward of B sequences through the whole model, stage after stage under pipeline
 * parallelism. With targets: returns their mean loss, on every rank of the pipeline;
 * without: the last position's logits of sequence 0 into logits (V), on every rank.
 * Collective over the pipeline (and tensor-parallel) group. */
static double forward_whole(trainer *tr, const int32_t *tok, const int32_t *targets, int B, int T, float *logits)
{
    const int P = slm_mesh_pp_size(tr->mesh), s = slm_mesh_pp_rank(tr->mesh);
    const int n = B * T * tr->conf->model.d_model, V = tr->conf->model.vocab_size;
    MPI_Comm pp = slm_mesh_pp_comm(tr->mesh);
    if (s > 0) MPI_Recv(slm_model_stage_input(tr->model, 0), n, MPI_FLOAT, s - 1, 0, pp, MPI_STATUS_IGNORE);
    double loss = slm_model_forward_slot(tr->model, 0, tok, targets, B, T);
    if (s < P - 1) MPI_Send(slm_model_stage_output(tr->model, 0), n, MPI_FLOAT, s + 1, 0, pp);
    else if (!targets) slm_model_last_logits(tr->model, 0, logits);
    if (P > 1 && targets) MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, pp); /* the last stage's */
    if (P > 1 && !targets) MPI_Bcast(logits, V, MPI_FLOAT, P - 1, pp);
    return loss;
}

static void next_logits(void *ctx, const int32_t *tok, int T, float *out) { forward_whole(ctx, tok, NULL, 1, T, out); }

/* The validation loss: the first eval.batches x global_batch windows of data.val (the
 * same ones every time, whatever the layout), split over the data-parallel ranks the
 * way a training step splits its batch, averaged. Collective. */
static double evaluate(trainer *tr)
{
    const int nb = tr->conf->eval.batches * tr->accum;
    double sum = 0.0;
    slm_activity_set("evaluation", -1);
    for (int k = 0; k < nb; k++) { /* micro-batch k of this rank: as micro-step k of a step */
        fill_batch(tr, tr->val, 0, (uint64_t)k);
        sum += forward_whole(tr, tr->inputs, tr->targets, tr->B, tr->T, NULL);
    }
    MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_DOUBLE, MPI_SUM, tr->dp_comm);
    return sum / ((double)nb * tr->dp);
}

/* Rank 0's mean step after the first, by kind of work: what the next optimization should
 * go after. "other" is the rest of the step (hooks, memsets, the loss reduction, ...). */
static void report_profile(const trainer *tr, double step_s, long n)
{
    const double *p = tr->prof;
    const char *names[6] = {"matmul", "attention", "elementwise", "optimizer", "data", "exposed comm"};
    double rest = step_s;
    printf("profile   per step:");
    for (int i = 0; i < 6; i++) {
        const double s = p[i] / n;
        rest -= s;
        printf("%s %s %.1f ms (%.0f%%", i ? " |" : "", names[i], 1e3 * s, 100 * s / step_s);
        if (i < 2 && p[i] > 0) printf(", %.1f GFLOP/s", p[6 + i] / p[i] / 1e9);
        printf(")");
    }
    printf(" | other %.1f ms (%.0f%%)\n", 1e3 * rest, 100 * rest / step_s);
}

static slm_status train_steps(trainer *tr)
{
    const slm_conf *c = tr->conf;
    const long steps = c->train.steps;
    const double tokens_per_step = (double)c->train.global_batch * tr->T;
    double run_start = slm_now(), timed = 0.0;
    long timed_steps = 0;
    for (long step = tr->start_step; step < steps; step++) {
        double t0 = slm_now(), loss = 0, norm = 0, lr = 0;
        slm_activity_set_step(step);
        const slm_kernel_time k0 = slm_kernel_clock;
        tr->data_s = 0;
        SLM_CALL(one_step(tr, step, &loss, &norm, &lr));
        SLM_CALL(step_outcome(tr));
        tr->samples += (long long)c->train.global_batch * tr->islands;
        slm_step_metrics outer = {0};
        SLM_CALL(slm_trainer_outer_step(tr, step, loss, &outer));
        double dt = slm_now() - t0;
        const slm_kernel_time k1 = slm_kernel_clock; /* before evaluation runs kernels too */
        double val = NAN; /* after the step's timing: evaluation is not training time */
        if (tr->val && c->eval.every > 0 && ((step + 1) % c->eval.every == 0 || step + 1 == steps)) {
            val = evaluate(tr);
            if (val < tr->best_val) tr->best_val = val, tr->best_val_step = step + 1, tr->evals_since_best = 0;
            else tr->evals_since_best++;
        }
        slm_fsdp_stats cs = slm_fsdp_take_stats(tr->fsdp);
        double tp_ms, tp_bytes; /* blocking: exposed and busy alike */
        slm_mesh_take_tp_stats(tr->mesh, &tp_ms, &tp_bytes);
        double ep_ms, ep_bytes; /* the experts' exchanges block too */
        slm_mesh_take_ep_stats(tr->mesh, &ep_ms, &ep_bytes);
        cs.exposed_ms += tp_ms + ep_ms;
        cs.comm_ms += tp_ms + ep_ms;
        cs.bytes_sent += tp_bytes + tr->pipe_bytes + ep_bytes;
        tr->losses[step] = (float)loss;
        tr->lrs[step] = lr;
        tr->norms[step] = norm;
        const double kind_s[8] = {k1.matmul_s - k0.matmul_s, k1.attention_s - k0.attention_s,
                                  k1.elementwise_s - k0.elementwise_s, tr->optim_s, tr->data_s,
                                  cs.exposed_ms / 1e3, k1.matmul_flop - k0.matmul_flop,
                                  k1.attention_flop - k0.attention_flop};
        if (step > tr->start_step || steps - tr->start_step == 1) { /* the first step pays for page faults */
            timed += dt;
            timed_steps++;
            for (int i = 0; i < 8; i++) tr->prof[i] += kind_s[i];
        }
        double tps = tokens_per_step / dt;
        double overlap = cs.comm_ms > 0 ? 1.0 - cs.exposed_ms / cs.comm_ms : 0.0;
        if (overlap < 0) overlap = 0;
        slm_step_metrics m = {step, steps, loss, lr, norm, tps,
                              tps * tr->flops_per_token / (tr->peak_gflops * 1e9 * tr->world), dt * 1e3,
                              cs.exposed_ms, slm_peak_rss_mib(), (long long)((step + 1) * tokens_per_step),
                              cs.bytes_sent, overlap, tp_bytes, tr->pipe_bytes, tr->pipe_wait_s * 1e3, val,
                              kind_s[0] * 1e3, kind_s[1] * 1e3, kind_s[2] * 1e3, kind_s[3] * 1e3, kind_s[4] * 1e3,
                              tr->matmul.choice, ep_ms, ep_bytes, 0, 0.0, 0.0, NULL,
                              outer.outer_step, outer.outer_islands, outer.island, outer.outer_bytes,
                              outer.outer_norm, outer.outer_wait_ms, outer.outer_ms};
        const int nmoe = tr->moe_len ? slm_model_num_moe_layers(slm_model_config_of(tr->model)) : 0;
        slm_moe_layer_load moe_load[nmoe > 0 ? nmoe : 1];
        if (nmoe) {
            slm_trainer_moe_summary(tr, moe_load);
            m.moe_layers = nmoe;
            m.moe_aux_loss = tr->moe_aux[step];
            m.moe_z_loss = tr->moe_z[step];
            m.moe = moe_load;
        }
        if (tr->metrics) slm_metrics_write(tr->metrics, &m);
        if (tr->rank == 0 && ((step + 1) % c->log.every == 0 || step == 0 || step == steps - 1)) {
            char eta[32], comm[160] = "";
            double per_step = timed_steps ? timed / timed_steps : dt;
            format_eta(per_step * (double)(steps - step - 1), eta, sizeof eta);
            if (tr->world > 1)
                snprintf(comm, sizeof comm, " | comm %.1f ms exposed, %.0f%% hidden, %.1f MB", cs.exposed_ms,
                         100.0 * overlap, cs.bytes_sent / 1e6);
            if (c->parallel.pp > 1) /* rank 0 is the first stage: it waits through the bubble */
                snprintf(comm + strlen(comm), sizeof comm - strlen(comm), ", pipeline wait %.1f ms",
                         tr->pipe_wait_s * 1e3);
            printf("step %*ld/%ld | loss %.4f | lr %.2e | norm %6.3f | %8.0f tok/s | mfu %5.1f%% | %7.1f ms%s | eta %s\n",
                   (int)snprintf(NULL, 0, "%ld", steps), step + 1, steps, loss, lr, norm, tps,
                   100.0 * m.mfu, dt * 1e3, comm, eta);
            slm_trainer_moe_log(tr, step);
            fflush(stdout);
        }
        if (isfinite(val) && tr->rank == 0) {
            printf("eval      step %ld | val loss %.4f | best %.4f at step %ld\n", step + 1, val, tr->best_val,
                   tr->best_val_step);
            fflush(stdout);
        }
        slm_activity_progress();
        const int patience_out = c->eval.patience > 0 && tr->evals_since_best >= c->eval.patience;
        SLM_CALL(slm_trainer_save(tr, step, patience_out));
        if (patience_out) { /* every rank computed the same losses: all stop here */
            if (tr->rank == 0)
                printf("stop      at step %ld: no better val loss in %d evaluations (eval.patience); best %.4f at step %ld\n",
                       step + 1, c->eval.patience, tr->best_val, tr->best_val_step);
            tr->stopped_early = 1;
            break;
        }
        SLM_CALL(check_preemption(tr, step));
        if (c->train.stop_after > 0 && step + 1 >= c->train.stop_after) {
            if (tr->rank == 0) printf("stop      at step %ld (train.stop_after) of %ld\n", step + 1, steps);
            tr->stopped_early = 1;
            break;
        }
    }
    SLM_CALL(slm_trainer_finish_saves(tr)); /* a background checkpoint completes first */
    if (tr->preempt_req != MPI_REQUEST_NULL) MPI_Wait(&tr->preempt_req, MPI_STATUS_IGNORE); /* the last flags */
    if (tr->rank == 0 && steps > tr->start_step) {
        double floor = slm_dataset_entropy_floor(tr->data);
        double tps = timed_steps ? tokens_per_step * timed_steps / timed : 0;
        printf("done      %ld steps in %.1f s, %.0f tok/s (mean after step 1), mfu %.1f%%, peak RSS %.0f MiB (rank 0)\n",
               steps - tr->start_step, slm_now() - run_start, tps,
               100.0 * tps * tr->flops_per_token / (tr->peak_gflops * 1e9 * tr->world), slm_peak_rss_mib());
        if (timed_steps) report_profile(tr, timed / timed_steps, timed_steps);
        if (isfinite(floor))
            printf("loss      %.4f at the last step; the synthetic corpus's entropy rate (the floor) is "
                   "%.4f nats/token, %.4f above it\n", tr->losses[steps - 1], floor,
                   tr->losses[steps - 1] - floor);
    }
    if (c->log.dump[0]) { /* collective, as above */
        float *v;
        SLM_CALL(gather_whole(tr, 0, &v));
        slm_status written = tr->rank == 0 ? slm_dump_finish(tr->dump, tr->losses, tr->lrs, tr->norms, v) : SLM_OK;
        if (written == SLM_OK && tr->rank == 0 && tr->moe_len)
            written = slm_dump_moe(tr->dump, tr->moe_aux, tr->moe_z, tr->moe_bias_hist);
        slm_activity_set("MPI_Allreduce: agreeing on the dump's last write", -1);
        SLM_CALL(slm_agree(slm_mesh_world(tr->mesh), written));
    }
    return SLM_OK;
}

/* Every rank samples the same tokens (same model, same counter-based generator), so a
 * sharded model can gather its units collectively; rank 0 prints. */

static slm_status sample(trainer *tr)
{
    const slm_conf *c = tr->conf;
    if (c->sample.tokens <= 0 || tr->stopped_early) return SLM_OK;
    size_t room = strlen(c->sample.prompt) * 8 + (size_t)c->sample.tokens + 2;
    size_t cap = (size_t)c->sample.tokens * 8 + strlen(c->sample.prompt) + 64;
    char *text = malloc(cap);
    int32_t *tok = malloc(room * sizeof *tok);
    slm_status s = slm_agree(slm_mesh_world(tr->mesh), text && tok ? SLM_OK
                                                                  : SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the sampling buffers"));
    long n = s == SLM_OK ? slm_dataset_encode(tr->data, c->sample.prompt, tok, room) : 0;
    if (s == SLM_OK)
        n = slm_sample_tokens(next_logits, tr, slm_mesh_world(tr->mesh), tok, n < 0 ? 0 : n, c->sample.tokens,
                              c->model.seq_len, c->model.vocab_size, c->sample.temperature, c->sample.top_k,
                              c->train.seed);
    if (s == SLM_OK && n < 0) s = SLM_ERROR(SLM_ERR_NOMEM, "cannot allocate the sampling buffers");
    if (s == SLM_OK) slm_dataset_decode(tr->data, tok, (size_t)n, text, cap);
    if (s == SLM_OK && tr->rank == 0) printf("sample    (temperature %.2f)\n%s\n", c->sample.temperature, text);
    free(text);
    free(tok);
    return s;
}

/* Bind this rank (parallel.bind) and set its thread count: train.threads, else what
 * OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say, else one per core it is bound to.
 * Collective over the world. */
static slm_status place_rank(const slm_conf *c, slm_mesh_t mesh, slm_placement *pl, int *threads)
{
    slm_bind_mode mode = !strcmp(c->parallel.bind, "none")    ? SLM_BIND_NONE
                         : !strcmp(c->parallel.bind, "cores") ? SLM_BIND_CORES
                                                              : SLM_BIND_AUTO;
    SLM_CALL(slm_agree(slm_mesh_world(mesh), slm_mesh_bind(mesh, mode, pl)));
    int from_env = getenv("OMP_NUM_THREADS") || getenv("OPENBLAS_NUM_THREADS");
    slm_set_threads(c->train.threads > 0 ? c->train.threads : from_env ? 0 : pl->cores);
    *threads = slm_get_threads();
    return SLM_OK;
}

slm_status slm_train_dry_run(const slm_conf *conf, MPI_Comm comm)
{
    slm_mesh_t mesh;
    SLM_CALL(slm_mesh_create(comm, conf->parallel.tp, conf->parallel.pp, &mesh));
    slm_placement placement;
    int threads = 0;
    slm_status s = place_rank(conf, mesh, &placement, &threads);
    if (s == SLM_OK) {
        if (slm_mesh_rank(mesh) == 0) {
            printf("shardlm %s: dry run (nothing is allocated or trained)\n", PACKAGE_VERSION);
            slm_conf_print(conf, stdout);
        }
        slm_mesh_print(mesh, stdout);
        slm_mesh_print_binding(mesh, &placement, threads, stdout);
        fflush(stdout);
    }
    slm_mesh_destroy(&mesh);
    return s;
}

/* All islands resumed the same step (each from its own directory), or none goes on. */
static slm_status agree_islands_start(trainer *tr)
{
    if (tr->across == MPI_COMM_NULL) return SLM_OK;
    long lo = tr->start_step, hi = tr->start_step;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_LONG, MPI_MIN, tr->job);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_LONG, MPI_MAX, tr->job);
    SLM_CHECK(lo == hi, SLM_ERR_CONFIG,
              "the islands resumed different steps (from %ld to %ld; this is island %d, at step %ld, from %s): "
              "islands in one job resume together - remove the newer checkpoints of the islands ahead, or set "
              "ckpt.resume", lo, hi, tr->island, tr->start_step, tr->conf->ckpt.dir);
    return SLM_OK;
}

slm_status slm_train_run(const slm_conf *conf, MPI_Comm comm)
{
    trainer tr = {.conf = conf, .dump_comm = MPI_COMM_NULL, .across = MPI_COMM_NULL, .islands = 1,
                  .preempt_req = MPI_REQUEST_NULL};
    MPI_Comm_dup(comm, &tr.job); /* the job's own: every island's ranks */
    slm_conf *own = NULL; /* islands: this island's configuration (its own output paths) */
    MPI_Comm island = comm;
    if (conf->islands.count > 1) {
        const int files = !strcmp(conf->islands.transport, "files"); /* this job is one island */
        slm_status split = files ? SLM_OK : slm_islands_split(tr.job, conf->islands.count, &island, &tr.across, &tr.island);
        if (split != SLM_OK) {
            MPI_Comm_free(&tr.job);
            return split;
        }
        if (files) tr.island = conf->islands.index;
        tr.islands = conf->islands.count;
        own = malloc(sizeof *own);
        slm_status s = own ? slm_island_conf(conf, tr.island, own) : SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
        if (s != SLM_OK) {
            free(own);
            if (island != comm) MPI_Comm_free(&island);
            if (tr.across != MPI_COMM_NULL) MPI_Comm_free(&tr.across);
            MPI_Comm_free(&tr.job);
            return s;
        }
        tr.conf = own;
    }
    slm_status made = slm_mesh_create(island, conf->parallel.tp, conf->parallel.pp, &tr.mesh);
    if (island != comm) MPI_Comm_free(&island); /* the mesh keeps a duplicate */
    if (made != SLM_OK) {
        free(own);
        if (tr.across != MPI_COMM_NULL) MPI_Comm_free(&tr.across);
        MPI_Comm_free(&tr.job);
        return made;
    }
    SLM_CALL(slm_mesh_set_ep(tr.mesh, conf->parallel.ep));
    tr.rank = slm_mesh_rank(tr.mesh);
    tr.world = slm_mesh_size(tr.mesh);
    tr.dp = slm_mesh_dp_size(tr.mesh);
    tr.dp_rank = slm_mesh_dp_rank(tr.mesh);
    tr.dp_comm = slm_mesh_dp_comm(tr.mesh);
    tr.accum = slm_conf_grad_accum(conf, tr.dp);
    slm_placement placement;
    int threads = 0;
    slm_status placed = place_rank(conf, tr.mesh, &placement, &threads);
    if (placed != SLM_OK) {
        slm_mesh_destroy(&tr.mesh);
        free(own);
        if (tr.across != MPI_COMM_NULL) MPI_Comm_free(&tr.across);
        MPI_Comm_free(&tr.job);
        return placed;
    }
    FILE *real_stdout = stdout, *island_out = tr.islands > 1 ? slm_island_stream(stdout, tr.island) : NULL;
    if (island_out) {
        fflush(stdout);
        stdout = island_out;
    }
    slm_signals_install(tr.rank, conf->ckpt.grace_s);
    /* a rank that cannot open its data must not leave the others waiting */
    slm_status s = slm_agree(tr.job, setup_local(&tr));
    if (s == SLM_OK) s = slm_trainer_restore(&tr); /* first: a resumed run prefers the backend it used */
    if (tr.islands > 1) s = slm_agree(tr.job, s); /* an island that cannot resume stops them all */
    if (s == SLM_OK) s = agree_islands_start(&tr);
    if (s == SLM_OK && tr.outer && tr.across == MPI_COMM_NULL) s = slm_trainer_files_check_run(&tr);
    if (s == SLM_OK && tr.outer && tr.across == MPI_COMM_NULL) s = slm_trainer_files_catch_up(&tr);
    if (s == SLM_OK) s = setup_shared(&tr);
    if (s == SLM_OK) s = setup_dump(&tr);
    slm_watchdog_t watchdog = NULL;
    if (s == SLM_OK) s = slm_watchdog_start(slm_mesh_world(tr.mesh), conf->train.watchdog_s, &watchdog);
    if (s == SLM_OK) {
        print_summary(&tr);
        slm_mesh_print(tr.mesh, stdout);
        slm_mesh_print_binding(tr.mesh, &placement, threads, stdout);
        fflush(stdout);
        s = train_steps(&tr);
    }
    slm_watchdog_stop(&watchdog);
    if (s == SLM_OK) s = sample(&tr);
    if (tr.async) slm_trainer_finish_saves(&tr); /* after an error too: join the writer */
    teardown(&tr);
    slm_mesh_destroy(&tr.mesh);
    free(own);
    if (tr.across != MPI_COMM_NULL) MPI_Comm_free(&tr.across);
    MPI_Comm_free(&tr.job);
    if (island_out) {
        fflush(island_out);
        stdout = real_stdout;
        fclose(island_out);
    }
    return s == SLM_OK ? SLM_OK : slm_error_push(s, __FILE__, __LINE__, __func__);
}
