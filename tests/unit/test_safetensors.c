/* test_safetensors.c - the safetensors reader and writer: F32 and BF16 round trips in one
 * file and in shards (layout and shard assignment checked against the bytes and the index
 * themselves), ranges and 2-D blocks against the source arrays, F16 and BF16 decoding of
 * hand-written files against values from the IEEE definitions, each kind of broken file
 * refused with a message naming the file and the tensor, and the writer's refusals. */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include <jansson.h>
#include "shardlm/safetensors.h"

static char tmpdir[] = "/tmp/slm-st-XXXXXX";

static const char *path_of(const char *name)
{
    static char p[4][512];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(p[slot], sizeof p[slot], "%s/%s", tmpdir, name);
    return p[slot];
}

static int msg_has(const char *a, const char *b)
{
    const char *m = slm_error_message();
    int ok = strstr(m, a) && (!b || strstr(m, b));
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks \"%s\" or \"%s\"\n", m, a, b ? b : "");
    return ok;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Entries of a directory other than . and .., and whether `name` is among them. */
static int dir_entries(const char *dir, const char *name, int *has)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (has) *has = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (has && name && !strcmp(e->d_name, name)) *has = 1;
    }
    closedir(d);
    return n;
}

/* bf16 rounding written from its definition: keep 8 significant bits of a normal float,
 * round to nearest with ties to even (rint in the default rounding mode). Not valid for
 * subnormal floats; the hand-picked cases cover those. */
static float ref_bf16(float x)
{
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    double m = frexp(x, &e); /* |m| in [0.5, 1) */
    double r = ldexp(rint(m * 256.0) / 256.0, e);
    return fabs(r) > FLT_MAX ? copysignf(INFINITY, x) : (float)r;
}

/* ---- the tensors of the round trips ---------------------------------------------------- */

#define NT 6
static const char *names[NT] = {"wte", "c", "a", "blocks.0.w", "scalar", "empty"}; /* not sorted */
static const int ndims[NT] = {2, 2, 1, 3, 0, 2};
static const size_t shapes[NT][3] = {{5, 7}, {10, 30}, {100}, {2, 3, 4}, {0}, {0, 4}};
static const size_t counts[NT] = {35, 300, 100, 24, 1, 0};
static float *src[NT];

static uint32_t rng_state = 12345;
static float rnd(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 17, rng_state ^= rng_state << 5;
    return ((float)(rng_state % 2000001) - 1000000.0f) / 4096.0f;
}

static void make_sources(void)
{
    for (int k = 0; k < NT; k++) {
        src[k] = malloc((counts[k] ? counts[k] : 1) * sizeof(float));
        for (size_t i = 0; i < counts[k]; i++) src[k][i] = rnd();
    }
    /* specials in "a": -0, the smallest subnormal, infinities, a NaN with a payload, the
     * largest float (rounds to inf in bf16) */
    src[2][0] = -0.0f;
    src[2][1] = from_bits(0x00000001);
    src[2][2] = INFINITY;
    src[2][3] = -INFINITY;
    src[2][4] = from_bits(0x7fc12345);
    src[2][5] = FLT_MAX;
    /* bf16 ties and near-ties: 1 + 2^-8 is half way between 1 and 1 + 2^-7 (to even: 1);
     * 1 + 3 * 2^-8 half way between 1 + 2^-7 and 1 + 2^-6 (to even: 1 + 2^-6); a hair
     * above half way rounds up; 2^-133 is a bf16 subnormal, exact */
    src[2][6] = 1.0f + 0x1p-8f;
    src[2][7] = 1.0f + 3 * 0x1p-8f;
    src[2][8] = -(1.0f + 0x1p-8f + 0x1p-20f);
    src[2][9] = 0x1p-133f;
}

/* What the bf16 file must hold for a[0..9], written down by hand. */
static const uint32_t a_bf16_bits[10] = {0x80000000, 0x00000000, 0x7f800000, 0xff800000, 0x7fc00000 /* a NaN */,
                                         0x7f800000, 0x3f800000, 0x3f820000, 0xbf810000, 0x00010000};

static void write_model(const char *dir, const char *dtype, size_t max, const char *const *meta)
{
    slm_st_writer_t w = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_create(dir, dtype, max, &w), SLM_OK);
    for (int k = 0; k < NT; k++) CU_ASSERT_EQUAL_FATAL(slm_st_writer_add(w, names[k], ndims[k], shapes[k], src[k]), SLM_OK);
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_finish(w, meta), SLM_OK);
    slm_st_writer_destroy(&w);
    CU_ASSERT_PTR_NULL(w);
}

/* Every tensor of st equals the sources (bitwise for F32, as bf16 rounds them for BF16),
 * the table in name order. */
