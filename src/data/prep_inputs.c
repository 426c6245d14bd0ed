/* prep_inputs.c - the input files of `shardlm prep` as one byte stream: rank 0 expands
 * the arguments (files, directories in sorted order, quoted globs) and every rank learns
 * the list; files are mapped on first use. */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "data_impl.h"
#include "prep_impl.h"
#include "shardlm/agree.h"

static slm_status push(slm_prep_inputs *in, const char *path, uint64_t size)
{
    if (in->n % 64 == 0) {
        char **p = realloc(in->path, (in->n + 64) * sizeof *p);
        uint64_t *s = p ? realloc(in->start, (in->n + 65) * sizeof *s) : NULL;
        if (p) in->path = p;
        if (s) in->start = s;
        SLM_CHECK(p && s, SLM_ERR_NOMEM, "prep: out of memory listing the inputs");
    }
    in->path[in->n] = strdup(path);
    SLM_CHECK(in->path[in->n], SLM_ERR_NOMEM, "prep: out of memory listing the inputs");
    in->start[in->n + 1] = in->start[in->n] + size;
    in->n++;
    return SLM_OK;
}

static int visible(const struct dirent *e) { return e->d_name[0] != '.'; }

static slm_status add(slm_prep_inputs *in, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        int err = errno;
        glob_t g;
        if (strpbrk(path, "*?[") && glob(path, 0, NULL, &g) == 0) { /* a glob the shell did not expand */
            slm_status s = SLM_OK;
            for (size_t i = 0; i < g.gl_pathc && s == SLM_OK; i++) s = add(in, g.gl_pathv[i], depth);
            globfree(&g);
            return s;
        }
        return SLM_ERROR(SLM_ERR_IO, "prep: %s: %s", path, strpbrk(path, "*?[") ? "no file matches" : strerror(err));
    }
    if (S_ISREG(st.st_mode)) return push(in, path, (uint64_t)st.st_size);
    SLM_CHECK(S_ISDIR(st.st_mode), SLM_ERR_IO, "prep: %s is neither a file nor a directory", path);
    SLM_CHECK(depth < 32, SLM_ERR_IO, "prep: %s: directories nested 32 deep (a symbolic link loop?)", path);
    struct dirent **ent;
    int n = scandir(path, &ent, visible, alphasort);
    SLM_CHECK(n >= 0, SLM_ERR_IO, "prep: cannot list %s: %s", path, strerror(errno));
    slm_status s = SLM_OK;
    for (int i = 0; i < n; i++) {
        char child[4096];
        if (s == SLM_OK && snprintf(child, sizeof child, "%s/%s", path, ent[i]->d_name) >= (int)sizeof child)
            s = SLM_ERROR(SLM_ERR_IO, "prep: a path under %s is too long", path);
        if (s == SLM_OK) s = add(in, child, depth + 1);
        free(ent[i]);
    }
    free(ent);
    return s == SLM_OK ? SLM_OK : slm_error_push(s, __FILE__, __LINE__, __func__);
}

/* Rank 0's list travels as: n, then n+1 offsets, then the paths NUL-separated. */
static slm_status share(MPI_Comm comm, slm_prep_inputs *in)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    uint64_t head[2] = {(uint64_t)in->n, 0};
    if (rank == 0)
        for (int i = 0; i < in->n; i++) head[1] += strlen(in->path[i]) + 1;
    MPI_Bcast(head, 2, MPI_UINT64_T, 0, comm);
    char *names = malloc(head[1] ? head[1] : 1);
    if (rank != 0) {
        in->n = (int)head[0];
        in->path = calloc(head[0] ? head[0] : 1, sizeof *in->path);
        free(in->start);
        in->start = malloc((head[0] + 1) * sizeof *in->start);
    }
    const int all_ok = slm_all_ok(comm, names && in->path && in->start);
    if (!all_ok) free(names);
    SLM_CHECK(all_ok, SLM_ERR_NOMEM, "prep: out of memory sharing the list of inputs");
    if (rank == 0)
        for (int i = 0, at = 0; i < in->n; i++) {
            at += sprintf(names + at, "%s", in->path[i]) + 1;
            free(in->path[i]); /* from here on every rank's paths point into names */
        }
    MPI_Bcast(in->start, (int)head[0] + 1, MPI_UINT64_T, 0, comm);
    MPI_Bcast(names, (int)head[1], MPI_CHAR, 0, comm); /* lists past 2 GB of names are not expected */
    for (int i = 0, at = 0; i < in->n; i++) {
        in->path[i] = names + at;
        at += (int)strlen(names + at) + 1;
    }
    in->names = names;
    return SLM_OK;
}

slm_status slm_prep_inputs_open(MPI_Comm comm, char *const *args, int nargs, slm_prep_inputs *in)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    *in = (slm_prep_inputs){0};
    in->start = calloc(1, sizeof *in->start);
    slm_status s = in->start ? SLM_OK : SLM_ERROR(SLM_ERR_NOMEM, "prep: out of memory");
    if (rank == 0 && s == SLM_OK) {
        for (int i = 0; i < nargs && s == SLM_OK; i++) s = add(in, args[i], 0);
        if (s == SLM_OK && in->n == 0) s = SLM_ERROR(SLM_ERR_IO, "prep: no input files");
        if (s == SLM_OK && in->start[in->n] == 0)
            s = SLM_ERROR(SLM_ERR_ARG, "prep: the inputs hold no text (%d file%s, all empty: %s%s)", in->n,
                          in->n == 1 ? "" : "s", in->path[0], in->n > 1 ? " ..." : "");
    }
    s = slm_agree(comm, s);
    if (s == SLM_OK) s = share(comm, in);
    if (s == SLM_OK && !(in->map = calloc((size_t)in->n, sizeof *in->map)))
        s = SLM_ERROR(SLM_ERR_NOMEM, "prep: out of memory");
    if (s != SLM_OK) {
        if (!in->names) /* rank 0's own copies of the paths, not yet in the shared block */
            for (int i = 0; in->path && i < in->n; i++) free(in->path[i]);
        slm_prep_inputs_close(in);
        return slm_error_push(s, __FILE__, __LINE__, __func__);
    }
    return SLM_OK;
}

void slm_prep_inputs_close(slm_prep_inputs *in)
{
    for (int i = 0; in->map && i < in->n; i++)
        if (in->map[i]) munmap((void *)in->map[i], slm_prep_file_size(in, i));
    free(in->map);
    free(in->path);
    free(in->start);
    free(in->names);
    *in = (slm_prep_inputs){0};
}

int slm_prep_file_of(const slm_prep_inputs *in, uint64_t pos)
{
    int lo = 0, hi = in->n - 1; /* the last file whose start is <= pos */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (in->start[mid] <= pos) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

slm_status slm_prep_map(slm_prep_inputs *in, int f, const unsigned char **data)
{
    const uint64_t size = slm_prep_file_size(in, f);
    if (!in->map[f] && size) {
        void *p;
        size_t len;
        SLM_CALL(slm_map_file(in->path[f], &p, &len));
        if (len != size) {
            if (p) munmap(p, len);
            return SLM_ERROR(SLM_ERR_IO, "prep: %s changed size while being read", in->path[f]);
        }
        madvise(p, size, MADV_SEQUENTIAL);
        in->map[f] = p;
    }
    *data = in->map[f];
    return SLM_OK;
}
