/* plan_impl.h - what the planner's files share and nothing else sees. */
#ifndef SLM_PLAN_IMPL_H
#define SLM_PLAN_IMPL_H
#include "shardlm/status.h"

/* The numbers keys[0..n) of the JSON object in `path`, into v. A missing or non-numeric
 * key is an error naming the file and the key, followed by `hint` in parentheses. */
slm_status slm_plan_json_numbers(const char *path, const char *const *keys, int n, double *v, const char *hint);

#endif