static void check_model(slm_st_t st, int bf16)
{
    static const char *sorted[NT] = {"a", "blocks.0.w", "c", "empty", "scalar", "wte"};
    CU_ASSERT_EQUAL_FATAL(slm_st_num_tensors(st), NT);
    for (int i = 0; i < NT; i++) CU_ASSERT_STRING_EQUAL(slm_st_tensor(st, (size_t)i)->name, sorted[i]);
    CU_ASSERT_PTR_NULL(slm_st_tensor(st, NT));
    CU_ASSERT_PTR_NULL(slm_st_find(st, "nope"));
    for (int k = 0; k < NT; k++) {
        const slm_st_info *t = slm_st_find(st, names[k]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_EQUAL(t->dtype, bf16 ? SLM_ST_DTYPE_BF16 : SLM_ST_DTYPE_F32);
        CU_ASSERT_EQUAL(t->ndim, ndims[k]);
        for (int d = 0; d < ndims[k]; d++) CU_ASSERT_EQUAL(t->shape[d], shapes[k][d]);
        CU_ASSERT_EQUAL(t->numel, counts[k]);
        float *got = malloc((counts[k] + 1) * sizeof(float));
        CU_ASSERT_EQUAL(slm_st_read(st, names[k], 0, counts[k], got), SLM_OK);
        size_t bad = 0;
        for (size_t i = 0; i < counts[k]; i++) {
            float want = bf16 ? ref_bf16(src[k][i]) : src[k][i];
            if (bf16 && k == 2 && i < 10) want = from_bits(a_bf16_bits[i]);
            bad += bits(got[i]) != bits(want) && !(bf16 && isnan(want) && isnan(got[i]));
        }
        CU_ASSERT_EQUAL(bad, 0);
        free(got);
    }
    /* the rounding really happened: a value bf16 cannot hold comes back changed */
    float x;
    CU_ASSERT_EQUAL(slm_st_read(st, "a", 8, 1, &x), SLM_OK);
    CU_ASSERT(bf16 ? x == -(1.0f + 0x1p-7f) : x == src[2][8]);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    b[*n] = 0;
    return b;
}

static void test_roundtrip_f32(void)
{
    const char *dir = path_of("f32");
    const char *meta[] = {"format", "pt", "note", "a b", NULL};
    write_model(dir, "F32", 0, meta);
    int has = 0;
    CU_ASSERT_EQUAL(dir_entries(dir, "model.safetensors", &has), 1); /* no index, no temporaries */
    CU_ASSERT(has);
    /* the bytes: header length a multiple of 8, padded with spaces, then the data of the
     * tensors in name order, back to back */
    char file[600];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    size_t n = 0;
    unsigned char *raw = slurp(file, &n);
    CU_ASSERT_FATAL(raw && n > 8);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | raw[b];
    CU_ASSERT_EQUAL(hl % 8, 0);
    size_t end = 8 + (size_t)hl;
    while (end > 8 && raw[end - 1] == ' ') end--;
    CU_ASSERT(raw[8] == '{' && raw[end - 1] == '}' && 8 + hl - end < 8);
    const int order[NT] = {2, 3, 1, 5, 4, 0}; /* a, blocks.0.w, c, empty, scalar, wte */
    size_t off = 8 + (size_t)hl;
    for (int i = 0; i < NT; i++) {
        CU_ASSERT(off + counts[order[i]] * 4 <= n && !memcmp(raw + off, src[order[i]], counts[order[i]] * 4));
        off += counts[order[i]] * 4;
    }
    CU_ASSERT_EQUAL(off, n);
    free(raw);

    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(dir, &st), SLM_OK);
    check_model(st, 0);
    CU_ASSERT_STRING_EQUAL(slm_st_find(st, "wte")->file, file);
    CU_ASSERT_STRING_EQUAL(slm_st_metadata(st, "format"), "pt");
    CU_ASSERT_STRING_EQUAL(slm_st_metadata(st, "note"), "a b");
    CU_ASSERT_PTR_NULL(slm_st_metadata(st, "step"));
    slm_st_close(&st);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(file, &st), SLM_OK); /* the file itself */
    check_model(st, 0);
    slm_st_close(&st);
}

static void test_roundtrip_bf16(void)
{
    for (int i = 0; i < 10; i++) /* the hand-written rounding and the reference agree */
        if (!isnan(src[2][i]) && fabsf(src[2][i]) >= FLT_MIN)
            CU_ASSERT_EQUAL(bits(ref_bf16(src[2][i])), a_bf16_bits[i]);
    const char *dir = path_of("bf16");
    write_model(dir, "BF16", 0, NULL);
    char file[600];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    size_t n = 0;
    unsigned char *raw = slurp(file, &n);
    CU_ASSERT_FATAL(raw != NULL);
    CU_ASSERT(strstr((char *)raw + 8, "\"dtype\":\"BF16\"") != NULL);
    CU_ASSERT(strstr((char *)raw + 8, "__metadata__") == NULL);
    /* 2 bytes per element, and "a" first: its bf16 bytes, little-endian */
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | raw[b];
    CU_ASSERT_EQUAL(n, 8 + hl + 2 * (35 + 300 + 100 + 24 + 1));
    for (int i = 0; i < 10; i++) {
        unsigned lo = raw[8 + hl + 2 * i], hi = raw[8 + hl + 2 * i + 1], v = hi << 8 | lo;
        if (i == 4) {
            CU_ASSERT((v & 0x7f80) == 0x7f80 && (v & 0x7f) != 0); /* a NaN, payload aside */
        } else {
            CU_ASSERT_EQUAL(v, a_bf16_bits[i] >> 16);
        }
    }
    free(raw);
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(dir, &st), SLM_OK);
    check_model(st, 1);
    CU_ASSERT_PTR_NULL(slm_st_metadata(st, "format"));
    slm_st_close(&st);
}

