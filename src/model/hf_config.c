/* hf_config.c - a Hugging Face config.json as a model configuration, and back.
 *
 * The architecture named by "model_type" reads its own keys (gpt2_hf.c, llama_hf.c)
 * through the helpers here, which check each value's type, take what is absent from the
 * defaults of Hugging Face's own configuration classes (as loading the model there does),
 * and note which key each model.* field came from: a run whose configuration file says
 * otherwise is told both sides (slm_conf_resolve_model). Writing uses the same key names;
 * numbers are written with the fewest digits that read back exactly. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hf_impl.h"

struct hf_reader {
    json_t *root;
    char path[4200]; /* DIR/config.json */
    slm_hf_origin *origin;
};

const char *slm_rope_pairing_name(slm_rope_pairing p)
{
    return p == SLM_ROPE_PAIRING_INTERLEAVED ? "interleaved" : "half";
}

int slm_rope_pairing_parse(const char *s, slm_rope_pairing *p)
{
    if (!strcmp(s, "half")) *p = SLM_ROPE_PAIRING_HALF;
    else if (!strcmp(s, "interleaved")) *p = SLM_ROPE_PAIRING_INTERLEAVED;
    else return 0;
    return 1;
}

int slm_hf_is_model_dir(const char *path)
{
    struct stat sb;
    if (!path[0] || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", path);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The shortest "%.*g" text of v that reads back as v, in positional notation where v is
 * a whole number of up to 16 digits (500000, not 5e+05); its precision in *digits. */
static void shortest(double v, char *buf, size_t len, int *digits)
{
    int p = 1;
    for (; p < 17; p++) {
        snprintf(buf, len, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    const int whole = fabs(v) >= 1 && fabs(v) < 1e16 ? (int)floor(log10(fabs(v))) + 1 : 0;
    if (whole > p) p = whole;
    snprintf(buf, len, "%.*g", p, v);
    if (digits) *digits = p;
}

/* The value at key ("a" or "a.b"): NULL when absent or null; an error when a part on the
 * way is not an object. */
static slm_status lookup(hf_reader *r, const char *key, json_t **out)
{
    *out = NULL;
    json_t *o = r->root;
    const char *p = key;
    for (;;) {
        const char *dot = strchr(p, '.');
        const size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char part[64];
        if (n >= sizeof part) return SLM_OK;
        memcpy(part, p, n);
        part[n] = '\0';
        json_t *v = json_object_get(o, part);
        if (!v || json_is_null(v)) return SLM_OK;
        if (!dot) {
            *out = v;
            return SLM_OK;
        }
        SLM_CHECK(json_is_object(v), SLM_ERR_FORMAT, "%s: \"%.*s\" is not a JSON object", r->path, (int)(dot - key),
                  key);
        o = v;
        p = dot + 1;
    }
}

void hf_note(hf_reader *r, const char *field, const char *from, const char *fmt, ...)
{
    slm_hf_origin *o = r->origin;
    if (!o || !field || o->n >= SLM_HF_MAX_ORIGINS) return;
    for (int i = 0; i < o->n; i++) /* a later note of the same field replaces the first */
        if (!strcmp(o->e[i].key, field)) {
            o->n--;
            memmove(&o->e[i], &o->e[i + 1], (size_t)(o->n - i) * sizeof o->e[0]);
            break;
        }
    snprintf(o->e[o->n].key, sizeof o->e[0].key, "%s", field);
    snprintf(o->e[o->n].from, sizeof o->e[0].from, "%s", from);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->e[o->n].value, sizeof o->e[0].value, fmt, ap);
    va_end(ap);
    o->n++;
}

const char *hf_path(const hf_reader *r) { return r->path; }

int hf_has(hf_reader *r, const char *key)
{
    json_t *v = NULL;
    slm_status s = lookup(r, key, &v);
    if (s != SLM_OK) slm_error_clear(); /* the typed read of the key reports it */
    return v != NULL;
}

slm_status hf_int(hf_reader *r, const char *key, const char *field, int required, int def, int *out)
{
    json_t *v;
    SLM_CALL(lookup(r, key, &v));
    if (!v) {
        SLM_CHECK(!required, SLM_ERR_FORMAT, "%s: \"%s\" is missing", r->path, key);
        *out = def;
        hf_note(r, field, key, "%d (absent: the default)", def);
        return SLM_OK;
    }
    const double d = json_is_number(v) ? json_number_value(v) : NAN;
    SLM_CHECK(json_is_integer(v) || (json_is_real(v) && d == floor(d)), SLM_ERR_FORMAT,
              "%s: \"%s\" is not an integer", r->path, key);
    SLM_CHECK(d >= INT_MIN && d <= INT_MAX, SLM_ERR_FORMAT, "%s: \"%s\" = %.17g is out of range", r->path, key, d);
    *out = (int)d;
    hf_note(r, field, key, "%d", *out);
    return SLM_OK;
}

slm_status hf_num(hf_reader *r, const char *key, const char *field, int required, double def, double *out)
{
    json_t *v;
    SLM_CALL(lookup(r, key, &v));
    char text[40];
    if (!v) {
        SLM_CHECK(!required, SLM_ERR_FORMAT, "%s: \"%s\" is missing", r->path, key);
        *out = def;
        shortest(def, text, sizeof text, NULL);
        hf_note(r, field, key, "%s (absent: the default)", text);
        return SLM_OK;
    }
    SLM_CHECK(json_is_number(v) && isfinite(json_number_value(v)), SLM_ERR_FORMAT, "%s: \"%s\" is not a number",
              r->path, key);
    *out = json_number_value(v);
    shortest(*out, text, sizeof text, NULL);
    hf_note(r, field, key, "%s", text);
    return SLM_OK;
}

slm_status hf_bool(hf_reader *r, const char *key, const char *field, int def, int *out)
{
    json_t *v;
    SLM_CALL(lookup(r, key, &v));
    SLM_CHECK(!v || json_is_boolean(v), SLM_ERR_FORMAT, "%s: \"%s\" is not true or false", r->path, key);
    *out = v ? json_is_true(v) : def;
    hf_note(r, field, key, v ? "%s" : "%s (absent: the default)", *out ? "true" : "false");
    return SLM_OK;
}

slm_status hf_str(hf_reader *r, const char *key, const char **out)
{
    json_t *v;
    SLM_CALL(lookup(r, key, &v));
    SLM_CHECK(!v || json_is_string(v), SLM_ERR_FORMAT, "%s: \"%s\" is not a string", r->path, key);
    *out = v ? json_string_value(v) : NULL;
    return SLM_OK;
}

/* "gpt2, llama": the model types there is an architecture for. */
static void known_types(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; slm_model_archs[i] && used < len; i++) {
        const slm_arch *a = slm_arch_find(slm_model_archs[i]);
        if (a && a->hf) used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", a->hf->model_type);
    }
}

static slm_status read_all(hf_reader *r, slm_model_config *cfg, slm_rope_pairing *pairing)
{
    SLM_CHECK(json_is_object(r->root), SLM_ERR_FORMAT, "%s: not a JSON object", r->path);
    const char *type = NULL;
    SLM_CALL(hf_str(r, "model_type", &type));
    char known[64];
    known_types(known, sizeof known);
    SLM_CHECK(type, SLM_ERR_FORMAT, "%s: no \"model_type\" (shardlm reads %s)", r->path, known);
    const slm_arch *a = slm_arch_find_hf(type);
    SLM_CHECK(a, SLM_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not one shardlm has an architecture for (%s)", r->path,
              type, known);
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->arch, sizeof cfg->arch, "%s", a->name);
    hf_note(r, "arch", "model_type", "%s", type);
    SLM_CALL(a->hf->read_config(r, cfg));
    const char *p = NULL;
    SLM_CALL(hf_str(r, "shardlm_rope_pairing", &p));
    *pairing = SLM_ROPE_PAIRING_HALF;
    SLM_CHECK(!p || slm_rope_pairing_parse(p, pairing), SLM_ERR_FORMAT,
              "%s: \"shardlm_rope_pairing\" = \"%s\": expected half or interleaved", r->path, p);
    return SLM_OK;
}

slm_status slm_hf_read_config(const char *dir, slm_model_config *cfg, slm_rope_pairing *pairing, slm_hf_origin *origin)
{
    hf_reader r = {.origin = origin};
    if (origin) origin->n = 0;
    snprintf(r.path, sizeof r.path, "%s/config.json", dir);
    json_error_t err;
    errno = 0;
    r.root = json_load_file(r.path, JSON_REJECT_DUPLICATES, &err);
    SLM_CHECK(r.root, errno == ENOENT ? SLM_ERR_IO : SLM_ERR_FORMAT, "%s: cannot read it as JSON (line %d: %s)", r.path,
              err.line, err.text);
    slm_rope_pairing p = SLM_ROPE_PAIRING_HALF;
    slm_status s = read_all(&r, cfg, pairing ? pairing : &p);
    json_decref(r.root);
    SLM_CALL(s);
    return SLM_OK;
}

const char *slm_hf_origin_text(const slm_hf_origin *o, const char *key, const char **from)
{
    for (int i = 0; o && i < o->n; i++)
        if (!strcmp(o->e[i].key, key)) {
            if (from) *from = o->e[i].from;
            return o->e[i].value;
        }
    return NULL;
}

int hf_set_int(json_t *o, const char *key, long long v) { return json_object_set_new(o, key, json_integer(v)); }
int hf_set_num(json_t *o, const char *key, double v) { return json_object_set_new(o, key, json_real(v)); }
int hf_set_bool(json_t *o, const char *key, int v) { return json_object_set_new(o, key, json_boolean(v)); }

/* The most digits any number in v needs to read back exactly. */
static int digits_needed(json_t *v)
{
    int most = 1, d = 1;
    char buf[40];
    if (json_is_real(v)) {
        shortest(json_real_value(v), buf, sizeof buf, &d);
        return d;
    }
    const char *key;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, key, x) {
            if ((d = digits_needed(x)) > most) most = d;
        }
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) {
            if ((d = digits_needed(x)) > most) most = d;
        }
    }
    return most;
}

