/* hdf5_util.c - group names, selections, property lists and attributes for checkpoint files. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

int ckpt_group_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > 31) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_')) return 0;
    return 1;
}

int ckpt_group_cmp(const char *a, const char *b)
{
    int pa = !strcmp(a, "params"), pb = !strcmp(b, "params");
    return pa != pb ? pb - pa : strcmp(a, b);
}

int ckpt_overlap(const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces, size_t *lo, size_t *hi,
                 float **mem)
{
    for (int i = 0; i < npieces; i++) {
        const slm_ckpt_piece *p = &pieces[i];
        size_t a = p->offset > t->offset ? p->offset : t->offset;
        size_t b = p->offset + p->count < t->offset + t->count ? p->offset + p->count : t->offset + t->count;
        if (!p->data || a >= b) continue;
        *lo = a - t->offset;
        *hi = b - t->offset;
        *mem = p->data + (a - p->offset);
        return 1;
    }
    return 0;
}

/* Add the global block rows [grow, grow+nrows) x columns [gcol, gcol+ncols) to the
 * selection (1-D tensors: the elements [grow, grow+nrows)). */
static void select_block(hid_t space, hsize_t grow, hsize_t nrows, hsize_t gcol, hsize_t ncols)
{
    hsize_t start[2] = {grow, gcol}, count[2] = {nrows, ncols}; /* a 1-D space reads [0] only */
    H5Sselect_hyperslab(space, H5S_SELECT_OR, start, NULL, count, NULL);
}

void ckpt_select_range(hid_t space, const slm_tensor_info *t, size_t lo, size_t hi)
{
    /* The local elements [lo, hi) of a row-major rows x cols part: a partial first row,
     * whole middle rows and a partial last row, within each run of rows the rank holds;
     * placed at the run's global rows and from global column col0. The union is read in
     * file order, which is the order the elements take in memory because runs and
     * columns keep their order. */
    const hsize_t C = (hsize_t)t->cols;
    H5Sselect_none(space);
    for (int k = 0; k < t->nruns; k++) {
        const slm_row_run *run = &t->runs[k];
        size_t a = (size_t)run->lrow0 * C, b = (size_t)(run->lrow0 + run->n) * C;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a >= b) continue;
        const hsize_t shift = (hsize_t)(run->grow0 - run->lrow0), col0 = (hsize_t)t->col0;
        hsize_t r0 = a / C, c0 = a % C, r1 = (b - 1) / C, c1 = (b - 1) % C;
        if (t->ndim == 1) { /* one column: rows are elements */
            select_block(space, r0 + shift, r1 - r0 + 1, 0, 1);
            continue;
        }
        if (r0 == r1) {
            select_block(space, r0 + shift, 1, col0 + c0, c1 - c0 + 1);
            continue;
        }
        select_block(space, r0 + shift, 1, col0 + c0, C - c0);
        if (r1 > r0 + 1) select_block(space, r0 + 1 + shift, r1 - r0 - 1, col0, C);
        select_block(space, r1 + shift, 1, col0, c1 + 1);
    }
}

hid_t ckpt_select_piece(hid_t fspace, const slm_tensor_info *t, const slm_ckpt_piece *pieces, int npieces,
                        float **mem, size_t *count)
{
    size_t lo, hi;
    *mem = NULL;
    *count = 0;
    if (ckpt_overlap(t, pieces, npieces, &lo, &hi, mem)) {
        ckpt_select_range(fspace, t, lo, hi);
        hsize_t n = hi - lo;
        *count = hi - lo;
        return H5Screate_simple(1, &n, NULL);
    }
    /* collective transfers: a rank with nothing still takes part, with empty selections */
    H5Sselect_none(fspace);
    hsize_t one = 1;
    hid_t mspace = H5Screate_simple(1, &one, NULL);
    H5Sselect_none(mspace);
    return mspace;
}

static int cmp_long_desc(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int slm_ckpt_list_steps(const char *dir, long *steps, int max)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long s = slm_ckpt_step_of(e->d_name);
        if (s >= 0 && n < max) steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_long_desc);
    return n;
}

hid_t ckpt_fapl(MPI_Comm comm)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    return fapl;
}

hid_t ckpt_open_collective(MPI_Comm comm, const char *path)
{
    slm_hdf5_errors_off();
    hid_t fapl = ckpt_fapl(comm);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

hid_t ckpt_fapl_create(MPI_Comm comm)
{
    hid_t fapl = ckpt_fapl(comm);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST);
    return fapl;
}

hid_t ckpt_dxpl_collective(void)
{
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    return dxpl;
}

herr_t ckpt_attr_write(hid_t loc, const char *name, hid_t type, const void *value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

/* Is attribute a one value (a scalar dataspace) of the type class we read it as? Anything
 * else would not fit the buffer it is read into. */
static int attr_is_scalar(hid_t a, H5T_class_t cls)
{
    hid_t sp = H5Aget_space(a), ft = H5Aget_type(a);
    int ok = sp >= 0 && ft >= 0 && H5Sget_simple_extent_type(sp) == H5S_SCALAR && H5Tget_class(ft) == cls;
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    return ok;
}

herr_t ckpt_attr_read(hid_t loc, const char *name, hid_t type, void *value)
{
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    herr_t rc = a < 0 || !attr_is_scalar(a, H5Tget_class(type)) ? -1 : H5Aread(a, type, value);
    if (a >= 0) H5Aclose(a);
    return rc;
}

herr_t ckpt_attr_write_string(hid_t loc, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    herr_t rc = ckpt_attr_write(loc, name, type, value);
    H5Tclose(type);
    return rc;
}

herr_t ckpt_attr_read_string(hid_t loc, const char *name, char *value, size_t len)
{
    /* As written: a fixed-length string of strlen + 1 bytes, its one NUL last. Anything
     * else (a NUL inside, none at the end, a size that does not fit) is refused, so what
     * is read is byte for byte what any other reader sees. */
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    size_t n = ft >= 0 && attr_is_scalar(a, H5T_STRING) && H5Tis_variable_str(ft) == 0 ? H5Tget_size(ft) : 0;
    herr_t rc = -1;
    if (n >= 1 && n <= len) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n);
        rc = H5Aread(a, mt, value);
        H5Tclose(mt);
        if (rc >= 0 && (value[n - 1] != '\0' || strlen(value) != n - 1)) rc = -1;
        value[n - 1] = '\0';
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return rc;
}
