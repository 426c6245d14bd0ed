/* dump.c - the oracle dump (log.dump): everything an independent implementation needs
 * to recompute a short run, in an HDF5 file that h5py and h5dump read directly.
 * Written by one rank with the default (serial) file driver. Layout in docs/testing.md. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/runtime.h"

struct slm_dump {
    char path[4096]; /* for messages */
    hid_t file;
    slm_model_t model;
    hid_t tokens; /* dataset (steps, accum, B, T+1) */
    long steps;
    int accum, B, T;
};

static slm_status write_array(slm_dump_t d, const char *name, hid_t type, int rank, const hsize_t *dims,
                              const void *data)
{
    const hid_t loc = d->file;
    hid_t space = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(loc, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Sclose(space);
    SLM_CHECK(rc >= 0, SLM_ERR_IO, "log.dump = %s: cannot write the dataset /%s (disk full?)", d->path, name);
    return SLM_OK;
}

static slm_status write_params(slm_dump_t d, const char *group, const float *base)
{
    for (int i = 0; i < slm_model_num_tensors(d->model); i++) {
        const slm_tensor_info *t = slm_model_tensor(d->model, i);
        char path[128];
        snprintf(path, sizeof path, "%s/%s", group, t->name);
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        SLM_CALL(write_array(d, path, H5T_NATIVE_FLOAT, t->ndim, dims, base + t->goffset));
    }
    return SLM_OK;
}

static void attr_long(hid_t loc, const char *name, long v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_LONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LONG, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

/* A string attribute (fixed length, NUL-terminated, as h5py reads it back as text). */
static void attr_string(hid_t loc, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void attr_double(hid_t loc, const char *name, double v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

slm_status slm_dump_create(const char *path, const slm_conf *c, slm_model_t model, const float *init,
                           int accum, int dp, int island, slm_dump_t *out)
{
    *out = NULL;
    slm_dump_t d = calloc(1, sizeof *d);
    SLM_CHECK(d, SLM_ERR_NOMEM, "out of memory");
    snprintf(d->path, sizeof d->path, "%s", path);
    d->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (d->file < 0) {
        free(d);
        return SLM_ERROR(SLM_ERR_IO, "log.dump = %s: cannot create the HDF5 file", path);
    }
    d->model = model;
    d->steps = c->train.steps;
    d->accum = accum;
    d->B = c->train.micro_batch;
    d->T = c->model.seq_len;
    const slm_model_config *mc = slm_model_config_of(model);
    attr_string(d->file, "arch", mc->arch);
    attr_long(d->file, "n_layer", mc->n_layer);
    attr_long(d->file, "n_head", mc->n_head);
    attr_long(d->file, "d_model", mc->d_model);
    attr_long(d->file, "vocab_size", mc->vocab_size);
    attr_long(d->file, "seq_len", mc->seq_len);
    attr_long(d->file, "n_kv_head", mc->n_kv_head);
    attr_long(d->file, "ffn_hidden", mc->ffn_hidden);
    attr_long(d->file, "max_pos", mc->max_pos);
    attr_long(d->file, "tie_embeddings", mc->tie_embeddings);
    attr_double(d->file, "norm_eps", mc->norm_eps);
    attr_double(d->file, "rope_theta", mc->rope_theta);
    attr_string(d->file, "rope_scaling", mc->rope.kind == SLM_ROPE_LLAMA3 ? "llama3" : "none");
    attr_double(d->file, "rope_factor", mc->rope.factor);
    attr_double(d->file, "rope_low_freq_factor", mc->rope.low_freq_factor);
    attr_double(d->file, "rope_high_freq_factor", mc->rope.high_freq_factor);
    attr_long(d->file, "rope_original_max_pos", mc->rope.original_max_pos);
    attr_long(d->file, "micro_batch", c->train.micro_batch);
    attr_long(d->file, "grad_accum", accum);
    attr_long(d->file, "steps", c->train.steps);
    attr_long(d->file, "warmup_steps", c->train.warmup_steps);
    attr_long(d->file, "seed", (long)c->train.seed);
    attr_double(d->file, "lr", c->train.lr);
    attr_double(d->file, "min_lr", c->train.min_lr);
    attr_double(d->file, "weight_decay", c->train.weight_decay);
    attr_double(d->file, "grad_clip", c->train.grad_clip);
    attr_double(d->file, "beta1", c->train.beta1);
    attr_double(d->file, "beta2", c->train.beta2);
    attr_double(d->file, "eps", c->train.eps);
    /* the optimizer and its settings (docs/testing.md) */
    attr_string(d->file, "optimizer", c->train.optimizer);
    attr_double(d->file, "adafactor_eps1", c->adafactor.eps1);
    attr_double(d->file, "adafactor_eps2", c->adafactor.eps2);
    attr_double(d->file, "adafactor_clip_threshold", c->adafactor.clip_threshold);
    attr_double(d->file, "adafactor_decay_rate", c->adafactor.decay_rate);
    attr_double(d->file, "adafactor_beta1", c->adafactor.beta1);
    attr_long(d->file, "adafactor_scale_parameter", c->adafactor.scale_parameter);
    attr_long(d->file, "adafactor_relative_step", c->adafactor.relative_step);
    attr_long(d->file, "adafactor_warmup_init", c->adafactor.warmup_init);
    attr_double(d->file, "lamb_min_trust", c->lamb.min_trust);
    attr_double(d->file, "lamb_max_trust", c->lamb.max_trust);
    attr_double(d->file, "sgd_momentum", c->sgd.momentum);
    attr_double(d->file, "sgd_dampening", c->sgd.dampening);
    attr_long(d->file, "sgd_nesterov", c->sgd.nesterov);
    attr_long(d->file, "n_experts", mc->n_experts); /* MoE (docs/moe.md); 0 for a dense model */
    attr_long(d->file, "expert_top_k", mc->expert_top_k);
    attr_long(d->file, "moe_every", mc->moe_every);
    attr_long(d->file, "expert_hidden", mc->expert_hidden);
    attr_double(d->file, "moe_capacity", mc->moe.capacity);
    attr_double(d->file, "moe_aux_loss", mc->moe.aux_loss);
    attr_double(d->file, "moe_z_loss", mc->moe.z_loss);
    attr_double(d->file, "moe_bias_rate", mc->moe.bias_rate);
    attr_string(d->file, "moe_balance", mc->moe.balance == SLM_MOE_BALANCE_BIAS ? "bias" : "loss");
    attr_long(d->file, "islands", c->islands.count); /* islands (docs/islands.md); 1: none */
    attr_long(d->file, "island", island);
    attr_long(d->file, "sync_every", c->islands.sync_every);
    attr_double(d->file, "outer_lr", c->islands.outer_lr);
    attr_double(d->file, "outer_momentum", c->islands.outer_momentum);
    attr_long(d->file, "outer_nesterov", c->islands.nesterov);
    attr_string(d->file, "compress", c->islands.compress);
    attr_string(d->file, "transport", c->islands.transport);
    *out = d;
    attr_long(d->file, "dp", dp);
    SLM_CALL(write_params(d, "init", init));
    if (dp > 1) return SLM_OK;
    hsize_t dims[4] = {(hsize_t)d->steps, (hsize_t)accum, (hsize_t)d->B, (hsize_t)d->T + 1};
    hid_t space = H5Screate_simple(4, dims, NULL);
    d->tokens = H5Dcreate2(d->file, "tokens", H5T_NATIVE_INT32, space, H5P_DEFAULT, H5P_DEFAULT,
                           H5P_DEFAULT);
    H5Sclose(space);
    SLM_CHECK(d->tokens >= 0, SLM_ERR_IO, "log.dump = %s: cannot create the dataset /tokens", path);
    return SLM_OK;
}

slm_status slm_dump_tokens(slm_dump_t d, long step, int micro, const int32_t *windows)
{
    hsize_t start[4] = {(hsize_t)step, (hsize_t)micro, 0, 0};
    hsize_t count[4] = {1, 1, (hsize_t)d->B, (hsize_t)d->T + 1};
    hid_t fs = H5Dget_space(d->tokens);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(4, count, NULL);
    herr_t rc = H5Dwrite(d->tokens, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, windows);
    H5Sclose(ms);
    H5Sclose(fs);
    SLM_CHECK(rc >= 0, SLM_ERR_IO, "log.dump = %s: cannot write the tokens of step %ld", d->path, step);
    return SLM_OK;
}

slm_status slm_dump_logits(slm_dump_t d, const float *logits)
{
    const slm_model_config *c = slm_model_config_of(d->model);
    hsize_t dims[3] = {(hsize_t)d->B, (hsize_t)d->T, (hsize_t)c->vocab_size};
    SLM_CALL(write_array(d, "step0/logits", H5T_NATIVE_FLOAT, 3, dims, logits));
    return SLM_OK;
}

slm_status slm_dump_step0(slm_dump_t d, double loss, const float *grads)
{
    SLM_CALL(write_array(d, "step0/loss", H5T_NATIVE_DOUBLE, 0, NULL, &loss));
    SLM_CALL(write_params(d, "step0/grads", grads));
    return SLM_OK;
}

slm_status slm_dump_finish(slm_dump_t d, const float *losses, const double *lrs, const double *norms,
                           const float *final_params)
{
    hsize_t n = (hsize_t)d->steps;
    SLM_CALL(write_array(d, "losses", H5T_NATIVE_FLOAT, 1, &n, losses));
    SLM_CALL(write_array(d, "lr", H5T_NATIVE_DOUBLE, 1, &n, lrs));
    SLM_CALL(write_array(d, "grad_norm", H5T_NATIVE_DOUBLE, 1, &n, norms));
    SLM_CALL(write_params(d, "final", final_params));
    return SLM_OK;
}

slm_status slm_dump_moe(slm_dump_t d, const double *aux, const double *z, const float *bias)
{
    const slm_model_config *c = slm_model_config_of(d->model);
    hsize_t n = (hsize_t)d->steps;
    SLM_CALL(write_array(d, "moe_aux_loss", H5T_NATIVE_DOUBLE, 1, &n, aux));
    SLM_CALL(write_array(d, "moe_z_loss", H5T_NATIVE_DOUBLE, 1, &n, z));
    if (!bias) return SLM_OK;
    const size_t nmoe = (size_t)slm_model_num_moe_layers(c), cnt = (size_t)d->steps * nmoe * c->n_experts;
    double *b = malloc((cnt ? cnt : 1) * sizeof(double));
    SLM_CHECK(b, SLM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) b[i] = bias[i];
    hsize_t dims[3] = {n, (hsize_t)nmoe, (hsize_t)c->n_experts};
    slm_status st = write_array(d, "moe_bias", H5T_NATIVE_DOUBLE, 3, dims, b);
    free(b);
    return st;
}

void slm_dump_destroy(slm_dump_t *dp)
{
    slm_dump_t d = *dp;
    if (!d) return;
    if (d->tokens > 0) H5Dclose(d->tokens);
    H5Fclose(d->file);
    free(d);
    *dp = NULL;
}
