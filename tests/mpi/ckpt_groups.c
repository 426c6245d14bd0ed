/* ckpt_groups.c - checkpoint groups that are not the model's tensor table, for
 * tests/mpi/ckpt-groups.sh.
 *
 *   ckpt_groups save DIR   (2 ranks) writes DIR/step_000000007.h5: /params (a 2-D, a 1-D
 *                          and a 2-D tensor, split between the ranks across a tensor) and
 *                          three optimizer-like groups of other shapes: /opt_row, two short
 *                          vectors written by rank 1 alone; /opt_big, one vector of several
 *                          chunks split at an odd place; /opt_edge, a one-element and an
 *                          empty vector and a matrix whose rows are longer than a chunk,
 *                          written by rank 0 alone. Before that, arguments save refuses.
 *   ckpt_groups load DIR   (any number of ranks, 3 in the test) reads it back in other,
 *                          overlapping pieces, and checks every value; then what verify
 *                          and find accept and refuse: the optimizer, the set of groups,
 *                          a group's shapes, params_only.
 *
 * Element i of a group's index space holds VALUE(g, i), group g counted from 0 in the order
 * above; tests/mpi/ckpt-groups.sh checks the same values with h5py. Exits 0 when every check
 * passed on every rank. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/ckpt.h"

#define VALUE(g, i) ((float)((g) * 1048576 + (long)(i))) /* exact: below 2^24 */
enum { G_PARAMS, G_ROW, G_BIG, G_EDGE, NGROUPS };

static int rank, failures;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            failures++;                                               \
            fprintf(stderr, "FAIL (rank %d, line %d): ", rank, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
        }                                                             \
    } while (0)

/* A tensor held whole (no tensor parallelism) at offset of its group's index space. */
static slm_tensor_info tensor(const char *name, int64_t rows, int64_t cols, int ndim, size_t offset)
{
    slm_tensor_info t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.ndim = ndim;
    t.shape[0] = rows;
    t.shape[1] = ndim == 2 ? cols : 1;
    t.offset = t.goffset = offset;
    t.count = (size_t)rows * (size_t)t.shape[1];
    t.rows = rows;
    t.cols = t.shape[1];
    t.nruns = 1;
    t.runs[0] = (slm_row_run){0, 0, rows};
    return t;
}

/* The tables of the four groups, and the size of each index space. */
static slm_tensor_info params_t[3], row_t[2], big_t[1], edge_t[3];
static size_t group_size[NGROUPS];

static void make_tables(void)
{
    params_t[0] = tensor("a", 4, 6, 2, 0);
    params_t[1] = tensor("b", 10, 0, 1, 24);
    params_t[2] = tensor("c", 3, 5, 2, 34);
    group_size[G_PARAMS] = 49;
    row_t[0] = tensor("a", 4, 0, 1, 0); /* one value per row of the 2-D params */
    row_t[1] = tensor("c", 3, 0, 1, 4);
    group_size[G_ROW] = 7;
    big_t[0] = tensor("v", 300001, 0, 1, 0); /* 2 chunks of 2^18 and a partial one */
    group_size[G_BIG] = 300001;
    edge_t[0] = tensor("one", 1, 0, 1, 0);
    edge_t[1] = tensor("zero", 0, 0, 1, 1);
    edge_t[2] = tensor("wide", 2, 300000, 2, 1); /* rows longer than a chunk */
    group_size[G_EDGE] = 600001;
}

/* groups[] with the tables, no pieces. */
static void make_groups(slm_ckpt_group *g)
{
    const char *names[NGROUPS] = {"params", "opt_row", "opt_big", "opt_edge"};
    const slm_tensor_info *tables[NGROUPS] = {params_t, row_t, big_t, edge_t};
    const int counts[NGROUPS] = {3, 2, 1, 3};
    for (int k = 0; k < NGROUPS; k++) {
        g[k] = (slm_ckpt_group){.tensors = tables[k], .ntensors = counts[k]};
        snprintf(g[k].name, sizeof g[k].name, "%s", names[k]);
    }
}

static void make_meta(slm_ckpt_meta *m)
{
    memset(m, 0, sizeof *m);
    m->step = 7;
    m->samples = 28;
    m->tokens = 84;
    snprintf(m->optimizer, sizeof m->optimizer, "testopt");
    m->optimizer_step = 77;
    m->seed = 5;
    m->model = (slm_model_config){.arch = "gpt2", .n_layer = 1, .n_head = 1, .d_model = 4, .vocab_size = 5,
                                  .seq_len = 3};
    slm_model_config_defaults(&m->model);
    snprintf(m->layout, sizeof m->layout, "test");
    snprintf(m->config, sizeof m->config, "[test]\n");
}

