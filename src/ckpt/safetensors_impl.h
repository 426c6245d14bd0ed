/* safetensors_impl.h - the reader's private state, shared by safetensors.c (opening and
 * validating headers) and safetensors_read.c (reading tensor data), and the dtype helpers
 * the writer (safetensors_write.c) uses too. */
#ifndef SLM_SAFETENSORS_IMPL_H
#define SLM_SAFETENSORS_IMPL_H

#include <stdint.h>
#include <jansson.h>
#include "shardlm/safetensors.h"

/* The largest header accepted (the JSON alone): far above any real model's header (a few
 * MB for tens of thousands of tensors), low enough that a garbage length is refused
 * before it is allocated. */
#define SLM_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct st_file {
    char *path;
    int fd;              /* -1 until opened */
    uint64_t size;       /* bytes in the file when it was opened */
    uint64_t data_start; /* 8 + the header length: where offset 0 of the data is */
    json_t *metadata;    /* its "__metadata__" object (a reference we own), or NULL */
} st_file;

typedef struct st_tensor {
    slm_st_info info;    /* info.name is owned here; info.file points into files[] */
    uint64_t offset;     /* absolute file offset of the first byte */
    uint64_t nbytes;     /* numel x the dtype's size */
    size_t file;         /* index into files[] */
} st_tensor;

struct slm_st {
    char *path;          /* what slm_st_open was given, for messages */
    st_file *files;
    size_t nfiles;
    st_tensor *t;        /* sorted by name once open */
    size_t n, cap;
};

/* Bytes per element of a dtype. */
static inline size_t st_dtype_size(slm_st_dtype d) { return d == SLM_ST_DTYPE_F32 ? 4 : 2; }
/* The dtype named s ("F32", "BF16", "F16"); 0 if it names none of them. */
int st_dtype_parse(const char *s, slm_st_dtype *d);

#endif
