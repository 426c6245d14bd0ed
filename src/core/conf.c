/* conf.c - configuration table, INI loading through inih, overrides and validation.
 *
 * One table lists every key with its type, bounds and the field it fills, so parsing,
 * printing, help and error messages all come from the same place. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <ini.h>
#include "shardlm/kernels.h"
#include "shardlm/conf.h"
#include "shardlm/hf.h"

typedef enum { K_INT, K_LONG, K_U64, K_DOUBLE, K_BOOL, K_STR } key_type;

typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset, size; /* size: buffer size for K_STR */
    double min, max;     /* inclusive bounds for numbers */
    const char *help;
} key_spec;

#define F(field) offsetof(slm_conf, field)
#define S(field) sizeof(((slm_conf *)0)->field)
#define NUM(sec, key, type, field, lo, hi, help) {sec, key, type, F(field), 0, lo, hi, help}
#define STR(sec, key, field, help) {sec, key, K_STR, F(field), S(field), 0, 0, help}

static const key_spec keys[] = {
    STR("model", "arch", model.arch, "model architecture (gpt2, llama)"),
    NUM("model", "n_layer", K_INT, model.n_layer, 1, 1024, "transformer blocks"),
    NUM("model", "n_head", K_INT, model.n_head, 1, 1024, "attention heads"),
    NUM("model", "d_model", K_INT, model.d_model, 1, 65536, "residual width"),
    NUM("model", "vocab_size", K_INT, model.vocab_size, 2, 16777216, "vocabulary size"),
    NUM("model", "seq_len", K_INT, model.seq_len, 1, 1048576, "context length"),
    NUM("model", "n_kv_head", K_INT, model.n_kv_head, 0, 1024, "key/value heads (grouped-query attention; 0 = n_head)"),
    NUM("model", "ffn_hidden", K_INT, model.ffn_hidden, 0, 1048576,
        "MLP width (0 = 4 d_model for gpt2, 8/3 d_model rounded up to 256 for llama)"),
    NUM("model", "max_pos", K_INT, model.max_pos, 0, 1048576, "positions the model has (0 = seq_len)"),
    NUM("model", "tie_embeddings", K_BOOL, model.tie_embeddings, 0, 1, "the LM head is the token embedding"),
    NUM("model", "norm_eps", K_DOUBLE, model.norm_eps, 0, 1, "epsilon of the norms (0 = 1e-5)"),
    NUM("model", "rope_theta", K_DOUBLE, model.rope_theta, 0, 1e12, "rotary embeddings' base (llama; 0 = 10000)"),
    STR("model", "rope_scaling", model.rope_scaling, "rotary frequency scaling: none or llama3"),
    NUM("model", "rope_factor", K_DOUBLE, model.rope_factor, 0, 1e6, "llama3 scaling: factor (0 = 8)"),
    NUM("model", "rope_low_freq_factor", K_DOUBLE, model.rope_low_freq_factor, 0, 1e6,
        "llama3 scaling: low-frequency factor (0 = 1)"),
    NUM("model", "rope_high_freq_factor", K_DOUBLE, model.rope_high_freq_factor, 0, 1e6,
        "llama3 scaling: high-frequency factor (0 = 4)"),
    NUM("model", "rope_original_max_pos", K_INT, model.rope_original_max_pos, 0, 16777216,
        "llama3 scaling: the context the frequencies were trained for (0 = 8192)"),
    STR("model", "init_from", model.init_from,
        "initial weights (fresh runs): an llm.c GPT-2 .bin, or a Hugging Face model directory, whose config.json "
        "sets the model.* keys"),
    STR("model", "init_rope_pairing", model.init_rope_pairing,
        "auto | half | interleaved: how the q and k rows of a Hugging Face model.init_from pair rotary dimensions "
        "(auto: what its config.json records, else half)"),
    NUM("model", "n_experts", K_INT, model.n_experts, 0, SLM_MOE_MAX_EXPERTS,
        "experts of each MoE block (0 = dense MLPs; docs/moe.md)"),
    NUM("model", "expert_top_k", K_INT, model.expert_top_k, 0, SLM_MOE_MAX_EXPERTS,
        "experts each token is routed to (0 = 2)"),
    NUM("model", "moe_every", K_INT, model.moe_every, 0, 1024,
        "every moe_every-th block is an MoE block: 1 = all, 2 = blocks 1, 3, 5, ... (0 = 1)"),
    NUM("model", "expert_hidden", K_INT, model.expert_hidden, 0, 1048576, "an expert's MLP width (0 = model.ffn_hidden)"),
    NUM("train", "steps", K_LONG, train.steps, 0, 1e15, "optimizer steps"),
    NUM("train", "stop_after", K_LONG, train.stop_after, 0, 1e15, "end this run (with a checkpoint) at this step (0 = at train.steps)"),
    NUM("train", "micro_batch", K_INT, train.micro_batch, 1, 1 << 20, "sequences per rank per micro-step"),
    NUM("train", "global_batch", K_INT, train.global_batch, 1, 1 << 30, "sequences per optimizer step"),
    NUM("train", "lr", K_DOUBLE, train.lr, 0, 10, "peak learning rate"),
    NUM("train", "warmup_steps", K_LONG, train.warmup_steps, 0, 1e15, "linear warmup steps"),
    NUM("train", "min_lr", K_DOUBLE, train.min_lr, 0, 10, "final learning rate of the cosine decay"),
    STR("train", "optimizer", train.optimizer, "adamw | adafactor | lamb | sgd (docs/optimizers.md)"),
    NUM("train", "weight_decay", K_DOUBLE, train.weight_decay, 0, 10,
        "weight decay of matrices: decoupled (adamw, lamb, adafactor), L2 (sgd)"),
    NUM("train", "grad_clip", K_DOUBLE, train.grad_clip, 0, 1e30, "global grad-norm clip (0 = off)"),
    NUM("train", "beta1", K_DOUBLE, train.beta1, 0, 0.999999, "AdamW and LAMB beta1"),
    NUM("train", "beta2", K_DOUBLE, train.beta2, 0, 0.999999999, "AdamW and LAMB beta2"),
    NUM("train", "eps", K_DOUBLE, train.eps, 0, 1, "AdamW and LAMB epsilon"),
    NUM("train", "seed", K_U64, train.seed, 0, 18446744073709551615.0, "seed of init, data and sampling"),
    STR("train", "precision", train.precision, "fp32 | bf16"),
    STR("train", "matmul", train.matmul, "auto | openblas | dnnl: the GEMM backend (auto: the fastest that computes correctly here)"),
    NUM("train", "recompute", K_BOOL, train.recompute, 0, 1, "activation recompute per block"),
    NUM("train", "threads", K_INT, train.threads, 0, 4096, "compute threads per rank (0 = auto)"),
    NUM("train", "watchdog_s", K_DOUBLE, train.watchdog_s, 0, 1e9, "abort when no step completes for this long (0 = off)"),
    NUM("train", "moe_capacity", K_DOUBLE, train.moe_capacity, -1e9, 1e9,
        "capacity factor of each expert per micro-batch (0 = dropless)"),
    NUM("train", "moe_aux_loss", K_DOUBLE, train.moe_aux_loss, 0, 1e6, "coefficient of the MoE load-balancing loss"),
    NUM("train", "moe_z_loss", K_DOUBLE, train.moe_z_loss, 0, 1e6, "coefficient of the router z-loss"),
    STR("train", "moe_balance", train.moe_balance,
        "loss | bias: balance experts by the auxiliary loss alone, or also by a selection bias"),
    NUM("train", "moe_bias_rate", K_DOUBLE, train.moe_bias_rate, 0, 1e3, "step of the selection bias per optimizer step"),
    NUM("adafactor", "eps1", K_DOUBLE, adafactor.eps1, 0, 1, "added to the squared gradient"),
    NUM("adafactor", "eps2", K_DOUBLE, adafactor.eps2, 0, 1, "floor of the parameter scale"),
    NUM("adafactor", "clip_threshold", K_DOUBLE, adafactor.clip_threshold, 0, 1e30, "the update's RMS is clipped to this"),
    NUM("adafactor", "decay_rate", K_DOUBLE, adafactor.decay_rate, -10, 0,
        "the second moment's decay at step t is 1 - t^decay_rate"),
    NUM("adafactor", "beta1", K_DOUBLE, adafactor.beta1, 0, 0.999999, "first moment (0 = none)"),
    NUM("adafactor", "scale_parameter", K_BOOL, adafactor.scale_parameter, 0, 1,
        "step size relative to the parameter's RMS"),
    NUM("adafactor", "relative_step", K_BOOL, adafactor.relative_step, 0, 1,
        "step size min(1e-2, 1/sqrt(t)) instead of train.lr's schedule"),
    NUM("adafactor", "warmup_init", K_BOOL, adafactor.warmup_init, 0, 1, "relative step min(1e-6 t, 1/sqrt(t))"),
    NUM("lamb", "min_trust", K_DOUBLE, lamb.min_trust, 0, 1e30, "lower clamp of the trust ratio"),
    NUM("lamb", "max_trust", K_DOUBLE, lamb.max_trust, 0, 1e30, "upper clamp of the trust ratio (0 = none)"),
    NUM("sgd", "momentum", K_DOUBLE, sgd.momentum, 0, 0.999999, "momentum (0 = none)"),
    NUM("sgd", "dampening", K_DOUBLE, sgd.dampening, 0, 1, "dampening of the momentum"),
    NUM("sgd", "nesterov", K_BOOL, sgd.nesterov, 0, 1, "Nesterov momentum"),
    NUM("parallel", "tp", K_INT, parallel.tp, 1, 4096, "tensor-parallel ranks"),
    NUM("parallel", "pp", K_INT, parallel.pp, 1, 4096, "pipeline stages"),
    NUM("parallel", "ep", K_INT, parallel.ep, 1, 4096,
        "expert-parallel ranks: each MoE block's experts split over this many data-parallel ranks (divides dp)"),
    NUM("parallel", "zero_stage", K_INT, parallel.zero_stage, 0, 3, "ZeRO stage 0-3"),
    NUM("parallel", "microbatches", K_INT, parallel.microbatches, 0, 1 << 20, "micro-batches per step (0 = derived from the batch sizes)"),
    NUM("parallel", "overlap", K_BOOL, parallel.overlap, 0, 1, "reduce gradients while backward runs"),
    STR("parallel", "bind", parallel.bind, "auto | cores | none: binding of ranks to cores"),
    NUM("parallel", "bucket_mb", K_DOUBLE, parallel.bucket_mb, 0, 1 << 20, "MiB fused per collective (0 = per block)"),
    STR("data", "train", data.train, "glob of token shards, or `synthetic`"),
    STR("data", "val", data.val, "glob of validation shards, `synthetic`, or empty"),
    STR("data", "tokenizer", data.tokenizer, "directory of the GPT-2 encoder.json and vocab.bpe the data was made with (empty = none)"),
    NUM("data", "shuffle", K_BOOL, data.shuffle, 0, 1, "a new pseudorandom order of the training windows each epoch"),
    NUM("eval", "every", K_LONG, eval.every, 0, 1e15, "steps between validation losses (0 = none; needs data.val)"),
    NUM("eval", "batches", K_INT, eval.batches, 1, 1 << 20, "global batches of data.val per evaluation"),
    NUM("eval", "patience", K_INT, eval.patience, 0, 1 << 20, "stop after this many evaluations without improvement (0 = never)"),
    STR("ckpt", "dir", ckpt.dir, "checkpoint directory (empty = none)"),
    NUM("ckpt", "every", K_LONG, ckpt.every, 0, 1e15, "steps between checkpoints"),
    NUM("ckpt", "keep", K_INT, ckpt.keep, 1, 1 << 20, "newest checkpoints kept"),
    NUM("ckpt", "keep_every", K_LONG, ckpt.keep_every, 0, 1e15, "also keep steps that are multiples (0 = none)"),
    NUM("ckpt", "async", K_BOOL, ckpt.async, 0, 1, "write checkpoints in the background"),
    NUM("ckpt", "reset_optimizer", K_BOOL, ckpt.reset_optimizer, 0, 1,
        "resume only the parameters of a checkpoint; the optimizer starts afresh (needed to change train.optimizer)"),
    STR("ckpt", "resume", ckpt.resume, "checkpoint to resume from (default: latest in dir)"),
    NUM("ckpt", "grace_s", K_DOUBLE, ckpt.grace_s, 0, 1e9, "after a preemption signal, exit at the latest this much later (0 = no limit)"),
    NUM("log", "every", K_LONG, log.every, 1, 1e15, "steps between log lines"),
    STR("log", "metrics", log.metrics, "JSON-lines metrics file (empty = none)"),
    STR("log", "dump", log.dump, "HDF5 file of init/grads/final state for oracle tests"),
    NUM("log", "peak_gflops", K_DOUBLE, log.peak_gflops, 0, 1e12, "peak for MFU (0 = measure)"),
    NUM("islands", "count", K_INT, islands.count, 1, 4096,
        "islands: the ranks split into this many meshes that train apart and meet every sync_every steps (docs/islands.md)"),
    NUM("islands", "sync_every", K_LONG, islands.sync_every, 1, 1e15, "inner steps between outer steps (H)"),
    NUM("islands", "outer_lr", K_DOUBLE, islands.outer_lr, 0, 100, "learning rate of the outer SGD"),
    NUM("islands", "outer_momentum", K_DOUBLE, islands.outer_momentum, 0, 0.999999, "momentum of the outer SGD (0 = none)"),
    NUM("islands", "nesterov", K_BOOL, islands.nesterov, 0, 1, "Nesterov momentum in the outer SGD"),
    STR("islands", "compress", islands.compress,
        "none | bf16 | int8: how pseudo-gradients cross between islands (int8 with error feedback)"),
    STR("islands", "transport", islands.transport,
        "mpi: this job is cut into the islands | files: this job is one island (islands.index), meeting the others "
        "through islands.dir"),
    STR("islands", "dir", islands.dir, "files: the exchange directory all islands share"),
    NUM("islands", "index", K_INT, islands.index, 0, 4095, "files: this job's island, 0 to islands.count - 1"),
    NUM("islands", "deadline_s", K_DOUBLE, islands.deadline_s, 0, 1e9,
        "files: after committing, wait this long for the other islands; the late ones are left out of the step"),
    NUM("sample", "tokens", K_INT, sample.tokens, 0, 1 << 20, "tokens sampled after training"),
    NUM("sample", "temperature", K_DOUBLE, sample.temperature, 0, 100, "sampling temperature"),
    NUM("sample", "top_k", K_INT, sample.top_k, 0, 1 << 30, "sample among the k most likely tokens (0 = all)"),
    STR("sample", "prompt", sample.prompt, "text the sample starts from"),
};
#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= SLM_CONF_MAX_KEYS, "SLM_CONF_MAX_KEYS is smaller than the key table");

