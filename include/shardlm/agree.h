/* shardlm/agree.h - agreeing on a rank-local outcome before the next collective.
 *
 * A step that can fail on one rank only (a file that will not open, an allocation, a
 * backend that fails its check) must not leave the other ranks waiting in the collective
 * that follows: every rank first learns whether any rank failed, and all return the same
 * error. Checkpoints, data preparation and the trainer need this; none of them needs the
 * mesh for it. */
#ifndef SHARDLM_AGREE_H
#define SHARDLM_AGREE_H

#include <mpi.h>
#include "shardlm/status.h"

/* Every rank of comm learns whether any rank's local step failed, before anything
 * collective follows; all then return the first failing rank's error ("rank R: ...", the
 * same text and status on every rank). Collective. */
slm_status slm_agree(MPI_Comm comm, slm_status local);

/* The same for a flag, where the caller words the error itself: 1 when ok on every rank of
 * comm, else 0 on all (MPI_COMM_NULL: this rank's own ok). Collective. */
int slm_all_ok(MPI_Comm comm, int ok);

#endif
