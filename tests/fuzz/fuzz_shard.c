/* fuzz_shard.c - the llm.c shard reader on any bytes: open, then read every window. A
 * bad file must be an error, never a crash or a read outside the file. */
#include "shardlm/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, "shard.bin", data, size);
    fuzz_read_dataset(path);
    return 0;
}
