/* llama_hf.c - the Llama family in Hugging Face's form: the keys of its config.json and
 * the tensor names of its causal LM.
 *
 * Keys absent from config.json take the defaults of Hugging Face's Llama configuration
 * (untied head, rms_norm_eps 1e-6, rope_theta 10000, as many key/value heads as heads).
 * Refused, because the model would compute something else: an activation other than silu,
 * attention or MLP biases, a head_dim other than hidden_size / num_attention_heads, and
 * rotary scalings other than none ("default") and Llama 3's. */
#include <stdio.h>
#include <string.h>
#include "hf_impl.h"

static const hf_name names[] = {
    {"embed.weight", "model.embed_tokens.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.attn.q.weight", "model.layers.%d.self_attn.q_proj.weight", 0, HF_ROPE_Q},
    {"blocks.%d.attn.k.weight", "model.layers.%d.self_attn.k_proj.weight", 0, HF_ROPE_KV},
    {"blocks.%d.attn.v.weight", "model.layers.%d.self_attn.v_proj.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.attn.o.weight", "model.layers.%d.self_attn.o_proj.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp_norm.weight", "model.layers.%d.post_attention_layernorm.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp.gate.weight", "model.layers.%d.mlp.gate_proj.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp.up.weight", "model.layers.%d.mlp.up_proj.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp.down.weight", "model.layers.%d.mlp.down_proj.weight", 0, HF_ROPE_NONE},
    {"norm.weight", "model.norm.weight", 0, HF_ROPE_NONE},
    {"head.weight", "lm_head.weight", 0, HF_ROPE_NONE},
};

/* The rotary embedding: "rope_theta" and "rope_scaling" (whose kind is "rope_type" or, in
 * older files, "type"), or "rope_parameters" holding the base and the scaling together
 * (newer files). */
static slm_status read_rope(hf_reader *r, slm_model_config *c)
{
    const int newer = hf_has(r, "rope_parameters");
    const char *obj = newer ? "rope_parameters" : "rope_scaling";
    char k[64];
    if (newer) { /* the base inside; a top-level one, if any, must agree */
        double top = 10000;
        const int has_top = hf_has(r, "rope_theta");
        if (has_top) SLM_CALL(hf_num(r, "rope_theta", NULL, 1, 0, &top));
        SLM_CALL(hf_num(r, "rope_parameters.rope_theta", "rope_theta", 0, top, &c->rope_theta));
        SLM_CHECK(!has_top || top == c->rope_theta, SLM_ERR_FORMAT,
                  "%s: \"rope_theta\" = %g and \"rope_parameters.rope_theta\" = %g disagree", hf_path(r), top,
                  c->rope_theta);
    } else {
        SLM_CALL(hf_num(r, "rope_theta", "rope_theta", 0, 10000, &c->rope_theta));
    }
    const char *type = NULL;
    snprintf(k, sizeof k, "%s.rope_type", obj);
    SLM_CALL(hf_str(r, k, &type));
    if (!type) {
        snprintf(k, sizeof k, "%s.type", obj);
        SLM_CALL(hf_str(r, k, &type));
    }
    SLM_CHECK(type || !hf_has(r, obj), SLM_ERR_FORMAT, "%s: \"%s\" names no \"rope_type\"", hf_path(r), obj);
    c->rope.kind = SLM_ROPE_NONE;
    if (!type || !strcmp(type, "default")) {
        hf_note(r, "rope_scaling", type ? k : obj, "%s", type ? type : "none");
        return SLM_OK;
    }
    SLM_CHECK(!strcmp(type, "llama3"), SLM_ERR_UNSUPPORTED,
              "%s: \"%s\" = \"%s\": shardlm computes rotary embeddings unscaled (\"default\") or with Llama 3's "
              "scaling (\"llama3\")", hf_path(r), k, type);
    c->rope.kind = SLM_ROPE_LLAMA3;
    hf_note(r, "rope_scaling", k, "llama3");
    snprintf(k, sizeof k, "%s.factor", obj);
    SLM_CALL(hf_num(r, k, "rope_factor", 1, 0, &c->rope.factor));
    snprintf(k, sizeof k, "%s.low_freq_factor", obj);
    SLM_CALL(hf_num(r, k, "rope_low_freq_factor", 1, 0, &c->rope.low_freq_factor));
    snprintf(k, sizeof k, "%s.high_freq_factor", obj);
    SLM_CALL(hf_num(r, k, "rope_high_freq_factor", 1, 0, &c->rope.high_freq_factor));
    snprintf(k, sizeof k, "%s.original_max_position_embeddings", obj);
    SLM_CALL(hf_int(r, k, "rope_original_max_pos", 1, 0, &c->rope.original_max_pos));
    return SLM_OK;
}

