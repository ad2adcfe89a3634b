#include "frontend/accept.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"

enum { ACCEPT_LOG_EVERY_S = 10 };

/* Short enough that clients barely notice, long enough that a daemon out of
 * descriptors spends almost nothing retrying. */
static const ev_tstamp ACCEPT_RETRY_S = 0.25;

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct fe_accept_guard *g = w->data;

    if (g->resume)
        g->resume(g->arg);
    else
        ev_io_start(loop, g->io);
}

void fe_accept_guard_init(struct fe_accept_guard *g, struct ev_loop *loop, ev_io *io,
                          const char *what, void (*resume)(void *), void *arg)
{
    memset(g, 0, sizeof(*g));
    g->loop = loop;
    g->io = io;
    g->what = what;
    g->resume = resume;
    g->arg = arg;
    g->last_log = -ACCEPT_LOG_EVERY_S;
    ev_timer_init(&g->retry, retry_cb, ACCEPT_RETRY_S, 0.);
    g->retry.data = g;
}

bool fe_accept_guard_failed(struct fe_accept_guard *g, int err)
{
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return false;
    ev_io_stop(g->loop, g->io);
    if (!ev_is_active(&g->retry)) {
        /* set again: a timer that has fired keeps no useful expiry */
        ev_timer_set(&g->retry, ACCEPT_RETRY_S, 0.);
        ev_timer_start(g->loop, &g->retry);
    }
    g->failures++;
    ev_tstamp now = ev_now(g->loop);
    if (now - g->last_log >= ACCEPT_LOG_EVERY_S) {
        log_warn("%s accept: %s; pausing accept (%lu failures since the last report)",
                 g->what, strerror(err), g->failures);
        g->last_log = now;
        g->failures = 0;
    }
    return true;
}

bool fe_accept_guard_paused(const struct fe_accept_guard *g)
{
    return ev_is_active(&g->retry);
}

void fe_accept_guard_stop(struct fe_accept_guard *g)
{
    ev_timer_stop(g->loop, &g->retry);
}
