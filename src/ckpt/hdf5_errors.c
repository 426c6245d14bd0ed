/* hdf5_errors.c - HDF5 speaks through shardlm's errors (shardlm/ckpt.h). */
#include <hdf5.h>
#include "shardlm/ckpt.h"

void slm_hdf5_errors_off(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