slm_status hf_config_text(const slm_model_config *cfg, const char *torch_dtype, slm_rope_pairing pairing, char **out)
{
    *out = NULL;
    const slm_arch *a = slm_arch_find(cfg->arch);
    SLM_CHECK(a && a->hf, SLM_ERR_UNSUPPORTED, "model.arch = %s has no Hugging Face form", cfg->arch);
    json_t *root = json_object();
    int bad = !root || json_object_set_new(root, "architectures", json_pack("[s]", a->hf->class_name)) ||
              json_object_set_new(root, "model_type", json_string(a->hf->model_type)) ||
              a->hf->write_config(cfg, root) || json_object_set_new(root, "torch_dtype", json_string(torch_dtype));
    if (!bad && pairing != SLM_ROPE_PAIRING_HALF)
        bad = json_object_set_new(root, "shardlm_rope_pairing", json_string(slm_rope_pairing_name(pairing)));
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(digits_needed(root)));
    json_decref(root);
    SLM_CHECK(text, SLM_ERR_NOMEM, "out of memory for config.json");
    char *nl = realloc(text, strlen(text) + 2);
    if (!nl) free(text);
    SLM_CHECK(nl, SLM_ERR_NOMEM, "out of memory for config.json");
    strcat(nl, "\n");
    *out = nl;
    return SLM_OK;
}
