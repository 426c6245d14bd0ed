/* status.c - error messages and their call trace.
 *
 * An error is raised once (message + origin) and gains one frame per SLM_CALL on its way
 * up. The state is per thread so a progress thread cannot garble the main thread's. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "shardlm/status.h"

#define SLM_TRACE_MAX 16

static _Thread_local struct {
    slm_status code;
    char msg[1024];
    int depth;
    char frames[SLM_TRACE_MAX][160];
} err;

const char *slm_status_name(slm_status s)
{
    switch (s) {
    case SLM_OK: return "ok";
    case SLM_ERR_ARG: return "invalid argument";
    case SLM_ERR_CONFIG: return "configuration error";
    case SLM_ERR_IO: return "I/O error";
    case SLM_ERR_FORMAT: return "bad file format";
    case SLM_ERR_NOMEM: return "out of memory";
    case SLM_ERR_MPI: return "MPI error";
    case SLM_ERR_UNSUPPORTED: return "not supported";
    case SLM_ERR_INTERNAL: return "internal error";
    case SLM_PREEMPTED: return "preempted";
    }
    return "unknown error";
}

static void add_frame(const char *file, int line, const char *func)
{
    if (err.depth < SLM_TRACE_MAX)
        snprintf(err.frames[err.depth], sizeof err.frames[0], "%s() at %s:%d", func, file, line);
    err.depth++;
}

slm_status slm_error_raise(slm_status code, const char *file, int line, const char *func,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    err.code = code;
    err.depth = 0;
    add_frame(file, line, func);
    return code;
}

slm_status slm_error_push(slm_status code, const char *file, int line, const char *func)
{
    if (err.code == SLM_OK) { /* a callee returned an error without raising one */
        err.code = code;
        snprintf(err.msg, sizeof err.msg, "%s", slm_status_name(code));
        err.depth = 0;
    }
    add_frame(file, line, func);
    return code;
}

const char *slm_error_message(void) { return err.msg; }

void slm_error_format(char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "%s (%s)", err.msg, slm_status_name(err.code));
    int n = err.depth < SLM_TRACE_MAX ? err.depth : SLM_TRACE_MAX;
    for (int i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "\n    %s %s", i ? "called from" : "raised in",
                                 err.frames[i]);
}

void slm_error_clear(void)
{
    err.code = SLM_OK;
    err.msg[0] = '\0';
    err.depth = 0;
}
