/* shard.c - writing llm.c token shards (reading lives in dataset.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "shardlm/data.h"

slm_status slm_shard_write(const char *path, const uint16_t *tokens, size_t n)
{
    SLM_CHECK(n <= 0x7fffffff, SLM_ERR_ARG, "%s: %zu tokens do not fit one shard header", path, n);
    int32_t header[256] = {0};
    header[0] = SLM_SHARD_MAGIC;
    header[1] = SLM_SHARD_VERSION;
    header[2] = (int32_t)n;
    FILE *f = fopen(path, "wb");
    SLM_CHECK(f, SLM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(header, sizeof header, 1, f) == 1 && fwrite(tokens, sizeof *tokens, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    SLM_CHECK(ok, SLM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return SLM_OK;
}