static slm_status read_config(hf_reader *r, slm_model_config *c)
{
    SLM_CALL(hf_int(r, "hidden_size", "d_model", 0, 4096, &c->d_model));
    SLM_CALL(hf_int(r, "intermediate_size", "ffn_hidden", 0, 11008, &c->ffn_hidden));
    SLM_CALL(hf_int(r, "num_attention_heads", "n_head", 0, 32, &c->n_head));
    SLM_CALL(hf_int(r, "num_key_value_heads", "n_kv_head", 0, c->n_head, &c->n_kv_head));
    SLM_CALL(hf_int(r, "num_hidden_layers", "n_layer", 0, 32, &c->n_layer));
    SLM_CALL(hf_int(r, "vocab_size", "vocab_size", 0, 32000, &c->vocab_size));
    SLM_CALL(hf_int(r, "max_position_embeddings", "max_pos", 0, 2048, &c->max_pos));
    SLM_CHECK(c->n_head > 0 && c->d_model % c->n_head == 0, SLM_ERR_FORMAT,
              "%s: \"num_attention_heads\" = %d does not divide \"hidden_size\" = %d", hf_path(r), c->n_head,
              c->d_model);
    SLM_CHECK(c->n_kv_head > 0 && c->n_head % c->n_kv_head == 0, SLM_ERR_FORMAT,
              "%s: \"num_key_value_heads\" = %d does not divide \"num_attention_heads\" = %d", hf_path(r),
              c->n_kv_head, c->n_head);
    SLM_CALL(hf_num(r, "rms_norm_eps", "norm_eps", 0, 1e-6, &c->norm_eps));
    SLM_CALL(hf_bool(r, "tie_word_embeddings", "tie_embeddings", 0, &c->tie_embeddings));
    SLM_CALL(read_rope(r, c));
    const char *act = NULL;
    SLM_CALL(hf_str(r, "hidden_act", &act));
    SLM_CHECK(!act || !strcmp(act, "silu"), SLM_ERR_UNSUPPORTED,
              "%s: \"hidden_act\" = \"%s\": shardlm's Llama MLP is SwiGLU (silu)", hf_path(r), act);
    int bias = 0;
    SLM_CALL(hf_bool(r, "attention_bias", NULL, 0, &bias));
    SLM_CHECK(!bias, SLM_ERR_UNSUPPORTED, "%s: \"attention_bias\" = true: shardlm's Llama has no attention biases",
              hf_path(r));
    SLM_CALL(hf_bool(r, "mlp_bias", NULL, 0, &bias));
    SLM_CHECK(!bias, SLM_ERR_UNSUPPORTED, "%s: \"mlp_bias\" = true: shardlm's Llama has no MLP biases", hf_path(r));
    if (hf_has(r, "head_dim")) {
        int hd = 0;
        SLM_CALL(hf_int(r, "head_dim", NULL, 1, 0, &hd));
        SLM_CHECK(c->n_head > 0 && (long)hd * c->n_head == c->d_model, SLM_ERR_UNSUPPORTED,
                  "%s: \"head_dim\" = %d is not \"hidden_size\" / \"num_attention_heads\" = %d / %d: shardlm's heads "
                  "split the residual width", hf_path(r), hd, c->d_model, c->n_head);
    }
    return SLM_OK;
}

static int write_config(const slm_model_config *c, json_t *o)
{
    json_t *scaling = json_null();
    if (c->rope.kind == SLM_ROPE_LLAMA3) {
        scaling = json_object();
        if (!scaling || json_object_set_new(scaling, "rope_type", json_string("llama3")) ||
            hf_set_num(scaling, "factor", c->rope.factor) ||
            hf_set_num(scaling, "low_freq_factor", c->rope.low_freq_factor) ||
            hf_set_num(scaling, "high_freq_factor", c->rope.high_freq_factor) ||
            hf_set_int(scaling, "original_max_position_embeddings", c->rope.original_max_pos)) {
            json_decref(scaling);
            return -1;
        }
    }
    if (hf_set_int(o, "hidden_size", c->d_model) || hf_set_int(o, "intermediate_size", c->ffn_hidden) ||
        hf_set_int(o, "num_attention_heads", c->n_head) || hf_set_int(o, "num_key_value_heads", c->n_kv_head) ||
        hf_set_int(o, "head_dim", c->d_model / c->n_head) || hf_set_int(o, "num_hidden_layers", c->n_layer) ||
        hf_set_int(o, "vocab_size", c->vocab_size) || hf_set_int(o, "max_position_embeddings", c->max_pos) ||
        hf_set_num(o, "rms_norm_eps", c->norm_eps) || hf_set_num(o, "rope_theta", c->rope_theta)) {
        json_decref(scaling);
        return -1;
    }
    return json_object_set_new(o, "rope_scaling", scaling) || /* it takes scaling, also when it fails */
           hf_set_bool(o, "tie_word_embeddings", c->tie_embeddings) ||
           json_object_set_new(o, "hidden_act", json_string("silu")) || hf_set_bool(o, "attention_bias", 0) ||
           hf_set_bool(o, "mlp_bias", 0);
}

const slm_hf_arch slm_hf_llama = {
    .model_type = "llama",
    .class_name = "LlamaForCausalLM",
    .read_prefix = NULL,
    .tied_head = "lm_head.weight",
    .names = names,
    .nnames = sizeof names / sizeof names[0],
    .read_config = read_config,
    .write_config = write_config,
};
