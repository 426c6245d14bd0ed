/* shardlm/timer.h - wall-clock time and process memory. */
#ifndef SHARDLM_TIMER_H
#define SHARDLM_TIMER_H

/* Seconds on a monotonic clock. */
double slm_now(void);
/* Peak resident set size of this process in MiB (from getrusage). */
double slm_peak_rss_mib(void);

#endif
