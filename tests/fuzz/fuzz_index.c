/* fuzz_index.c - the Megatron index reader on any .idx and .bin (the input split in two):
 * open, then read every window. A bad pair must be an error, never a crash. */
#include "fuzz_common.h"
#include "shardlm/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *idx, *bin;
    size_t nidx, nbin;
    fuzz_split(data, size, &idx, &nidx, &bin, &nbin);
    const char *path = fuzz_file(0, "set.idx", idx, nidx);
    fuzz_file(1, "set.bin", bin, nbin);
    slm_dataset_t ds = NULL;
    if (slm_dataset_open(path, 300, 8, 1, 0, 0, &ds) == SLM_OK) {
        int32_t w[9];
        for (size_t g = 0; g < slm_dataset_num_windows(ds) && g < 64; g++) slm_dataset_sample(ds, g, w);
        slm_dataset_destroy(&ds);
    }
    return 0;
}