void slm_conf_defaults(slm_conf *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->model.arch, "gpt2");
    c->model.n_layer = 4;
    c->model.n_head = 4;
    c->model.d_model = 128;
    c->model.vocab_size = 256;
    c->model.seq_len = 64;
    c->model.tie_embeddings = 1;
    strcpy(c->model.rope_scaling, "none");
    strcpy(c->model.init_rope_pairing, "auto");
    c->train.steps = 300;
    c->train.micro_batch = 8;
    c->train.global_batch = 8;
    c->train.lr = 3e-3;
    c->train.warmup_steps = 30;
    c->train.min_lr = 3e-4;
    c->train.weight_decay = 0.1;
    c->train.grad_clip = 1.0;
    c->train.beta1 = 0.9;
    c->train.beta2 = 0.95;
    c->train.eps = 1e-8;
    strcpy(c->train.optimizer, "adamw");
    c->train.moe_aux_loss = 0.01;
    c->train.moe_bias_rate = 1e-3;
    strcpy(c->train.moe_balance, "loss");
    {
        slm_optim_config o;
        slm_optim_config_defaults(&o);
        c->adafactor.eps1 = o.adafactor.eps1;
        c->adafactor.eps2 = o.adafactor.eps2;
        c->adafactor.clip_threshold = o.adafactor.clip_threshold;
        c->adafactor.decay_rate = o.adafactor.decay_rate;
        c->adafactor.scale_parameter = o.adafactor.scale_parameter;
        c->adafactor.relative_step = o.adafactor.relative_step;
    }
    c->train.seed = 1337;
    strcpy(c->train.precision, "fp32");
    strcpy(c->train.matmul, "auto");
    c->parallel.tp = 1;
    c->parallel.pp = 1;
    c->parallel.ep = 1;
    c->parallel.overlap = 1;
    strcpy(c->parallel.bind, "auto");
    strcpy(c->data.train, "synthetic");
    c->ckpt.keep = 3;
    c->train.watchdog_s = 1800;
    c->ckpt.every = 0;
    c->log.every = 10;
    c->data.shuffle = 1;
    c->eval.batches = 4;
    c->sample.tokens = 200;
    c->islands.count = 1;
    c->islands.sync_every = 100;
    c->islands.outer_lr = 0.7;
    c->islands.outer_momentum = 0.9;
    c->islands.nesterov = 1;
    strcpy(c->islands.compress, "none");
    strcpy(c->islands.transport, "mpi");
    c->islands.deadline_s = 600;
    c->sample.temperature = 0.8;
}

