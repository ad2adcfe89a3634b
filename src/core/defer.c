#include "core/defer.h"

#include <stddef.h>

static ev_prepare watcher;
static struct ev_loop *wloop;
static struct defer *head, *tail;

static void unlink_one(struct defer *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        tail = d->prev;
    d->next = d->prev = NULL;
    d->armed = false;
}

static void run_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;

    /* fn may arm more (its own or another's): taken in this same pass */
    while (head) {
        struct defer *d = head;
        unlink_one(d);
        d->fn(d->arg);
    }
    ev_prepare_stop(loop, w);
}

void defer_init(struct defer *d, void (*fn)(void *arg), void *arg)
{
    d->next = d->prev = NULL;
    d->fn = fn;
    d->arg = arg;
    d->armed = false;
}

void defer_arm(struct ev_loop *loop, struct defer *d)
{
    if (d->armed)
        return;
    d->armed = true;
    d->prev = tail;
    d->next = NULL;
    if (tail)
        tail->next = d;
    else
        head = d;
    tail = d;
    if (wloop != loop) {
        if (wloop && ev_is_active(&watcher))
            ev_prepare_stop(wloop, &watcher);
        ev_prepare_init(&watcher, run_cb);
        wloop = loop;
    }
    if (!ev_is_active(&watcher))
        ev_prepare_start(loop, &watcher);
}

void defer_cancel(struct defer *d)
{
    if (d->armed)
        unlink_one(d);
}
