/* shardlm/conf.h - the run configuration: an INI file (parsed with inih) plus
 * `section.key=value` overrides. Key names are the contract of DESIGN.md section 6 and
 * match the struct fields they fill. Unknown keys and invalid values are refused with a
 * message naming the key, the file and the line; nothing is computed before that. */
#ifndef SHARDLM_CONF_H
#define SHARDLM_CONF_H

#include <stdint.h>
#include <stdio.h>
#include "shardlm/model.h"
#include "shardlm/optim.h"
#include "shardlm/status.h"

#define SLM_PATH_MAX 1024
#define SLM_CONF_MAX_KEYS 128

typedef struct slm_conf {
    struct {
        char arch[16];
        int n_layer, n_head, d_model, vocab_size, seq_len;
        int n_kv_head, ffn_hidden, max_pos, tie_embeddings; /* 0: the architecture's default */
        double norm_eps, rope_theta;
        char rope_scaling[16];
        double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
        int rope_original_max_pos;
        char init_from[SLM_PATH_MAX];
        char init_rope_pairing[16]; /* auto | half | interleaved */
        int n_experts, expert_top_k, moe_every, expert_hidden;
    } model;
    struct {
        long steps, stop_after;
        int micro_batch, global_batch;
        double lr, min_lr, weight_decay, grad_clip, beta1, beta2, eps;
        long warmup_steps;
        char optimizer[16]; /* adamw | adafactor | lamb | sgd */
        uint64_t seed;
        char precision[8];
        char matmul[16];
        int recompute;
        int threads;
        double watchdog_s;
        double moe_capacity, moe_aux_loss, moe_z_loss, moe_bias_rate;
        char moe_balance[8]; /* loss | bias */
    } train;
    struct {
        double eps1, eps2, clip_threshold, decay_rate, beta1;
        int scale_parameter, relative_step, warmup_init;
    } adafactor;
    struct {
        double min_trust, max_trust;
    } lamb;
    struct {
        double momentum, dampening;
        int nesterov;
    } sgd;
    struct {
        int tp, pp, ep, zero_stage, microbatches;
        int overlap;
        double bucket_mb;
        char bind[8];
    } parallel;
    struct {
        char train[SLM_PATH_MAX], val[SLM_PATH_MAX];
        char tokenizer[SLM_PATH_MAX]; /* directory of encoder.json and vocab.bpe, or "" */
        int shuffle;
    } data;
    struct {
        long every;   /* steps between evaluations (0: none) */
        int batches;  /* global batches of validation windows in one evaluation */
        int patience; /* stop after this many evaluations without a better val loss (0: never) */
    } eval;
    struct {
        char dir[SLM_PATH_MAX], resume[SLM_PATH_MAX];
        long every, keep_every;
        int keep, async;
        int reset_optimizer; /* resume the parameters of a checkpoint, start the optimizer afresh */
        double grace_s;
    } ckpt;
    struct {
        long every;
        char metrics[SLM_PATH_MAX], dump[SLM_PATH_MAX];
        double peak_gflops;
    } log;
    struct {
        int count;            /* k islands (1: none; docs/islands.md) */
        long sync_every;      /* H: inner steps between outer steps */
        double outer_lr, outer_momentum;
        int nesterov;
        char compress[8];     /* none | bf16 | int8: the pseudo-gradient as it crosses between islands */
        char transport[8];    /* mpi: one job cut into islands | files: one job per island */
        char dir[SLM_PATH_MAX]; /* files: the exchange directory every island shares */
        int index;            /* files: this job's island */
        double deadline_s;    /* files: how long to wait for the others after committing */
    } islands;
    struct {
        int tokens;
        double temperature;
        int top_k;
        char prompt[256];
    } sample;
    /* Which keys the configuration file (SLM_CONF_SET_FILE, named by source) or the
     * command line set, indexed like the key table: a value taken from elsewhere (a
     * Hugging Face config.json) must not contradict them. */
    unsigned char set_by[SLM_CONF_MAX_KEYS];
    char source[SLM_PATH_MAX];
} slm_conf;

enum { SLM_CONF_SET_DEFAULT, SLM_CONF_SET_FILE, SLM_CONF_SET_COMMAND_LINE };

/* Fill conf with the built-in defaults. Local. */
void slm_conf_defaults(slm_conf *conf);
/* Read an INI file over conf. Unknown sections/keys and bad values are errors. Local. */
slm_status slm_conf_load_file(slm_conf *conf, const char *path);
/* The defaults, then the configuration file argv[*i] names, if it names one: a word that
 * is neither an option nor a "key=value". Leaves *i at the next argument. Local. */
slm_status slm_conf_from_args(slm_conf *conf, int argc, char **argv, int *i);
/* The same from INI text (a checkpoint's recorded configuration); name is for messages. */
slm_status slm_conf_load_text(slm_conf *conf, const char *text, const char *name);
/* Apply one "section.key=value" override. Local. */
slm_status slm_conf_set(slm_conf *conf, const char *assignment);
/* When model.init_from names a Hugging Face model directory (one with a config.json), the
 * model.* keys become what its config.json says. A key the file or the command line set
 * to another value is an error naming both; model.seq_len stays the run's (when it was not
 * set, it is shortened to the positions the model has; when it was, it must fit them);
 * model.init_rope_pairing = auto becomes the pairing config.json records. Reads
 * config.json; call before slm_conf_validate. Anything else in model.init_from: nothing
 * to do. Local. */
slm_status slm_conf_resolve_model(slm_conf *conf);
/* Cross-key checks (n_head divides d_model, batch sizes agree with the world, ...).
 * world is the number of ranks the run will use (all islands' together: each island
 * has world / islands.count). Local. */
slm_status slm_conf_validate(const slm_conf *conf, int world);
/* Print the resolved configuration as a table (section, key, value). */
void slm_conf_print(const slm_conf *conf, FILE *f);
/* Write the resolved configuration as INI text into buf (for checkpoints and dumps). */
void slm_conf_to_ini(const slm_conf *conf, char *buf, size_t len);
/* The model configuration conf describes (with the architecture's defaults filled in). */
slm_model_config slm_conf_model(const slm_conf *conf);
/* The optimizer configuration conf describes. */
slm_optim_config slm_conf_optim(const slm_conf *conf);
/* The islands' outer optimizer conf describes (error feedback with islands.compress = int8). */
slm_outer_config slm_conf_outer(const slm_conf *conf);
/* Gradient accumulation steps implied by conf for dp data-parallel ranks. */
int slm_conf_grad_accum(const slm_conf *conf, int dp);

#endif
