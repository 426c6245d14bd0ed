/* model_config.c - a model configuration as data: one table of its fields drives the JSON
 * form checkpoints store, and the comparison a resume or an import makes. */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/model.h"

typedef enum { F_INT, F_DOUBLE, F_ROPE_KIND } field_type;
typedef struct {
    const char *key; /* also the model.* configuration key */
    field_type type;
    size_t offset;
    int shapes_params; /* 1: a difference means other parameters (seq_len does not) */
} field;

#define FLD(key, type, member, p) {key, type, offsetof(slm_model_config, member), p}
static const field fields[] = {
    FLD("n_layer", F_INT, n_layer, 1),
    FLD("n_head", F_INT, n_head, 1),
    FLD("n_kv_head", F_INT, n_kv_head, 1),
    FLD("d_model", F_INT, d_model, 1),
    FLD("ffn_hidden", F_INT, ffn_hidden, 1),
    FLD("vocab_size", F_INT, vocab_size, 1),
    FLD("seq_len", F_INT, seq_len, 0),
    FLD("max_pos", F_INT, max_pos, 1),
    FLD("tie_embeddings", F_INT, tie_embeddings, 1),
    FLD("norm_eps", F_DOUBLE, norm_eps, 1),
    FLD("rope_theta", F_DOUBLE, rope_theta, 1),
    FLD("rope_scaling", F_ROPE_KIND, rope.kind, 1),
    FLD("rope_factor", F_DOUBLE, rope.factor, 1),
    FLD("rope_low_freq_factor", F_DOUBLE, rope.low_freq_factor, 1),
    FLD("rope_high_freq_factor", F_DOUBLE, rope.high_freq_factor, 1),
    FLD("rope_original_max_pos", F_INT, rope.original_max_pos, 1),
    FLD("n_experts", F_INT, n_experts, 1),
    FLD("expert_top_k", F_INT, expert_top_k, 0), /* routing, not parameters */
    FLD("moe_every", F_INT, moe_every, 1),
    FLD("expert_hidden", F_INT, expert_hidden, 1),
};
#define NFIELDS (sizeof fields / sizeof fields[0])

static const char *rope_kind_name(int k) { return k == SLM_ROPE_LLAMA3 ? "llama3" : "none"; }

/* A field's value as text, for messages. */
static void field_text(const slm_model_config *c, const field *f, char *buf, size_t len)
{
    const char *p = (const char *)c + f->offset;
    if (f->type == F_INT) snprintf(buf, len, "%d", *(const int *)p);
    else if (f->type == F_DOUBLE) snprintf(buf, len, "%.17g", *(const double *)p);
    else snprintf(buf, len, "%s", rope_kind_name(*(const int *)p));
}

int slm_model_config_field_text(const slm_model_config *c, const char *key, char *buf, size_t len)
{
    if (!strcmp(key, "arch")) {
        snprintf(buf, len, "%s", c->arch);
        return 1;
    }
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(fields[i].key, key)) {
            field_text(c, &fields[i], buf, len);
            return 1;
        }
    return 0;
}

int slm_model_config_same(const slm_model_config *a, const slm_model_config *b, char *why, size_t len)
{
    if (strcmp(a->arch, b->arch)) {
        if (why) snprintf(why, len, "model.arch = %s, this run has %s", a->arch, b->arch);
        return 0;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        if (!f->shapes_params) continue;
        const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
        const int same = f->type == F_DOUBLE ? *(const double *)pa == *(const double *)pb
                                             : *(const int *)pa == *(const int *)pb;
        if (same) continue;
        if (why) {
            char va[40], vb[40];
            field_text(a, f, va, sizeof va);
            field_text(b, f, vb, sizeof vb);
            snprintf(why, len, "model.%s = %s, this run has %s", f->key, va, vb);
        }
        return 0;
    }
    return 1;
}

slm_status slm_model_config_to_json(const slm_model_config *c, char *buf, size_t len)
{
    json_t *o = json_object();
    SLM_CHECK(o, SLM_ERR_NOMEM, "cannot build the model configuration's JSON");
    json_object_set_new(o, "arch", json_string(c->arch));
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        const char *p = (const char *)c + f->offset;
        /* a dense model's JSON is the one files had before MoE: their digests cover it */
        if (c->n_experts == 0 && f->offset >= offsetof(slm_model_config, n_experts) &&
            f->offset <= offsetof(slm_model_config, expert_hidden))
            continue;
        json_t *v = f->type == F_INT      ? json_integer(*(const int *)p)
                    : f->type == F_DOUBLE ? json_real(*(const double *)p)
                                          : json_string(rope_kind_name(*(const int *)p));
        json_object_set_new(o, f->key, v);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(o);
    SLM_CHECK(s, SLM_ERR_NOMEM, "cannot build the model configuration's JSON");
    const size_t n = strlen(s);
    if (n >= len) {
        free(s);
        return SLM_ERROR(SLM_ERR_ARG, "the model configuration's JSON (%zu bytes) does not fit in %zu", n, len);
    }
    memcpy(buf, s, n + 1);
    free(s);
    return SLM_OK;
}

slm_status slm_model_config_from_json(const char *text, slm_model_config *c)
{
    json_error_t err;
    json_t *o = json_loads(text, 0, &err);
    SLM_CHECK(o && json_is_object(o), SLM_ERR_FORMAT, "model configuration: not a JSON object (%s)",
              o ? "another JSON value" : err.text);
    slm_status s = SLM_OK;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "arch")) {
            if (!json_is_string(v) || strlen(json_string_value(v)) >= sizeof c->arch) {
                s = SLM_ERROR(SLM_ERR_FORMAT, "model configuration: arch is not a short string");
                break;
            }
            snprintf(c->arch, sizeof c->arch, "%s", json_string_value(v));
            continue;
        }
        const field *f = NULL;
        for (size_t i = 0; i < NFIELDS && !f; i++)
            if (!strcmp(fields[i].key, key)) f = &fields[i];
        if (!f) {
            s = SLM_ERROR(SLM_ERR_FORMAT, "model configuration: unknown key '%s'", key);
            break;
        }
        char *p = (char *)c + f->offset;
        if (f->type == F_INT && json_is_integer(v) && json_integer_value(v) >= -2147483647 &&
            json_integer_value(v) <= 2147483647)
            *(int *)p = (int)json_integer_value(v);
        else if (f->type == F_DOUBLE && json_is_number(v))
            *(double *)p = json_number_value(v);
        else if (f->type == F_ROPE_KIND && json_is_string(v) &&
                 (!strcmp(json_string_value(v), "none") || !strcmp(json_string_value(v), "llama3")))
            *(int *)p = strcmp(json_string_value(v), "none") ? SLM_ROPE_LLAMA3 : SLM_ROPE_NONE;
        else {
            s = SLM_ERROR(SLM_ERR_FORMAT, "model configuration: '%s' has a value of the wrong type or range", key);
            break;
        }
    }
    json_decref(o);
    return s;
}
