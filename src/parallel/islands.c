/* islands.c - one MPI job cut into islands (docs/islands.md): consecutive blocks of ranks,
 * each a whole mesh of its own, and the communicator across them that joins the ranks
 * holding the same part of the model (the same rank within their islands, so the same
 * owned chunks), over which the outer step sums the pseudo-gradients chunk by chunk. */
#include <stdlib.h>
#include <string.h>
#include "shardlm/activity.h"
#include "shardlm/kernels.h"
#include "shardlm/parallel.h"

slm_status slm_islands_split(MPI_Comm comm, int count, MPI_Comm *island, MPI_Comm *across, int *index)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    SLM_CHECK(count >= 1 && size % count == 0, SLM_ERR_CONFIG,
              "%d ranks cannot be split into islands.count = %d islands of equal size", size, count);
    const int per = size / count;
    *index = rank / per;
    MPI_Comm_split(comm, *index, rank, island);
    MPI_Comm_split(comm, rank % per, rank, across);
    return SLM_OK;
}

slm_islands_wire slm_islands_wire_named(const char *name)
{
    return !strcmp(name, "bf16") ? SLM_ISLANDS_BF16 : !strcmp(name, "int8") ? SLM_ISLANDS_INT8 : SLM_ISLANDS_FP32;
}

/* One chunk's exchange in flight: fp32 sums in place; bf16 and int8 gather every island's
 * encoded Δ and decode them in island order, so every island adds the same values in the
 * same order and ends with the same bits. */
typedef struct {
    float *d;             /* the chunk's Δ, then the islands' sum */
    MPI_Request req[2];
    void *send, *recv;    /* the encoded Δ: this island's, and every island's */
    float *scale, *scales; /* int8: this island's block scales, and every island's */
} chunk_exchange;

static void start_chunk(MPI_Comm across, int k, slm_islands_wire wire, float *d, float *e, size_t n,
                        chunk_exchange *x, slm_islands_stats *stats)
{
    x->req[0] = x->req[1] = MPI_REQUEST_NULL;
    if (wire == SLM_ISLANDS_FP32) {
        MPI_Iallreduce(MPI_IN_PLACE, d, (int)n, MPI_FLOAT, MPI_SUM, across, &x->req[0]);
        stats->bytes += 2.0 * (k - 1) / k * (double)n * sizeof(float); /* ring volume */
        return;
    }
    if (wire == SLM_ISLANDS_BF16) {
        slm_bf16_from_f32(x->send, d, n);
        MPI_Iallgather(x->send, (int)n, MPI_UINT16_T, x->recv, (int)n, MPI_UINT16_T, across, &x->req[0]);
        stats->bytes += (double)(k - 1) * (double)n * 2.0;
        return;
    }
    /* int8 with error feedback: send Δ + e, keep in e what the 8 bits could not carry */
    const size_t nb = slm_q8_blocks(n);
    for (size_t i = 0; i < n; i++) e[i] += d[i];
    slm_q8_quantize(e, n, x->send, x->scale);
    for (size_t i = 0; i < n; i++) d[i] = 0.0f;
    slm_q8_dequantize_add(x->send, x->scale, n, d);
    for (size_t i = 0; i < n; i++) e[i] -= d[i];
    MPI_Iallgather(x->send, (int)n, MPI_INT8_T, x->recv, (int)n, MPI_INT8_T, across, &x->req[0]);
    MPI_Iallgather(x->scale, (int)nb, MPI_FLOAT, x->scales, (int)nb, MPI_FLOAT, across, &x->req[1]);
    stats->bytes += (double)(k - 1) * ((double)n + 4.0 * (double)nb);
}

static void finish_chunk(int k, slm_islands_wire wire, float *d, size_t n, chunk_exchange *x)
{
    MPI_Waitall(2, x->req, MPI_STATUSES_IGNORE);
    if (wire == SLM_ISLANDS_FP32) return;
    for (size_t i = 0; i < n; i++) d[i] = 0.0f;
    for (int j = 0; j < k; j++) {
        if (wire == SLM_ISLANDS_BF16) slm_bf16_add((const uint16_t *)x->recv + (size_t)j * n, n, d);
        else slm_q8_dequantize_add((const int8_t *)x->recv + (size_t)j * n, x->scales + (size_t)j * slm_q8_blocks(n), n, d);
    }
}

static void free_chunk(chunk_exchange *x)
{
    free(x->send);
    free(x->recv);
    free(x->scale);
    free(x->scales);
}

slm_status slm_islands_outer_step(MPI_Comm across, slm_outer_t outer, slm_islands_wire wire, double *sumsq,
                                  slm_islands_stats *stats)
{
    int k = 1;
    MPI_Comm_size(across, &k);
    memset(stats, 0, sizeof *stats);
    stats->islands = k;
    const int n = slm_outer_num_chunks(outer);
    /* the buffers first, agreed by every island: none may start exchanging without them */
    chunk_exchange *x = calloc((size_t)(n ? n : 1), sizeof *x);
    int ok = x != NULL;
    const size_t elem = wire == SLM_ISLANDS_BF16 ? 2 : 1;
    for (int c = 0; ok && wire != SLM_ISLANDS_FP32 && c < n; c++) {
        const size_t cnt = slm_outer_chunk(outer, c)->count, nb = slm_q8_blocks(cnt) + 1;
        x[c].send = malloc(cnt * elem + 1);
        x[c].recv = malloc((size_t)k * cnt * elem + 1);
        if (wire == SLM_ISLANDS_INT8) {
            x[c].scale = malloc(nb * sizeof(float));
            x[c].scales = malloc((size_t)k * nb * sizeof(float));
        }
        ok = x[c].send && x[c].recv && (wire != SLM_ISLANDS_INT8 || (x[c].scale && x[c].scales));
    }
    /* the first exchange completes when the last island arrives: the wait for the others */
    slm_activity_set("islands: waiting for the other islands at the outer step", -1);
    double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, across);
    stats->wait_ms = (MPI_Wtime() - t0) * 1e3;
    if (!ok) {
        for (int c = 0; x && c < n; c++) free_chunk(&x[c]);
        free(x);
        return SLM_ERROR(SLM_ERR_NOMEM, "islands: cannot allocate the buffers of the outer step's exchange");
    }
    /* every chunk's exchange starts at once and each is applied as soon as it is complete,
     * so the updates of the first chunks run while the later ones still travel */
    slm_activity_set("islands: exchanging the pseudo-gradients", -1);
    t0 = MPI_Wtime();
    for (int c = 0; c < n; c++) {
        x[c].d = slm_outer_delta(outer, c);
        start_chunk(across, k, wire, x[c].d, slm_outer_error(outer, c), slm_outer_chunk(outer, c)->count, &x[c], stats);
    }
    slm_outer_begin(outer, 1.0f / (float)k);
    for (int c = 0; c < n; c++) {
        finish_chunk(k, wire, x[c].d, slm_outer_chunk(outer, c)->count, &x[c]);
        slm_outer_apply(outer, c, sumsq);
        free_chunk(&x[c]);
    }
    free(x);
    stats->comm_ms = (MPI_Wtime() - t0) * 1e3;
    slm_activity_set("forward and backward", -1);
    return SLM_OK;
}
