/* notify — the service manager's readiness protocol (sd_notify(3)) spoken
 * directly: one datagram of "KEY=VALUE\n" lines to $NOTIFY_SOCKET. No
 * libsystemd, so the same binary runs on routers without it. */
#ifndef DV_CORE_NOTIFY_H
#define DV_CORE_NOTIFY_H

#include <stdint.h>

/* Sends state (e.g. "READY=1\nSTATUS=...") as one datagram. 0 when sent,
 * 1 when no supervisor listens ($NOTIFY_SOCKET unset: nothing to do),
 * DV_EINVAL for a socket address we cannot use, DV_EIO with errno set when
 * the send failed. Never blocks. */
int notify_send(const char *state);
/* The same, formatted; DV_ESPACE when the text exceeds one datagram we are
 * willing to build (4 KiB). */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Microseconds between the keep-alive pings the supervisor expects, or 0
 * when none are expected from this process: $WATCHDOG_USEC unset or not a
 * positive number, or $WATCHDOG_PID naming another process. */
uint64_t notify_watchdog_usec(void);

/* CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants in MONOTONIC_USEC. */
uint64_t notify_monotonic_usec(void);

#endif
