/* shardlm/timer.h - wall-clock time, process memory, and the median of timings. */
#ifndef SHARDLM_TIMER_H
#define SHARDLM_TIMER_H

/* Seconds on a monotonic clock. */
double slm_now(void);
/* Peak resident set size of this process in MiB (from getrusage). */
double slm_peak_rss_mib(void);
/* The median of v[0..n), n >= 1; sorts v in place. */
double slm_median(double *v, int n);

#endif