/* Ranges and blocks of "c" (10, 30) against the source. */
static void check_ranges(slm_st_t st, int bf16)
{
    const float *c = src[1];
    float buf[300];
#define WANT(i) (bf16 ? ref_bf16(c[i]) : c[i])
    const size_t ranges[][2] = {{0, 1}, {299, 1}, {17, 233}, {0, 300}, {150, 0}, {300, 0}};
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
        memset(buf, 0xff, sizeof buf);
        CU_ASSERT_EQUAL(slm_st_read(st, "c", ranges[r][0], ranges[r][1], buf), SLM_OK);
        size_t bad = 0;
        for (size_t i = 0; i < ranges[r][1]; i++) bad += bits(buf[i]) != bits(WANT(ranges[r][0] + i));
        CU_ASSERT_EQUAL(bad, 0);
        if (ranges[r][1] < 300) CU_ASSERT_EQUAL(bits(buf[ranges[r][1]]), 0xffffffffu); /* nothing past count */
    }
    const size_t blocks[][4] = {{2, 5, 5, 12}, {3, 2, 0, 30}, {0, 10, 29, 1}, {9, 1, 0, 1}, {0, 10, 0, 30}, {4, 0, 3, 3}};
    for (size_t b = 0; b < sizeof blocks / sizeof *blocks; b++) {
        const size_t r0 = blocks[b][0], nr = blocks[b][1], c0 = blocks[b][2], nc = blocks[b][3];
        memset(buf, 0xff, sizeof buf);
        CU_ASSERT_EQUAL(slm_st_read_block(st, "c", r0, nr, c0, nc, buf), SLM_OK);
        size_t bad = 0;
        for (size_t i = 0; i < nr; i++)
            for (size_t j = 0; j < nc; j++) bad += bits(buf[i * nc + j]) != bits(WANT((r0 + i) * 30 + c0 + j));
        CU_ASSERT_EQUAL(bad, 0);
        if (nr * nc < 300) CU_ASSERT_EQUAL(bits(buf[nr * nc]), 0xffffffffu);
    }
#undef WANT
    /* a block of "wte" (5, 7), in another shard when sharded */
    CU_ASSERT_EQUAL(slm_st_read_block(st, "wte", 1, 3, 2, 4, buf), SLM_OK);
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 4; j++) {
            const float s = src[0][(1 + i) * 7 + 2 + j];
            CU_ASSERT_EQUAL(bits(buf[i * 4 + j]), bits(bf16 ? ref_bf16(s) : s));
        }
    /* refusals */
    CU_ASSERT_EQUAL(slm_st_read(st, "c", 299, 2, buf), SLM_ERR_ARG);
    CU_ASSERT(msg_has("tensor \"c\"", "past its 300 elements"));
    CU_ASSERT_EQUAL(slm_st_read(st, "c", 301, 0, buf), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_read(st, "c", SIZE_MAX, 2, buf), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_read(st, "nope", 0, 1, buf), SLM_ERR_ARG);
    CU_ASSERT(msg_has("no tensor \"nope\"", NULL));
    CU_ASSERT_EQUAL(slm_st_read_block(st, "c", 8, 3, 0, 1, buf), SLM_ERR_ARG);
    CU_ASSERT(msg_has("tensor \"c\"", "not inside its shape [10, 30]"));
    CU_ASSERT_EQUAL(slm_st_read_block(st, "c", 0, 1, 25, 6, buf), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_read_block(st, "a", 0, 1, 0, 1, buf), SLM_ERR_ARG);
    CU_ASSERT(msg_has("tensor \"a\" has 1 dimensions", NULL));
    CU_ASSERT_EQUAL(slm_st_read_block(st, "blocks.0.w", 0, 1, 0, 1, buf), SLM_ERR_ARG);
}

static void test_ranges(void)
{
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("f32"), &st), SLM_OK);
    check_ranges(st, 0);
    slm_st_close(&st);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("bf16"), &st), SLM_OK);
    check_ranges(st, 1);
    slm_st_close(&st);
}

/* Sorted, the tensors hold a 400, blocks.0.w 96, c 1200, empty 0, scalar 4, wte 140 bytes
 * (F32). At most 496 bytes a shard: {a, blocks.0.w} = 496 (exactly full), then c alone
 * (larger than the limit), then {empty, scalar, wte} = 144: three shards, 1840 bytes. */
