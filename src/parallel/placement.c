/* placement.c - where the ranks run: each rank, and the BLAS and OpenMP threads it
 * starts, bound to cores of its own with hwloc, and a report of it.
 *
 * A launcher that already bound the ranks (mpirun --bind-to core, srun --cpu-bind=cores)
 * is left alone when the ranks of a node hold disjoint sets of cores. Otherwise the cores
 * of the node are dealt out in blocks in local-rank order; tensor-parallel groups are
 * consecutive ranks, so a group lands on neighbouring cores, in one package and NUMA node
 * whenever the counts allow. Binding the whole process also moves the threads OpenBLAS
 * started when it was loaded. */
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mesh_impl.h"

enum { SET_CHARS = 1024 };

/* Do the ranks of this node hold pairwise disjoint cpusets? Collective over node. */
static int launcher_bound(slm_mesh_t m, hwloc_const_bitmap_t mine)
{
    char *text = NULL, *all = malloc((size_t)m->local_size * SET_CHARS);
    char buf[SET_CHARS] = "";
    if (hwloc_bitmap_list_asprintf(&text, mine) >= 0 && text) snprintf(buf, sizeof buf, "%s", text);
    free(text);
    if (!slm_all_ok(m->node, all != NULL)) { /* the gather below needs every rank: all go on, or none */
        free(all);
        return 0;
    }
    MPI_Allgather(buf, SET_CHARS, MPI_CHAR, all, SET_CHARS, MPI_CHAR, m->node);
    int disjoint = 1;
    hwloc_bitmap_t a = hwloc_bitmap_alloc(), b = hwloc_bitmap_alloc();
    for (int i = 0; i < m->local_size && disjoint; i++) {
        hwloc_bitmap_list_sscanf(a, all + (size_t)i * SET_CHARS);
        for (int j = i + 1; j < m->local_size && disjoint; j++) {
            hwloc_bitmap_list_sscanf(b, all + (size_t)j * SET_CHARS);
            if (hwloc_bitmap_intersects(a, b)) disjoint = 0;
        }
    }
    hwloc_bitmap_free(a);
    hwloc_bitmap_free(b);
    free(all);
    return disjoint;
}

/* The cores of block i of n over the node's cores (one core each when oversubscribed). */
static void deal_cores(hwloc_topology_t topo, int i, int n, hwloc_bitmap_t set)
{
    hwloc_obj_type_t type = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    int ncores = hwloc_get_nbobjs_by_type(topo, type);
    int lo = i % ncores, hi = lo + 1;
    if (n <= ncores) {
        lo = (int)((long)i * ncores / n);
        hi = (int)((long)(i + 1) * ncores / n);
    }
    hwloc_bitmap_zero(set);
    for (int c = lo; c < hi; c++) hwloc_bitmap_or(set, set, hwloc_get_obj_by_type(topo, type, (unsigned)c)->cpuset);
}

/* "cores 0-1, package 0, NUMA 0" for a cpuset; logical indexes, as lstopo shows them. */
static void describe(hwloc_topology_t topo, hwloc_const_bitmap_t set, char *out, size_t len, int *ncores)
{
    hwloc_obj_type_t types[3] = {HWLOC_OBJ_CORE, HWLOC_OBJ_PACKAGE, HWLOC_OBJ_NUMANODE};
    const char *names[3] = {"cores", "package", "NUMA"};
    size_t used = 0;
    for (int t = 0; t < 3; t++) {
        hwloc_bitmap_t idx = hwloc_bitmap_alloc();
        int n = hwloc_get_nbobjs_by_type(topo, types[t]);
        for (int k = 0; k < n; k++) {
            hwloc_obj_t o = hwloc_get_obj_by_type(topo, types[t], (unsigned)k);
            if (o->cpuset && hwloc_bitmap_intersects(o->cpuset, set)) hwloc_bitmap_set(idx, o->logical_index);
        }
        if (t == 0) *ncores = hwloc_bitmap_weight(idx);
        char *list = NULL;
        hwloc_bitmap_list_asprintf(&list, idx);
        if (n > 0 && used < len)
            used += (size_t)snprintf(out + used, len - used, "%s%s %s", t ? ", " : "", names[t], list ? list : "?");
        free(list);
        hwloc_bitmap_free(idx);
    }
}

