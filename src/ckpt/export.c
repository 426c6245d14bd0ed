/* export.c - a checkpoint's parameters as a safetensors file.
 *
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (offsets into the data
 * that follows the header), an optional "__metadata__" object of strings, then the raw
 * little-endian data. The header is padded with spaces to a multiple of 8 bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt_impl.h"

typedef struct {
    char name[256];
    hsize_t dims[2];
    int ndim;
    size_t count;
} export_tensor;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const export_tensor *)a)->name, ((const export_tensor *)b)->name);
}

slm_status slm_ckpt_export_safetensors(const char *path, const char *out)
{
    slm_hdf5_errors_off();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    SLM_CHECK(f >= 0, SLM_ERR_FORMAT, "%s: not a readable HDF5 file", path);
    slm_ckpt_meta meta;
    slm_status st = ckpt_meta_read(f, path, &meta);
    hid_t grp = st == SLM_OK ? H5Gopen2(f, "params", H5P_DEFAULT) : -1;
    hsize_t n = 0;
    if (grp >= 0) H5Gget_num_objs(grp, &n);
    export_tensor *t = calloc(n ? n : 1, sizeof *t);
    if (st == SLM_OK && (grp < 0 || !t)) st = SLM_ERROR(SLM_ERR_FORMAT, "%s: no /params group", path);
    for (hsize_t i = 0; st == SLM_OK && i < n; i++) {
        H5Gget_objname_by_idx(grp, i, t[i].name, sizeof t[i].name);
        hid_t ds = H5Dopen2(grp, t[i].name, H5P_DEFAULT);
        hid_t sp = H5Dget_space(ds);
        t[i].ndim = H5Sget_simple_extent_dims(sp, t[i].dims, NULL);
        t[i].count = (size_t)H5Sget_simple_extent_npoints(sp);
        H5Sclose(sp);
        H5Dclose(ds);
    }
    qsort(t, n, sizeof *t, cmp_name);
    /* the header */
    size_t cap = 256 + n * 384, len = 0;
    char *json = malloc(cap);
    if (st == SLM_OK && !json) st = SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    if (st == SLM_OK) {
        len += (size_t)snprintf(json + len, cap - len,
                                "{\"__metadata__\":{\"format\":\"shardlm\",\"step\":\"%ld\",\"n_layer\":\"%d\","
                                "\"n_head\":\"%d\",\"d_model\":\"%d\",\"vocab_size\":\"%d\",\"seq_len\":\"%d\","
                                "\"tied_lm_head\":\"wte\"}",
                                meta.step, meta.model.n_layer, meta.model.n_head, meta.model.d_model, meta.model.vocab_size,
                                meta.model.seq_len);
        size_t off = 0;
        for (hsize_t i = 0; i < n; i++) {
            char shape[64];
            if (t[i].ndim == 2) snprintf(shape, sizeof shape, "%llu,%llu", (unsigned long long)t[i].dims[0],
                                         (unsigned long long)t[i].dims[1]);
            else snprintf(shape, sizeof shape, "%llu", (unsigned long long)t[i].dims[0]);
            len += (size_t)snprintf(json + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],"
                                    "\"data_offsets\":[%zu,%zu]}", t[i].name, shape, off, off + 4 * t[i].count);
            off += 4 * t[i].count;
        }
        len += (size_t)snprintf(json + len, cap - len, "}");
        while (len % 8) json[len++] = ' ';
    }
    FILE *o = st == SLM_OK ? fopen(out, "wb") : NULL;
    if (st == SLM_OK && !o) st = SLM_ERROR(SLM_ERR_IO, "cannot create %s: %s", out, strerror(errno));
    if (st == SLM_OK) {
        unsigned char hl[8];
        for (int b = 0; b < 8; b++) hl[b] = (unsigned char)((uint64_t)len >> (8 * b));
        int ok = fwrite(hl, 1, 8, o) == 8 && fwrite(json, 1, len, o) == len;
        for (hsize_t i = 0; ok && i < n; i++) {
            float *buf = malloc(t[i].count * sizeof(float));
            hid_t ds = H5Dopen2(grp, t[i].name, H5P_DEFAULT);
            ok = buf && H5Dread(ds, H5T_IEEE_F32LE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
            if (!ok && buf) st = SLM_ERROR(SLM_ERR_FORMAT, "%s: /params/%s fails its checksum", path, t[i].name);
            ok = ok && fwrite(buf, sizeof(float), t[i].count, o) == t[i].count;
            H5Dclose(ds);
            free(buf);
        }
        ok = (fclose(o) == 0) && ok;
        if (!ok && st == SLM_OK) st = SLM_ERROR(SLM_ERR_IO, "cannot write %s: %s", out, strerror(errno));
    }
    free(json);
    free(t);
    if (grp >= 0) H5Gclose(grp);
    H5Fclose(f);
    return st;
}
