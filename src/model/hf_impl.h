/* hf_impl.h - what an architecture knows of Hugging Face (its slm_arch's `hf`), and the
 * helpers its config.json reader uses. src/model/hf.c drives both. */
#ifndef SHARDLM_HF_IMPL_H
#define SHARDLM_HF_IMPL_H

#include <jansson.h>
#include "shardlm/hf.h"
#include "model_impl.h"

/* Rows of a tensor that are rotary heads, reordered for an interleaved pairing. */
typedef enum { HF_ROPE_NONE, HF_ROPE_Q, HF_ROPE_KV } hf_rope_rows;

/* One tensor's name in Hugging Face's files. Block tensors use "%d" for the block in both
 * names ("blocks.%d.attn.q.weight" and "model.layers.%d.self_attn.q_proj.weight"). */
typedef struct hf_name {
    const char *name;       /* shardlm's */
    const char *hf;         /* Hugging Face's */
    int transposed;         /* stored (in, out), shardlm's (out, in) transposed: GPT-2's Conv1D */
    hf_rope_rows rope;      /* q (n_head heads) or k (n_kv_head heads) rows */
} hf_name;

typedef struct hf_reader hf_reader;

struct slm_hf_arch {
    const char *model_type;  /* config.json's "model_type" */
    const char *class_name;  /* "architectures" written on export, e.g. "LlamaForCausalLM" */
    const char *read_prefix; /* a prefix the names may carry in files (GPT-2: "transformer."), or NULL */
    const char *tied_head;   /* Hugging Face's name of the LM head, ignored in files of a tied model */
    const hf_name *names;
    int nnames;
    /* config.json -> cfg (every field but seq_len), through the helpers below; refuse
     * what the architecture does not compute. */
    slm_status (*read_config)(hf_reader *r, slm_model_config *cfg);
    /* cfg -> the architecture's keys of config.json (root is an object). 0 on success. */
    int (*write_config)(const slm_model_config *cfg, json_t *root);
};

/* Reading config.json. `key` may name a member of an object member ("rope_scaling.factor");
 * JSON null counts as absent. field: the model.* key the value fills (its origin is noted
 * for messages), or NULL. Type errors name the key and the file. */
/* An integer; absent: an error when required, else def. */
slm_status hf_int(hf_reader *r, const char *key, const char *field, int required, int def, int *out);
/* A number; absent: an error when required, else def. */
slm_status hf_num(hf_reader *r, const char *key, const char *field, int required, double def, double *out);
/* true or false; absent: def. */
slm_status hf_bool(hf_reader *r, const char *key, const char *field, int def, int *out);
/* A string, or NULL when absent. */
slm_status hf_str(hf_reader *r, const char *key, const char **out);
/* 1 when key is present (and not null). */
int hf_has(hf_reader *r, const char *key);
/* Note by hand where model.<field> came from (value as text). */
void hf_note(hf_reader *r, const char *field, const char *from, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* config.json's path, for messages. */
const char *hf_path(const hf_reader *r);

/* Writing config.json: an integer, a number, a boolean member. 0 on success. */
int hf_set_int(json_t *o, const char *key, long long v);
int hf_set_num(json_t *o, const char *key, double v);
int hf_set_bool(json_t *o, const char *key, int v);

/* config.json for cfg: architectures, model_type, the architecture's keys, torch_dtype
 * ("float32", "bfloat16") and, when not half, shardlm_rope_pairing. *out: malloc'd text. */
slm_status hf_config_text(const slm_model_config *cfg, const char *torch_dtype, slm_rope_pairing pairing, char **out);

#endif