static void check_index(const char *dir, size_t scale)
{
    char index[600];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    json_error_t je;
    json_t *root = json_load_file(index, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(root, "metadata"), "total_size")),
                    (json_int_t)(1840 / scale));
    json_t *wm = json_object_get(root, "weight_map");
    CU_ASSERT_EQUAL(json_object_size(wm), NT);
    static const char *where[][2] = {{"a", "model-00001-of-00003.safetensors"},
                                     {"blocks.0.w", "model-00001-of-00003.safetensors"},
                                     {"c", "model-00002-of-00003.safetensors"},
                                     {"empty", "model-00003-of-00003.safetensors"},
                                     {"scalar", "model-00003-of-00003.safetensors"},
                                     {"wte", "model-00003-of-00003.safetensors"}};
    for (int i = 0; i < NT; i++) {
        const char *f = json_string_value(json_object_get(wm, where[i][0]));
        CU_ASSERT(f && !strcmp(f, where[i][1]));
    }
    json_decref(root);
    int has[4];
    CU_ASSERT_EQUAL(dir_entries(dir, "model.safetensors.index.json", &has[0]), 4); /* 3 shards + index, nothing else */
    dir_entries(dir, "model-00001-of-00003.safetensors", &has[1]);
    dir_entries(dir, "model-00002-of-00003.safetensors", &has[2]);
    dir_entries(dir, "model-00003-of-00003.safetensors", &has[3]);
    CU_ASSERT(has[0] && has[1] && has[2] && has[3]);
}

static void test_sharded(void)
{
    const char *dir = path_of("f32-sharded");
    const char *meta[] = {"format", "pt", NULL};
    write_model(dir, "F32", 496, meta);
    check_index(dir, 1);
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(dir, &st), SLM_OK);
    check_model(st, 0);
    check_ranges(st, 0);
    char shard[600];
    snprintf(shard, sizeof shard, "%s/model-00002-of-00003.safetensors", dir);
    CU_ASSERT_STRING_EQUAL(slm_st_find(st, "c")->file, shard);
    CU_ASSERT_STRING_EQUAL(slm_st_metadata(st, "format"), "pt");
    slm_st_close(&st);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("f32-sharded/model.safetensors.index.json"), &st), SLM_OK);
    check_model(st, 0);
    slm_st_close(&st);
    /* one shard on its own: its own tensors */
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("f32-sharded/model-00003-of-00003.safetensors"), &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_num_tensors(st), 3);
    CU_ASSERT_PTR_NOT_NULL(slm_st_find(st, "wte"));
    CU_ASSERT_PTR_NULL(slm_st_find(st, "c"));
    slm_st_close(&st);

    dir = path_of("bf16-sharded"); /* half the bytes, half the limit: the same shards */
    write_model(dir, "BF16", 248, NULL);
    check_index(dir, 2);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(dir, &st), SLM_OK);
    check_model(st, 1);
    check_ranges(st, 1);
    slm_st_close(&st);

    /* a limit below every tensor: one shard each, the empty tensor too (it comes after c,
     * which is over the limit, and scalar would take its shard past it) */
    dir = path_of("tiny-shards");
    write_model(dir, "F32", 1, NULL);
    CU_ASSERT_EQUAL(dir_entries(dir, "model-00006-of-00006.safetensors", (int[1]){0}), 7);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(dir, &st), SLM_OK);
    check_model(st, 0);
    slm_st_close(&st);
}

/* ---- hand-written files ----------------------------------------------------------------- */

