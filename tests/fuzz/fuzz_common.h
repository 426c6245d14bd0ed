/* fuzz_common.h - what the fuzz targets share: inputs become files, because the readers
 * under test map files, as they do in a run. */
#ifndef SLM_FUZZ_COMMON_H
#define SLM_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A per-process scratch directory (under $TMPDIR), made once. */
static const char *fuzz_dir(void)
{
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/slm-fuzz.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

/* Write n bytes to DIR/name; returns the path (static buffer per slot). */
static const char *fuzz_file(int slot, const char *name, const uint8_t *data, size_t n)
{
    static char paths[3][512];
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(paths[slot], "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
    return paths[slot];
}

/* Split an input in two at the length its first two bytes give (little-endian). */
static void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na, const uint8_t **b, size_t *nb)
{
    size_t cut = size >= 2 ? (size_t)(data[0] | data[1] << 8) : 0;
    data += size >= 2 ? 2 : size;
    size -= size >= 2 ? 2 : size;
    if (cut > size) cut = size;
    *a = data, *na = cut, *b = data + cut, *nb = size - cut;
}

#ifdef SHARDLM_DATA_H
/* Open a token file as a run does (vocabulary 300, windows of 8 + 1) and read its windows:
 * a bad file must be an error, never a crash or a read outside it. */
static void fuzz_read_dataset(const char *path)
{
    slm_dataset_t ds = NULL;
    if (slm_dataset_open(path, 300, 8, 1, 0, 0, &ds) != SLM_OK) return;
    int32_t w[9];
    for (size_t g = 0; g < slm_dataset_num_windows(ds) && g < 64; g++) slm_dataset_sample(ds, g, w);
    slm_dataset_destroy(&ds);
}
#endif

#endif
