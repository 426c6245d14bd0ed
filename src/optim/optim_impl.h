/* optim_impl.h - what an optimizer method implements, and the object they share.
 *
 * The shared object (optimizer.c) cuts the segments into pieces, one per (segment,
 * tensor) overlap, allocates the state groups a method asks for and answers the
 * checkpoint questions; a method (adamw.c, adafactor.c, lamb.c, sgd.c) only says which
 * groups it keeps and how a step reads and writes them. */
#ifndef SHARDLM_OPTIM_IMPL_H
#define SHARDLM_OPTIM_IMPL_H

#include "shardlm/optim.h"

#define OPT_MAX_GROUPS SLM_OPTIM_MAX_GROUPS

/* The part of one tensor inside one segment. */
typedef struct {
    int seg, tensor;
    size_t offset, n; /* in the parameter index space */
    size_t j0;        /* its first element's index within the tensor's local part */
    size_t elem;      /* where it sits in an all-tensor elementwise group */
    size_t elem1d;    /* ... in a group of the unfactored (1-D) tensors only, or SIZE_MAX */
} opt_piece;

typedef enum {
    OPT_GROUP_ALL,  /* elementwise over every tensor */
    OPT_GROUP_1D,   /* elementwise over the tensors that are not matrices */
    OPT_GROUP_ROWS, /* replicated: a matrix's global rows */
    OPT_GROUP_COLS  /* replicated: a matrix's global columns */
} opt_group_kind;

typedef struct {
    char name[32];
    opt_group_kind kind;
    float *data;
    size_t n;
    slm_tensor_info *datasets; /* as slm_optimizer_group describes them */
    int ndatasets;
} opt_group;

typedef struct {
    const char *name;
    opt_group_kind kind;
} opt_group_decl;

typedef struct opt_method {
    const char *name;
    /* The state groups the method keeps with these settings (at most OPT_MAX_GROUPS); the
     * object allocates them, zeroed, as o->groups[i] in this order. */
    int (*declare)(const slm_optim_config *cfg, opt_group_decl *out);
    /* Scratch and indices, after the groups exist (NULL: none). */
    slm_status (*setup)(slm_optimizer_t o);
    void (*teardown)(slm_optimizer_t o);
    /* Phases over every piece that need reduced statistics (NULL: none). */
    void (*begin_step)(slm_optimizer_t o, const slm_optim_reducer *red);
    /* The elementwise update of one piece. */
    void (*update)(slm_optimizer_t o, const opt_piece *pc, float *p, const float *g);
    /* Extra state bytes the method holds besides its groups, for a table (planning). */
} opt_method;

struct slm_optimizer {
    const opt_method *m;
    slm_optim_config cfg;
    const slm_tensor_info *tensors;
    int ntensors;
    slm_optim_segment *segs;
    int nsegs;
    opt_piece *pieces;
    int npieces;
    int *seg_first; /* pieces of segment s: [seg_first[s], seg_first[s+1]) */
    size_t nelem, nelem1d;
    opt_group groups[OPT_MAX_GROUPS];
    int ngroups;
    long t;
    float grad_scale;
    double lr, step_size;
    double extra_bytes; /* scratch a method allocated, counted in slm_optimizer_bytes */
    void *impl;
};

/* Where a matrix's replicated row (kind ROWS) or column (COLS) vector starts in group g's
 * buffer; tensor i must be a matrix this rank holds part of. */
size_t opt_vector_offset(slm_optimizer_t o, int g, int tensor);
/* Where piece pc's parameters and gradients are this step. */
static inline float *opt_piece_params(slm_optimizer_t o, const opt_piece *pc)
{
    return o->segs[pc->seg].params + (pc->offset - o->segs[pc->seg].offset);
}
static inline const float *opt_piece_grads(slm_optimizer_t o, const opt_piece *pc)
{
    return o->segs[pc->seg].grads + (pc->offset - o->segs[pc->seg].offset);
}
/* A tensor is factored (Adafactor) and counted in ROWS/COLS groups when it is a matrix. */
static inline int opt_is_matrix(const slm_tensor_info *t) { return t->ndim == 2; }
/* The global row of local row r of t. */
int64_t opt_global_row(const slm_tensor_info *t, int64_t r);
/* The per-tensor slot layout of a statistics buffer with per_tensor(t) slots for each
 * tensor this rank holds part of (0 for the others): start[ntensors+1]. Returns the total. */
size_t opt_slots(slm_optimizer_t o, size_t (*per_tensor)(const slm_tensor_info *t), size_t *start);

/* Run fn over [0, n) in blocks of OPT_BLOCK elements, the blocks in parallel (OpenMP);
 * fn puts k sums for its block in out (k <= OPT_MAX_SUMS), and sums[0..k) receive their
 * totals, added in block order: the same bits whatever the number of threads. fn must
 * only write what its block owns. */
#define OPT_BLOCK 16384
#define OPT_MAX_SUMS 2
typedef void (*opt_block_fn)(void *ctx, size_t lo, size_t hi, double *out);
void opt_blocked_sums(size_t n, int k, opt_block_fn fn, void *ctx, double *sums);

extern const opt_method opt_adamw, opt_adafactor, opt_lamb, opt_sgd;

#endif
