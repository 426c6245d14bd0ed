/* json_numbers.c - read named numbers from a small JSON file (laws, calibrations). */
#include <jansson.h>
#include "plan_impl.h"

slm_status slm_plan_json_numbers(const char *path, const char *const *keys, int n, double *v, const char *hint)
{
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    SLM_CHECK(root, SLM_ERR_FORMAT, "%s:%d:%d: %s", path, err.line, err.column, err.text);
    for (int i = 0; i < n; i++) {
        json_t *x = json_object_get(root, keys[i]);
        if (!json_is_number(x)) {
            json_decref(root);
            return SLM_ERROR(SLM_ERR_FORMAT, "%s: no number \"%s\" (%s)", path, keys[i], hint);
        }
        v[i] = json_number_value(x);
    }
    json_decref(root);
    return SLM_OK;
}
