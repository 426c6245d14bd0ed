/* digest.c - meta_digest: a CRC-32 over a checkpoint's metadata attributes and its tensor
 * list, written out in one canonical text form (docs/checkpoint-format.md). The writer
 * computes it from what it writes, a reader from what it reads back, so any change to an
 * attribute's value or to a dataset's group, name, shape or type since the file was
 * written shows as a different digest, whatever HDF5's own checksums cover. */
#include <stdio.h>
#include <string.h>
#include "ckpt_impl.h"

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320); crc32(0, "", 0) = 0 and
 * calls chain: crc = ckpt_crc32(crc, next, len). Bitwise: the digest covers a few kB. */
static uint32_t ckpt_crc32(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t add_text(uint32_t crc, const char *key, const char *value)
{
    char head[96];
    size_t len = strlen(value);
    int n = snprintf(head, sizeof head, "%s=%zu:", key, len);
    crc = ckpt_crc32(crc, head, (size_t)n);
    crc = ckpt_crc32(crc, value, len);
    return ckpt_crc32(crc, "\n", 1);
}

static uint32_t add_int(uint32_t crc, const char *key, long long value)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%s=%lld\n", key, value);
    return ckpt_crc32(crc, line, (size_t)n);
}

/* tensor=<len>:<group>/<name>, shape=<d0>,<d1>, dtype=float32|other */
static uint32_t add_entry(uint32_t crc, const ckpt_entry *e)
{
    char line[96];
    size_t len = strlen(e->group) + 1 + strlen(e->name);
    int n = snprintf(line, sizeof line, "tensor=%zu:%s/", len, e->group);
    crc = ckpt_crc32(crc, line, (size_t)n);
    crc = ckpt_crc32(crc, e->name, strlen(e->name));
    crc = ckpt_crc32(crc, "\nshape=", 7);
    for (int d = 0; d < e->ndim; d++) {
        n = snprintf(line, sizeof line, d ? ",%llu" : "%llu", (unsigned long long)e->dims[d]);
        crc = ckpt_crc32(crc, line, (size_t)n);
    }
    n = snprintf(line, sizeof line, "\ndtype=%s\n", e->f32 ? "float32" : "other");
    return ckpt_crc32(crc, line, (size_t)n);
}

uint32_t ckpt_meta_digest(const slm_ckpt_meta *m, int version, const ckpt_manifest *man)
{
    uint32_t crc = 0;
    char line[96];
    crc = add_text(crc, "format", SLM_CKPT_FORMAT);
    crc = add_int(crc, "version", version);
    crc = add_int(crc, "step", m->step);
    crc = add_int(crc, "samples", m->samples);
    crc = add_int(crc, "tokens", m->tokens);
    if (version >= 4) { /* any optimizer, by name */
        crc = add_text(crc, "optimizer", m->optimizer);
        crc = add_int(crc, "optimizer_step", m->optimizer_step);
    } else { /* AdamW's step count */
        crc = add_int(crc, "adam_t", m->optimizer_step);
    }
    int n = snprintf(line, sizeof line, "seed=%llu\n", (unsigned long long)m->seed);
    crc = ckpt_crc32(crc, line, (size_t)n);
    crc = add_int(crc, "n_layer", m->model.n_layer);
    crc = add_int(crc, "n_head", m->model.n_head);
    crc = add_int(crc, "d_model", m->model.d_model);
    crc = add_int(crc, "vocab_size", m->model.vocab_size);
    crc = add_int(crc, "seq_len", m->model.seq_len);
    if (version >= 3) { /* the architecture and its configuration, as stored */
        char json[2048] = "";
        slm_model_config_to_json(&m->model, json, sizeof json);
        crc = add_text(crc, "arch", m->model.arch);
        crc = add_text(crc, "model_config", json);
    }
    crc = add_text(crc, "layout", m->layout);
    crc = add_text(crc, "config", m->config);
    crc = add_text(crc, "matmul", m->matmul);
    /* in the manifest's order: params, the other groups by name, datasets by name - for
     * versions 1-3 that is params, adam_m, adam_v, the order they were digested in */
    for (int i = 0; i < man->n; i++) crc = add_entry(crc, &man->e[i]);
    return crc;
}