static const key_spec *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].key, key)) return &keys[i];
    return NULL;
}

static int section_known(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section)) return 1;
    return 0;
}

/* Parse value into the field of k. where: "file:line" or "command line" for messages. */
static slm_status set_value(slm_conf *c, const key_spec *k, const char *value, const char *where)
{
    char *field = (char *)c + k->offset, *end = NULL;
    if (k->type == K_STR) {
        SLM_CHECK(strlen(value) < k->size, SLM_ERR_CONFIG, "%s.%s (%s): value longer than %zu characters",
                  k->section, k->key, where, k->size - 1);
        strcpy(field, value);
        return SLM_OK;
    }
    if (k->type == K_BOOL) {
        int v = -1;
        if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcmp(value, "1") ||
            !strcasecmp(value, "on"))
            v = 1;
        else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcmp(value, "0") ||
                 !strcasecmp(value, "off"))
            v = 0;
        if (v < 0)
            return SLM_ERROR(SLM_ERR_CONFIG, "%s.%s = '%s' (%s): expected true or false", k->section,
                             k->key, value, where);
        *(int *)field = v;
        return SLM_OK;
    }
    errno = 0;
    double d;
    if (k->type == K_DOUBLE) {
        d = strtod(value, &end);
    } else if (k->type == K_U64) {
        if (value[0] == '-') end = (char *)value; /* force the error below */
        else d = (double)strtoull(value, &end, 0);
    } else {
        d = (double)strtoll(value, &end, 0);
    }
    if (end == value || *value == '\0' || (end && *end != '\0') || errno == ERANGE || isnan(d)) {
        char msg[96];
        snprintf(msg, sizeof msg, "expected %s", k->type == K_DOUBLE ? "a number" : "an integer");
        return SLM_ERROR(SLM_ERR_CONFIG, "%s.%s = '%s' (%s): %s", k->section, k->key, value, where, msg);
    }
    if (d < k->min || d > k->max)
        return SLM_ERROR(SLM_ERR_CONFIG, "%s.%s = '%s' (%s): must be between %g and %g", k->section,
                         k->key, value, where, k->min, k->max);
    switch (k->type) {
    case K_INT: *(int *)field = (int)d; break;
    case K_LONG: *(long *)field = (long)d; break;
    case K_U64: *(uint64_t *)field = strtoull(value, NULL, 0); break;
    case K_DOUBLE: *(double *)field = d; break;
    default: break;
    }
    return SLM_OK;
}

