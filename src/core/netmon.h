/* netmon — notices that the network under the upstream connections has
 * changed, so they can be checked before the next query hangs on a dead one:
 *   - rtnetlink (core/nl): a link going up or down, a local address added or
 *     removed, a default route of the main table added, removed or changed;
 *     what is already known (from a dump at start) is not news, so the
 *     periodic refreshes of router advertisements cause nothing;
 *   - sleep: CLOCK_BOOTTIME runs on while the machine is suspended and
 *     CLOCK_MONOTONIC does not, so their gap jumps by the time slept;
 *   - a hint from outside (netmon_trigger: the control socket's netchange).
 * A burst of these becomes one call of the owner's function once the
 * network has been quiet for NETMON_QUIET_MS (at most NETMON_MAX_MS after
 * the first). */
#ifndef DV_CORE_NETMON_H
#define DV_CORE_NETMON_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

enum {
    NETMON_LINK = 1 << 0,
    NETMON_ADDR = 1 << 1,
    NETMON_ROUTE = 1 << 2,
    NETMON_SLEEP = 1 << 3,
    NETMON_MANUAL = 1 << 4,
};

enum {
    NETMON_QUIET_MS = 50,      /* a burst is over after this much silence */
    NETMON_MAX_MS = 500,       /* ... or this long after it began */
    NETMON_SLEEP_MS = 4000,    /* a clock gap jump beyond this was a sleep */
    NETMON_CLOCK_EVERY_MS = 2000,
};

struct netmon;

/* why: the NETMON_* reasons seen in the burst. */
typedef void (*netmon_fn)(void *arg, unsigned why);

/* Subscribes to rtnetlink and starts the sleep check. NULL with errno when
 * netlink cannot be opened (the caller runs on without it). */
struct netmon *netmon_new(struct ev_loop *loop, netmon_fn fn, void *arg);
void netmon_del(struct netmon *m);
/* Reports a change from outside, debounced like the others. */
void netmon_trigger(struct netmon *m, unsigned why);
/* "link,address" for why, into out (always NUL-terminated). */
const char *netmon_why_str(unsigned why, char *out, size_t cap);

/* ---- the pure parts, time as a parameter --------------------------------- */

/* Embedded; zero-initialised. */
struct netmon_clock {
    int64_t gap_ms; /* BOOTTIME - MONOTONIC at the last look */
    bool init;
};

/* True when the gap grew by more than threshold_ms since the last call: the
 * machine slept in between. */
bool netmon_clock_slept(struct netmon_clock *c, uint64_t mono_ms, uint64_t boot_ms,
                        uint64_t threshold_ms);

/* Embedded; zero-initialised. */
struct netmon_debounce {
    uint64_t first, last; /* monotonic ms of the burst's first and latest event */
    unsigned why;
    bool pending;
};

/* Notes an event at now; returns when the burst should be reported. */
uint64_t netmon_debounce_note(struct netmon_debounce *d, unsigned why, uint64_t now);
/* The burst is reported: its reasons, and the state starts over. */
unsigned netmon_debounce_take(struct netmon_debounce *d);

#endif
