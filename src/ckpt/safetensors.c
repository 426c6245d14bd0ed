/* safetensors.c - opening safetensors files and sharded model directories: every header
 * parsed and validated before any tensor is read, and the tensor table they describe.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON, then the data. Each
 * JSON entry but "__metadata__" is a tensor: {"dtype", "shape", "data_offsets": [begin,
 * end)} with offsets relative to the end of the header. What is checked, in order: the
 * length against the file, the JSON, each tensor's dtype, shape and offsets (inside the
 * data, as many bytes as the shape needs), then overlaps within the file, then (sharded)
 * that no tensor is in two files and that each is in the file the index names.
 * Reading the data: safetensors_read.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "safetensors_impl.h"

static const char *const dtype_names[] = {"F32", "BF16", "F16"};

const char *slm_st_dtype_name(slm_st_dtype d)
{
    return (unsigned)d < 3 ? dtype_names[d] : "?";
}

int st_dtype_parse(const char *s, slm_st_dtype *d)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, dtype_names[i])) {
            *d = (slm_st_dtype)i;
            return 1;
        }
    return 0;
}

/* Read exactly n bytes at off; -1 with errno, or 0 bytes past the end (errno 0). */
static int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return -1;
        }
        p += r, off += (uint64_t)r, n -= (size_t)r;
    }
    return 0;
}

/* ---- one file's header ------------------------------------------------------------- */

static slm_status add_tensor(struct slm_st *st, size_t fi, const char *name, json_t *v, uint64_t data_size)
{
    const char *path = st->files[fi].path;
    SLM_CHECK(json_is_object(v), SLM_ERR_FORMAT, "%s: tensor \"%s\": its entry is not a JSON object", path, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    SLM_CHECK(json_is_string(dt), SLM_ERR_FORMAT, "%s: tensor \"%s\": no \"dtype\" string", path, name);
    slm_st_dtype dtype;
    SLM_CHECK(st_dtype_parse(json_string_value(dt), &dtype), SLM_ERR_FORMAT,
              "%s: tensor \"%s\": dtype %.32s is not one that is read (F32, BF16, F16)", path, name,
              json_string_value(dt));
    SLM_CHECK(json_is_array(sh), SLM_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" is not a list", path, name);
    size_t ndim = json_array_size(sh);
    SLM_CHECK(ndim <= SLM_ST_MAX_DIMS, SLM_ERR_FORMAT, "%s: tensor \"%s\": %zu dimensions; at most %d are read",
              path, name, ndim, SLM_ST_MAX_DIMS);
    size_t shape[SLM_ST_MAX_DIMS], numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        json_t *x = json_array_get(sh, d);
        SLM_CHECK(json_is_integer(x) && json_integer_value(x) >= 0, SLM_ERR_FORMAT,
                  "%s: tensor \"%s\": shape entry %zu is not a non-negative integer", path, name, d);
        json_int_t e = json_integer_value(x);
        shape[d] = (size_t)e;
        overflow |= (uint64_t)e > SIZE_MAX || __builtin_mul_overflow(numel, shape[d], &numel);
    }
    SLM_CHECK(json_is_array(off) && json_array_size(off) == 2 && json_is_integer(json_array_get(off, 0)) &&
                  json_is_integer(json_array_get(off, 1)) && json_integer_value(json_array_get(off, 0)) >= 0 &&
                  json_integer_value(json_array_get(off, 1)) >= 0,
              SLM_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" is not a list [begin, end] of two non-negative integers",
              path, name);
    uint64_t begin = (uint64_t)json_integer_value(json_array_get(off, 0)),
             end = (uint64_t)json_integer_value(json_array_get(off, 1));
    SLM_CHECK(begin <= end, SLM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
              path, name, begin, end);
    SLM_CHECK(end <= data_size, SLM_ERR_FORMAT,
              "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 ") run past the end of the data, which has %" PRIu64
              " bytes after the header (a truncated file or a bad header)", path, name, begin, end, data_size);
    uint64_t need = 0;
    overflow |= __builtin_mul_overflow((uint64_t)numel, (uint64_t)st_dtype_size(dtype), &need);
    SLM_CHECK(!overflow, SLM_ERR_FORMAT, "%s: tensor \"%s\": its shape needs more than 2^64 bytes", path, name);
    SLM_CHECK(need == end - begin, SLM_ERR_FORMAT,
              "%s: tensor \"%s\": its shape of %zu elements of %s needs %" PRIu64 " bytes, but data_offsets [%" PRIu64
              ", %" PRIu64 ") hold %" PRIu64, path, name, numel, slm_st_dtype_name(dtype), need, begin, end, end - begin);
    if (st->n == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 64;
        st_tensor *t = realloc(st->t, cap * sizeof *t);
        SLM_CHECK(t, SLM_ERR_NOMEM, "%s: out of memory for %zu tensors", path, cap);
        st->t = t, st->cap = cap;
    }
    st_tensor *t = &st->t[st->n];
    memset(t, 0, sizeof *t);
    t->info.name = strdup(name);
    SLM_CHECK(t->info.name, SLM_ERR_NOMEM, "%s: out of memory", path);
    st->n++;
    t->info.dtype = dtype;
    t->info.ndim = (int)ndim;
    memcpy(t->info.shape, shape, ndim * sizeof *shape);
    t->info.numel = numel;
    t->offset = st->files[fi].data_start + begin;
    t->nbytes = end - begin;
    t->file = fi;
    return SLM_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Tensors t[first..n), all of one file: no two share a byte. Empty tensors share none. */