typedef struct {
    slm_conf *conf;
    const char *path;
    slm_status status;
    FILE *file;
    int line; /* lines read so far: inih calls the handler right after reading a line */
} ini_ctx;

/* Debian's inih passes no line number to the handler, so the reader counts lines. */
static char *read_line(char *str, int num, void *stream)
{
    ini_ctx *ctx = stream;
    char *r = fgets(str, num, ctx->file);
    if (r) ctx->line++;
    return r;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *ctx = user;
    char where[SLM_PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%d", ctx->path, ctx->line);
    const key_spec *k = find_key(section, name);
    if (!k) {
        if (!section_known(section))
            ctx->status = SLM_ERROR(SLM_ERR_CONFIG, "unknown section [%s] at %s (known: model, train, "
                                    "parallel, data, eval, ckpt, log, sample)", section, where);
        else
            ctx->status = SLM_ERROR(SLM_ERR_CONFIG, "unknown key %s.%s at %s", section, name, where);
        return 0;
    }
    ctx->status = set_value(ctx->conf, k, value, where);
    ctx->conf->set_by[k - keys] = SLM_CONF_SET_FILE;
    return ctx->status == SLM_OK;
}

/* Parse INI text from f, named path in messages; closes f. */
static slm_status load_stream(slm_conf *conf, FILE *f, const char *path)
{
    ini_ctx ctx = {conf, path, SLM_OK, f, 0};
    snprintf(conf->source, sizeof conf->source, "%s", path);
    int rc = ini_parse_stream(read_line, &ctx, on_key, &ctx);
    fclose(f);
    if (ctx.status != SLM_OK) return ctx.status;
    SLM_CHECK(rc == 0, SLM_ERR_CONFIG, "%s:%d: cannot parse this line (expected [section] or key = value)",
              path, rc);
    return SLM_OK;
}

slm_status slm_conf_load_file(slm_conf *conf, const char *path)
{
    FILE *f = fopen(path, "r");
    SLM_CHECK(f, SLM_ERR_IO, "cannot open config file %s: %s", path, strerror(errno));
    return load_stream(conf, f, path);
}

slm_status slm_conf_from_args(slm_conf *conf, int argc, char **argv, int *i)
{
    slm_conf_defaults(conf);
    if (*i < argc && argv[*i][0] != '-' && !strchr(argv[*i], '=')) return slm_conf_load_file(conf, argv[(*i)++]);
    return SLM_OK;
}

slm_status slm_conf_load_text(slm_conf *conf, const char *text, const char *name)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    SLM_CHECK(f, SLM_ERR_NOMEM, "cannot read the configuration of %s", name);
    return load_stream(conf, f, name);
}

