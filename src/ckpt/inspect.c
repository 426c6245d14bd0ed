/* inspect.c - reading what a checkpoint holds without loading it: `shardlm ckpt`. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "ckpt_impl.h"

static double entry_count(const ckpt_entry *e)
{
    double count = 1.0;
    for (int d = 0; d < e->ndim; d++) count *= (double)e->dims[d];
    return count;
}

static void print_meta(FILE *out, const char *path, const slm_ckpt_meta *m)
{
    fprintf(out, "checkpoint %s\n", path);
    fprintf(out, "  format   %s version %d\n", SLM_CKPT_FORMAT, m->version);
    fprintf(out, "  step     %ld (optimizer %s, step %ld), %lld samples, %lld tokens\n", m->step, m->optimizer,
            m->optimizer_step, m->samples, m->tokens);
    char json[2048] = "";
    slm_model_config_to_json(&m->model, json, sizeof json);
    fprintf(out, "  model    %s n_layer=%d n_head=%d d_model=%d vocab_size=%d seq_len=%d, seed %llu\n", m->model.arch,
            m->model.n_layer, m->model.n_head, m->model.d_model, m->model.vocab_size, m->model.seq_len,
            (unsigned long long)m->seed);
    fprintf(out, "  config   %s\n", json);
    fprintf(out, "  layout   %s\n", m->layout);
    if (m->matmul[0]) fprintf(out, "  matmul   %s\n", m->matmul);
}

/* Every tensor of /params with its shape, then one line per group. */
static void print_groups(FILE *out, const ckpt_manifest *man)
{
    int width = 8;
    for (int g = 0; g < man->ngroups; g++)
        if ((int)strlen(man->groups[g]) > width) width = (int)strlen(man->groups[g]);
    double total = 0.0;
    for (int g = 0; g < man->ngroups; g++) {
        int first;
        const int n = ckpt_manifest_entries(man, g, &first);
        const int params = !strcmp(man->groups[g], "params");
        double group_total = 0.0;
        for (int i = first; i < first + n; i++) {
            const ckpt_entry *e = &man->e[i];
            group_total += entry_count(e);
            if (!params) continue;
            char shape[64], shown[256];
            if (e->ndim == 2) snprintf(shape, sizeof shape, "(%llu, %llu)", (unsigned long long)e->dims[0],
                                       (unsigned long long)e->dims[1]);
            else snprintf(shape, sizeof shape, "(%llu)", e->ndim == 1 ? (unsigned long long)e->dims[0] : 1ull);
            fprintf(out, "  %-40s %-16s %12.0f  %s\n", ckpt_printable(e->name, shown, sizeof shown), shape,
                    entry_count(e), e->f32 ? "float32" : "other");
        }
        total += group_total;
        fprintf(out, "  /%-*s %d tensors, %.0f values (%.1f MB)\n", width, man->groups[g], n, group_total,
                group_total * 4 / 1e6);
    }
    fprintf(out, "  total    %.1f MB of float32\n", total * 4 / 1e6);
}

slm_status slm_ckpt_inspect(MPI_Comm comm, const char *path, FILE *out)
{
    hid_t f = ckpt_open_collective(comm, path);
    SLM_CHECK(f >= 0, SLM_ERR_FORMAT, "%s: not a readable HDF5 file", path);
    slm_ckpt_meta *m = malloc(sizeof *m); /* 16 kB of configuration text */
    ckpt_manifest man = {NULL, 0, NULL, 0};
    slm_status st = m ? ckpt_meta_read(f, path, m) : SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    if (st == SLM_OK) st = ckpt_manifest_read(f, path, m->version, &man);
    H5Fclose(f);
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (st == SLM_OK && rank == 0) {
        print_meta(out, path, m);
        print_groups(out, &man);
    }
    ckpt_manifest_free(&man);
    free(m);
    SLM_CALL(st);
    return SLM_OK;
}

slm_status slm_ckpt_list(const char *dir, FILE *out)
{
    long steps[SLM_CKPT_MAX_LISTED];
    int n = slm_ckpt_list_steps(dir, steps, SLM_CKPT_MAX_LISTED);
    SLM_CHECK(n >= 0, SLM_ERR_IO, "cannot open checkpoint directory %s", dir);
    char latest[256] = "", path[SLM_PATH_MAX_CKPT];
    snprintf(path, sizeof path, "%s/latest", dir);
    FILE *lf = fopen(path, "r");
    if (lf) {
        if (!fgets(latest, sizeof latest, lf)) latest[0] = '\0';
        latest[strcspn(latest, "\n")] = '\0';
        fclose(lf);
    }
    fprintf(out, "%-22s %10s %12s\n", "checkpoint", "step", "MB");
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "step_%09ld.h5", steps[i]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat st;
        double mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
        fprintf(out, "%-22s %10ld %12.1f%s\n", name, steps[i], mb, strcmp(name, latest) ? "" : "  <- latest");
    }
    if (n == 0) fprintf(out, "(no checkpoints in %s)\n", dir);
    return SLM_OK;
}