static slm_status check_overlaps(struct slm_st *st, size_t first)
{
    qsort(st->t + first, st->n - first, sizeof *st->t, cmp_offset);
    const st_tensor *last = NULL; /* the nonempty tensor that reaches furthest so far */
    for (size_t i = first; i < st->n; i++) {
        const st_tensor *t = &st->t[i];
        if (!t->nbytes) continue;
        if (last) {
            const uint64_t ds = st->files[t->file].data_start;
            SLM_CHECK(t->offset >= last->offset + last->nbytes, SLM_ERR_FORMAT,
                      "%s: tensors \"%s\" (data_offsets [%" PRIu64 ", %" PRIu64 ")) and \"%s\" ([%" PRIu64 ", %" PRIu64
                      ")) overlap", st->files[t->file].path, last->info.name, last->offset - ds,
                      last->offset + last->nbytes - ds, t->info.name, t->offset - ds, t->offset + t->nbytes - ds);
        }
        if (!last || t->offset + t->nbytes > last->offset + last->nbytes) last = t;
    }
    return SLM_OK;
}

static slm_status parse_json(struct slm_st *st, size_t fi, json_t *root)
{
    st_file *f = &st->files[fi];
    SLM_CHECK(json_is_object(root), SLM_ERR_FORMAT, "%s: the header is not a JSON object", f->path);
    const uint64_t data_size = f->size - f->data_start;
    const size_t first = st->n;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__")) {
            SLM_CALL(add_tensor(st, fi, key, v, data_size));
            continue;
        }
        SLM_CHECK(json_is_object(v), SLM_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", f->path);
        const char *mk;
        json_t *mv;
        json_object_foreach(v, mk, mv)
            SLM_CHECK(json_is_string(mv), SLM_ERR_FORMAT, "%s: \"__metadata__\" entry \"%s\" is not a string",
                      f->path, mk);
        f->metadata = json_incref(v);
    }
    SLM_CALL(check_overlaps(st, first));
    return SLM_OK;
}