slm_status slm_conf_set(slm_conf *conf, const char *assignment)
{
    const char *eq = strchr(assignment, '='), *dot = strchr(assignment, '.');
    SLM_CHECK(eq && dot && dot < eq, SLM_ERR_CONFIG,
              "override '%s': expected section.key=value (for example train.steps=100)", assignment);
    char section[64], key[64];
    size_t ls = (size_t)(dot - assignment), lk = (size_t)(eq - dot - 1);
    SLM_CHECK(ls > 0 && ls < sizeof section && lk > 0 && lk < sizeof key, SLM_ERR_CONFIG,
              "override '%s': expected section.key=value", assignment);
    memcpy(section, assignment, ls);
    section[ls] = '\0';
    memcpy(key, dot + 1, lk);
    key[lk] = '\0';
    const key_spec *k = find_key(section, key);
    SLM_CHECK(k, SLM_ERR_CONFIG, "unknown key %s.%s on the command line", section, key);
    SLM_CALL(set_value(conf, k, eq + 1, "command line"));
    conf->set_by[k - keys] = SLM_CONF_SET_COMMAND_LINE;
    return SLM_OK;
}

slm_model_config slm_conf_model(const slm_conf *c)
{
    slm_model_config m = {.n_layer = c->model.n_layer,
                          .n_head = c->model.n_head,
                          .d_model = c->model.d_model,
                          .vocab_size = c->model.vocab_size,
                          .seq_len = c->model.seq_len,
                          .n_kv_head = c->model.n_kv_head,
                          .ffn_hidden = c->model.ffn_hidden,
                          .max_pos = c->model.max_pos,
                          .tie_embeddings = c->model.tie_embeddings,
                          .norm_eps = c->model.norm_eps,
                          .rope_theta = c->model.rope_theta,
                          .rope = {!strcmp(c->model.rope_scaling, "llama3") ? SLM_ROPE_LLAMA3 : SLM_ROPE_NONE,
                                   c->model.rope_factor, c->model.rope_low_freq_factor,
                                   c->model.rope_high_freq_factor, c->model.rope_original_max_pos},
                          .n_experts = c->model.n_experts,
                          .expert_top_k = c->model.expert_top_k,
                          .moe_every = c->model.moe_every,
                          .expert_hidden = c->model.expert_hidden,
                          .recompute = c->train.recompute,
                          .moe = {c->train.moe_capacity, c->train.moe_aux_loss, c->train.moe_z_loss,
                                  strcmp(c->train.moe_balance, "bias") ? SLM_MOE_BALANCE_LOSS : SLM_MOE_BALANCE_BIAS,
                                  c->train.moe_bias_rate}};
    snprintf(m.arch, sizeof m.arch, "%s", c->model.arch);
    slm_model_config_defaults(&m);
    return m;
}

slm_optim_config slm_conf_optim(const slm_conf *c)
{
    slm_optim_config o;
    slm_optim_config_defaults(&o);
    snprintf(o.name, sizeof o.name, "%s", c->train.optimizer);
    o.weight_decay = c->train.weight_decay;
    o.beta1 = c->train.beta1;
    o.beta2 = c->train.beta2;
    o.eps = c->train.eps;
    o.adafactor.eps1 = c->adafactor.eps1;
    o.adafactor.eps2 = c->adafactor.eps2;
    o.adafactor.clip_threshold = c->adafactor.clip_threshold;
    o.adafactor.decay_rate = c->adafactor.decay_rate;
    o.adafactor.beta1 = c->adafactor.beta1;
    o.adafactor.scale_parameter = c->adafactor.scale_parameter;
    o.adafactor.relative_step = c->adafactor.relative_step;
    o.adafactor.warmup_init = c->adafactor.warmup_init;
    o.lamb.min_trust = c->lamb.min_trust;
    o.lamb.max_trust = c->lamb.max_trust;
    o.sgd.momentum = c->sgd.momentum;
    o.sgd.dampening = c->sgd.dampening;
    o.sgd.nesterov = c->sgd.nesterov;
    return o;
}

static void format_value(const slm_conf *c, const key_spec *k, char *buf, size_t len);

/* Bytes of a number's field. */
static size_t value_size(const key_spec *k)
{
    switch (k->type) {
    case K_LONG: return sizeof(long);
    case K_U64: return sizeof(uint64_t);
    case K_DOUBLE: return sizeof(double);
    default: return sizeof(int);
    }
}

