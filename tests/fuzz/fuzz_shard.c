/* fuzz_shard.c - the llm.c shard reader on any bytes: open, then read every window. A
 * bad file must be an error, never a crash or a read outside the file. */
#include "fuzz_common.h"
#include "shardlm/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, "shard.bin", data, size);
    slm_dataset_t ds = NULL;
    if (slm_dataset_open(path, 300, 8, 1, 0, 0, &ds) == SLM_OK) {
        int32_t w[9];
        for (size_t g = 0; g < slm_dataset_num_windows(ds) && g < 64; g++) slm_dataset_sample(ds, g, w);
        slm_dataset_destroy(&ds);
    }
    return 0;
}