/* Open files[fi], check its header length and parse and validate its header. */
static slm_status parse_file(struct slm_st *st, size_t fi)
{
    st_file *f = &st->files[fi];
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    SLM_CHECK(f->fd >= 0, SLM_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    SLM_CHECK(fstat(f->fd, &sb) == 0 && S_ISREG(sb.st_mode), SLM_ERR_FORMAT, "%s: not a regular file", f->path);
    f->size = (uint64_t)sb.st_size;
    unsigned char len8[8];
    SLM_CHECK(f->size >= 8 && pread_all(f->fd, len8, 8, 0) == 0, SLM_ERR_FORMAT,
              "%s: %" PRIu64 " bytes, too short for the 8-byte header length of a safetensors file", f->path, f->size);
    uint64_t n = 0;
    for (int b = 7; b >= 0; b--) n = n << 8 | len8[b];
    SLM_CHECK(n <= f->size - 8, SLM_ERR_FORMAT,
              "%s: the header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)", f->path, n, f->size);
    SLM_CHECK(n <= SLM_ST_MAX_HEADER, SLM_ERR_FORMAT, "%s: the header length %" PRIu64 " is more than the %u bytes accepted",
              f->path, n, SLM_ST_MAX_HEADER);
    f->data_start = 8 + n;
    char *buf = malloc(n ? n : 1);
    SLM_CHECK(buf, SLM_ERR_NOMEM, "%s: out of memory for a header of %" PRIu64 " bytes", f->path, n);
    if (pread_all(f->fd, buf, n, 8) != 0) {
        free(buf);
        return SLM_ERROR(SLM_ERR_IO, "%s: cannot read the header: %s", f->path, errno ? strerror(errno) : "short read");
    }
    json_error_t je;
    json_t *root = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    SLM_CHECK(root, SLM_ERR_FORMAT, "%s: the header is not valid JSON: %s (at byte %d of %" PRIu64 ")", f->path, je.text,
              je.position, n);
    slm_status s = parse_json(st, fi, root);
    json_decref(root);
    SLM_CALL(s);
    return SLM_OK;
}

/* ---- the model: one file, or an index and its shards -------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->info.name, ((const st_tensor *)b)->info.name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static slm_status add_files(struct slm_st *st, size_t n)
{
    st->files = calloc(n ? n : 1, sizeof *st->files);
    SLM_CHECK(st->files, SLM_ERR_NOMEM, "%s: out of memory", st->path);
    for (size_t i = 0; i < n; i++) st->files[i].fd = -1;
    st->nfiles = n;
    return SLM_OK;
}

/* Sort the table by name; a name seen twice is a tensor in two files. */
static slm_status sort_tensors(struct slm_st *st)
{
    qsort(st->t, st->n, sizeof *st->t, cmp_name);
    for (size_t i = 1; i < st->n; i++) {
        const size_t a = st->t[i - 1].file, b = st->t[i].file; /* named in file order, whatever qsort did */
        SLM_CHECK(strcmp(st->t[i - 1].info.name, st->t[i].info.name), SLM_ERR_FORMAT,
                  "%s: tensor \"%s\" is in both %s and %s", st->path, st->t[i].info.name,
                  st->files[a < b ? a : b].path, st->files[a < b ? b : a].path);
    }
    for (size_t i = 0; i < st->n; i++) st->t[i].info.file = st->files[st->t[i].file].path;
    return SLM_OK;
}

static slm_status open_single(struct slm_st *st, const char *path)
{
    SLM_CALL(add_files(st, 1));
    st->files[0].path = strdup(path);
    SLM_CHECK(st->files[0].path, SLM_ERR_NOMEM, "%s: out of memory", path);
    SLM_CALL(parse_file(st, 0));
    SLM_CALL(sort_tensors(st));
    return SLM_OK;
}

/* A shard's name as the index gives it: a file of the index's own directory. */
static int plain_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static slm_status parse_index(struct slm_st *st, const char *path, json_t *root, const char **names)
{
    SLM_CHECK(json_is_object(root), SLM_ERR_FORMAT, "%s: not a JSON object", path);
    json_t *wm = json_object_get(root, "weight_map");
    SLM_CHECK(json_is_object(wm), SLM_ERR_FORMAT, "%s: no \"weight_map\" object", path);
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        SLM_CHECK(json_is_string(v), SLM_ERR_FORMAT, "%s: weight_map: tensor \"%s\": its file is not a string", path, key);
        SLM_CHECK(plain_file_name(json_string_value(v)), SLM_ERR_FORMAT,
                  "%s: weight_map: tensor \"%s\": \"%s\" is not a file name in the index's directory", path, key,
                  json_string_value(v));
        names[n++] = json_string_value(v);
    }
    /* the distinct shard files, in name order */
    qsort(names, n, sizeof *names, cmp_str);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (!nf || strcmp(names[nf - 1], names[i])) names[nf++] = names[i];
    SLM_CALL(add_files(st, nf));
    const char *slash = strrchr(path, '/');
    const int dlen = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    for (size_t i = 0; i < nf; i++) {
        st_file *f = &st->files[i];
        const size_t len = (size_t)dlen + strlen(names[i]) + 2;
        f->path = malloc(len);
        SLM_CHECK(f->path, SLM_ERR_NOMEM, "%s: out of memory", path);
        snprintf(f->path, len, "%.*s/%s", dlen, dir, names[i]);
        struct stat sb;
        if (stat(f->path, &sb) != 0) {
            const int err = errno;
            const char *tensor = "";
            json_object_foreach(wm, key, v) if (!strcmp(json_string_value(v), names[i])) { tensor = key; break; }
            return SLM_ERROR(SLM_ERR_IO, "%s: weight_map puts tensor \"%s\" in %s, which cannot be opened: %s", path,
                             tensor, f->path, strerror(err));
        }
        SLM_CALL(parse_file(st, i));
    }
    SLM_CALL(sort_tensors(st));
    /* each tensor in the file the index names, and nothing the index does not name */
    json_object_foreach(wm, key, v) {
        const slm_st_info *t = slm_st_find(st, key);
        const char *file = json_string_value(v);
        SLM_CHECK(t, SLM_ERR_FORMAT, "%s: weight_map puts tensor \"%s\" in %s, which does not hold it", path, key, file);
        /* t->file is "<dir>/<name>" as built above */
        SLM_CHECK(!strcmp(t->file + dlen + 1, file), SLM_ERR_FORMAT,
                  "%s: weight_map puts tensor \"%s\" in %s, but it is in %s", path, key, file, t->file);
    }
    for (size_t i = 0; i < st->n; i++)
        SLM_CHECK(json_object_get(wm, st->t[i].info.name), SLM_ERR_FORMAT,
                  "%s: %s holds tensor \"%s\", which weight_map does not name", path, st->t[i].info.file,
                  st->t[i].info.name);
    return SLM_OK;
}