/* One piece [lo, hi) of group g (hi clipped to the group), its data filled with VALUE when
 * fill, else with NaN (to be read into). */
static slm_ckpt_piece piece(int g, size_t lo, size_t hi, int fill)
{
    if (hi > group_size[g]) hi = group_size[g];
    slm_ckpt_piece p = {lo, hi - lo, malloc((hi - lo + 1) * sizeof(float))};
    for (size_t i = 0; i < p.count; i++) p.data[i] = fill ? VALUE(g, lo + i) : NAN;
    return p;
}

static int msg_has(const char *needle)
{
    return strstr(slm_error_message(), needle) != NULL;
}

static void check_refused(slm_status st, slm_status code, const char *needle, const char *what)
{
    CHECK(st == code, "%s: status %d, expected %d", what, (int)st, (int)code);
    CHECK(msg_has(needle), "%s: message '%s' lacks '%s'", what, slm_error_message(), needle);
    slm_error_clear();
}

static void save(MPI_Comm comm, const char *dir)
{
    slm_ckpt_group g[NGROUPS];
    slm_ckpt_meta *meta = malloc(sizeof *meta);
    make_groups(g);
    make_meta(meta);
    slm_ckpt_piece p[NGROUPS];
    p[G_PARAMS] = rank == 0 ? piece(G_PARAMS, 0, 30, 1) : piece(G_PARAMS, 30, 49, 1); /* splits "b" */
    p[G_ROW] = piece(G_ROW, 0, 7, 1);
    p[G_BIG] = rank == 0 ? piece(G_BIG, 0, 123457, 1) : piece(G_BIG, 123457, 300001, 1);
    p[G_EDGE] = piece(G_EDGE, 0, 600001, 1);
    for (int k = 0; k < NGROUPS; k++) {
        g[k].pieces = &p[k];
        g[k].npieces = 1;
    }
    g[G_ROW].npieces = rank == 1; /* rank 1 alone writes /opt_row, rank 0 alone /opt_edge */
    g[G_EDGE].npieces = rank == 0;

    /* refused before anything is written, alike on every rank */
    check_refused(slm_ckpt_save(comm, dir, meta, g + 1, NGROUPS - 1, 2, 0, NULL), SLM_ERR_ARG,
                  "the first group must be params", "groups without params first");
    slm_ckpt_group bad[2] = {g[0], g[1]};
    snprintf(bad[1].name, sizeof bad[1].name, "Opt-Row");
    check_refused(slm_ckpt_save(comm, dir, meta, bad, 2, 2, 0, NULL), SLM_ERR_ARG, "group name 'Opt-Row'",
                  "a group name with capitals");
    bad[1] = g[0];
    check_refused(slm_ckpt_save(comm, dir, meta, bad, 2, 2, 0, NULL), SLM_ERR_ARG, "group /params is given twice",
                  "a group given twice");

    slm_ckpt_stats stats;
    slm_status st = slm_ckpt_save(comm, dir, meta, g, NGROUPS, 2, 0, &stats);
    CHECK(st == SLM_OK, "save: %s", slm_error_message());
    for (int k = 0; k < NGROUPS; k++) free(p[k].data);
    free(meta);
}

/* Every value of the pieces equals VALUE; n: how many were checked. */
static void check_values(const slm_ckpt_group *g, int k, size_t *n)
{
    for (int i = 0; i < g[k].npieces; i++) {
        const slm_ckpt_piece *p = &g[k].pieces[i];
        size_t bad = 0, first = 0;
        for (size_t j = 0; j < p->count; j++)
            if (p->data[j] != VALUE(k, p->offset + j) && !bad++) first = j;
        CHECK(!bad, "/%s: %zu of [%zu, %zu) differ, the first at %zu: %g, expected %g", g[k].name, bad, p->offset,
              p->offset + p->count, p->offset + first, (double)p->data[first], (double)VALUE(k, p->offset + first));
        *n += p->count;
    }
}

