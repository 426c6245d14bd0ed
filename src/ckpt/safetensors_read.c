/* safetensors_read.c - reading a range or a 2-D block of one tensor as fp32.
 *
 * Only the bytes asked for are read (pread from the tensor's file, nothing mapped), so a
 * rank that holds a slice of a model reads that slice and no more. A range of BF16 or F16
 * elements is read into the back half of the caller's own fp32 buffer and widened in
 * place, front to back: element i's 4 bytes end at byte 4i + 4, which is never past the
 * first byte of a 2-byte element j > i that is still to be read (at 2 * count + 2j), so no
 * second buffer is needed. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include "safetensors_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader stores it as read, so it needs a little-endian host"
#endif

static inline float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32, exact: every half is a float. */
static inline float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | man << 13); /* inf, or NaN with its payload */
    if (exp) return bits_to_float(sign | (exp + 127 - 15) << 23 | man << 13); /* normal: rebias the exponent */
    /* zero or subnormal: man x 2^-24, exact in binary32 (a normal number there) */
    const float mag = (float)man * 0x1p-24f;
    return sign ? -mag : mag;
}

static slm_status read_run(slm_st_t st, const st_tensor *t, size_t first, size_t count, float *dst)
{
    if (!count) return SLM_OK;
    const st_file *f = &st->files[t->file];
    const size_t es = st_dtype_size(t->info.dtype);
    unsigned char *raw = (unsigned char *)dst + (sizeof(float) - es) * count;
    size_t n = es * count;
    uint64_t off = t->offset + es * first;
    for (unsigned char *p = raw; n;) {
        ssize_t r = pread(f->fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        SLM_CHECK(r >= 0, SLM_ERR_IO, "%s: tensor \"%s\": cannot read at byte %" PRIu64 ": %s", f->path, t->info.name, off,
                  strerror(errno));
        SLM_CHECK(r > 0, SLM_ERR_IO, "%s: tensor \"%s\": the file ends at byte %" PRIu64 " (cut short since it was opened?)",
                  f->path, t->info.name, off);
        p += r, off += (uint64_t)r, n -= (size_t)r;
    }
    if (t->info.dtype == SLM_ST_DTYPE_BF16) {
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            dst[i] = bits_to_float((uint32_t)h << 16);
        }
    } else if (t->info.dtype == SLM_ST_DTYPE_F16) {
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            dst[i] = half_to_float(h);
        }
    }
    return SLM_OK;
}

static slm_status find(slm_st_t st, const char *name, const st_tensor **t)
{
    const slm_st_info *info = slm_st_find(st, name);
    SLM_CHECK(info, SLM_ERR_ARG, "%s: no tensor \"%s\"", st->path, name);
    *t = (const st_tensor *)((const char *)info - offsetof(st_tensor, info));
    return SLM_OK;
}

slm_status slm_st_read(slm_st_t st, const char *name, size_t first, size_t count, float *dst)
{
    const st_tensor *t = NULL;
    SLM_CALL(find(st, name, &t));
    SLM_CHECK(first <= t->info.numel && count <= t->info.numel - first, SLM_ERR_ARG,
              "%s: tensor \"%s\": elements [%zu, %zu + %zu) are past its %zu elements", t->info.file, name, first, first,
              count, t->info.numel);
    SLM_CALL(read_run(st, t, first, count, dst));
    return SLM_OK;
}

slm_status slm_st_read_block(slm_st_t st, const char *name, size_t r0, size_t nr, size_t c0, size_t nc, float *dst)
{
    const st_tensor *t = NULL;
    SLM_CALL(find(st, name, &t));
    SLM_CHECK(t->info.ndim == 2, SLM_ERR_ARG, "%s: tensor \"%s\" has %d dimensions; a block is read from a 2-D tensor",
              t->info.file, name, t->info.ndim);
    const size_t R = t->info.shape[0], C = t->info.shape[1];
    SLM_CHECK(r0 <= R && nr <= R - r0 && c0 <= C && nc <= C - c0, SLM_ERR_ARG,
              "%s: tensor \"%s\": rows [%zu, %zu + %zu) x columns [%zu, %zu + %zu) are not inside its shape [%zu, %zu]",
              t->info.file, name, r0, r0, nr, c0, c0, nc, R, C);
    if (!nr || !nc) return SLM_OK;
    if (nc == C) {
        SLM_CALL(read_run(st, t, r0 * C, nr * C, dst));
        return SLM_OK;
    }
    for (size_t r = 0; r < nr; r++) SLM_CALL(read_run(st, t, (r0 + r) * C + c0, nc, dst + r * nc));
    return SLM_OK;
}
