/* gemm_dnnl.c - products through oneDNN: dnnl_sgemm for fp32, and the matmul primitive
 * for bf16 operands with fp32 accumulation (the CPU's bf16 dot-product instructions where
 * it has them). A model multiplies a handful of distinct shapes, so each shape's
 * primitive is created once, on first use, and kept. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <oneapi/dnnl/dnnl.h>
#include "gemm_impl.h"

static void check(dnnl_status_t s, const char *what, int M, int N, int K)
{
    if (s == dnnl_success) return;
    fprintf(stderr, "shardlm: oneDNN %s failed for a %d x %d x %d product (status %d)\n", what, M, N, K, (int)s);
    abort();
}

void slm_dnnl_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc)
{
    check(dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), "sgemm", M, N,
          K);
}

typedef struct matmul_entry {
    int ta, tb, M, N, K, lda, ldb, ldc, accumulate;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c; /* created once; each call points them at its buffers */
} matmul_entry;

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static matmul_entry *cache;
static int ncache;

/* A row-major (rows, cols) matrix stored with leading dimension ld, or transposed. */
static void describe(dnnl_memory_desc_t *md, int rows, int cols, int transposed, int ld, dnnl_data_type_t type)
{
    dnnl_dims_t dims = {rows, cols}, strides = {ld, 1};
    if (transposed) strides[0] = 1, strides[1] = ld;
    check(dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides), "memory descriptor", rows, cols, 0);
}

static matmul_entry *matmul_for(int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc, int accumulate)
{
    for (int i = 0; i < ncache; i++) {
        matmul_entry *e = &cache[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K && e->lda == lda && e->ldb == ldb &&
            e->ldc == ldc && e->accumulate == accumulate)
            return e;
    }
    if (!engine) {
        check(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine", M, N, K);
        check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream", M, N, K);
    }
    matmul_entry *grown = realloc(cache, (size_t)(ncache + 1) * sizeof *cache);
    if (!grown) check(dnnl_out_of_memory, "primitive cache", M, N, K);
    cache = grown;
    matmul_entry *e = &cache[ncache++];
    *e = (matmul_entry){ta, tb, M, N, K, lda, ldb, ldc, accumulate, NULL, NULL, NULL, NULL};

    dnnl_memory_desc_t a, b, c;
    describe(&a, M, K, ta, lda, dnnl_bf16);
    describe(&b, K, N, tb, ldb, dnnl_bf16);
    describe(&c, M, N, 0, ldc, dnnl_f32);
    dnnl_matmul_desc_t desc;
    check(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c), "matmul descriptor", M, N, K);
    dnnl_primitive_attr_t attr;
    check(dnnl_primitive_attr_create(&attr), "attributes", M, N, K);
    if (accumulate) { /* C += A B: the "sum" post-op adds what C held */
        dnnl_post_ops_t ops;
        check(dnnl_post_ops_create(&ops), "post-ops", M, N, K);
        check(dnnl_post_ops_append_sum(ops, 1.0f), "sum post-op", M, N, K);
        check(dnnl_primitive_attr_set_post_ops(attr, ops), "post-ops", M, N, K);
        dnnl_post_ops_destroy(ops);
    }
    dnnl_primitive_desc_t pd;
    check(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL), "matmul", M, N, K);
    dnnl_primitive_attr_destroy(attr);
    check(dnnl_primitive_create(&e->prim, pd), "matmul primitive", M, N, K);
    check(dnnl_memory_create(&e->a, &a, engine, DNNL_MEMORY_NONE), "memory", M, N, K);
    check(dnnl_memory_create(&e->b, &b, engine, DNNL_MEMORY_NONE), "memory", M, N, K);
    check(dnnl_memory_create(&e->c, &c, engine, DNNL_MEMORY_NONE), "memory", M, N, K);
    dnnl_primitive_desc_destroy(pd);
    return e;
}

void slm_dnnl_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc)
{
    matmul_entry *e = matmul_for(ta, tb, M, N, K, lda, ldb, ldc, beta != 0.0f);
    check(dnnl_memory_set_data_handle(e->a, (void *)A), "memory", M, N, K);
    check(dnnl_memory_set_data_handle(e->b, (void *)B), "memory", M, N, K);
    check(dnnl_memory_set_data_handle(e->c, C), "memory", M, N, K);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    check(dnnl_primitive_execute(e->prim, stream, 3, args), "matmul", M, N, K);
    check(dnnl_stream_wait(stream), "stream", M, N, K);
}
