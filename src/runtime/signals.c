/* signals.c - preemption signals and the watchdog.
 *
 * SIGTERM, SIGUSR1 and SIGINT (Slurm's --signal, scancel, a spot reclaim notice, ^C) set a
 * flag; the training loop agrees on it across ranks at the next step boundary (the signal
 * may reach only some ranks), writes a checkpoint and exits with SLM_EXIT_PREEMPTED. A
 * second signal, or ckpt.grace_s after the first, exits at once with the same status:
 * checkpoints are committed by rename, so the newest committed one is always whole.
 *
 * The watchdog is a thread that wakes every second; when no step has completed for
 * train.watchdog_s it reports what this rank is doing (activity.h) and aborts the job, so
 * a hung collective ends with a diagnosis instead of burning the allocation. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "shardlm/activity.h"
#include "shardlm/runtime.h"

static volatile sig_atomic_t pending_signal, signal_count;
static double grace_seconds;
static char first_signal_note[128]; /* formatted before any signal: the handler only write()s it */

static void say(const char *msg)
{
    ssize_t rc = write(STDERR_FILENO, msg, strlen(msg));
    (void)rc;
}

static void on_alarm(int sig)
{
    (void)sig;
    say("shardlm: ckpt.grace_s passed since the preemption signal: exiting now; the newest committed "
        "checkpoint stands\n");
    _exit(SLM_EXIT_PREEMPTED);
}

static void on_signal(int sig)
{
    if (signal_count++ > 0) {
        say("shardlm: second signal: exiting now; the newest committed checkpoint stands\n");
        _exit(SLM_EXIT_PREEMPTED);
    }
    pending_signal = sig;
    say(first_signal_note);
    if (grace_seconds > 0) alarm((unsigned)ceil(grace_seconds));
}

void slm_signals_install(int rank, double grace_s)
{
    grace_seconds = grace_s;
    snprintf(first_signal_note, sizeof first_signal_note,
             "[rank %d] shardlm: preemption signal received: checkpoint at the next step boundary "
             "(a second signal exits at once)\n", rank);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
}

int slm_signal_pending(void) { return pending_signal; }

struct slm_watchdog {
    pthread_t thread;
    MPI_Comm comm;
    double limit;
    int rank;
    volatile int stop;
};

static void *watch(void *arg)
{
    slm_watchdog_t w = arg;
    while (!w->stop) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        const char *what;
        int detail;
        long step;
        double idle;
        slm_activity_get(&what, &detail, &step, &idle);
        if (w->stop || idle < w->limit) continue;
        char where[160];
        if (detail >= 0) snprintf(where, sizeof where, "%s (bucket %d)", what, detail);
        else snprintf(where, sizeof where, "%s", what);
        fprintf(stderr, "[rank %d] shardlm: watchdog: no step completed for %.0f s (train.watchdog_s = %g): "
                        "stuck at step %ld in %s; aborting the job\n", w->rank, idle, w->limit, step + 1, where);
        fflush(stderr);
        MPI_Abort(w->comm, SLM_EXIT_WATCHDOG);
    }
    return NULL;
}

slm_status slm_watchdog_start(MPI_Comm comm, double limit_s, slm_watchdog_t *out)
{
    *out = NULL;
    if (limit_s <= 0) return SLM_OK;
    static struct slm_watchdog w; /* one per process */
    memset(&w, 0, sizeof w);
    w.comm = comm;
    w.limit = limit_s;
    MPI_Comm_rank(comm, &w.rank);
    slm_activity_progress();
    SLM_CHECK(pthread_create(&w.thread, NULL, watch, &w) == 0, SLM_ERR_INTERNAL, "cannot start the watchdog");
    *out = &w;
    return SLM_OK;
}

void slm_watchdog_stop(slm_watchdog_t *wp)
{
    if (!*wp) return;
    (*wp)->stop = 1;
    pthread_join((*wp)->thread, NULL);
    *wp = NULL;
}
