/* load.c - finding, verifying and reading checkpoints. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"
#include "shardlm/parallel.h"
#include "shardlm/log.h"
#include "shardlm/timer.h"

static hid_t open_collective(MPI_Comm comm, const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = ckpt_fapl(comm);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

/* This rank's share of the verification: meta, completeness, shapes, and reading the
 * tensors i with i % size == rank (reading checks every chunk's Fletcher32). */
static slm_status verify_local(hid_t f, const char *path, int rank, int size, const slm_ckpt_meta *expect,
                               slm_ckpt_meta *meta)
{
    SLM_CHECK(f >= 0, SLM_ERR_FORMAT, "%s: not a readable HDF5 file (truncated or corrupt)", path);
    SLM_CALL(ckpt_meta_read(f, path, meta));
    int complete = 0;
    SLM_CHECK(ckpt_attr_read(f, "complete", H5T_NATIVE_INT, &complete) >= 0 && complete == 1, SLM_ERR_FORMAT,
              "%s: the checkpoint was not completed", path);
    if (expect) {
        int a[5] = {meta->n_layer, meta->n_head, meta->d_model, meta->vocab_size, meta->seq_len};
        int b[5] = {expect->n_layer, expect->n_head, expect->d_model, expect->vocab_size, expect->seq_len};
        static const char *names[5] = {"n_layer", "n_head", "d_model", "vocab_size", "seq_len"};
        for (int i = 0; i < 5; i++)
            SLM_CHECK(a[i] == b[i], SLM_ERR_CONFIG, "%s holds a model with model.%s = %d, this run has %d", path,
                      names[i], a[i], b[i]);
    }
    int idx = 0;
    for (int g = 0; g < CK_NGROUPS; g++) {
        hid_t grp = H5Gopen2(f, ckpt_group_names[g], H5P_DEFAULT);
        SLM_CHECK(grp >= 0, SLM_ERR_FORMAT, "%s: group /%s is missing", path, ckpt_group_names[g]);
        hsize_t n = 0;
        H5Gget_num_objs(grp, &n);
        for (hsize_t i = 0; i < n; i++, idx++) {
            if (idx % size != rank) continue;
            char name[256];
            H5Gget_objname_by_idx(grp, i, name, sizeof name);
            hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT);
            hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
            hssize_t count = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
            float *buf = count > 0 ? malloc((size_t)count * sizeof(float)) : NULL;
            herr_t rc = buf ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
            free(buf);
            if (sp >= 0) H5Sclose(sp);
            if (ds >= 0) H5Dclose(ds);
            if (rc < 0) {
                H5Gclose(grp);
                return SLM_ERROR(SLM_ERR_FORMAT, "%s: /%s/%s fails its checksum or cannot be read", path,
                                 ckpt_group_names[g], name);
            }
        }
        H5Gclose(grp);
    }
    return SLM_OK;
}

slm_status slm_ckpt_verify(MPI_Comm comm, const char *path, const slm_ckpt_meta *expect, slm_ckpt_meta *meta)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    hid_t f = open_collective(comm, path);
    slm_status st = verify_local(f, path, rank, size, expect, meta);
    if (f >= 0) H5Fclose(f);
    SLM_CALL(slm_agree(comm, st));
    return SLM_OK;
}

slm_status slm_ckpt_find(MPI_Comm comm, const char *dir, const char *explicit_path, char *path, size_t len)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    path[0] = '\0';
    slm_ckpt_meta meta;
    if (explicit_path && explicit_path[0]) {
        SLM_CALL(slm_ckpt_verify(comm, explicit_path, NULL, &meta));
        snprintf(path, len, "%s", explicit_path);
        return SLM_OK;
    }
    if (!dir || !dir[0]) return SLM_OK;
    /* Rank 0 lists the directory; everyone walks the same list, newest first. */
    long steps[CKPT_MAX_LISTED];
    int n = 0;
    if (rank == 0) {
        n = ckpt_list_steps(dir, steps, CKPT_MAX_LISTED);
        if (n < 0) n = 0; /* no directory yet: a fresh run */
    }
    MPI_Bcast(&n, 1, MPI_INT, 0, comm);
    MPI_Bcast(steps, n, MPI_LONG, 0, comm);
    for (int i = 0; i < n; i++) {
        char candidate[SLM_PATH_MAX_CKPT];
        snprintf(candidate, sizeof candidate, "%s/step_%09ld.h5", dir, steps[i]);
        if (slm_ckpt_verify(comm, candidate, NULL, &meta) == SLM_OK) {
            snprintf(path, len, "%s", candidate);
            return SLM_OK;
        }
        if (rank == 0) slm_warn("skipping checkpoint: %s", slm_error_message());
        slm_error_clear();
    }
    return SLM_OK;
}

slm_status slm_ckpt_load(MPI_Comm comm, const char *path, const slm_tensor_info *tensors, int ntensors,
                         const slm_ckpt_piece *pieces, int npieces, slm_ckpt_meta *meta, slm_ckpt_stats *stats)
{
    double t0 = slm_now();
    hid_t f = open_collective(comm, path);
    slm_status st = f >= 0 ? ckpt_meta_read(f, path, meta)
                           : SLM_ERROR(SLM_ERR_IO, "cannot open checkpoint %s", path);
    SLM_CALL(slm_agree(comm, st));
    hid_t dxpl = ckpt_dxpl_collective();
    int ok = 1;
    double bytes = 0.0;
    for (int g = 0; g < CK_NGROUPS; g++) {
        hid_t grp = H5Gopen2(f, ckpt_group_names[g], H5P_DEFAULT);
        for (int i = 0; i < ntensors; i++) {
            const slm_tensor_info *t = &tensors[i];
            hid_t ds = grp >= 0 ? H5Dopen2(grp, t->name, H5P_DEFAULT) : -1;
            hid_t fspace = ds >= 0 ? H5Dget_space(ds) : -1;
            if (fspace < 0 || H5Sget_simple_extent_npoints(fspace) != (hssize_t)slm_tensor_global_count(t)) {
                ok = 0; /* every rank sees the same file: all fail alike, no collective mismatch */
                if (fspace >= 0) H5Sclose(fspace);
                if (ds >= 0) H5Dclose(ds);
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: /%s/%s is missing or has another shape", path,
                               ckpt_group_names[g], t->name);
                break;
            }
            float *mem;
            size_t cnt;
            hid_t mspace = ckpt_select_piece(fspace, t, pieces, npieces, g, &mem, &cnt);
            bytes += 4.0 * (double)cnt;
            if (H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, mem) < 0 && ok) {
                ok = 0;
                st = SLM_ERROR(SLM_ERR_FORMAT, "%s: reading /%s/%s failed (checksum?)", path, ckpt_group_names[g],
                               t->name);
            }
            H5Sclose(mspace);
            H5Sclose(fspace);
            H5Dclose(ds);
        }
        if (grp >= 0) H5Gclose(grp);
        if (!ok) break;
    }
    H5Pclose(dxpl);
    H5Fclose(f);
    SLM_CALL(slm_agree(comm, st));
    if (stats) {
        stats->seconds = slm_now() - t0;
        stats->bytes = bytes;
    }
    return SLM_OK;
}
