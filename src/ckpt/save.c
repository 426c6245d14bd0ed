/* save.c - writing a checkpoint: collective HDF5 through MPI-IO, then the commit.
 *
 * Commit protocol (a crash at any point leaves the previous checkpoint in place):
 *   1. every rank writes its hyperslabs into dir/.step_N.h5.tmp; the file is flushed with
 *      MPI_File_sync (H5Fflush, global scope) and closed;
 *   2. rank 0 fsyncs the file, renames it to dir/step_N.h5 and fsyncs the directory;
 *   3. rank 0 writes dir/latest.tmp naming it, fsyncs, renames it over dir/latest, fsyncs
 *      the directory; only now does a restart see the new checkpoint;
 *   4. rank 0 applies retention.
 * Every dataset (but an empty one) is stored chunked with HDF5's Fletcher32 filter, so
 * each chunk carries a checksum that every reader (shardlm, h5py, h5dump) checks; the
 * file is written in the HDF5 1.10 format, whose superblock, object headers, link and
 * attribute storage carry checksums too; and meta_digest covers the attributes and the
 * list of tensors. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "ckpt_impl.h"
#include "shardlm/agree.h"
#include "shardlm/timer.h"

/* Chunks of about 1 MiB (2^18 floats): whole rows of a matrix whose rows fit, else parts
 * of one row; a vector in pieces of that size. A dataset with no elements has no chunk
 * (HDF5 wants chunks of at least one element, within the dataset's extent) and nothing
 * to checksum: it is stored contiguous. */
#define CKPT_CHUNK_FLOATS ((hsize_t)1 << 18)

static hid_t dataset_plist(int ndim, const hsize_t *dims)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dims[0] == 0 || (ndim == 2 && dims[1] == 0)) return dcpl;
    hsize_t chunk[2];
    const hsize_t last = dims[ndim - 1] < CKPT_CHUNK_FLOATS ? dims[ndim - 1] : CKPT_CHUNK_FLOATS;
    chunk[ndim - 1] = last;
    if (ndim == 2) {
        hsize_t rows = CKPT_CHUNK_FLOATS / last;
        chunk[0] = rows > dims[0] ? dims[0] : rows;
    }
    H5Pset_chunk(dcpl, ndim, chunk);
    H5Pset_fletcher32(dcpl);
    return dcpl;
}

/* Links and attributes stay in their object's header (compact storage) at any count: the
 * header is one checksummed block, read whole. Past 8 entries HDF5 would otherwise move
 * them to dense storage (a fractal heap and a B-tree), and HDF5 1.10.8 aborts the process
 * on a damaged dense link store (it frees a half-built table while listing a group)
 * where a damaged header is a clean error. 65535 is the most the format allows. */
#define CKPT_MAX_COMPACT 65535u

static hid_t file_plist(void)
{
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_attr_phase_change(fcpl, CKPT_MAX_COMPACT, CKPT_MAX_COMPACT);
    H5Pset_link_phase_change(fcpl, CKPT_MAX_COMPACT, CKPT_MAX_COMPACT);
    return fcpl;
}

static hid_t group_plist(void)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_phase_change(gcpl, CKPT_MAX_COMPACT, CKPT_MAX_COMPACT);
    return gcpl;
}

static int write_tensor(hid_t group, const slm_tensor_info *t, const slm_ckpt_group *g, hid_t dxpl)
{
    const hsize_t dims[2] = {(hsize_t)t->shape[0], t->ndim == 2 ? (hsize_t)t->shape[1] : 1};
    hid_t fspace = H5Screate_simple(t->ndim, dims, NULL);
    hid_t dcpl = dataset_plist(t->ndim, dims);
    hid_t ds = H5Dcreate2(group, t->name, H5T_IEEE_F32LE, fspace, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    int ok = ds >= 0;
    float *mem;
    size_t count;
    hid_t mspace = ckpt_select_piece(fspace, t, g->pieces, g->npieces, &mem, &count);
    /* an empty dataset has no storage to write to (HDF5 fails a collective write of nothing
     * there); every rank skips it alike, as the shape is the same on all */
    if (ok && slm_tensor_global_count(t) > 0) ok = H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, mem) >= 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return ok;
}