/* NAME: the 8-byte length of header (padded with `pad` spaces), the header, data. */
static const char *write_st(const char *name, const char *header, int pad, const void *data, size_t n)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    uint64_t hl = strlen(header) + (size_t)pad;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hl >> (8 * b));
    fwrite(len8, 1, 8, f);
    fputs(header, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

static void test_decode_f16_bf16(void)
{
    /* little-endian halfs, then bf16s, as another writer would store them */
    const uint16_t h[14] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x0400, 0x3555,
                            0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x8001, 0x3BFF};
    /* from the IEEE 754 binary16 definition: (-1)^s x 2^(e-15) x 1.m for 0 < e < 31,
     * (-1)^s x 2^-14 x 0.m for e = 0, inf (m = 0) or NaN (m != 0) for e = 31 */
    const float want[14] = {1.0f, -2.0f, 65504.0f, 0x1p-24f /* 5.96e-8 */, 1023 * 0x1p-24f, 0x1p-14f,
                            0.333251953125f /* 1.0101010101b x 2^-2 */, -0.0f, INFINITY, -INFINITY, NAN, NAN,
                            -0x1p-24f, 1.0f - 0x1p-11f};
    const uint16_t b[4] = {0x3F80, 0xC040, 0x7F80, 0x0001};
    const float wantb[4] = {1.0f, -3.0f, INFINITY, 0x1p-133f};
    unsigned char data[36];
    for (int i = 0; i < 4; i++) data[2 * i] = (unsigned char)(b[i] & 0xff), data[2 * i + 1] = (unsigned char)(b[i] >> 8);
    for (int i = 0; i < 14; i++) data[8 + 2 * i] = (unsigned char)(h[i] & 0xff), data[9 + 2 * i] = (unsigned char)(h[i] >> 8);
    const char *p = write_st("halfs.safetensors",
                             "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,7],\"data_offsets\":[8,36]},"
                             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
                             3, data, sizeof data);
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(p, &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_find(st, "h")->dtype, SLM_ST_DTYPE_F16);
    CU_ASSERT_STRING_EQUAL(slm_st_dtype_name(slm_st_find(st, "h")->dtype), "F16");
    float got[14];
    CU_ASSERT_EQUAL_FATAL(slm_st_read(st, "h", 0, 14, got), SLM_OK);
    for (int i = 0; i < 14; i++) {
        if (isnan(want[i])) {
            CU_ASSERT(isnan(got[i]) && !signbit(got[i]) == !(h[i] & 0x8000));
        } else {
            CU_ASSERT(bits(got[i]) == bits(want[i])); /* bits: -0 is not 0 */
        }
    }
    CU_ASSERT_EQUAL(slm_st_read(st, "h", 5, 4, got), SLM_OK); /* a range from the middle */
    for (int i = 0; i < 4; i++)
        CU_ASSERT(bits(got[i]) == bits(want[5 + i]) || (isnan(want[5 + i]) && isnan(got[i])));
    CU_ASSERT_EQUAL(slm_st_read_block(st, "h", 0, 2, 2, 3, got), SLM_OK); /* columns 2..4 of (2, 7) */
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) {
            const float w = want[r * 7 + 2 + c];
            CU_ASSERT(bits(got[r * 3 + c]) == bits(w) || (isnan(w) && isnan(got[r * 3 + c])));
        }
    CU_ASSERT_EQUAL_FATAL(slm_st_read(st, "b", 0, 4, got), SLM_OK);
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(bits(got[i]), bits(wantb[i]));
    slm_st_close(&st);
}

static void expect_bad(const char *path, slm_status code, const char *a, const char *b)
{
    slm_st_t st = NULL;
    slm_status s = slm_st_open(path, &st);
    CU_ASSERT_EQUAL(s, code);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT(msg_has(a, b));
    if (s == SLM_OK) slm_st_close(&st);
}

