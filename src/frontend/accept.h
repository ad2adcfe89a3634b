/* accept — what a listening socket does when accept() fails for want of
 * resources (EMFILE, ENFILE, ENOBUFS, ENOMEM). The pending connection stays
 * in the backlog, so a level-triggered watcher would fire again at once and
 * spin the loop at full CPU: the guard stops the watcher, re-arms it from a
 * timer, and logs the failure at most once per interval with a count. */
#ifndef DV_FRONTEND_ACCEPT_H
#define DV_FRONTEND_ACCEPT_H

#include <ev.h>
#include <stdbool.h>

struct fe_accept_guard {
    ev_timer retry;
    struct ev_loop *loop;
    ev_io *io;            /* the listening socket's watcher; borrowed */
    const char *what;     /* "tcp", "metrics", "control": for the log */
    void (*resume)(void *arg); /* restarts accepting; NULL = ev_io_start(io) */
    void *arg;
    ev_tstamp last_log;
    unsigned long failures; /* since the last log line */
};

/* Embedded in the listener; io must be initialised and stay valid. */
void fe_accept_guard_init(struct fe_accept_guard *g, struct ev_loop *loop, ev_io *io,
                          const char *what, void (*resume)(void *), void *arg);
/* Called after accept() failed with err. True when the caller must stop
 * accepting now: for a lack of resources the watcher is already stopped and
 * will be restarted by the guard; for other errors (a client that reset
 * before we accepted, EAGAIN) it returns false and changes nothing. */
bool fe_accept_guard_failed(struct fe_accept_guard *g, int err);
/* True while the guard holds the watcher stopped. */
bool fe_accept_guard_paused(const struct fe_accept_guard *g);
/* Before the listener goes away. */
void fe_accept_guard_stop(struct fe_accept_guard *g);

#endif
