/* load.c - reading a checkpoint's groups into this rank's pieces (verify.c checks it
 * first). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"
#include "shardlm/agree.h"
#include "shardlm/timer.h"

/* This rank's pieces of dataset t of group g (open as grp); *bytes grows by what was read.
 * Every rank sees the same file, so a missing dataset fails on all of them alike, before
 * the collective read. With take = 0 the rank reads nothing of its own but still takes
 * part (after a failure of its own, whose message stands). */
static slm_status read_tensor(hid_t grp, const char *path, const slm_ckpt_group *g, const slm_tensor_info *t,
                              int take, hid_t dxpl, double *bytes)
{
    hid_t ds = grp >= 0 ? H5Dopen2(grp, t->name, H5P_DEFAULT) : -1;
    hid_t fspace = ds >= 0 ? H5Dget_space(ds) : -1;
    if (fspace < 0 || H5Sget_simple_extent_npoints(fspace) != (hssize_t)slm_tensor_global_count(t)) {
        if (fspace >= 0) H5Sclose(fspace);
        if (ds >= 0) H5Dclose(ds);
        SLM_CHECK(!take, SLM_ERR_FORMAT, "%s: /%s/%s is missing or has another shape", path, g->name, t->name);
        return SLM_ERR_FORMAT;
    }
    float *mem;
    size_t cnt;
    hid_t mspace = ckpt_select_piece(fspace, t, g->pieces, take ? g->npieces : 0, &mem, &cnt);
    *bytes += 4.0 * (double)cnt;
    /* nothing to read from an empty dataset (it has no storage); all ranks skip it alike */
    const herr_t rc = slm_tensor_global_count(t) ? H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, mem) : 0;
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(ds);
    SLM_CHECK(rc >= 0 || !take, SLM_ERR_FORMAT, "%s: reading /%s/%s failed (checksum?)", path, g->name, t->name);
    return rc >= 0 ? SLM_OK : SLM_ERR_FORMAT;
}

slm_status slm_ckpt_load(MPI_Comm comm, const char *path, const slm_ckpt_group *groups, int ngroups,
                         slm_ckpt_meta *meta, slm_ckpt_stats *stats)
{
    double t0 = slm_now();
    hid_t f = ckpt_open_collective(comm, path);
    slm_status st = f >= 0 ? ckpt_meta_read(f, path, meta)
                           : SLM_ERROR(SLM_ERR_IO, "cannot open checkpoint %s", path);
    if ((st = slm_agree(comm, st)) != SLM_OK) {
        if (f >= 0) H5Fclose(f);
        return slm_error_push(st, __FILE__, __LINE__, __func__);
    }
    hid_t dxpl = ckpt_dxpl_collective();
    double bytes = 0.0;
    /* A read can fail on one rank alone (a damaged chunk only it reads): every rank goes
     * through every dataset all the same, so the collective reads stay matched, and the
     * ranks agree on the first failure at the end. */
    for (int g = 0; g < ngroups; g++) {
        hid_t grp = H5Gopen2(f, groups[g].name, H5P_DEFAULT);
        for (int i = 0; i < groups[g].ntensors; i++) {
            slm_status s = read_tensor(grp, path, &groups[g], &groups[g].tensors[i], st == SLM_OK, dxpl, &bytes);
            if (st == SLM_OK) st = s;
        }
        if (grp >= 0) H5Gclose(grp);
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
