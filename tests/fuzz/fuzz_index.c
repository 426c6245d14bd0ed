/* fuzz_index.c - the Megatron index reader on any .idx and .bin (the input split in two):
 * open, then read every window. A bad pair must be an error, never a crash. */
#include "shardlm/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *idx, *bin;
    size_t nidx, nbin;
    fuzz_split(data, size, &idx, &nidx, &bin, &nbin);
    const char *path = fuzz_file(0, "set.idx", idx, nidx);
    fuzz_file(1, "set.bin", bin, nbin);
    fuzz_read_dataset(path);
    return 0;
}
