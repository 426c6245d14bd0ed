/* load.c - reading a checkpoint into this rank's pieces (verify.c checks it first). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"
#include "shardlm/agree.h"
#include "shardlm/timer.h"

slm_status slm_ckpt_load(MPI_Comm comm, const char *path, const slm_tensor_info *tensors, int ntensors,
                         const slm_ckpt_piece *pieces, int npieces, slm_ckpt_meta *meta, slm_ckpt_stats *stats)
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