slm_status slm_mesh_bind(slm_mesh_t m, slm_bind_mode mode, slm_placement *out)
{
    memset(out, 0, sizeof *out);
    hwloc_topology_t topo;
    SLM_CHECK(hwloc_topology_init(&topo) == 0 && hwloc_topology_load(topo) == 0, SLM_ERR_INTERNAL,
              "hwloc cannot read this machine's topology");
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0)
        hwloc_bitmap_copy(set, hwloc_topology_get_topology_cpuset(topo));
    /* collective over the node whatever the mode, so every rank takes the same path */
    int disjoint = launcher_bound(m, set);
    const char *by = "the launcher";
    if (mode == SLM_BIND_NONE) by = "nobody (parallel.bind = none)";
    else if (mode == SLM_BIND_CORES || !disjoint) {
        deal_cores(topo, m->local_rank, m->local_size, set);
        if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) == 0) by = "shardlm";
        else {
            by = "nobody (binding refused by the system)";
            hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS);
        }
    } else if (m->local_size == 1 && hwloc_bitmap_isequal(set, hwloc_topology_get_topology_cpuset(topo)))
        by = "nobody (alone on the node)";
    char where[160], host[MPI_MAX_PROCESSOR_NAME];
    int hlen = 0;
    MPI_Get_processor_name(host, &hlen);
    describe(topo, set, where, sizeof where, &out->cores);
    if (out->cores < 1) out->cores = 1;
    snprintf(out->where, sizeof out->where, "%.64s %s; bound by %s", host, where, by);
    /* a tensor-parallel group should share a node and a NUMA node: its all-reduces are
     * the most frequent collectives of a step */
    int numa = -1, lo, hi;
    hwloc_obj_t nn = hwloc_get_next_obj_covering_cpuset_by_type(topo, set, HWLOC_OBJ_NUMANODE, NULL);
    if (nn) numa = (int)nn->logical_index;
    MPI_Allreduce(&numa, &lo, 1, MPI_INT, MPI_MIN, m->tp);
    MPI_Allreduce(&numa, &hi, 1, MPI_INT, MPI_MAX, m->tp);
    MPI_Comm shared;
    int shared_size;
    MPI_Comm_split_type(m->tp, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &shared);
    MPI_Comm_size(shared, &shared_size);
    MPI_Comm_free(&shared);
    out->tp_spans_nodes = shared_size != m->tp_size;
    out->tp_spans_numa = !out->tp_spans_nodes && lo != hi;
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
    return SLM_OK;
}

void slm_mesh_print_binding(slm_mesh_t m, const slm_placement *p, int threads, FILE *out)
{
    enum { LINE = 512, SHOWN = 32 };
    char line[LINE], *all = m->rank == 0 ? malloc((size_t)m->size * LINE) : NULL;
    snprintf(line, sizeof line, "rank %d (pp %d, dp %d, tp %d): %s; %d thread%s", m->rank, m->pp_rank, m->dp_rank,
             m->tp_rank, p->where, threads, threads == 1 ? "" : "s");
    int flags[2] = {p->tp_spans_nodes, p->tp_spans_numa}, any[2];
    MPI_Reduce(flags, any, 2, MPI_INT, MPI_MAX, 0, m->world);
    int room = m->rank != 0 || all; /* rank 0 gathers only where it has room: all ranks learn which */
    MPI_Bcast(&room, 1, MPI_INT, 0, m->world);
    if (room) MPI_Gather(line, LINE, MPI_CHAR, all, LINE, MPI_CHAR, 0, m->world);
    if (m->rank != 0) return;
    for (int r = 0; all && r < m->size && r < SHOWN; r++) fprintf(out, "binding   %s\n", all + (size_t)r * LINE);
    if (m->size > SHOWN) fprintf(out, "binding   ... and %d more ranks\n", m->size - SHOWN);
    if (any[0]) fprintf(out, "[0] warning: a tensor-parallel group spans nodes: its all-reduces cross the network\n");
    if (any[1]) fprintf(out, "[0] warning: a tensor-parallel group spans NUMA nodes\n");
    free(all);
}