/* Every group's datasets, collectively; 1 if all ranks succeeded. */
static int write_groups(MPI_Comm comm, hid_t file, const slm_ckpt_group *groups, int ngroups, double *bytes)
{
    hid_t dxpl = ckpt_dxpl_collective();
    int ok = 1;
    for (int g = 0; g < ngroups && ok; g++) {
        hid_t gcpl = group_plist();
        hid_t grp = H5Gcreate2(file, groups[g].name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
        ok = slm_all_ok(comm, grp >= 0);
        for (int i = 0; i < groups[g].ntensors && ok; i++) {
            ok = slm_all_ok(comm, write_tensor(grp, &groups[g].tensors[i], &groups[g], dxpl));
            *bytes += 4.0 * (double)groups[g].tensors[i].count;
        }
        if (grp >= 0) H5Gclose(grp);
    }
    H5Pclose(dxpl);
    return ok;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Rank 0's part of the commit: durable file, rename, durable pointer. */
static slm_status commit(const char *dir, const char *tmp, const char *final, const char *name)
{
    SLM_CHECK(fsync_path(tmp, O_RDONLY) == 0, SLM_ERR_IO, "checkpoint %s: fsync failed: %s", tmp, strerror(errno));
    SLM_CHECK(rename(tmp, final) == 0, SLM_ERR_IO, "checkpoint: cannot rename %s to %s: %s", tmp, final,
              strerror(errno));
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
    char latest[SLM_PATH_MAX_CKPT], latest_tmp[SLM_PATH_MAX_CKPT];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    snprintf(latest_tmp, sizeof latest_tmp, "%s/latest.tmp", dir);
    FILE *f = fopen(latest_tmp, "w");
    SLM_CHECK(f, SLM_ERR_IO, "checkpoint: cannot write %s: %s", latest_tmp, strerror(errno));
    int ok = fprintf(f, "%s\n", name) > 0;
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    SLM_CHECK(ok, SLM_ERR_IO, "checkpoint: cannot write %s: %s", latest_tmp, strerror(errno));
    SLM_CHECK(rename(latest_tmp, latest) == 0, SLM_ERR_IO, "checkpoint: cannot move %s into place: %s",
              latest_tmp, strerror(errno));
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
    return SLM_OK;
}

/* Step number of a committed checkpoint file name, or -1. */
long slm_ckpt_step_of(const char *name)
{
    long step;
    int end = 0;
    if (sscanf(name, "step_%ld.h5%n", &step, &end) == 1 && end > 0 && name[end] == '\0') return step;
    return -1;
}

/* Newest `keep` stay, and every multiple of keep_every; unfinished temporaries go. */
static void retain(const char *dir, int keep, long keep_every, long current)
{
    char path[SLM_PATH_MAX_CKPT];
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        long t;
        if (sscanf(e->d_name, ".step_%ld.h5.tmp", &t) == 1 && t != current) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d) closedir(d);
    long steps[SLM_CKPT_MAX_LISTED];
    int n = slm_ckpt_list_steps(dir, steps, SLM_CKPT_MAX_LISTED);
    for (int i = keep > 0 ? keep : 1; i < n; i++) {
        if (keep_every > 0 && steps[i] % keep_every == 0) continue;
        snprintf(path, sizeof path, "%s/step_%09ld.h5", dir, steps[i]);
        unlink(path);
    }
}

/* Bytes a checkpoint file takes, generously: the tensors at their global sizes, a share
 * for chunk checksums and indexes, and the metadata. */
static double estimate_bytes(const slm_ckpt_group *groups, int ngroups)
{
    double need = 64 * 1024.0;
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; i < groups[g].ntensors; i++)
            need += 4.0 * (double)slm_tensor_global_count(&groups[g].tensors[i]) * 1.05 + 4096.0;
    return need;
}

/* Rank 0, before anything is written: is there room for the checkpoint? Running out of
 * space in the middle of a collective write is what must not happen (HDF5 cannot recover
 * a file it failed to flush), so the file's blocks are also reserved up front (reserve). */
static slm_status check_space(const char *dir, double need)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) return SLM_OK; /* cannot tell: try */
    double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
    SLM_CHECK(avail >= need, SLM_ERR_IO,
              "checkpoint: %s has %.1f MB free, a checkpoint needs about %.1f MB; the previous checkpoint is "
              "untouched", dir, avail / 1e6, need / 1e6);
    return SLM_OK;
}

/* Rank 0: reserve the file's blocks now (beyond its end, size unchanged), so the writes
 * that follow cannot run out of space. */
static slm_status reserve(const char *tmp, double need)
{
    int fd = open(tmp, O_WRONLY);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "checkpoint: cannot open %s: %s", tmp, strerror(errno));
    int rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)need);
    int err = errno;
    close(fd);
    SLM_CHECK(rc == 0 || err == EOPNOTSUPP, SLM_ERR_IO,
              "checkpoint: cannot reserve %.1f MB for %s: %s; the previous checkpoint is untouched", need / 1e6,
              tmp, strerror(err));
    return SLM_OK;
}

/* After a failed write: close what HDF5 lets us close and remove the temporary. */
static void abandon(MPI_Comm comm, hid_t file, const char *tmp)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (file >= 0) H5Fclose(file);
    if (rank == 0) unlink(tmp);
}

/* What the caller passes is the same on every rank, so these checks fail alike on all of
 * them, before any collective. */
