/* shardlm/activity.h - what this rank is doing right now, for the watchdog's report
 * when a run stops making progress (a hung collective, a dead peer). Setting it is a
 * couple of stores, cheap enough for every wait. */
#ifndef SHARDLM_ACTIVITY_H
#define SHARDLM_ACTIVITY_H

/* what: a static string ("MPI_Wait: reduce-scatter"); detail: e.g. a bucket, or -1. */
void slm_activity_set(const char *what, int detail);
/* The same with a formatted text (a peer, a block), kept until the next set. */
void slm_activity_set_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void slm_activity_set_step(long step);
/* A completed step: the watchdog's clock restarts. */
void slm_activity_progress(void);
/* Read by the watchdog thread. */
void slm_activity_get(const char **what, int *detail, long *step, double *since_progress);

#endif
