/* timer.c - monotonic clock and peak memory. */
#define _POSIX_C_SOURCE 200809L
#include <sys/resource.h>
#include <time.h>
#include "shardlm/timer.h"

double slm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double slm_peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}
