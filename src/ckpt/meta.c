/* meta.c - a checkpoint's root attributes: everything but tensors that a resumed run
 * needs, as each format version stores it. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

static const char *const shape_names[5] = {"n_layer", "n_head", "d_model", "vocab_size", "seq_len"};

herr_t ckpt_meta_write(hid_t f, const slm_ckpt_meta *m, const ckpt_manifest *man)
{
    int version = SLM_CKPT_VERSION;
    long long step = m->step, optimizer_step = m->optimizer_step;
    unsigned long long seed = m->seed;
    int shape[5] = {m->model.n_layer, m->model.n_head, m->model.d_model, m->model.vocab_size, m->model.seq_len};
    char model_json[2048];
    if (slm_model_config_to_json(&m->model, model_json, sizeof model_json) != SLM_OK) return -1;
    uint32_t digest = ckpt_meta_digest(m, version, man);
    herr_t rc = ckpt_attr_write_string(f, "format", SLM_CKPT_FORMAT);
    rc |= ckpt_attr_write(f, "version", H5T_NATIVE_INT, &version);
    rc |= ckpt_attr_write(f, "step", H5T_NATIVE_LLONG, &step);
    rc |= ckpt_attr_write(f, "samples", H5T_NATIVE_LLONG, &m->samples);
    rc |= ckpt_attr_write(f, "tokens", H5T_NATIVE_LLONG, &m->tokens);
    rc |= ckpt_attr_write_string(f, "optimizer", m->optimizer);
    rc |= ckpt_attr_write(f, "optimizer_step", H5T_NATIVE_LLONG, &optimizer_step);
    rc |= ckpt_attr_write(f, "seed", H5T_NATIVE_ULLONG, &seed);
    for (int i = 0; i < 5; i++) rc |= ckpt_attr_write(f, shape_names[i], H5T_NATIVE_INT, &shape[i]);
    rc |= ckpt_attr_write_string(f, "arch", m->model.arch);
    rc |= ckpt_attr_write_string(f, "model_config", model_json);
    rc |= ckpt_attr_write_string(f, "layout", m->layout);
    rc |= ckpt_attr_write_string(f, "config", m->config);
    rc |= ckpt_attr_write_string(f, "matmul", m->matmul);
    rc |= ckpt_attr_write(f, "meta_digest", H5T_NATIVE_UINT32, &digest);
    return rc;
}

/* The optimizer and its step count: version 4 names them; versions 1-3 were written by
 * AdamW runs, whose step count is adam_t. */
static slm_status read_optimizer(hid_t f, const char *path, int version, slm_ckpt_meta *m)
{
    long long t = 0;
    if (version < 4) {
        SLM_CHECK(ckpt_attr_read(f, "adam_t", H5T_NATIVE_LLONG, &t) >= 0, SLM_ERR_FORMAT,
                  "%s: the attribute 'adam_t' is missing or unreadable", path);
        snprintf(m->optimizer, sizeof m->optimizer, "adamw");
    } else {
        SLM_CHECK(ckpt_attr_read_string(f, "optimizer", m->optimizer, sizeof m->optimizer) >= 0, SLM_ERR_FORMAT,
                  "%s: the attribute 'optimizer' is missing or unreadable (at most %zu characters)", path,
                  sizeof m->optimizer - 1);
        SLM_CHECK(ckpt_group_name_ok(m->optimizer), SLM_ERR_FORMAT,
                  "%s: the attribute optimizer = '%s' is not an optimizer's name (a-z, 0-9 and _)", path, m->optimizer);
        SLM_CHECK(ckpt_attr_read(f, "optimizer_step", H5T_NATIVE_LLONG, &t) >= 0, SLM_ERR_FORMAT,
                  "%s: the attribute 'optimizer_step' is missing or unreadable", path);
    }
    m->optimizer_step = (long)t;
    return SLM_OK;
}