#define T(name, dtype, shape, b, e) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_bad_files(void)
{
    unsigned char data[256] = {0};
    const char *p;
    /* the header length runs past the end of the file */
    p = write_st("hl-past.safetensors", "{}", 0, NULL, 0);
    FILE *f = fopen(p, "r+b");
    fputc(200, f); /* length 200, the file has 10 bytes */
    fclose(f);
    expect_bad(p, SLM_ERR_FORMAT, "hl-past.safetensors: the header length 200", "past the end of the file (10 bytes)");
    p = write_st("short.safetensors", "", 0, NULL, 0);
    CU_ASSERT_FATAL(truncate(p, 5) == 0);
    expect_bad(p, SLM_ERR_FORMAT, "short.safetensors: 5 bytes", "too short");
    /* absurdly large: a length a file of that size could hold, but no real header has */
    p = write_st("hl-huge.safetensors", "{}", 0, NULL, 0);
    f = fopen(p, "r+b");
    const unsigned char huge[8] = {0, 0, 0, 0x10, 0, 0, 0, 0}; /* 2^28 */
    fwrite(huge, 1, 8, f);
    fclose(f);
    CU_ASSERT_FATAL(truncate(p, (1 << 28) + 16) == 0); /* sparse */
    expect_bad(p, SLM_ERR_FORMAT, "hl-huge.safetensors: the header length 268435456", "more than the 100000000 bytes");
    /* the data cut short: 4x4 F32 needs 64 bytes, the file holds 40 */
    p = write_st("trunc.safetensors", "{" T("w", "F32", "[4,4]", 0, 64) "}", 6, data, 40);
    expect_bad(p, SLM_ERR_FORMAT, "trunc.safetensors: tensor \"w\"", "run past the end of the data, which has 40 bytes");
    /* offsets past the end with the data complete: the same check */
    p = write_st("offs.safetensors", "{" T("x", "F32", "[4]", 0, 16) "," T("y", "F32", "[4]", 64, 80) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "offs.safetensors: tensor \"y\": data_offsets [64, 80)", "run past the end");
    /* a size that does not match the shape */
    p = write_st("size.safetensors", "{" T("w", "F32", "[4,4]", 0, 60) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "size.safetensors: tensor \"w\": its shape of 16 elements of F32 needs 64 bytes",
               "[0, 60) hold 60");
    p = write_st("size16.safetensors", "{" T("w", "BF16", "[4,4]", 0, 64) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "size16.safetensors: tensor \"w\": its shape of 16 elements of BF16 needs 32 bytes",
               NULL);
    p = write_st("overflow.safetensors", "{" T("w", "F32", "[4294967296,4294967296]", 0, 64) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "overflow.safetensors: tensor \"w\": its shape needs more than 2^64 bytes", NULL);
    /* overlapping tensors (listed in either order) */
    p = write_st("overlap.safetensors", "{" T("b", "F32", "[8]", 16, 48) "," T("a", "F32", "[8]", 0, 32) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "overlap.safetensors: tensors \"a\" (data_offsets [0, 32)) and \"b\" ([16, 48))",
               "overlap");
    p = write_st("inside.safetensors", "{" T("big", "F32", "[16]", 0, 64) "," T("in", "F32", "[2]", 8, 16) ","
                 T("e", "F32", "[0]", 8, 8) "}", 0, data, 64);
    expect_bad(p, SLM_ERR_FORMAT, "inside.safetensors: tensors \"big\"", "\"in\" ([8, 16)) overlap");
    /* touching is not overlapping, and an empty tensor overlaps nothing; a gap is allowed */
    p = write_st("touch.safetensors", "{" T("a", "F32", "[4]", 0, 16) "," T("b", "F32", "[4]", 16, 32) ","
                 T("e", "F32", "[0]", 4, 4) "," T("c", "F32", "[2]", 40, 48) "}", 0, data, 64);
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL(slm_st_open(p, &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_num_tensors(st), 4);
    slm_st_close(&st);
    /* unknown dtypes */
    p = write_st("dtype.safetensors", "{" T("a", "F32", "[4]", 0, 16) "," T("ids", "I64", "[2]", 16, 32) "}", 0, data, 32);
    expect_bad(p, SLM_ERR_FORMAT, "dtype.safetensors: tensor \"ids\": dtype I64", "(F32, BF16, F16)");
    p = write_st("f64.safetensors", "{" T("d", "F64", "[2]", 0, 16) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "f64.safetensors: tensor \"d\": dtype F64", NULL);
    /* JSON that does not parse, or is not an object */
    p = write_st("json.safetensors", "{\"w\": {\"dtype\": \"F32\", ", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "json.safetensors: the header is not valid JSON", NULL);
    p = write_st("array.safetensors", "[1, 2]", 2, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "array.safetensors: the header is not a JSON object", NULL);
    p = write_st("dup.safetensors", "{" T("w", "F32", "[1]", 0, 4) "," T("w", "F32", "[1]", 4, 8) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "dup.safetensors: the header is not valid JSON: duplicate object key", NULL);
    /* bad shapes, offsets, entries, metadata */
    p = write_st("neg.safetensors", "{" T("w", "F32", "[-1,4]", 0, 16) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "neg.safetensors: tensor \"w\": shape entry 0 is not a non-negative integer", NULL);
    p = write_st("shape.safetensors", "{" T("w", "F32", "4", 0, 16) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "shape.safetensors: tensor \"w\": \"shape\" is not a list", NULL);
    p = write_st("float.safetensors", "{" T("w", "F32", "[4.0]", 0, 16) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "float.safetensors: tensor \"w\": shape entry 0", NULL);
    p = write_st("dims.safetensors", "{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "dims.safetensors: tensor \"w\": 9 dimensions; at most 8", NULL);
    p = write_st("backw.safetensors", "{" T("w", "F32", "[0]", 16, 0) "}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "backw.safetensors: tensor \"w\": data_offsets [16, 0] end before they begin", NULL);
    p = write_st("offs3.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "offs3.safetensors: tensor \"w\": \"data_offsets\" is not a list [begin, end]", NULL);
    p = write_st("nodtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "nodtype.safetensors: tensor \"w\": no \"dtype\"", NULL);
    p = write_st("entry.safetensors", "{\"w\":[1]}", 0, data, 16);
    expect_bad(p, SLM_ERR_FORMAT, "entry.safetensors: tensor \"w\": its entry is not a JSON object", NULL);
    p = write_st("meta.safetensors", "{\"__metadata__\":{\"step\":5}}", 0, data, 0);
    expect_bad(p, SLM_ERR_FORMAT, "meta.safetensors: \"__metadata__\" entry \"step\" is not a string", NULL);
    /* not there at all; a directory without a model */
    expect_bad(path_of("missing.safetensors"), SLM_ERR_IO, "missing.safetensors: cannot open", NULL);
    mkdir(path_of("nomodel"), 0755);
    expect_bad(path_of("nomodel"), SLM_ERR_IO, "nomodel: holds neither model.safetensors nor", NULL);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_bad_index(void)
{
    unsigned char data[64] = {0};
    mkdir(path_of("idx"), 0755);
    write_st("idx/s1.safetensors", "{\"__metadata__\":{\"k\":\"one\"}," T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 8, 16) "}",
             0, data, 16);
    write_st("idx/s2.safetensors", "{\"__metadata__\":{\"k\":\"two\",\"only\":\"two\"}," T("c", "F32", "[2]", 0, 8) "}", 0,
             data, 8);
    write_st("idx/s3.safetensors", "{" T("b", "F32", "[2]", 0, 8) "}", 0, data, 8);
    /* good: a, b in s1, c in s2 */
    const char *good = path_of("idx/good.safetensors.index.json");
    write_text(good, "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                     "\"c\":\"s2.safetensors\"}}");
    slm_st_t st = NULL;
    CU_ASSERT_EQUAL_FATAL(slm_st_open(good, &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_num_tensors(st), 3);
    CU_ASSERT(strstr(slm_st_find(st, "c")->file, "/idx/s2.safetensors") != NULL);
    CU_ASSERT_STRING_EQUAL(slm_st_metadata(st, "k"), "one"); /* the first shard's, by file name */
    CU_ASSERT_STRING_EQUAL(slm_st_metadata(st, "only"), "two");
    slm_st_close(&st);
    /* a shard that is missing */
    const char *p = path_of("idx/missing.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s9.safetensors\"}}");
    expect_bad(p, SLM_ERR_IO, "missing.index.json: weight_map puts tensor \"c\" in", "s9.safetensors, which cannot be opened");
    /* a tensor the shard does not hold */
    p = path_of("idx/absent.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\","
                  "\"d\":\"s2.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "absent.index.json: weight_map puts tensor \"d\" in s2.safetensors", "does not hold it");
    /* a tensor in another shard than the index says */
    p = path_of("idx/wrong.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s1.safetensors\","
                  "\"z\":\"s2.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "wrong.index.json: weight_map puts tensor \"c\" in s1.safetensors, but it is in",
               "s2.safetensors");
    /* a tensor in two shards */
    p = path_of("idx/twice.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "twice.index.json: tensor \"b\" is in both", "s1.safetensors and");
    /* a shard holding a tensor the index does not name */
    p = path_of("idx/extra.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "extra.index.json:", "s1.safetensors holds tensor \"b\", which weight_map does not name");
    /* a broken shard is named as itself */
    write_st("idx/bad.safetensors", "{" T("q", "Q8", "[2]", 0, 8) "}", 0, data, 8);
    p = path_of("idx/badshard.index.json");
    write_text(p, "{\"weight_map\":{\"q\":\"bad.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "idx/bad.safetensors: tensor \"q\": dtype Q8", NULL);
    /* no weight_map, a file outside the directory, not JSON */
    p = path_of("idx/nomap.index.json");
    write_text(p, "{\"metadata\":{}}");
    expect_bad(p, SLM_ERR_FORMAT, "nomap.index.json: no \"weight_map\" object", NULL);
    p = path_of("idx/escape.index.json");
    write_text(p, "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}");
    expect_bad(p, SLM_ERR_FORMAT, "escape.index.json: weight_map: tensor \"a\": \"../s1.safetensors\" is not a file name",
               NULL);
    p = path_of("idx/notjson.index.json");
    write_text(p, "{\"weight_map\": {");
    expect_bad(p, SLM_ERR_FORMAT, "notjson.index.json: not valid JSON", NULL);
    /* a directory with only an index: found and read */
    write_text(path_of("idx/model.safetensors.index.json"),
               "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("idx"), &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_num_tensors(st), 3);
    slm_st_close(&st);
    /* with a model.safetensors beside the index, the directory is that file */
    write_st("idx/model.safetensors", "{" T("single", "F32", "[1]", 0, 4) "}", 0, data, 4);
    CU_ASSERT_EQUAL_FATAL(slm_st_open(path_of("idx"), &st), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_num_tensors(st), 1);
    CU_ASSERT_PTR_NOT_NULL(slm_st_find(st, "single"));
    slm_st_close(&st);
}

/* ---- the writer's refusals ---------------------------------------------------------- */

static void test_writer_errors(void)
{
    slm_st_writer_t w = NULL;
    const size_t shape[2] = {2, 3};
    const float x[6] = {1, 2, 3, 4, 5, 6};
    CU_ASSERT_EQUAL(slm_st_writer_create(path_of("w-f16"), "F16", 0, &w), SLM_ERR_ARG);
    CU_ASSERT(msg_has("dtype F16; F32 or BF16 is written", NULL));
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT_EQUAL(slm_st_writer_create(path_of("w-i8"), "I8", 0, &w), SLM_ERR_ARG);
    CU_ASSERT(msg_has("dtype I8", NULL));
    /* not over an existing model */
    CU_ASSERT_EQUAL(slm_st_writer_create(path_of("f32"), "F32", 0, &w), SLM_ERR_ARG);
    CU_ASSERT(msg_has("f32: already holds a model", NULL));
    CU_ASSERT_EQUAL(slm_st_writer_create(path_of("f32-sharded"), "F32", 0, &w), SLM_ERR_ARG);
    /* a directory that cannot be made (under a regular file) */
    CU_ASSERT_EQUAL(slm_st_writer_create(path_of("halfs.safetensors/sub"), "F32", 0, &w), SLM_ERR_IO);
    CU_ASSERT(msg_has("halfs.safetensors/sub: cannot create the directory", NULL));

    const char *dir = path_of("w-abandoned");
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_create(dir, "BF16", 0, &w), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "t", 2, shape, x), SLM_OK);
    CU_ASSERT_EQUAL(dir_entries(dir, NULL, NULL), 0); /* nothing visible before finish */
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "t", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT(msg_has("tensor \"t\" added twice", NULL));
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "__metadata__", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "\xff\xfe", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT(msg_has("is not UTF-8", NULL));
    const size_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "u", 9, nine, x), SLM_ERR_ARG);
    CU_ASSERT(msg_has("tensor \"u\": 9 dimensions", NULL));
    const char *odd[] = {"format", NULL};
    CU_ASSERT_EQUAL(slm_st_writer_finish(w, odd), SLM_ERR_ARG);
    CU_ASSERT(msg_has("metadata key \"format\" has no value", NULL));
    CU_ASSERT_EQUAL(dir_entries(dir, NULL, NULL), 0); /* a failed finish leaves nothing */
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "v", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT(msg_has("added to a writer that is failed", NULL));
    slm_st_writer_destroy(&w);
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT_EQUAL(dir_entries(dir, NULL, NULL), 0);
    slm_st_writer_destroy(&w); /* twice: nothing */

    dir = path_of("w-done");
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_create(dir, "F32", 0, &w), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "t", 2, shape, x), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_writer_finish(w, NULL), SLM_OK);
    CU_ASSERT_EQUAL(slm_st_writer_finish(w, NULL), SLM_ERR_ARG);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "v", 2, shape, x), SLM_ERR_ARG);
    CU_ASSERT(msg_has("added to a writer that is finished", NULL));
    slm_st_writer_destroy(&w);
    CU_ASSERT_EQUAL(dir_entries(dir, "model.safetensors", (int[1]){0}), 1); /* destroy keeps a finished model */
}

