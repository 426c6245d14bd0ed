/* shardlm/status.h - status codes and the call/check macros every module uses.
 *
 * Every function that can fail returns slm_status. SLM_CALL() appends the caller's
 * file, line and function to a per-thread trace as an error travels up, so the top
 * level can print where it started and how it got there (the way PetscCall works).
 * SLM_CHECK() rejects bad input or bad state and stays on in release builds;
 * SLM_ASSERT() guards internal invariants and is compiled out with NDEBUG. */
#ifndef SHARDLM_STATUS_H
#define SHARDLM_STATUS_H

#include <stddef.h>

typedef enum slm_status {
    SLM_OK = 0,
    SLM_ERR_ARG,      /* bad argument or configuration value */
    SLM_ERR_CONFIG,   /* unknown key, unparsable config file */
    SLM_ERR_IO,       /* file missing, short read, failed write */
    SLM_ERR_FORMAT,   /* file present but malformed */
    SLM_ERR_NOMEM,    /* allocation failed */
    SLM_ERR_MPI,      /* an MPI call failed */
    SLM_ERR_UNSUPPORTED, /* a valid request this build cannot serve yet */
    SLM_ERR_INTERNAL,
    SLM_PREEMPTED        /* not a failure: stopped by a signal after writing a checkpoint */
} slm_status;

/* Human-readable name of a status code ("invalid argument", ...). */
const char *slm_status_name(slm_status s);

/* Start a new error: records the message and the place it was raised. Returns code. */
slm_status slm_error_raise(slm_status code, const char *file, int line, const char *func,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Append one frame to the current error's trace. Returns code unchanged. */
slm_status slm_error_push(slm_status code, const char *file, int line, const char *func);
/* The message of the most recent error on this thread ("" if none). */
const char *slm_error_message(void);
/* Write message and trace to a buffer (for printing by the top level). */
void slm_error_format(char *buf, size_t len);
/* Forget the current error (after it was handled). */
void slm_error_clear(void);

#define SLM_CALL(expr)                                                             \
    do {                                                                           \
        slm_status slm_call_s_ = (expr);                                           \
        if (slm_call_s_ != SLM_OK)                                                 \
            return slm_error_push(slm_call_s_, __FILE__, __LINE__, __func__);      \
    } while (0)

#define SLM_CHECK(cond, code, ...)                                                 \
    do {                                                                           \
        if (!(cond)) return slm_error_raise((code), __FILE__, __LINE__, __func__,  \
                                            __VA_ARGS__);                          \
    } while (0)

#define SLM_ERROR(code, ...) slm_error_raise((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

#ifdef NDEBUG
#define SLM_ASSERT(cond) ((void)0)
#else
#define SLM_ASSERT(cond)                                                           \
    do {                                                                           \
        if (!(cond)) return slm_error_raise(SLM_ERR_INTERNAL, __FILE__, __LINE__,  \
                                            __func__, "assertion failed: %s", #cond); \
    } while (0)
#endif

#endif
