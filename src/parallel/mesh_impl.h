/* mesh_impl.h - the mesh's fields, shared by mesh.c and placement.c. */
#ifndef SHARDLM_MESH_IMPL_H
#define SHARDLM_MESH_IMPL_H

#include "shardlm/parallel.h"

struct slm_mesh {
    MPI_Comm world, tp, dp, pp, node; /* node: the ranks sharing this machine */
    MPI_Comm tied; /* first and last pipeline stage, same dp and tp coordinates (or NULL) */
    MPI_Comm mp;   /* every rank of one model replica: the same dp coordinate */
    MPI_Comm stage; /* every rank of one pipeline stage: dp x tp */
    int rank, size;
    int tp_rank, tp_size, dp_rank, dp_size, pp_rank, pp_size;
    int local_rank, local_size;
    double tp_ms, tp_bytes; /* tensor-parallel all-reduces since the last take */
};

#endif
