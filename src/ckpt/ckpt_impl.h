/* ckpt_impl.h - helpers shared by the checkpoint writer and reader. */
#ifndef SHARDLM_CKPT_IMPL_H
#define SHARDLM_CKPT_IMPL_H

#include <hdf5.h>
#include "shardlm/ckpt.h"

/* The three tensor groups of a checkpoint, and which buffer of a piece feeds each. */
enum { CK_PARAMS, CK_M, CK_V, CK_NGROUPS };
extern const char *const ckpt_group_names[CK_NGROUPS];
float *ckpt_piece_buffer(const slm_ckpt_piece *p, int group);

/* This rank's part of tensor t in group: the piece overlapping it (at most one, since a
 * rank holds one contiguous range of every bucket), as a flat range [lo, hi) relative to
 * the tensor and the memory it maps to. Returns 0 if there is none. */
int ckpt_overlap(const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces, int group,
                 size_t *lo, size_t *hi, float **mem);
/* Select the flat range [lo, hi) of a row-major dataset of shape t->shape in space. */
void ckpt_select_range(hid_t space, const slm_tensor_info *t, size_t lo, size_t hi);

/* Select this rank's part of tensor t (group) in fspace and return the matching memory
 * space; *mem and *count say where and how much (NULL and 0 when the rank holds none,
 * with empty selections, as collective transfers need every rank). */
hid_t ckpt_select_piece(hid_t fspace, const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces,
                        int group, float **mem, size_t *count);
/* The steps of the committed checkpoints in dir, newest first (at most max); -1 if dir
 * cannot be read. */
int ckpt_list_steps(const char *dir, long *steps, int max);
#define CKPT_MAX_LISTED 4096

/* File access through MPI-IO on comm; collective transfers. */
hid_t ckpt_fapl(MPI_Comm comm);
hid_t ckpt_dxpl_collective(void);

/* Scalar attributes. */
herr_t ckpt_attr_write(hid_t loc, const char *name, hid_t type, const void *value);
herr_t ckpt_attr_read(hid_t loc, const char *name, hid_t type, void *value);
herr_t ckpt_attr_write_string(hid_t loc, const char *name, const char *value);
herr_t ckpt_attr_read_string(hid_t loc, const char *name, char *value, size_t len);
#define SLM_PATH_MAX_CKPT 4096

/* Step of a committed checkpoint's file name ("step_000000120.h5"), or -1. */
long slm_ckpt_step_of(const char *name);

/* Meta as root attributes. */
herr_t ckpt_meta_write(hid_t file, const slm_ckpt_meta *meta);
slm_status ckpt_meta_read(hid_t file, const char *path, slm_ckpt_meta *meta);

#endif
