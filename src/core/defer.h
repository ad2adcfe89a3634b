/* defer — work run once before the event loop next sleeps (after every
 * callback of this turn), so what several callbacks queued goes out in one
 * write. One libev prepare watcher serves every user; work deferred while
 * deferred work runs runs in the same pass, so nothing waits behind a poll
 * that may block (a prepare watcher started by another prepare callback
 * would only run after the next event).
 *
 * A struct defer is embedded in its owner: defer_init, then defer_arm as
 * often as wanted (a no-op while armed), defer_cancel before freeing it.
 * Single loop, single thread. */
#ifndef DV_CORE_DEFER_H
#define DV_CORE_DEFER_H

#include <stdbool.h>

#include <ev.h>

struct defer {
    struct defer *next, *prev;
    void (*fn)(void *arg);
    void *arg;
    bool armed;
};

void defer_init(struct defer *d, void (*fn)(void *arg), void *arg);
void defer_arm(struct ev_loop *loop, struct defer *d);
void defer_cancel(struct defer *d);

#endif