static slm_status open_index(struct slm_st *st, const char *path)
{
    FILE *f = fopen(path, "rb");
    SLM_CHECK(f, SLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    SLM_CHECK(root, SLM_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", path, je.text, je.line);
    json_t *wm = json_object_get(root, "weight_map");
    const char **names = malloc((json_is_object(wm) ? json_object_size(wm) : 0) * sizeof *names + 1);
    slm_status s = names ? parse_index(st, path, root, names) : SLM_ERROR(SLM_ERR_NOMEM, "%s: out of memory", path);
    free(names);
    json_decref(root);
    SLM_CALL(s);
    return SLM_OK;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode);
}

static slm_status open_path(struct slm_st *st, const char *path)
{
    struct stat sb;
    SLM_CHECK(stat(path, &sb) == 0, SLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        if (ends_with(path, ".json")) SLM_CALL(open_index(st, path));
        else SLM_CALL(open_single(st, path));
        return SLM_OK;
    }
    const size_t len = strlen(path) + 40;
    char *p = malloc(len);
    SLM_CHECK(p, SLM_ERR_NOMEM, "%s: out of memory", path);
    slm_status s;
    snprintf(p, len, "%s/model.safetensors", path);
    if (is_file(p)) {
        s = open_single(st, p);
    } else {
        snprintf(p, len, "%s/model.safetensors.index.json", path);
        s = is_file(p) ? open_index(st, p)
                       : SLM_ERROR(SLM_ERR_IO, "%s: holds neither model.safetensors nor model.safetensors.index.json", path);
    }
    free(p);
    SLM_CALL(s);
    return SLM_OK;
}

slm_status slm_st_open(const char *path, slm_st_t *out)
{
    *out = NULL;
    struct slm_st *st = calloc(1, sizeof *st);
    SLM_CHECK(st, SLM_ERR_NOMEM, "%s: out of memory", path);
    st->path = strdup(path);
    slm_status s = st->path ? open_path(st, path) : SLM_ERROR(SLM_ERR_NOMEM, "%s: out of memory", path);
    if (s != SLM_OK) {
        slm_st_close(&st);
        SLM_CALL(s);
    }
    *out = st;
    return SLM_OK;
}

void slm_st_close(slm_st_t *pst)
{
    if (!pst || !*pst) return;
    struct slm_st *st = *pst;
    for (size_t i = 0; i < st->nfiles; i++) {
        if (st->files[i].fd >= 0) close(st->files[i].fd);
        json_decref(st->files[i].metadata);
        free(st->files[i].path);
    }
    for (size_t i = 0; i < st->n; i++) free((char *)st->t[i].info.name);
    free(st->files);
    free(st->t);
    free(st->path);
    free(st);
    *pst = NULL;
}

/* ---- queries --------------------------------------------------------------------- */

size_t slm_st_num_tensors(slm_st_t st) { return st->n; }

const slm_st_info *slm_st_tensor(slm_st_t st, size_t i) { return i < st->n ? &st->t[i].info : NULL; }

const slm_st_info *slm_st_find(slm_st_t st, const char *name)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].info.name, name);
        if (!c) return &st->t[mid].info;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *slm_st_metadata(slm_st_t st, const char *key)
{
    for (size_t i = 0; i < st->nfiles; i++) {
        json_t *v = st->files[i].metadata ? json_object_get(st->files[i].metadata, key) : NULL;
        if (v) return json_string_value(v);
    }
    return NULL;
}
