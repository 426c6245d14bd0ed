/* activity.c - the current activity of this rank, written by the compute thread and read
 * by the watchdog thread. Plain relaxed atomics: a report that is one store late is fine. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include "shardlm/activity.h"
#include "shardlm/timer.h"

static _Atomic(const char *) cur_what = "starting";
static atomic_int cur_detail = -1;
static atomic_long cur_step = 0;
static _Atomic double last_progress = 0.0;

void slm_activity_set(const char *what, int detail)
{
    atomic_store_explicit(&cur_what, what, memory_order_relaxed);
    atomic_store_explicit(&cur_detail, detail, memory_order_relaxed);
}

void slm_activity_set_text(const char *fmt, ...)
{
    /* two buffers in turn: the watchdog may still be reading the previous text */
    static char text[2][256];
    static int turn;
    turn ^= 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text[turn], sizeof text[turn], fmt, ap);
    va_end(ap);
    slm_activity_set(text[turn], -1);
}

void slm_activity_set_step(long step) { atomic_store_explicit(&cur_step, step, memory_order_relaxed); }

void slm_activity_progress(void) { atomic_store_explicit(&last_progress, slm_now(), memory_order_relaxed); }

void slm_activity_get(const char **what, int *detail, long *step, double *since_progress)
{
    *what = atomic_load_explicit(&cur_what, memory_order_relaxed);
    *detail = atomic_load_explicit(&cur_detail, memory_order_relaxed);
    *step = atomic_load_explicit(&cur_step, memory_order_relaxed);
    *since_progress = slm_now() - atomic_load_explicit(&last_progress, memory_order_relaxed);
}
