/* verify.c - checking a checkpoint, and finding the newest good one to resume from.
 *
 * The checks run in the order that gives the most telling message: a readable HDF5 file
 * (from version 2 on HDF5 checks its own metadata checksums as it reads); every metadata
 * attribute; `complete`; the groups at the root; the manifest (every dataset's group,
 * name, shape and type); from version 2 on the meta_digest over attributes and manifest -
 * so damage is reported as damage before it can pass for another model; then the model
 * shape, the optimizer and the groups the caller expects; and last every tensor's data,
 * read in shares by the ranks (reading checks each chunk's Fletcher32). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"
#include "shardlm/log.h"
#include "shardlm/agree.h"

slm_status ckpt_check_file(hid_t f, const char *path, slm_ckpt_meta *meta, ckpt_manifest *man)
{
    *man = (ckpt_manifest){NULL, 0, NULL, 0};
    SLM_CALL(ckpt_meta_read(f, path, meta));
    int complete = 0;
    SLM_CHECK(ckpt_attr_read(f, "complete", H5T_NATIVE_INT, &complete) >= 0 && complete == 1, SLM_ERR_FORMAT,
              "%s: the checkpoint was not completed", path);
    SLM_CALL(ckpt_manifest_read(f, path, meta->version, man));
    if (meta->version < 2) return SLM_OK; /* version 1 has no digest */
    uint32_t stored = 0, computed = ckpt_meta_digest(meta, meta->version, man);
    slm_status st = SLM_OK;
    if (ckpt_attr_read(f, "meta_digest", H5T_NATIVE_UINT32, &stored) < 0)
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: the attribute 'meta_digest' is missing or unreadable", path);
    else if (stored != computed)
        st = SLM_ERROR(SLM_ERR_FORMAT, "%s: the metadata digest does not match (stored %08x, computed %08x): an "
                       "attribute or the list of tensors changed after the checkpoint was written", path,
                       (unsigned)stored, (unsigned)computed);
    if (st != SLM_OK) ckpt_manifest_free(man);
    return st;
}

/* Why path did not open as an HDF5 file. */
static slm_status not_opened(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return SLM_ERROR(SLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(fp);
    return SLM_ERROR(SLM_ERR_FORMAT, "%s: not a readable HDF5 file (truncated or corrupt)", path);
}

static slm_status check_shape(const char *path, const slm_ckpt_meta *meta, const slm_ckpt_meta *want)
{
    char why[256];
    SLM_CHECK(slm_model_config_same(&meta->model, &want->model, why, sizeof why), SLM_ERR_CONFIG,
              "%s holds a model with %s", path, why);
    return SLM_OK;
}

/* Read the datasets i with i % size == rank in full (checking every chunk's checksum). */
static slm_status read_share(hid_t f, const char *path, const ckpt_manifest *man, int rank, int size)
{
    for (int i = rank; i < man->n; i += size) {
        const ckpt_entry *e = &man->e[i];
        hid_t grp = H5Gopen2(f, e->group, H5P_DEFAULT);
        hid_t ds = grp >= 0 ? H5Dopen2(grp, e->name, H5P_DEFAULT) : -1;
        hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hssize_t count = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        float *buf = count > 0 ? malloc((size_t)count * sizeof(float)) : NULL;
        herr_t rc = count == 0 ? 0 : buf ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
        free(buf);
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
        if (grp >= 0) H5Gclose(grp);
        char shown[256];
        SLM_CHECK(rc >= 0, SLM_ERR_FORMAT, "%s: /%s/%s fails its checksum or cannot be read", path, e->group,
                  ckpt_printable(e->name, shown, sizeof shown));
    }
    return SLM_OK;
}

static slm_status verify_local(hid_t f, const char *path, int rank, int size, const slm_ckpt_expect *expect,
                               slm_ckpt_meta *meta)
{
    if (f < 0) return not_opened(path);
    ckpt_manifest man;
    SLM_CALL(ckpt_check_file(f, path, meta, &man));
    slm_status st = SLM_OK;
    if (expect && expect->shape) st = check_shape(path, meta, expect->shape);
    /* With the digest intact, a table that differs is another model's (a configuration
     * error); without a digest (version 1) it is taken for damage. */
    if (st == SLM_OK && expect)
        st = ckpt_expect_check(&man, meta, expect, path, meta->version >= 2 ? SLM_ERR_CONFIG : SLM_ERR_FORMAT);
    if (st == SLM_OK) st = read_share(f, path, &man, rank, size);
    ckpt_manifest_free(&man);
    return st;
}

slm_status slm_ckpt_verify(MPI_Comm comm, const char *path, const slm_ckpt_expect *expect, slm_ckpt_meta *meta)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    hid_t f = ckpt_open_collective(comm, path);
    slm_status st = verify_local(f, path, rank, size, expect, meta);
    if (f >= 0) H5Fclose(f);
    SLM_CALL(slm_agree(comm, st));
    return SLM_OK;
}

slm_status slm_ckpt_read_meta(MPI_Comm comm, const char *path, slm_ckpt_meta *meta, int *ntensors)
{
    hid_t f = ckpt_open_collective(comm, path);
    ckpt_manifest man = {NULL, 0, NULL, 0};
    slm_status st = f >= 0 ? ckpt_check_file(f, path, meta, &man) : not_opened(path);
    const int params = ckpt_manifest_group(&man, "params");
    int first;
    *ntensors = params >= 0 ? ckpt_manifest_entries(&man, params, &first) : 0;
    ckpt_manifest_free(&man);
    if (f >= 0) H5Fclose(f);
    SLM_CALL(slm_agree(comm, st));
    return SLM_OK;
}

slm_status slm_ckpt_find(MPI_Comm comm, const char *dir, const char *explicit_path, const slm_ckpt_expect *expect,
                         char *path, size_t len)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    path[0] = '\0';
    slm_ckpt_meta *meta = malloc(sizeof *meta); /* 16 kB of configuration text */
    SLM_CALL(slm_agree(comm, meta ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "checkpoint: out of memory")));
    slm_status st = SLM_OK;
    if (explicit_path && explicit_path[0]) {
        st = slm_ckpt_verify(comm, explicit_path, expect, meta);
        if (st == SLM_OK) snprintf(path, len, "%s", explicit_path);
        free(meta);
        SLM_CALL(st);
        return SLM_OK;
    }
    if (!dir || !dir[0]) {
        free(meta);
        return SLM_OK;
    }
    /* Rank 0 lists the directory; everyone walks the same list, newest first. */
    long steps[SLM_CKPT_MAX_LISTED];
    int n = 0;
    if (rank == 0) {
        n = slm_ckpt_list_steps(dir, steps, SLM_CKPT_MAX_LISTED);
        if (n < 0) n = 0; /* no directory yet: a fresh run */
    }
    MPI_Bcast(&n, 1, MPI_INT, 0, comm);
    MPI_Bcast(steps, n, MPI_LONG, 0, comm);
    for (int i = 0; i < n; i++) {
        char candidate[SLM_PATH_MAX_CKPT];
        snprintf(candidate, sizeof candidate, "%s/step_%09ld.h5", dir, steps[i]);
        st = slm_ckpt_verify(comm, candidate, expect, meta);
        if (st == SLM_OK) {
            snprintf(path, len, "%s", candidate);
            break;
        }
        if (st == SLM_ERR_CONFIG) break; /* intact, but not this run's model: no silent fresh start */
        if (rank == 0) slm_warn("skipping checkpoint: %s", slm_error_message());
        slm_error_clear();
        st = SLM_OK;
    }
    free(meta);
    SLM_CALL(st);
    return SLM_OK;
}
