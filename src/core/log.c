#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

int log_level = DV_LOG_INFO;
static bool log_syslog;

void log_init(int level, bool use_syslog)
{
    log_level = level;
    if (use_syslog && !log_syslog)
        openlog("dnsveil", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog = use_syslog;
}

void log_msg(int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    if (log_syslog) {
        vsyslog(prio[level], fmt, ap);
    } else {
        char ts[32];
        struct timespec now;
        struct tm tm;

        clock_gettime(CLOCK_REALTIME, &now);
        localtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
        /* one fprintf per line so concurrent writers never interleave mid-line */
        char line[1024];
        vsnprintf(line, sizeof(line), fmt, ap);
        fprintf(stderr, "%s.%03ld dnsveil[%s]: %s\n", ts, now.tv_nsec / 1000000L,
                names[level], line);
    }
    va_end(ap);
}
