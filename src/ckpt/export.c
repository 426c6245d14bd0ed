/* export.c - a checkpoint's parameters for other frameworks: one safetensors file (every
 * tensor F32 under its global name and shape, with shardlm's metadata), or a Hugging Face
 * model directory (config.json and safetensors under Hugging Face's names, written by
 * slm_hf_writer). Either way the checkpoint is read one tensor at a time, in the order of
 * the model's tensor table, so only one tensor is in memory at once; the files are laid
 * out by the safetensors writer (include/shardlm/safetensors.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"
#include "shardlm/safetensors.h"

/* An open checkpoint and the tensor table of the model its attributes describe. */
typedef struct {
    const char *path;
    hid_t file, params;
    slm_ckpt_meta meta;
    slm_model_t model;
    float *buf; /* one tensor */
    size_t cap;
} ckpt_source;

static void source_close(ckpt_source *s)
{
    if (s->params >= 0) H5Gclose(s->params);
    if (s->file >= 0) H5Fclose(s->file);
    slm_model_destroy(&s->model);
    free(s->buf);
    free(s);
}

static slm_status source_setup(ckpt_source *s)
{
    slm_hdf5_errors_off();
    s->file = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    SLM_CHECK(s->file >= 0, SLM_ERR_FORMAT, "%s: not a readable HDF5 file", s->path);
    SLM_CALL(ckpt_meta_read(s->file, s->path, &s->meta));
    s->params = H5Gopen2(s->file, "params", H5P_DEFAULT);
    SLM_CHECK(s->params >= 0, SLM_ERR_FORMAT, "%s: no /params group", s->path);
    if (slm_model_describe(&s->meta.model, &s->model) != SLM_OK)
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: its model configuration describes no model: %s", s->path,
                         slm_error_message());
    return SLM_OK;
}

static slm_status source_open(const char *path, ckpt_source **out)
{
    *out = NULL;
    ckpt_source *s = calloc(1, sizeof *s);
    SLM_CHECK(s, SLM_ERR_NOMEM, "out of memory");
    s->path = path;
    s->file = s->params = -1;
    slm_status st = source_setup(s);
    if (st != SLM_OK) {
        source_close(s);
        SLM_CALL(st);
    }
    *out = s;
    return SLM_OK;
}

/* The whole tensor t (global shape) into s->buf. */
static slm_status source_read(ckpt_source *s, const slm_tensor_info *t)
{
    const size_t n = slm_tensor_global_count(t);
    if (n > s->cap) {
        free(s->buf);
        s->buf = malloc(n * sizeof(float));
        s->cap = s->buf ? n : 0;
        SLM_CHECK(s->buf, SLM_ERR_NOMEM, "out of memory for /params/%s (%.1f MB)", t->name, 4e-6 * (double)n);
    }
    hid_t ds = H5Dopen2(s->params, t->name, H5P_DEFAULT);
    SLM_CHECK(ds >= 0, SLM_ERR_FORMAT, "%s: no /params/%s", s->path, t->name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    const int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    const int shaped = nd == t->ndim && dims[0] == (hsize_t)t->shape[0] && (nd == 1 || dims[1] == (hsize_t)t->shape[1]);
    const int ok = shaped && H5Dread(ds, H5T_IEEE_F32LE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->buf) >= 0;
    H5Dclose(ds);
    SLM_CHECK(shaped, SLM_ERR_FORMAT, "%s: /params/%s is not of the shape its model has", s->path, t->name);
    SLM_CHECK(ok, SLM_ERR_FORMAT, "%s: /params/%s fails its checksum", s->path, t->name);
    return SLM_OK;
}

/* Hand every tensor of the table, read whole, to add(). */
static slm_status export_each(ckpt_source *s, slm_status (*add)(void *to, const slm_tensor_info *t, const float *data),
                              void *to)
{
    for (int i = 0; i < slm_model_num_tensors(s->model); i++) {
        const slm_tensor_info *t = slm_model_tensor(s->model, i);
        SLM_CALL(source_read(s, t));
        SLM_CALL(add(to, t, s->buf));
    }
    return SLM_OK;
}

static slm_status add_global(void *to, const slm_tensor_info *t, const float *data)
{
    const size_t shape[2] = {(size_t)t->shape[0], (size_t)t->shape[1]};
    return slm_st_writer_add(to, t->name, t->ndim, shape, data);
}

static slm_status write_safetensors(ckpt_source *s, const char *out)
{
    const slm_model_config *m = &s->meta.model;
    char v[7][64];
    snprintf(v[0], sizeof v[0], "%ld", s->meta.step);
    snprintf(v[1], sizeof v[1], "%d", m->n_layer);
    snprintf(v[2], sizeof v[2], "%d", m->n_head);
    snprintf(v[3], sizeof v[3], "%d", m->d_model);
    snprintf(v[4], sizeof v[4], "%d", m->vocab_size);
    snprintf(v[5], sizeof v[5], "%d", m->seq_len);
    snprintf(v[6], sizeof v[6], "%s", slm_model_tensor(s->model, slm_model_head_tensor(s->model))->name);
    /* the head is stored once, as the embedding, when tied: say so (an untied model's list
     * ends before that pair) */
    const char *meta[] = {"format", "shardlm", "step", v[0], "n_layer", v[1], "n_head", v[2], "d_model", v[3],
                          "vocab_size", v[4], "seq_len", v[5], m->tie_embeddings ? "tied_lm_head" : NULL, v[6], NULL};
    slm_st_writer_t w = NULL;
    SLM_CALL(slm_st_writer_create_file(out, "F32", &w));
    slm_status st = export_each(s, add_global, w);
    if (st == SLM_OK) st = slm_st_writer_finish(w, meta);
    slm_st_writer_destroy(&w);
    SLM_CALL(st);
    return SLM_OK;
}

slm_status slm_ckpt_export_safetensors(const char *path, const char *out)
{
    ckpt_source *s;
    SLM_CALL(source_open(path, &s));
    slm_status st = write_safetensors(s, out);
    source_close(s);
    SLM_CALL(st);
    return SLM_OK;
}

static slm_status add_hf(void *to, const slm_tensor_info *t, const float *data)
{
    return slm_hf_writer_add(to, t->name, data);
}

slm_status slm_ckpt_export_hf(const char *path, const char *dir, const char *dtype, size_t max_shard_bytes,
                              slm_rope_pairing pairing)
{
    ckpt_source *s;
    SLM_CALL(source_open(path, &s));
    if (s->meta.model.n_experts > 0) { /* before anything is written */
        const int E = s->meta.model.n_experts;
        source_close(s);
        return SLM_ERROR(SLM_ERR_UNSUPPORTED,
                         "%s holds a mixture-of-experts model (model.n_experts = %d): a Hugging Face directory is "
                         "written for dense GPT-2 and Llama models only; --format safetensors writes every tensor under "
                         "shardlm's names", path, E);
    }
    slm_hf_writer_t w = NULL;
    slm_status st = slm_hf_writer_create(dir, &s->meta.model, dtype, max_shard_bytes, pairing, &w);
    if (st == SLM_OK) st = export_each(s, add_hf, w);
    if (st == SLM_OK) st = slm_hf_writer_finish(w);
    slm_hf_writer_destroy(&w);
    source_close(s);
    SLM_CALL(st);
    return SLM_OK;
}
