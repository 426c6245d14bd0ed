/* ckpt_impl.h - helpers shared by the checkpoint writer and reader. */
#ifndef SHARDLM_CKPT_IMPL_H
#define SHARDLM_CKPT_IMPL_H

#include <hdf5.h>
#include "shardlm/ckpt.h"

/* A group name as a version-4 file may use it at its root: 1 to 31 of [a-z0-9_]. */
int ckpt_group_name_ok(const char *name);
/* The order of groups in a file's tensor list: params first, then by name (bytewise). */
int ckpt_group_cmp(const char *a, const char *b);

/* This rank's part of tensor t: the piece overlapping it (at most one), as a flat range
 * [lo, hi) relative to the tensor and the memory it maps to. Returns 0 if there is none. */
int ckpt_overlap(const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces, size_t *lo, size_t *hi,
                 float **mem);
/* Select the flat range [lo, hi) of a row-major dataset of shape t->shape in space. */
void ckpt_select_range(hid_t space, const slm_tensor_info *t, size_t lo, size_t hi);

/* Select this rank's part of tensor t of a group with these pieces in fspace and return
 * the matching memory space; *mem and *count say where and how much (NULL and 0 when the
 * rank holds none, with empty selections, as collective transfers need every rank). */
hid_t ckpt_select_piece(hid_t fspace, const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces,
                        float **mem, size_t *count);

/* File access through MPI-IO on comm; collective transfers. ckpt_fapl_create adds the
 * file-format lower bound new checkpoints are written with (HDF5 1.10: checksummed
 * superblock, object headers, link and attribute storage). */
hid_t ckpt_fapl(MPI_Comm comm);
hid_t ckpt_fapl_create(MPI_Comm comm);
/* Open path read-only through MPI-IO on comm, HDF5's error printing off. Collective. */
hid_t ckpt_open_collective(MPI_Comm comm, const char *path);
hid_t ckpt_dxpl_collective(void);

/* Scalar attributes. */
herr_t ckpt_attr_write(hid_t loc, const char *name, hid_t type, const void *value);
herr_t ckpt_attr_read(hid_t loc, const char *name, hid_t type, void *value);
herr_t ckpt_attr_write_string(hid_t loc, const char *name, const char *value);
herr_t ckpt_attr_read_string(hid_t loc, const char *name, char *value, size_t len);
#define SLM_PATH_MAX_CKPT 4096

/* Step of a committed checkpoint's file name ("step_000000120.h5"), or -1. */
long slm_ckpt_step_of(const char *name);

/* One dataset of a checkpoint's tensor groups as the file describes it (or as a writer
 * is about to store it). */
typedef struct ckpt_entry {
    const char *group;              /* its group's name (the manifest's copy) */
    char *name;                     /* the link name, as stored */
    int ndim;
    hsize_t dims[H5S_MAX_RANK];
    int f32;                        /* stored as IEEE float32, little-endian */
} ckpt_entry;

/* The tensor list: the groups (params first, then by name), and their datasets in that
 * order of groups, then by name (bytewise). A group may hold no dataset. */
typedef struct ckpt_manifest {
    char **groups;
    int ngroups;
    ckpt_entry *e;
    int n;
} ckpt_manifest;

/* name as it can be printed in a message: bytes outside printable ASCII as \xNN. */
const char *ckpt_printable(const char *name, char *buf, size_t len);

/* What the groups at the root of file hold, from their metadata (no tensor data is
 * read). Versions 1-3: exactly /params, /adam_m and /adam_v; version 4: /params and any
 * groups with valid names. Anything else at the root, an object in a group that cannot be
 * opened as a dataset, or a group that is missing, is an error naming it. Frees with
 * ckpt_manifest_free. */
slm_status ckpt_manifest_read(hid_t file, const char *path, int version, ckpt_manifest *man);
/* What a writer stores for these groups: every tensor of each, float32. */
slm_status ckpt_manifest_of(const slm_ckpt_group *groups, int ngroups, ckpt_manifest *man);
void ckpt_manifest_free(ckpt_manifest *man);
/* The index of the group called name in man, or -1. */
int ckpt_manifest_group(const ckpt_manifest *man, const char *name);
/* The datasets of group g in man: *first is the index of the first entry; returns the count. */
int ckpt_manifest_entries(const ckpt_manifest *man, int g, int *first);

/* The manifest against what the caller expects (expect.c): the optimizer (unless
 * params_only) and the groups - exactly those given, each holding exactly its table's
 * tensors at their global shapes, as float32 (only /params with params_only). code: the
 * status a difference in a group's datasets is reported with. */
slm_status ckpt_expect_check(const ckpt_manifest *man, const slm_ckpt_meta *meta, const slm_ckpt_expect *expect,
                             const char *path, slm_status code);

/* The meta_digest: CRC-32 over the canonical text of meta's attributes (as version
 * `version` stores them) and the manifest (docs/checkpoint-format.md). */
uint32_t ckpt_meta_digest(const slm_ckpt_meta *meta, int version, const ckpt_manifest *man);

/* Meta as root attributes (version SLM_CKPT_VERSION, with the digest over meta and man). */
herr_t ckpt_meta_write(hid_t file, const slm_ckpt_meta *meta, const ckpt_manifest *man);
/* Read and check the meta attributes of a version 1 to 4 file (not the digest). */
slm_status ckpt_meta_read(hid_t file, const char *path, slm_ckpt_meta *meta);
/* Everything a checkpoint says about itself, checked without a tensor table: meta,
 * `complete`, the groups at the root, the manifest and (version 2 on) the digest over
 * both. Fills meta and man (free it with ckpt_manifest_free). */
slm_status ckpt_check_file(hid_t file, const char *path, slm_ckpt_meta *meta, ckpt_manifest *man);

#endif
