/* mesh_impl.h - the mesh's fields, shared by mesh.c and placement.c. */
#ifndef SHARDLM_MESH_IMPL_H
#define SHARDLM_MESH_IMPL_H

#include "shardlm/parallel.h"

struct slm_mesh {
    MPI_Comm world, tp, dp, pp, node; /* node: the ranks sharing this machine */
    MPI_Comm tied; /* first and last pipeline stage, same dp and tp coordinates (or NULL) */
    MPI_Comm mp;   /* every rank of one model replica: the same dp coordinate */
    MPI_Comm stage; /* every rank of one pipeline stage: dp x tp */
    MPI_Comm ep, edp; /* expert parallelism: the ranks sharing each MoE block's experts, and
                       * the ranks holding the same experts (MPI_COMM_NULL: none set) */
    int ep_rank, ep_size;
    int *ep_world;    /* (ep_size) world rank of each expert-parallel rank, for messages */
    double ep_ms, ep_bytes; /* expert exchanges since the last take */
    int rank, size;
    int tp_rank, tp_size, dp_rank, dp_size, pp_rank, pp_size;
    int local_rank, local_size;
    double tp_ms, tp_bytes; /* tensor-parallel all-reduces since the last take */
};

#endif
