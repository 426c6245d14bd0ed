/* shardlm/writable.h - checking at start-up that what a run will write to can be written,
 * so a bad path is an error before the first step, not after hours of work. Local. */
#ifndef SHARDLM_WRITABLE_H
#define SHARDLM_WRITABLE_H

#include "shardlm/status.h"

/* The file `path` (named by the configuration key `key`) can be created or opened for
 * writing. Nothing is truncated; a file this check creates is removed again. */
slm_status slm_check_writable_file(const char *key, const char *path);

/* The directory `path` exists (created with its parents when missing) and a file can be
 * created in it; the probe file, named after `rank`, is removed again. */
slm_status slm_check_writable_dir(const char *key, const char *path, int rank);

/* Create `path` and any missing parents, like mkdir -p. 0, or -1 with errno. */
int slm_mkdir_p(const char *path);

#endif
