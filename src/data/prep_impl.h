/* prep_impl.h - inside `shardlm prep`: the inputs as one byte stream (prep_inputs.c),
 * shared with the document walk, encoding and shard writing (prep.c). */
#ifndef SHARDLM_PREP_IMPL_H
#define SHARDLM_PREP_IMPL_H

#include "shardlm/prep.h"

typedef struct {
    int n;                      /* files */
    char **path;                /* n paths (into names) */
    uint64_t *start;            /* n + 1: file f is bytes [start[f], start[f+1]) of the stream */
    char *names;                /* the paths, NUL-separated */
    const unsigned char **map;  /* n: the file's bytes once mapped, else NULL */
} slm_prep_inputs;

/* Rank 0 expands the arguments and every rank receives the list. Refuses a missing
 * input and inputs without a byte, on every rank alike. Collective. */
slm_status slm_prep_inputs_open(MPI_Comm comm, char *const *args, int nargs, slm_prep_inputs *in);
void slm_prep_inputs_close(slm_prep_inputs *in);
/* The file holding stream byte pos (for pos < total); the last of several that start there. */
int slm_prep_file_of(const slm_prep_inputs *in, uint64_t pos);
static inline uint64_t slm_prep_file_size(const slm_prep_inputs *in, int f)
{
    return in->start[f + 1] - in->start[f];
}
/* File f's bytes, mapped on first use (NULL for an empty file). */
slm_status slm_prep_map(slm_prep_inputs *in, int f, const unsigned char **data);

#endif
