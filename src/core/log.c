/* log.c - leveled logging to stderr (errors, warnings) and stdout (progress). */
#include <stdarg.h>
#include <stdio.h>
#include "shardlm/log.h"

static struct {
    int rank, world, all_ranks;
    slm_log_level level;
} lg = {0, 1, 0, SLM_LOG_INFO};

void slm_log_setup(int rank, int world, slm_log_level level, int all_ranks)
{
    lg.rank = rank;
    lg.world = world;
    lg.level = level;
    lg.all_ranks = all_ranks;
}

int slm_log_enabled(slm_log_level level)
{
    if (level > lg.level) return 0;
    /* Errors and warnings come from any rank; progress only from rank 0 unless asked. */
    return level <= SLM_LOG_WARN || lg.rank == 0 || lg.all_ranks;
}

void slm_log_write(slm_log_level level, const char *fmt, ...)
{
    FILE *f = level <= SLM_LOG_WARN ? stderr : stdout;
    static const char *tag[] = {"error: ", "warning: ", "", "debug: "};
    if (lg.world > 1) fprintf(f, "[%d] ", lg.rank);
    fputs(tag[level], f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}
