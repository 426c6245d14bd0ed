/* shardlm/optim.h - the optimizers (AdamW, Adafactor, LAMB, SGD) behind one interface,
 * the learning-rate schedule and global gradient-norm clipping.
 *
 * An optimizer object updates the parts of a model's parameters one rank holds: segments
 * of the model's parameter index space (the whole block without sharding, the owned chunk
 * of every bucket under ZeRO). It never sees a communicator. Where a method needs a
 * statistic of a whole tensor - Adafactor's row and column means and the RMS of its
 * update, LAMB's norms - it sums what this rank holds into one buffer of doubles, one run
 * of slots per tensor, and hands the buffer to a reducer the sharding layer supplies; the
 * reducer sums it over the ranks that hold the other parts of each tensor, so the result
 * is the same however ZeRO and tensor parallelism cut a tensor. A step is
 * slm_optimizer_begin_step (every phase that needs such statistics) and then
 * slm_optimizer_update for each segment (the elementwise update), so the sharding layer
 * can start a segment's all-gather as soon as its update is done.
 *
 * The state is named groups (docs/optimizers.md): elementwise groups hold one float per
 * element of the tensors they cover, at the same positions as the parameters (and so
 * shard and reshard with them); replicated groups hold per-tensor vectors (Adafactor's
 * factored second moment) that every rank holding a part of the tensor keeps whole.
 * Checkpoints store each group under its name, every tensor at its global shape. */
#ifndef SHARDLM_OPTIM_H
#define SHARDLM_OPTIM_H

#include <stddef.h>
#include "shardlm/model.h"
#include "shardlm/status.h"

/* Learning rate at 0-based step: linear warmup over warmup steps to lr, then cosine
 * decay to min_lr at the last step:
 *   step < warmup:  lr * (step+1) / warmup
 *   otherwise:      min_lr + 0.5*(1 + cos(pi * r)) * (lr - min_lr),
 *                   r = (step - warmup) / max(1, steps - warmup), clamped to [0,1]. */
double slm_lr_at(long step, long steps, long warmup, double lr, double min_lr);

/* Scale grads so their global L2 norm is at most max_norm (no-op if max_norm <= 0),
 * as torch.nn.utils.clip_grad_norm_: factor max_norm / (norm + 1e-6) when below 1.
 * norm is the norm before clipping. */
void slm_clip_grads(float *grads, size_t n, double norm, double max_norm);
/* The factor slm_clip_grads multiplies by (1 when it leaves the gradients alone). */
float slm_clip_factor(double norm, double max_norm);

/* ---- configuration --------------------------------------------------------------------- */

/* The optimizers built in, NULL-terminated: {"adamw", "adafactor", "lamb", "sgd", NULL}. */
extern const char *const slm_optimizer_names[];

/* Every optimizer's settings; each reads its own. Weight decay applies to the tensors
 * whose table entry has decay set: decoupled (p -= lr wd p) for AdamW, LAMB (inside the
 * update it scales by the trust ratio) and Adafactor, as an L2 term added to the gradient
 * for SGD (PyTorch's SGD). */
typedef struct slm_optim_config {
    char name[16];
    double weight_decay;
    double beta1, beta2, eps; /* AdamW and LAMB */
    struct {
        double eps1, eps2;      /* added to g^2; the floor of the parameter scale */
        double clip_threshold;  /* the update's RMS is clipped to this */
        double decay_rate;      /* beta2 of step t = 1 - t^decay_rate */
        double beta1;           /* first moment (0: none) */
        int scale_parameter;    /* step size relative to the parameter's RMS */
        int relative_step;      /* step size min(1e-2, 1/sqrt(t)) instead of the run's schedule */
        int warmup_init;        /* relative step min(1e-6 t, 1/sqrt(t)) */
    } adafactor;
    struct {
        double min_trust, max_trust; /* clamp of the trust ratio (max 0: none) */
    } lamb;
    struct {
        double momentum, dampening;
        int nesterov;
    } sgd;
} slm_optim_config;

/* Defaults: AdamW, betas 0.9/0.95, eps 1e-8, weight decay 0.1; Adafactor as its paper
 * and fairseq (eps 1e-30/1e-3, clip 1, decay rate -0.8, no first moment, scaled and
 * relative steps); LAMB unclamped; SGD without momentum. */
void slm_optim_config_defaults(slm_optim_config *cfg);
/* Check the settings of cfg->name (and that it is a known optimizer); errors name the
 * key (train.optimizer, adafactor.decay_rate, sgd.nesterov, ...). Local. */
