/* shardlm/log.h - leveled logging. Rank 0 prints by default; every line carries the
 * rank when the world has more than one. The level is checked before formatting. */
#ifndef SHARDLM_LOG_H
#define SHARDLM_LOG_H

typedef enum { SLM_LOG_ERROR = 0, SLM_LOG_WARN, SLM_LOG_INFO, SLM_LOG_DEBUG } slm_log_level;

/* Set who prints and how much. all_ranks: every rank prints INFO, not just rank 0. */
void slm_log_setup(int rank, int world, slm_log_level level, int all_ranks);
int slm_log_enabled(slm_log_level level);
void slm_log_write(slm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SLM_LOG(level, ...)                                                        \
    do {                                                                           \
        if (slm_log_enabled(level)) slm_log_write(level, __VA_ARGS__);             \
    } while (0)
#define slm_info(...) SLM_LOG(SLM_LOG_INFO, __VA_ARGS__)
#define slm_warn(...) SLM_LOG(SLM_LOG_WARN, __VA_ARGS__)
#define slm_debug(...) SLM_LOG(SLM_LOG_DEBUG, __VA_ARGS__)

#endif
