/* inspect.c - reading what a checkpoint holds without loading it: `shardlm ckpt`. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "ckpt_impl.h"

slm_status slm_ckpt_inspect(MPI_Comm comm, const char *path, FILE *out)
{
    slm_hdf5_errors_off();
    hid_t fapl = ckpt_fapl(comm);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    SLM_CHECK(f >= 0, SLM_ERR_FORMAT, "%s: not a readable HDF5 file", path);
    slm_ckpt_meta m;
    slm_status st = ckpt_meta_read(f, path, &m);
    if (st != SLM_OK) {
        H5Fclose(f);
        return slm_error_push(st, __FILE__, __LINE__, __func__);
    }
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        fprintf(out, "checkpoint %s\n", path);
        fprintf(out, "  format   %s version %d\n", SLM_CKPT_FORMAT, m.version);
        fprintf(out, "  step     %ld (AdamW step %ld), %lld samples, %lld tokens\n", m.step, m.adam_t, m.samples,
                m.tokens);
        char json[2048] = "";
        slm_model_config_to_json(&m.model, json, sizeof json);
        fprintf(out, "  model    %s n_layer=%d n_head=%d d_model=%d vocab_size=%d seq_len=%d, seed %llu\n", m.model.arch,
                m.model.n_layer, m.model.n_head, m.model.d_model, m.model.vocab_size, m.model.seq_len,
                (unsigned long long)m.seed);
        fprintf(out, "  config   %s\n", json);
        fprintf(out, "  layout   %s\n", m.layout);
        if (m.matmul[0]) fprintf(out, "  matmul   %s\n", m.matmul);
    }
    double total = 0.0;
    hsize_t n = 0;
    for (int g = 0; g < CK_NGROUPS; g++) {
        hid_t grp = H5Gopen2(f, ckpt_group_names[g], H5P_DEFAULT);
        if (grp < 0) continue;
        H5Gget_num_objs(grp, &n);
        double group_total = 0.0;
        for (hsize_t i = 0; i < n; i++) {
            char name[256];
            H5Gget_objname_by_idx(grp, i, name, sizeof name);
            hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT);
            hid_t sp = H5Dget_space(ds);
            hsize_t dims[2] = {0, 0};
            int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
            double count = (double)dims[0] * (nd == 2 ? (double)dims[1] : 1.0);
            group_total += count;
            if (rank == 0 && g == CK_PARAMS) {
                char shape[64];
                if (nd == 2) snprintf(shape, sizeof shape, "(%llu, %llu)", (unsigned long long)dims[0],
                                      (unsigned long long)dims[1]);
                else snprintf(shape, sizeof shape, "(%llu)", (unsigned long long)dims[0]);
                fprintf(out, "  %-40s %-16s %12.0f  float32\n", name, shape, count);
            }
            H5Sclose(sp);
            H5Dclose(ds);
        }
        total += group_total;
        if (rank == 0)
            fprintf(out, "  /%-8s %zu tensors, %.0f values (%.1f MB)\n", ckpt_group_names[g], (size_t)n, group_total,
                    group_total * 4 / 1e6);
        H5Gclose(grp);
    }
    if (rank == 0) fprintf(out, "  total    %.1f MB of float32\n", total * 4 / 1e6);
    H5Fclose(f);
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