/* "set in run.ini" or "set on the command line": where key k got its value. */
static void set_where(const slm_conf *c, const key_spec *k, char *buf, size_t len)
{
    if (c->set_by[k - keys] == SLM_CONF_SET_COMMAND_LINE) snprintf(buf, len, "set on the command line");
    else snprintf(buf, len, "set in %s", c->source);
}

slm_status slm_conf_resolve_model(slm_conf *c)
{
    const char *dir = c->model.init_from;
    if (!slm_hf_is_model_dir(dir)) {
        struct stat sb;
        SLM_CHECK(!dir[0] || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode), SLM_ERR_CONFIG,
                  "model.init_from = %s is a directory without a config.json (a Hugging Face model directory has one; "
                  "an llm.c checkpoint is a file)", dir);
        return SLM_OK;
    }
    slm_model_config hf;
    slm_rope_pairing pairing;
    slm_hf_origin origin;
    SLM_CALL(slm_hf_read_config(dir, &hf, &pairing, &origin));
    char where[SLM_PATH_MAX + 32], have[SLM_PATH_MAX + 8];
    snprintf(where, sizeof where, "config.json in %s", dir);
    slm_conf *probe = malloc(sizeof *probe); /* each value parsed as the key would parse it */
    SLM_CHECK(probe, SLM_ERR_NOMEM, "out of memory");
    *probe = *c;
    slm_status s = SLM_OK;
    for (int i = 0; i < origin.n && s == SLM_OK; i++) {
        const key_spec *k = find_key("model", origin.e[i].key);
        char text[64];
        if (!k || !slm_model_config_field_text(&hf, k->key, text, sizeof text)) continue;
        s = set_value(probe, k, text, where);
        if (s != SLM_OK) break;
        const size_t size = k->type == K_STR ? strlen((char *)probe + k->offset) + 1 : value_size(k);
        char *mine = (char *)c + k->offset, *theirs = (char *)probe + k->offset;
        if (memcmp(mine, theirs, size) && c->set_by[k - keys] != SLM_CONF_SET_DEFAULT) {
            char set[SLM_PATH_MAX + 32];
            format_value(c, k, have, sizeof have);
            set_where(c, k, set, sizeof set);
            s = SLM_ERROR(SLM_ERR_CONFIG, "model.%s = %s (%s) contradicts config.json's %s = %s in %s", k->key, have,
                          set, origin.e[i].from, origin.e[i].value, dir);
            break;
        }
        memcpy(mine, theirs, size);
    }
    free(probe);
    SLM_CALL(s);
    if (c->model.seq_len > hf.max_pos) {
        const key_spec *k = find_key("model", "seq_len");
        const char *from = "max_pos", *value = slm_hf_origin_text(&origin, "max_pos", &from);
        char set[SLM_PATH_MAX + 32];
        set_where(c, k, set, sizeof set);
        SLM_CHECK(c->set_by[k - keys] == SLM_CONF_SET_DEFAULT, SLM_ERR_CONFIG,
                  "model.seq_len = %d (%s) is longer than config.json's %s = %s in %s", c->model.seq_len, set, from,
                  value ? value : "?", dir);
        c->model.seq_len = hf.max_pos; /* the default is longer than the model knows */
    }
    if (!strcmp(c->model.init_rope_pairing, "auto"))
        snprintf(c->model.init_rope_pairing, sizeof c->model.init_rope_pairing, "%s", slm_rope_pairing_name(pairing));
    return SLM_OK;
}

slm_outer_config slm_conf_outer(const slm_conf *c)
{
    return (slm_outer_config){c->islands.outer_lr, c->islands.outer_momentum, c->islands.nesterov,
                              !strcmp(c->islands.compress, "int8")};
}

int slm_conf_grad_accum(const slm_conf *c, int dp)
{
    return c->train.global_batch / (c->train.micro_batch * dp);
}

