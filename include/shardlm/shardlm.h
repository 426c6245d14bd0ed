/* shardlm/shardlm.h - umbrella header for libshardlm. */
#ifndef SHARDLM_SHARDLM_H
#define SHARDLM_SHARDLM_H

#include "shardlm/status.h"
#include "shardlm/log.h"
#include "shardlm/activity.h"
#include "shardlm/ckpt.h"
#include "shardlm/conf.h"
#include "shardlm/rng.h"
#include "shardlm/timer.h"
#include "shardlm/kernels.h"
#include "shardlm/model.h"
#include "shardlm/optim.h"
#include "shardlm/data.h"
#include "shardlm/parallel.h"
#include "shardlm/runtime.h"

#endif