slm_status slm_optim_config_check(const slm_optim_config *cfg);

/* ---- the optimizer object ----------------------------------------------------------------- */

/* A range of the model's parameter index space this rank updates, and where its
 * parameters (fp32: the master weights) and reduced gradients live. */
typedef struct slm_optim_segment {
    size_t offset, count;
    float *params;
    const float *grads;
} slm_optim_segment;

/* Sums buf over the ranks holding the other parts of the tensors: slots
 * [start[i], start[i+1]) belong to tensor i of the table (start has ntensors+1 entries),
 * and every rank passes the same layout. Each rank has put in the sums over the elements
 * it updates; the reducer sees to it that the elements every rank updates (no sharding,
 * and tensors every tensor-parallel rank holds whole) count once. NULL: nothing to
 * combine (one rank holds everything it updates). */
typedef struct slm_optim_reducer {
    void (*sum)(void *ctx, double *buf, const size_t *start, int ntensors);
    void *ctx;
} slm_optim_reducer;

typedef struct slm_optimizer *slm_optimizer_t;

/* An optimizer for the tensors of a model (the table of this rank, which it keeps a
 * pointer to) over the segments this rank updates (sorted, disjoint; copied). Allocates
 * the state, zeroed. Local. */
slm_status slm_optimizer_create(const slm_optim_config *cfg, const slm_tensor_info *tensors, int ntensors,
                                const slm_optim_segment *segs, int nsegs, slm_optimizer_t *opt);
void slm_optimizer_destroy(slm_optimizer_t *opt);
const char *slm_optimizer_name(slm_optimizer_t opt);

/* Count the step and run the phases that need whole-tensor statistics. lr is the run's
 * schedule; grad_scale multiplies the gradients as they are read (clipping folded into
 * the update: bitwise the same as scaling them first). Collective over the reducer's
 * ranks when the method has such phases (Adafactor, LAMB). */
void slm_optimizer_begin_step(slm_optimizer_t opt, double lr, float grad_scale, const slm_optim_reducer *red);
/* Update segment seg (after begin_step). Local. */
void slm_optimizer_update(slm_optimizer_t opt, int seg);
/* begin_step and every segment's update, for one rank holding everything. */
void slm_optimizer_step(slm_optimizer_t opt, double lr, float grad_scale);
/* The step size the last step used: the schedule's lr, or Adafactor's relative step
 * (before its parameter scale). */
double slm_optimizer_step_size(slm_optimizer_t opt);

/* Steps taken so far, and setting them when the state is restored. */
long slm_optimizer_steps(slm_optimizer_t opt);
void slm_optimizer_set_steps(slm_optimizer_t opt, long t);
/* Bytes of state this rank holds. */
double slm_optimizer_bytes(slm_optimizer_t opt);

/* ---- state groups (checkpoints) ------------------------------------------------------------ */

typedef enum {
    SLM_OPT_STATE_ELEMENTS,  /* one float per element of the tensors it covers, in the
                              * parameter index space */
    SLM_OPT_STATE_REPLICATED /* per-tensor vectors every holder of the tensor keeps whole, in
                              * an index space of their own */
} slm_optim_state_kind;

int slm_optimizer_num_groups(slm_optimizer_t opt);
/* Group g's name ("adam_m", "adafactor_row", ...), kind, and datasets: for an elementwise
 * group the model's tensors it covers (their table entries: names, shapes, local parts in
 * the parameter index space); for a replicated group one 1-D dataset per tensor (name and
 * length; local part the whole vector, count 0 where this rank's stage does not hold the
 * tensor, offsets in the group's own index space; `tied` copied from the tensor). */
const char *slm_optimizer_group(slm_optimizer_t opt, int g, slm_optim_state_kind *kind,
                                const slm_tensor_info **datasets, int *ndatasets);
/* Elementwise group g: the state of parameter element `offset` (inside a segment), with
 * the elements after it up to the end of its tensor's part of the segment following; NULL
 * where g holds nothing for that tensor. */
float *slm_optimizer_state_at(slm_optimizer_t opt, int g, size_t offset);
/* Replicated group g: its whole buffer, *n floats. */
float *slm_optimizer_replicated(slm_optimizer_t opt, int g, size_t *n);

/* The state groups cfg's optimizer keeps for a model with this tensor table, described as
 * slm_optimizer_group describes them but without creating the optimizer or its state
 * (checking a checkpoint against the run that wrote it). out needs room for
 * SLM_OPTIM_MAX_GROUPS; returns how many, or -1 for an unknown optimizer (or no memory
 * for the tables). Free the tables with slm_optim_groups_free. */
