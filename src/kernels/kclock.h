/* kclock.h - the kernels' time accounting (slm_kernel_clock in shardlm/kernels.h): a
 * kernel notes its start and adds its duration to its kind on the way out. */
#ifndef SHARDLM_KCLOCK_H
#define SHARDLM_KCLOCK_H

#include "shardlm/kernels.h"
#include "shardlm/timer.h"

#define KCLOCK_START const double kclock_t0_ = slm_now()
#define KCLOCK_STOP(kind) (slm_kernel_clock.kind += slm_now() - kclock_t0_)

#endif