/* Writes that fail half way (a file-size limit: write() fails with EFBIG once a file would
 * pass it): the error names the file, and nothing is left in the directory. */
static void test_writer_write_failures(void)
{
    struct rlimit old;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    slm_st_writer_t w = NULL;
    /* finish: the first shard (a, blocks.0.w: 496 bytes and a header) fits in 1000
     * bytes, the second (c: 1200 bytes) does not */
    const char *dir = path_of("w-efbig");
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_create(dir, "F32", 496, &w), SLM_OK);
    for (int k = 0; k < NT; k++) CU_ASSERT_EQUAL(slm_st_writer_add(w, names[k], ndims[k], shapes[k], src[k]), SLM_OK);
    lim.rlim_cur = 1000;
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CU_ASSERT_EQUAL(slm_st_writer_finish(w, NULL), SLM_ERR_IO);
    CU_ASSERT(msg_has("w-efbig/.model-00002-of-00003.safetensors.tmp: cannot write", NULL));
    CU_ASSERT_EQUAL(dir_entries(dir, NULL, NULL), 0);
    slm_st_writer_destroy(&w);
    /* add: the spool passes a limit of 500 bytes */
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &old) == 0);
    dir = path_of("w-efbig-add");
    CU_ASSERT_EQUAL_FATAL(slm_st_writer_create(dir, "BF16", 0, &w), SLM_OK);
    lim.rlim_cur = 500;
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "a", ndims[2], shapes[2], src[2]), SLM_OK); /* 200 bytes */
    CU_ASSERT_EQUAL(slm_st_writer_add(w, "c", ndims[1], shapes[1], src[1]), SLM_ERR_IO); /* 600 more */
    CU_ASSERT(msg_has("w-efbig-add: writing tensor \"c\" to the temporary file", NULL));
    CU_ASSERT_EQUAL(slm_st_writer_finish(w, NULL), SLM_ERR_ARG); /* a failed writer stays failed */
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &old) == 0);
    slm_st_writer_destroy(&w);
    CU_ASSERT_EQUAL(dir_entries(dir, NULL, NULL), 0);
    signal(SIGXFSZ, SIG_DFL);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return 1;
    make_sources();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("safetensors", NULL, NULL);
    CU_add_test(s, "F32 round trip, one file", test_roundtrip_f32);
    CU_add_test(s, "BF16 round trip, one file", test_roundtrip_bf16);
    CU_add_test(s, "ranges and 2-D blocks", test_ranges);
    CU_add_test(s, "sharded round trips", test_sharded);
    CU_add_test(s, "F16 and BF16 decoding", test_decode_f16_bf16);
    CU_add_test(s, "broken files refused", test_bad_files);
    CU_add_test(s, "broken indexes refused", test_bad_index);
    CU_add_test(s, "writer refusals", test_writer_errors);
    CU_add_test(s, "writer write failures", test_writer_write_failures);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    for (int k = 0; k < NT; k++) free(src[k]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return failures != 0;
}