static void load(MPI_Comm comm, const char *dir)
{
    int size;
    MPI_Comm_size(comm, &size);
    char path[4200];
    snprintf(path, sizeof path, "%s/step_000000007.h5", dir);
    slm_ckpt_group g[NGROUPS];
    slm_ckpt_meta *meta = malloc(2 * sizeof *meta), *want = meta + 1;
    make_groups(g);
    make_meta(want);

    /* what the file says of itself */
    int nparams = 0;
    CHECK(slm_ckpt_read_meta(comm, path, meta, &nparams) == SLM_OK, "read_meta: %s", slm_error_message());
    CHECK(meta->version == SLM_CKPT_VERSION && !strcmp(meta->optimizer, "testopt") && meta->optimizer_step == 77 &&
              meta->step == 7 && nparams == 3,
          "meta: version %d, optimizer %s step %ld, step %ld, %d params", meta->version, meta->optimizer,
          meta->optimizer_step, meta->step, nparams);

    /* overlapping pieces, other than those written; /opt_edge by the last rank alone */
    slm_ckpt_piece p[NGROUPS];
    p[G_PARAMS] = piece(G_PARAMS, (size_t)rank * 15, (size_t)rank * 15 + 25, 0);
    p[G_ROW] = piece(G_ROW, 0, 7, 0);
    p[G_BIG] = piece(G_BIG, (size_t)rank * 100000, (size_t)rank * 100000 + 150000, 0);
    p[G_EDGE] = piece(G_EDGE, 0, 600001, 0);
    for (int k = 0; k < NGROUPS; k++) {
        g[k].pieces = &p[k];
        g[k].npieces = 1;
    }
    g[G_EDGE].npieces = rank == size - 1;
    /* the groups in two loads: a load reads the groups it is given, the file holds more */
    slm_status st = slm_ckpt_load(comm, path, g, 3, meta, NULL);
    CHECK(st == SLM_OK, "load of params, opt_row, opt_big: %s", slm_error_message());
    st = slm_ckpt_load(comm, path, g + G_EDGE, 1, meta, NULL);
    CHECK(st == SLM_OK, "load of opt_edge: %s", slm_error_message());
    size_t n = 0;
    for (int k = 0; k < NGROUPS; k++) check_values(g, k, &n);
    printf("rank %d: %zu values read back as written\n", rank, n);

    /* verify: exactly these groups, this optimizer */
    slm_ckpt_expect x = {want, g, NGROUPS, 0};
    CHECK(slm_ckpt_verify(comm, path, &x, meta) == SLM_OK, "verify: %s", slm_error_message());
    CHECK(slm_ckpt_verify(comm, path, NULL, meta) == SLM_OK, "verify, readability only: %s", slm_error_message());
    char found[4200];
    CHECK(slm_ckpt_find(comm, dir, "", &x, found, sizeof found) == SLM_OK && !strcmp(found, path), "find: '%s' %s",
          found, slm_error_message());
    x.ngroups = NGROUPS - 1;
    check_refused(slm_ckpt_verify(comm, path, &x, meta), SLM_ERR_CONFIG,
                  "a group /opt_edge this run's optimizer does not keep", "a group the run does not keep");
    slm_ckpt_group more[NGROUPS + 1];
    memcpy(more, g, sizeof g);
    more[NGROUPS] = g[G_ROW];
    snprintf(more[NGROUPS].name, sizeof more[NGROUPS].name, "opt_col");
    x = (slm_ckpt_expect){want, more, NGROUPS + 1, 0};
    check_refused(slm_ckpt_verify(comm, path, &x, meta), SLM_ERR_CONFIG,
                  "no group /opt_col: the optimizer state was written with other settings of train.optimizer = "
                  "testopt", "a group the file lacks");
    check_refused(slm_ckpt_find(comm, dir, "", &x, found, sizeof found), SLM_ERR_CONFIG, "ckpt.reset_optimizer",
                  "find with a group the file lacks");
    slm_tensor_info row_other[2] = {row_t[0], tensor("c", 4, 0, 1, 4)};
    more[G_ROW].tensors = row_other;
    x = (slm_ckpt_expect){want, more, NGROUPS, 0};
    check_refused(slm_ckpt_verify(comm, path, &x, meta), SLM_ERR_CONFIG,
                  "/opt_row/c has shape (3), this model's is (4)", "a dataset of another shape");

    /* another optimizer: refused, unless only the parameters are resumed */
    snprintf(want->optimizer, sizeof want->optimizer, "lamb");
    x = (slm_ckpt_expect){want, g, NGROUPS, 0};
    check_refused(slm_ckpt_verify(comm, path, &x, meta), SLM_ERR_CONFIG,
                  "was written with train.optimizer = testopt, this run has lamb: set ckpt.reset_optimizer = true",
                  "another optimizer");
    x = (slm_ckpt_expect){want, g, 1, 1};
    CHECK(slm_ckpt_verify(comm, path, &x, meta) == SLM_OK, "params_only: %s", slm_error_message());
    for (int k = 0; k < NGROUPS; k++) free(p[k].data);
    free(meta);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_rank(comm, &rank);
    make_tables();
    if (argc == 3 && !strcmp(argv[1], "save")) save(comm, argv[2]);
    else if (argc == 3 && !strcmp(argv[1], "load")) load(comm, argv[2]);
    else {
        if (rank == 0) fprintf(stderr, "usage: ckpt_groups save|load DIR\n");
        failures = 1;
    }
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, comm);
    if (rank == 0) printf("%s: %d failed checks\n", total ? "FAIL" : "ok", total);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return total != 0;
}