slm_status ckpt_meta_read(hid_t f, const char *path, slm_ckpt_meta *m)
{
    char format[64] = "";
    int version = 0;
    long long step = 0;
    unsigned long long seed = 0;
    memset(m, 0, sizeof *m);
    SLM_CHECK(ckpt_attr_read_string(f, "format", format, sizeof format) >= 0 && !strcmp(format, SLM_CKPT_FORMAT),
              SLM_ERR_FORMAT, "%s is not a shardlm checkpoint (no format attribute '%s')", path, SLM_CKPT_FORMAT);
    SLM_CHECK(ckpt_attr_read(f, "version", H5T_NATIVE_INT, &version) >= 0, SLM_ERR_FORMAT,
              "%s: no format version", path);
    SLM_CHECK(version >= SLM_CKPT_MIN_VERSION && version <= SLM_CKPT_VERSION, SLM_ERR_FORMAT,
              "%s: checkpoint format version %d, this shardlm reads versions %d to %d", path, version,
              SLM_CKPT_MIN_VERSION, SLM_CKPT_VERSION);
    int shape[5];
    const struct {
        const char *name;
        herr_t rc;
    } got[] = {
        {"step", ckpt_attr_read(f, "step", H5T_NATIVE_LLONG, &step)},
        {"samples", ckpt_attr_read(f, "samples", H5T_NATIVE_LLONG, &m->samples)},
        {"tokens", ckpt_attr_read(f, "tokens", H5T_NATIVE_LLONG, &m->tokens)},
        {"seed", ckpt_attr_read(f, "seed", H5T_NATIVE_ULLONG, &seed)},
        {"n_layer", ckpt_attr_read(f, "n_layer", H5T_NATIVE_INT, &shape[0])},
        {"n_head", ckpt_attr_read(f, "n_head", H5T_NATIVE_INT, &shape[1])},
        {"d_model", ckpt_attr_read(f, "d_model", H5T_NATIVE_INT, &shape[2])},
        {"vocab_size", ckpt_attr_read(f, "vocab_size", H5T_NATIVE_INT, &shape[3])},
        {"seq_len", ckpt_attr_read(f, "seq_len", H5T_NATIVE_INT, &shape[4])},
        {"layout", ckpt_attr_read_string(f, "layout", m->layout, sizeof m->layout)},
        {"config", ckpt_attr_read_string(f, "config", m->config, sizeof m->config)},
        /* version 1 has no matmul attribute */
        {"matmul", version >= 2 || H5Aexists(f, "matmul") > 0
                       ? ckpt_attr_read_string(f, "matmul", m->matmul, sizeof m->matmul) : 0},
    };
    for (size_t i = 0; i < sizeof got / sizeof got[0]; i++)
        SLM_CHECK(got[i].rc >= 0, SLM_ERR_FORMAT, "%s: the attribute '%s' is missing or unreadable", path,
                  got[i].name);
    SLM_CALL(read_optimizer(f, path, version, m));
    m->version = version;
    m->step = (long)step;
    m->seed = seed;
    if (version < 3) { /* GPT-2, described by its five shape integers */
        m->model = (slm_model_config){.arch = "gpt2", .n_layer = shape[0], .n_head = shape[1], .d_model = shape[2],
                                      .vocab_size = shape[3], .seq_len = shape[4], .tie_embeddings = 1};
        slm_model_config_defaults(&m->model);
        return SLM_OK;
    }
    char arch[SLM_ARCH_MAX], json[2048];
    SLM_CHECK(ckpt_attr_read_string(f, "arch", arch, sizeof arch) >= 0 &&
                  ckpt_attr_read_string(f, "model_config", json, sizeof json) >= 0,
              SLM_ERR_FORMAT, "%s: the attribute 'arch' or 'model_config' is missing or unreadable", path);
    if (slm_model_config_from_json(json, &m->model) != SLM_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", slm_error_message());
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: %s", path, why);
    }
    SLM_CHECK(!strcmp(arch, m->model.arch), SLM_ERR_FORMAT, "%s: the attribute arch = %s, model_config says %s", path,
              arch, m->model.arch);
    const int *ints[5] = {&m->model.n_layer, &m->model.n_head, &m->model.d_model, &m->model.vocab_size,
                          &m->model.seq_len};
    for (int i = 0; i < 5; i++)
        SLM_CHECK(*ints[i] == shape[i], SLM_ERR_FORMAT, "%s: the attribute %s = %d, model_config says %d", path,
                  shape_names[i], shape[i], *ints[i]);
    return SLM_OK;
}
