/* tls_time — may certificate validity dates be judged by the system clock?
 *
 * A router without a real-time clock boots at 1970 (or at its firmware's
 * build date) and only learns the time from NTP, which needs DNS, which here
 * needs TLS: checking validity dates against that clock fails every
 * upstream and the clock is never fixed. The wall clock cannot truly be
 * earlier than the day this binary was built, so in TLS_TIME_AUTO mode, while
 * it reads earlier than that, certificate validity dates are not checked;
 * the chain, the name, the pins and every signature still are. Once the
 * clock passes the build date the full checks are back for every new
 * connection. TLS_TIME_STRICT never relaxes.
 *
 * The mode is process-wide (the daemon sets it from [server] tls_time_check
 * before it builds upstreams); time is a parameter. */
#ifndef DV_UPSTREAM_TLS_TIME_H
#define DV_UPSTREAM_TLS_TIME_H

#include <stdbool.h>
#include <stdint.h>

enum tls_time_mode {
    TLS_TIME_AUTO,   /* skip validity dates while the clock is before the build date */
    TLS_TIME_STRICT, /* always check them */
};

void tls_time_set_mode(enum tls_time_mode m);
enum tls_time_mode tls_time_get_mode(void);

/* Seconds since the epoch (UTC) of this build: SOURCE_DATE_EPOCH when the
 * build set it, else the day CMake configured the tree. */
int64_t tls_time_build_epoch(void);

/* The rule itself, without state: true when dates must not be checked. */
bool tls_time_relaxed_at(enum tls_time_mode m, int64_t now, int64_t build);

/* The rule for the process's mode and this build at wall-clock time now.
 * Logs once when validity checks are first suspended (or, in strict mode,
 * once that the clock looks unset) and once when they resume. */
bool tls_time_relaxed(int64_t now);

#endif
