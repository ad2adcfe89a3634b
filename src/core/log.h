/* log — leveled logging to stderr, or to syslog once the daemon detaches. */
#ifndef DV_CORE_LOG_H
#define DV_CORE_LOG_H

#include <stdbool.h>

enum { DV_LOG_ERR = 0, DV_LOG_WARN = 1, DV_LOG_INFO = 2, DV_LOG_DEBUG = 3 };

extern int log_level; /* read by the macros so disabled levels cost one compare */

void log_init(int level, bool use_syslog);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(DV_LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(DV_LOG_WARN, __VA_ARGS__)
#define log_info(...) \
    do { if (log_level >= DV_LOG_INFO) log_msg(DV_LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) \
    do { if (log_level >= DV_LOG_DEBUG) log_msg(DV_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
