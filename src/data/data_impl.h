/* data_impl.h - helpers shared inside src/data. */
#ifndef SHARDLM_DATA_IMPL_H
#define SHARDLM_DATA_IMPL_H

#include <stddef.h>
#include "shardlm/status.h"

/* Map a whole file read-only; *len receives its size (an empty file maps to NULL). The
 * errors name the file. Undo with munmap(*map, *len). (dataset.c) */
slm_status slm_map_file(const char *path, void **map, size_t *len);

#endif