#define SLM_OPTIM_MAX_GROUPS 4
typedef struct slm_optim_group_info {
    char name[32];
    slm_optim_state_kind kind;
    slm_tensor_info *datasets;
    int ndatasets;
} slm_optim_group_info;
int slm_optim_describe_groups(const slm_optim_config *cfg, const slm_tensor_info *tensors, int ntensors,
                              slm_optim_group_info *out);
void slm_optim_groups_free(slm_optim_group_info *groups, int n);

/* State bytes an optimizer of cfg would hold over these segments (their pointers unused)
 * of a model whose tensor table is tensors - what slm_optimizer_bytes reports after
 * slm_optimizer_create - without creating it: for planning. */
double slm_optim_bytes_for(const slm_optim_config *cfg, const slm_tensor_info *tensors, int ntensors,
                           const slm_optim_segment *segs, int nsegs);

/* ---- the islands' outer optimizer (docs/islands.md) --------------------------------------- */

/* Islands train apart and meet every islands.sync_every steps. At a meeting each island
 * holds θ (its parameters) and the anchor (the parameters all islands started the round
 * from); its pseudo-gradient is Δ = anchor − θ, and the outer step is an SGD step on the
 * anchor with the islands' mean Δ as the gradient (PyTorch's SGD: momentum, optionally
 * Nesterov, no dampening or weight decay), after which θ = anchor. The object keeps the
 * anchor and the momentum for chunks of the parameter index space (the sharding layer's
 * owned chunks, slm_fsdp_owned_chunks); it never sees a communicator: the caller sums
 * the Δ of the islands between slm_outer_delta and slm_outer_apply. */
typedef struct slm_outer_config {
    double lr, momentum;
    int nesterov;
    int error_feedback; /* keep what a lossy wire format left out of Δ and add it to the next
                         * round's (slm_outer_error) */
} slm_outer_config;
typedef struct slm_outer *slm_outer_t;

/* Over the chunks (params: where the live parameters are; grads unused; copied), the
 * anchor set to the parameters they hold now. Local. */
slm_status slm_outer_create(const slm_outer_config *cfg, const slm_tensor_info *tensors, int ntensors,
                            const slm_optim_segment *chunks, int nchunks, slm_outer_t *outer);
void slm_outer_destroy(slm_outer_t *outer);
/* A fresh round from the parameters as they are: anchor = θ, momentum as if no outer
 * step had been taken (after a load of parameters alone). Local. */
void slm_outer_reset(slm_outer_t outer);
int slm_outer_num_chunks(slm_outer_t outer);
/* Chunk c as it was handed in (offset, count, params). */
const slm_optim_segment *slm_outer_chunk(slm_outer_t outer, int c);
/* Compute chunk c's Δ = anchor − θ into a buffer of its own and return it (count floats);
 * the caller replaces it by the sum over the islands before slm_outer_apply. */
float *slm_outer_delta(slm_outer_t outer, int c);
/* Chunk c's error-feedback buffer (count floats; NULL without error feedback): the caller
 * sends Δ + e in a lossy format and keeps in e what the format lost. */
float *slm_outer_error(slm_outer_t outer, int c);
/* Count the outer step; delta_scale multiplies the summed Δ as it is read (1 / islands). */
void slm_outer_begin(slm_outer_t outer, float delta_scale);
/* The step on chunk c's anchor, then θ = anchor. sumsq (ntensors, or NULL): each
 * tensor's squared norm of the anchor's change is added to its entry. Local. */
void slm_outer_apply(slm_outer_t outer, int c, double *sumsq);
/* Outer steps taken (the momentum's first step is special), and setting them on a load. */
long slm_outer_steps(slm_outer_t outer);
void slm_outer_set_steps(slm_outer_t outer, long t);
/* The state groups checkpoints store, elementwise over every tensor like the parameters:
 * "outer_anchor", "outer_momentum" when the momentum is not 0, "outer_error" with error
 * feedback (slm_outer_group_names).
 * slm_outer_state_at: group g at parameter element offset, the elements after it up to the
 * end of its tensor's part of the chunk following; NULL outside the chunks. */
int slm_outer_num_groups(slm_outer_t outer);
float *slm_outer_state_at(slm_outer_t outer, int g, size_t offset);
/* The names of the groups an outer optimizer of cfg keeps (names: room for 3); returns how
 * many. */
int slm_outer_group_names(const slm_outer_config *cfg, const char **names);

#endif
