/* fuzz_safetensors.c - the safetensors reader on any index and any file (the input split
 * in two: model.safetensors.index.json, then s.safetensors, the shard a seed's index
 * names): open each, read every tensor whole and the inner block of every 2-D one. A bad
 * input must be an error, never a crash, a leak or a read outside the file. */
#include "shardlm/safetensors.h"
#include "fuzz_common.h"

static void read_all(const char *path)
{
    slm_st_t st = NULL;
    if (slm_st_open(path, &st) != SLM_OK) return;
    for (size_t i = 0; i < slm_st_num_tensors(st); i++) {
        const slm_st_info *t = slm_st_tensor(st, i);
        float *x = malloc((t->numel ? t->numel : 1) * sizeof *x);
        if (!x) abort();
        slm_st_read(st, t->name, 0, t->numel, x);
        if (t->ndim == 2 && t->shape[0] > 1 && t->shape[1] > 1)
            slm_st_read_block(st, t->name, 1, t->shape[0] - 1, 1, t->shape[1] - 1, x);
        free(x);
    }
    slm_st_close(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *index, *shard;
    size_t nindex, nshard;
    fuzz_split(data, size, &index, &nindex, &shard, &nshard);
    const char *ipath = fuzz_file(0, "model.safetensors.index.json", index, nindex);
    const char *spath = fuzz_file(1, "s.safetensors", shard, nshard);
    read_all(spath);
    read_all(ipath);
    return 0;
}