static slm_status check_args(const slm_ckpt_meta *meta, const slm_ckpt_group *groups, int ngroups)
{
    SLM_CHECK(ngroups >= 1 && !strcmp(groups[0].name, "params"), SLM_ERR_ARG,
              "checkpoint: the first group must be params (got %d groups, the first '%s')", ngroups,
              ngroups >= 1 ? groups[0].name : "");
    SLM_CHECK(ckpt_group_name_ok(meta->optimizer) && strlen(meta->optimizer) < sizeof meta->optimizer, SLM_ERR_ARG,
              "checkpoint: optimizer = '%.*s' is not an optimizer's name (1 to %zu of a-z, 0-9 and _)",
              (int)sizeof meta->optimizer, meta->optimizer, sizeof meta->optimizer - 1);
    for (int g = 0; g < ngroups; g++) {
        const slm_ckpt_group *gr = &groups[g];
        SLM_CHECK(ckpt_group_name_ok(gr->name), SLM_ERR_ARG,
                  "checkpoint: group name '%.*s' (group %d) is not 1 to 31 of a-z, 0-9 and _", (int)sizeof gr->name,
                  gr->name, g);
        for (int k = 0; k < g; k++)
            SLM_CHECK(strcmp(groups[k].name, gr->name), SLM_ERR_ARG, "checkpoint: group /%s is given twice",
                      gr->name);
        for (int i = 0; i < gr->ntensors; i++) {
            const slm_tensor_info *t = &gr->tensors[i];
            SLM_CHECK((t->ndim == 1 || t->ndim == 2) && t->shape[0] >= 0 && (t->ndim == 1 || t->shape[1] >= 0),
                      SLM_ERR_ARG, "checkpoint: /%s/%s has %d dimensions (1 or 2 are stored)", gr->name, t->name,
                      t->ndim);
        }
    }
    return SLM_OK;
}

slm_status slm_ckpt_save(MPI_Comm comm, const char *dir, const slm_ckpt_meta *meta, const slm_ckpt_group *groups,
                         int ngroups, int keep, long keep_every, slm_ckpt_stats *stats)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    double t0 = slm_now();
    SLM_CALL(check_args(meta, groups, ngroups));
    slm_status st = SLM_OK;
    if (rank == 0 && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = SLM_ERROR(SLM_ERR_IO, "ckpt.dir: cannot create %s: %s", dir, strerror(errno));
    const double need = estimate_bytes(groups, ngroups);
    if (rank == 0 && st == SLM_OK) st = check_space(dir, need);
    SLM_CALL(slm_agree(comm, st));
    char name[64], tmp[SLM_PATH_MAX_CKPT], final[SLM_PATH_MAX_CKPT];
    snprintf(name, sizeof name, "step_%09ld.h5", meta->step);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    snprintf(final, sizeof final, "%s/%s", dir, name);

    slm_hdf5_errors_off(); /* failures become our messages below */
    hid_t fapl = ckpt_fapl_create(comm), fcpl = file_plist();
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    /* collective writes fail together: one rank giving up while the others go on to the
     * next collective would hang them */
    int ok = slm_all_ok(comm, file >= 0);
    if (!ok) {
        abandon(comm, file, tmp);
        st = SLM_ERROR(SLM_ERR_IO, "checkpoint: cannot create %s", tmp);
    } else if (rank == 0) {
        st = reserve(tmp, need);
    }
    if (slm_agree(comm, st) != SLM_OK) {
        if (ok) abandon(comm, file, tmp);
        return slm_error_push(SLM_ERR_IO, __FILE__, __LINE__, __func__);
    }
    double bytes = 0.0;
    ok = write_groups(comm, file, groups, ngroups, &bytes);
    ckpt_manifest man = {NULL, 0, NULL, 0};
    if (ok) ok = slm_all_ok(comm, ckpt_manifest_of(groups, ngroups, &man) == SLM_OK);
    if (ok) ok = slm_all_ok(comm, ckpt_meta_write(file, meta, &man) >= 0);
    ckpt_manifest_free(&man);
    int complete = 1;
    if (ok) ok = slm_all_ok(comm, ckpt_attr_write(file, "complete", H5T_NATIVE_INT, &complete) >= 0);
    if (ok) ok = slm_all_ok(comm, H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0);
    if (ok) {
        ok = slm_all_ok(comm, H5Fclose(file) >= 0);
        file = -1;
    }
    if (!ok) {
        abandon(comm, file, tmp);
        st = SLM_ERROR(SLM_ERR_IO, "checkpoint: writing %s failed (disk full or unwritable?); the previous "
                       "checkpoint is untouched", tmp);
    }
    SLM_CALL(slm_agree(comm, st));
    if (rank == 0) {
        st = commit(dir, tmp, final, name);
        if (st == SLM_OK) retain(dir, keep, keep_every, meta->step);
    }
    SLM_CALL(slm_agree(comm, st));
    if (stats) {
        stats->seconds = slm_now() - t0;
        stats->bytes = bytes;
    }
    return SLM_OK;
}