slm_status slm_conf_validate(const slm_conf *c, int world)
{
    SLM_CHECK(!strcmp(c->model.rope_scaling, "none") || !strcmp(c->model.rope_scaling, "llama3"), SLM_ERR_CONFIG,
              "model.rope_scaling = '%s': expected none or llama3", c->model.rope_scaling);
    SLM_CHECK(!strcmp(c->model.init_rope_pairing, "auto") || !strcmp(c->model.init_rope_pairing, "half") ||
                  !strcmp(c->model.init_rope_pairing, "interleaved"),
              SLM_ERR_CONFIG, "model.init_rope_pairing = '%s': expected auto, half or interleaved",
              c->model.init_rope_pairing);
    SLM_CHECK(strcmp(c->model.arch, "gpt2") || c->model.tie_embeddings, SLM_ERR_CONFIG,
              "model.tie_embeddings = false: GPT-2's LM head is its token embedding");
    SLM_CHECK(!strcmp(c->train.moe_balance, "loss") || !strcmp(c->train.moe_balance, "bias"), SLM_ERR_CONFIG,
              "train.moe_balance = '%s': expected loss or bias", c->train.moe_balance);
    if (c->model.n_experts == 0) { /* the other MoE keys would go unused: say so rather than ignore them */
        const char *moe_keys[] = {"expert_top_k", "moe_every", "expert_hidden"};
        const int moe_vals[] = {c->model.expert_top_k, c->model.moe_every, c->model.expert_hidden};
        for (int i = 0; i < 3; i++)
            SLM_CHECK(moe_vals[i] == 0, SLM_ERR_CONFIG,
                      "model.%s = %d is set, but model.n_experts = 0 (a dense model): set model.n_experts", moe_keys[i],
                      moe_vals[i]);
    }
    const slm_model_config mc = slm_conf_model(c);
    SLM_CALL(slm_model_config_check(&mc, 1));
    const slm_optim_config oc = slm_conf_optim(c);
    SLM_CALL(slm_optim_config_check(&oc));
    /* Adafactor's relative step replaces the schedule: a learning rate set for it would be
     * silently ignored (fairseq and transformers refuse the combination too) unless the
     * relative step was asked for explicitly as well */
    SLM_CHECK(strcmp(oc.name, "adafactor") || !oc.adafactor.relative_step ||
                  c->set_by[find_key("train", "lr") - keys] == SLM_CONF_SET_DEFAULT ||
                  c->set_by[find_key("adafactor", "relative_step") - keys] != SLM_CONF_SET_DEFAULT,
              SLM_ERR_CONFIG,
              "train.lr = %g is set, but Adafactor's default relative step (adafactor.relative_step = true) "
              "computes its own step size, min(1e-2, 1/sqrt(t)): set adafactor.relative_step = false to follow "
              "train.lr's schedule, or set adafactor.relative_step = true to confirm that train.lr goes unused",
              c->train.lr);
    SLM_CHECK(!strcmp(c->train.precision, "fp32") || !strcmp(c->train.precision, "bf16"),
              SLM_ERR_CONFIG, "train.precision = '%s': expected fp32 or bf16", c->train.precision);
    SLM_CHECK(!strcmp(c->train.matmul, "auto") || !strcmp(c->train.matmul, "openblas") ||
                  !strcmp(c->train.matmul, "dnnl"),
              SLM_ERR_CONFIG, "train.matmul = '%s': expected auto, openblas or dnnl", c->train.matmul);
    SLM_CHECK(strcmp(c->train.matmul, "dnnl") || slm_gemm_available(SLM_GEMM_DNNL), SLM_ERR_CONFIG,
              "train.matmul = dnnl: this shardlm was built without oneDNN (install libdnnl-dev and "
              "configure --with-dnnl)");
    SLM_CHECK(c->train.min_lr <= c->train.lr, SLM_ERR_CONFIG,
              "train.min_lr = %g is larger than train.lr = %g", c->train.min_lr, c->train.lr);
    SLM_CHECK(!strcmp(c->parallel.bind, "auto") || !strcmp(c->parallel.bind, "cores") ||
                  !strcmp(c->parallel.bind, "none"),
              SLM_ERR_CONFIG, "parallel.bind = '%s': expected auto, cores or none", c->parallel.bind);
    SLM_CHECK(!strcmp(c->islands.compress, "none") || !strcmp(c->islands.compress, "bf16") ||
                  !strcmp(c->islands.compress, "int8"),
              SLM_ERR_CONFIG, "islands.compress = '%s': expected none, bf16 or int8", c->islands.compress);
    const int files = !strcmp(c->islands.transport, "files");
    SLM_CHECK(files || !strcmp(c->islands.transport, "mpi"), SLM_ERR_CONFIG,
              "islands.transport = '%s': expected mpi or files", c->islands.transport);
    if (files && c->islands.count > 1) {
        SLM_CHECK(c->islands.dir[0], SLM_ERR_CONFIG,
                  "islands.transport = files needs islands.dir, the exchange directory all islands share");
        SLM_CHECK(c->islands.index < c->islands.count, SLM_ERR_CONFIG,
                  "islands.index = %d: this job's island must be 0 to islands.count - 1 = %d", c->islands.index,
                  c->islands.count - 1);
        SLM_CHECK(!strcmp(c->islands.compress, "none"), SLM_ERR_UNSUPPORTED,
                  "islands.compress = %s with islands.transport = files: this version exchanges fp32 files; set "
                  "islands.compress = none", c->islands.compress);
        SLM_CHECK(c->ckpt.dir[0], SLM_ERR_CONFIG,
                  "islands.transport = files needs ckpt.dir: an island rejoins from its checkpoints");
    }
    SLM_CHECK(files || world % c->islands.count == 0, SLM_ERR_CONFIG,
              "%d ranks cannot be split into islands.count = %d islands of equal size", world, c->islands.count);
    SLM_CHECK(c->islands.count == 1 || c->eval.patience == 0, SLM_ERR_UNSUPPORTED,
              "eval.patience = %d with islands.count = %d: each island evaluates its own parameters, so the "
              "islands would stop at different steps; stop by train.steps instead", c->eval.patience,
              c->islands.count);
    if (!files) world /= c->islands.count; /* from here on: one island's ranks */
    SLM_CHECK(world % (c->parallel.tp * c->parallel.pp) == 0, SLM_ERR_CONFIG,
              "%d ranks cannot be split into parallel.tp = %d x parallel.pp = %d", world,
              c->parallel.tp, c->parallel.pp);
    SLM_CHECK(c->model.n_head % c->parallel.tp == 0, SLM_ERR_CONFIG,
              "parallel.tp = %d does not divide model.n_head = %d: tensor parallelism splits whole heads "
              "(and so d_model and the MLP's 4 x d_model) evenly", c->parallel.tp, c->model.n_head);
    SLM_CHECK(c->model.vocab_size >= c->parallel.tp, SLM_ERR_CONFIG,
              "model.vocab_size = %d is smaller than parallel.tp = %d: every rank needs vocabulary rows",
              c->model.vocab_size, c->parallel.tp);
    SLM_CALL(slm_model_config_check(&mc, c->parallel.tp));
    SLM_CHECK(c->parallel.pp <= c->model.n_layer, SLM_ERR_CONFIG,
              "parallel.pp = %d is more than model.n_layer = %d: every pipeline stage needs a layer",
              c->parallel.pp, c->model.n_layer);
    SLM_CHECK(c->parallel.pp == 1 || c->parallel.zero_stage <= 1, SLM_ERR_UNSUPPORTED,
              "parallel.zero_stage = %d with parallel.pp = %d: pipeline parallelism composes with ZeRO "
              "stages 0 and 1 in this version", c->parallel.zero_stage, c->parallel.pp);
    int dp = world / (c->parallel.tp * c->parallel.pp);
    SLM_CHECK(c->parallel.ep == 1 || c->model.n_experts > 0, SLM_ERR_CONFIG,
              "parallel.ep = %d needs experts to split: set model.n_experts", c->parallel.ep);
    SLM_CHECK(dp % c->parallel.ep == 0, SLM_ERR_CONFIG,
              "parallel.ep = %d does not divide the %d data-parallel ranks (world %d / (parallel.tp = %d x "
              "parallel.pp = %d))", c->parallel.ep, dp, world, c->parallel.tp, c->parallel.pp);
    SLM_CHECK(c->model.n_experts % c->parallel.ep == 0, SLM_ERR_CONFIG,
              "parallel.ep = %d does not divide model.n_experts = %d: each expert-parallel rank holds the same "
              "number of experts", c->parallel.ep, c->model.n_experts);
    SLM_CHECK(c->train.global_batch % (c->train.micro_batch * dp) == 0, SLM_ERR_CONFIG,
              "train.global_batch = %d is not a multiple of train.micro_batch = %d x %d data-parallel "
              "ranks", c->train.global_batch, c->train.micro_batch, dp);
    const int per_step = c->train.global_batch / (c->train.micro_batch * dp);
    /* 0 means derived; a value given must agree with the batch sizes */
    SLM_CHECK(c->parallel.microbatches == 0 || c->parallel.microbatches == per_step, SLM_ERR_CONFIG,
              "parallel.microbatches = %d: each step runs train.global_batch / (train.micro_batch x %d "
              "data-parallel ranks) = %d micro-batches; set parallel.microbatches = %d, or 0 to derive it, or "
              "change the batch sizes", c->parallel.microbatches, dp, per_step, per_step);
    SLM_CHECK(c->ckpt.every == 0 || c->ckpt.dir[0], SLM_ERR_CONFIG,
              "ckpt.every = %ld needs ckpt.dir (where to write)", c->ckpt.every);
    SLM_CHECK(c->data.train[0], SLM_ERR_CONFIG, "data.train is empty (use `synthetic` or a glob of shards)");
    SLM_CHECK(c->eval.every == 0 || c->data.val[0], SLM_ERR_CONFIG,
              "eval.every = %ld needs data.val (a glob of validation shards, or `synthetic`)", c->eval.every);
    SLM_CHECK(c->eval.patience == 0 || c->eval.every > 0, SLM_ERR_CONFIG,
              "eval.patience = %d needs eval.every (how often to evaluate)", c->eval.patience);
    /* Activation memory grows as B*NH*T*T; catch sizes whose index math overflows. */
    double att = (double)c->train.micro_batch * c->model.n_head * c->model.seq_len * c->model.seq_len;
    SLM_CHECK(att < 9e15, SLM_ERR_CONFIG, "model.seq_len = %d with train.micro_batch = %d is too large",
              c->model.seq_len, c->train.micro_batch);
    return SLM_OK;
}

