/* gemm_dnnl.c - products through oneDNN: dnnl_sgemm for fp32, and the matmul primitive
 * for bf16 operands with fp32 accumulation (the CPU's bf16 dot-product instructions where
 * it has them). A model multiplies a handful of distinct shapes, so each shape's
 * primitive is created once, on first use, and kept. */
#include "config.h"
#include <stdlib.h>
#include <oneapi/dnnl/dnnl.h>
#include "gemm_impl.h"

/* 1 on success; else the failure is recorded (slm_kernels_status) and the product skipped. */
static int check(dnnl_status_t s, const char *what, int M, int N, int K)
{
    if (s == dnnl_success) return 1;
    const char *why = s == dnnl_out_of_memory      ? "out of memory"
                      : s == dnnl_unimplemented    ? "not implemented for this CPU"
                      : s == dnnl_invalid_arguments ? "invalid arguments"
                                                    : "runtime error";
    slm_kernel_fail(s == dnnl_out_of_memory ? SLM_ERR_NOMEM : s == dnnl_unimplemented ? SLM_ERR_UNSUPPORTED
                                                                                      : SLM_ERR_INTERNAL,
                    "oneDNN %s failed for a %d x %d x %d product: %s (status %d)", what, M, N, K, why, (int)s);
    return 0;
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
static int describe(dnnl_memory_desc_t *md, int rows, int cols, int transposed, int ld, dnnl_data_type_t type)
{
    dnnl_dims_t dims = {rows, cols}, strides = {ld, 1};
    if (transposed) strides[0] = 1, strides[1] = ld;
    return check(dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides), "memory descriptor", rows, cols, 0);
}

/* The primitive for one shape, built on first use and kept; NULL (failure recorded) when
 * oneDNN cannot build it. */
static matmul_entry *matmul_for(int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc, int accumulate)
{
    for (int i = 0; i < ncache; i++) {
        matmul_entry *e = &cache[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K && e->lda == lda && e->ldb == ldb &&
            e->ldc == ldc && e->accumulate == accumulate)
            return e;
    }
    if (!engine && !(check(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine", M, N, K) &&
                     check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream", M, N, K)))
        return NULL;
    matmul_entry e = {ta, tb, M, N, K, lda, ldb, ldc, accumulate, NULL, NULL, NULL, NULL};
    dnnl_memory_desc_t a, b, c;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = describe(&a, M, K, ta, lda, dnnl_bf16) && describe(&b, K, N, tb, ldb, dnnl_bf16) &&
             describe(&c, M, N, 0, ldc, dnnl_f32) &&
             check(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c), "matmul descriptor", M, N, K) &&
             check(dnnl_primitive_attr_create(&attr), "attributes", M, N, K);
    if (ok && accumulate) /* C += A B: the "sum" post-op adds what C held */
        ok = check(dnnl_post_ops_create(&ops), "post-ops", M, N, K) &&
             check(dnnl_post_ops_append_sum(ops, 1.0f), "sum post-op", M, N, K) &&
             check(dnnl_primitive_attr_set_post_ops(attr, ops), "post-ops", M, N, K);
    ok = ok && check(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL), "matmul", M, N, K) &&
         check(dnnl_primitive_create(&e.prim, pd), "matmul primitive", M, N, K) &&
         check(dnnl_memory_create(&e.a, &a, engine, DNNL_MEMORY_NONE), "memory", M, N, K) &&
         check(dnnl_memory_create(&e.b, &b, engine, DNNL_MEMORY_NONE), "memory", M, N, K) &&
         check(dnnl_memory_create(&e.c, &c, engine, DNNL_MEMORY_NONE), "memory", M, N, K);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (pd) dnnl_primitive_desc_destroy(pd);
    matmul_entry *grown = ok ? realloc(cache, (size_t)(ncache + 1) * sizeof *cache) : NULL;
    if (ok && !grown) ok = check(dnnl_out_of_memory, "primitive cache", M, N, K);
    if (!ok) {
        if (e.prim) dnnl_primitive_destroy(e.prim);
        if (e.a) dnnl_memory_destroy(e.a);
        if (e.b) dnnl_memory_destroy(e.b);
        if (e.c) dnnl_memory_destroy(e.c);
        return NULL;
    }
    cache = grown;
    cache[ncache] = e;
    return &cache[ncache++];
}

void slm_dnnl_gemm_bf16(int ta, int tb, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc)
{
    matmul_entry *e = matmul_for(ta, tb, M, N, K, lda, ldb, ldc, beta != 0.0f);
    if (!e || !check(dnnl_memory_set_data_handle(e->a, (void *)A), "memory", M, N, K) ||
        !check(dnnl_memory_set_data_handle(e->b, (void *)B), "memory", M, N, K) ||
        !check(dnnl_memory_set_data_handle(e->c, C), "memory", M, N, K))
        return;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    if (check(dnnl_primitive_execute(e->prim, stream, 3, args), "matmul", M, N, K))
        check(dnnl_stream_wait(stream), "stream", M, N, K);
}
