/* gpt2_hf.c - GPT-2 in Hugging Face's form: the keys of its config.json and the tensor
 * names of its LM head model.
 *
 * Hugging Face's GPT-2 keeps its linear layers as Conv1D modules, whose weight is stored
 * (in, out): the transpose of shardlm's (out, in). Files written from the bare model name
 * the tensors "wte.weight", "h.0.ln_1.weight", ...; files written from the LM head model
 * put "transformer." in front; both are read. Keys absent from config.json take the
 * defaults of Hugging Face's GPT-2 configuration (n_inner absent or null: 4 n_embd).
 * Refused, because the model would compute something else: an activation other than the
 * tanh GELU, a LayerNorm epsilon other than 1e-5, an untied head, and attention scaled
 * otherwise than by 1/sqrt(head size). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "hf_impl.h"

static const hf_name names[] = {
    {"wte", "wte.weight", 0, HF_ROPE_NONE},
    {"wpe", "wpe.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.ln1.weight", "h.%d.ln_1.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.ln1.bias", "h.%d.ln_1.bias", 0, HF_ROPE_NONE},
    {"blocks.%d.attn.qkv.weight", "h.%d.attn.c_attn.weight", 1, HF_ROPE_NONE},
    {"blocks.%d.attn.qkv.bias", "h.%d.attn.c_attn.bias", 0, HF_ROPE_NONE},
    {"blocks.%d.attn.proj.weight", "h.%d.attn.c_proj.weight", 1, HF_ROPE_NONE},
    {"blocks.%d.attn.proj.bias", "h.%d.attn.c_proj.bias", 0, HF_ROPE_NONE},
    {"blocks.%d.ln2.weight", "h.%d.ln_2.weight", 0, HF_ROPE_NONE},
    {"blocks.%d.ln2.bias", "h.%d.ln_2.bias", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp.fc.weight", "h.%d.mlp.c_fc.weight", 1, HF_ROPE_NONE},
    {"blocks.%d.mlp.fc.bias", "h.%d.mlp.c_fc.bias", 0, HF_ROPE_NONE},
    {"blocks.%d.mlp.proj.weight", "h.%d.mlp.c_proj.weight", 1, HF_ROPE_NONE},
    {"blocks.%d.mlp.proj.bias", "h.%d.mlp.c_proj.bias", 0, HF_ROPE_NONE},
    {"lnf.weight", "ln_f.weight", 0, HF_ROPE_NONE},
    {"lnf.bias", "ln_f.bias", 0, HF_ROPE_NONE},
};

static slm_status read_config(hf_reader *r, slm_model_config *c)
{
    SLM_CALL(hf_int(r, "n_embd", "d_model", 0, 768, &c->d_model));
    SLM_CALL(hf_int(r, "n_head", "n_head", 0, 12, &c->n_head));
    SLM_CHECK(c->n_head > 0 && c->d_model % c->n_head == 0, SLM_ERR_FORMAT, "%s: \"n_head\" = %d does not divide "
              "\"n_embd\" = %d", hf_path(r), c->n_head, c->d_model);
    c->n_kv_head = c->n_head;
    hf_note(r, "n_kv_head", "n_head", "%d", c->n_head);
    SLM_CALL(hf_int(r, "n_layer", "n_layer", 0, 12, &c->n_layer));
    SLM_CALL(hf_int(r, "vocab_size", "vocab_size", 0, 50257, &c->vocab_size));
    SLM_CALL(hf_int(r, "n_positions", "max_pos", 0, 1024, &c->max_pos));
    SLM_CALL(hf_int(r, "n_inner", "ffn_hidden", 0, 4 * c->d_model, &c->ffn_hidden));
    SLM_CALL(hf_num(r, "layer_norm_epsilon", "norm_eps", 0, 1e-5, &c->norm_eps));
    SLM_CHECK(fabs(c->norm_eps - 1e-5) < 1e-12, SLM_ERR_UNSUPPORTED,
              "%s: \"layer_norm_epsilon\" = %g: shardlm's GPT-2 LayerNorm uses 1e-5", hf_path(r), c->norm_eps);
    SLM_CALL(hf_bool(r, "tie_word_embeddings", "tie_embeddings", 1, &c->tie_embeddings));
    SLM_CHECK(c->tie_embeddings, SLM_ERR_UNSUPPORTED,
              "%s: \"tie_word_embeddings\" = false: shardlm's GPT-2 head is its token embedding", hf_path(r));
    const char *act = NULL;
    SLM_CALL(hf_str(r, "activation_function", &act));
    SLM_CHECK(!act || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"), SLM_ERR_UNSUPPORTED,
              "%s: \"activation_function\" = \"%s\": shardlm's GPT-2 computes the tanh GELU (gelu_new, "
              "gelu_pytorch_tanh)", hf_path(r), act);
    int flag = 1;
    SLM_CALL(hf_bool(r, "scale_attn_weights", NULL, 1, &flag));
    SLM_CHECK(flag, SLM_ERR_UNSUPPORTED, "%s: \"scale_attn_weights\" = false: shardlm scales attention scores by "
              "1/sqrt(head size)", hf_path(r));
    SLM_CALL(hf_bool(r, "scale_attn_by_inverse_layer_idx", NULL, 0, &flag));
    SLM_CHECK(!flag, SLM_ERR_UNSUPPORTED, "%s: \"scale_attn_by_inverse_layer_idx\" = true: shardlm scales attention "
              "scores by 1/sqrt(head size) alone", hf_path(r));
    return SLM_OK;
}

static int write_config(const slm_model_config *c, json_t *o)
{
    return hf_set_int(o, "n_embd", c->d_model) || hf_set_int(o, "n_head", c->n_head) ||
           hf_set_int(o, "n_layer", c->n_layer) || hf_set_int(o, "n_positions", c->max_pos) ||
           hf_set_int(o, "n_ctx", c->max_pos) || hf_set_int(o, "vocab_size", c->vocab_size) ||
           json_object_set_new(o, "n_inner", c->ffn_hidden == 4 * c->d_model ? json_null() : json_integer(c->ffn_hidden)) ||
           hf_set_num(o, "layer_norm_epsilon", c->norm_eps) ||
           json_object_set_new(o, "activation_function", json_string("gelu_new")) ||
           hf_set_bool(o, "tie_word_embeddings", 1) || hf_set_bool(o, "scale_attn_weights", 1);
}

const slm_hf_arch slm_hf_gpt2 = {
    .model_type = "gpt2",
    .class_name = "GPT2LMHeadModel",
    .read_prefix = "transformer.",
    .tied_head = "lm_head.weight",
    .names = names,
    .nnames = sizeof names / sizeof names[0],
    .read_config = read_config,
    .write_config = write_config,
};