static void format_value(const slm_conf *c, const key_spec *k, char *buf, size_t len)
{
    const char *field = (const char *)c + k->offset;
    switch (k->type) {
    case K_INT: snprintf(buf, len, "%d", *(const int *)field); break;
    case K_LONG: snprintf(buf, len, "%ld", *(const long *)field); break;
    case K_U64: snprintf(buf, len, "%" PRIu64, *(const uint64_t *)field); break;
    case K_DOUBLE: snprintf(buf, len, "%.9g", *(const double *)field); break;
    case K_BOOL: snprintf(buf, len, "%s", *(const int *)field ? "true" : "false"); break;
    case K_STR: snprintf(buf, len, "%s", field); break;
    }
}

void slm_conf_print(const slm_conf *c, FILE *f)
{
    char val[SLM_PATH_MAX + 8];
    fprintf(f, "+--------------------------+------------------------------------------+\n");
    for (size_t i = 0; i < NKEYS; i++) {
        char name[80];
        snprintf(name, sizeof name, "%s.%s", keys[i].section, keys[i].key);
        format_value(c, &keys[i], val, sizeof val);
        fprintf(f, "| %-24s | %-40s |\n", name, val);
    }
    fprintf(f, "+--------------------------+------------------------------------------+\n");
}

void slm_conf_to_ini(const slm_conf *c, char *buf, size_t len)
{
    size_t used = 0;
    const char *last = "";
    char val[SLM_PATH_MAX + 8];
    buf[0] = '\0';
    for (size_t i = 0; i < NKEYS && used < len; i++) {
        if (strcmp(last, keys[i].section)) {
            used += (size_t)snprintf(buf + used, len - used, "%s[%s]\n", used ? "\n" : "", keys[i].section);
            last = keys[i].section;
        }
        if (used >= len) break;
        format_value(c, &keys[i], val, sizeof val);
        used += (size_t)snprintf(buf + used, len - used, "%s = %s\n", keys[i].key, val);
    }
}
