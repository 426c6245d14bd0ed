/* st_tool.c - a test program around the safetensors reader and writer, for
 * tests/reference/safetensors.sh, which compares what it prints and writes with what
 * tests/reference/safetensors_write.py (numpy, written from the format description)
 * wrote and reads.
 *
 *   st_tool dump PATH [KEY...]   one JSON object per line: first {"tensors": N,
 *                                "metadata": {KEY: value or null}}, then for each tensor in
 *                                name order {"name", "dtype", "shape", "file" (base name),
 *                                "bits": the fp32 bit pattern of every element}, read in
 *                                ranges of 97 elements, and for a 2-D tensor of at least
 *                                3 x 3 "block": rows and columns 1 .. n-2 read as a block
 *   st_tool write DIR DTYPE MAX  a fixed set of tensors whose values are a hash of
 *                                (tensor, element), metadata format=pt writer=st_tool
 *
 * Exit status 0, or 1 with the error and its trace on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "shardlm/safetensors.h"

static int fail(void)
{
    char buf[4096];
    slm_error_format(buf, sizeof buf);
    fprintf(stderr, "st_tool: %s\n", buf);
    return 1;
}

static json_t *bits_of(const float *x, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        json_array_append_new(a, json_integer(u));
    }
    return a;
}

static void print_line(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(o);
}

static int dump(const char *path, char **keys, int nkeys)
{
    slm_st_t st = NULL;
    if (slm_st_open(path, &st) != SLM_OK) return fail();
    json_t *meta = json_object();
    for (int k = 0; k < nkeys; k++) {
        const char *v = slm_st_metadata(st, keys[k]);
        json_object_set_new(meta, keys[k], v ? json_string(v) : json_null());
    }
    print_line(json_pack("{s:I, s:o}", "tensors", (json_int_t)slm_st_num_tensors(st), "metadata", meta));
    int rc = 0;
    for (size_t i = 0; !rc && i < slm_st_num_tensors(st); i++) {
        const slm_st_info *t = slm_st_tensor(st, i);
        float *x = malloc((t->numel ? t->numel : 1) * sizeof *x);
        for (size_t at = 0; !rc && at < t->numel; at += 97)
            rc = slm_st_read(st, t->name, at, t->numel - at < 97 ? t->numel - at : 97, x + at) != SLM_OK;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        const char *base = strrchr(t->file, '/');
        json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:o}", "name", t->name, "dtype", slm_st_dtype_name(t->dtype),
                              "shape", shape, "file", base ? base + 1 : t->file, "bits", bits_of(x, t->numel));
        if (!rc && t->ndim == 2 && t->shape[0] >= 3 && t->shape[1] >= 3) {
            const size_t nr = t->shape[0] - 2, nc = t->shape[1] - 2;
            rc = slm_st_read_block(st, t->name, 1, nr, 1, nc, x) != SLM_OK;
            json_object_set_new(o, "block", bits_of(x, rc ? 0 : nr * nc));
        }
        free(x);
        if (rc) json_decref(o);
        else print_line(o);
    }
    if (rc) rc = fail();
    slm_st_close(&st);
    return rc;
}

/* The value of element i of tensor k, as bits (tests/reference/safetensors_write.py
 * computes the same). */
static uint32_t value_bits(uint32_t k, uint32_t i)
{
    uint32_t h = k * 0x9E3779B1u + i * 0x85EBCA77u + 0x165667B1u;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    h *= 0x297A2D39u;
    h ^= h >> 15;
    return h;
}

static int write_model(const char *dir, const char *dtype, size_t max)
{
    /* added out of name order; the same list is in safetensors_write.py */
    static const struct {
        const char *name;
        int ndim;
        size_t shape[3];
    } t[] = {{"z.weight", 2, {7, 5}}, {"a.bias", 1, {13}}, {"m.emb", 2, {20, 16}}, {"scalar", 0, {0}},
             {"k.3d", 3, {2, 3, 4}}, {"empty", 2, {0, 3}}, {"\xc3\xbcn\xc3\xaf.c\xc3\xb6" "d\xc3\xa9", 1, {4}}};
    slm_st_writer_t w = NULL;
    if (slm_st_writer_create(dir, dtype, max, &w) != SLM_OK) return fail();
    int rc = 0;
    for (size_t k = 0; !rc && k < sizeof t / sizeof *t; k++) {
        size_t n = 1;
        for (int d = 0; d < t[k].ndim; d++) n *= t[k].shape[d];
        float *x = malloc((n ? n : 1) * sizeof *x);
        for (size_t i = 0; i < n; i++) {
            uint32_t u = value_bits((uint32_t)k, (uint32_t)i);
            memcpy(&x[i], &u, 4);
        }
        rc = slm_st_writer_add(w, t[k].name, t[k].ndim, t[k].shape, x) != SLM_OK;
        free(x);
    }
    const char *meta[] = {"format", "pt", "writer", "st_tool", NULL};
    if (!rc) rc = slm_st_writer_finish(w, meta) != SLM_OK;
    if (rc) rc = fail();
    slm_st_writer_destroy(&w);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "dump")) return dump(argv[2], argv + 3, argc - 3);
    if (argc == 5 && !strcmp(argv[1], "write")) return write_model(argv[2], argv[3], strtoull(argv[4], NULL, 10));
    fprintf(stderr, "usage: st_tool dump PATH [KEY...] | st_tool write DIR F32|BF16 MAX_SHARD_BYTES\n");
    return 2;
}
