#include "upstream/happy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "upstream/conn.h"

struct attempt {
    struct happy *h;
    ev_io io;
    int fd; /* -1: not running */
};

struct happy {
    struct ev_loop *loop;
    struct net_addr addrs[HAPPY_MAX_ADDRS];
    struct attempt att[HAPPY_MAX_ADDRS];
    size_t n, next, running;
    int type, err;
    double stagger;
    ev_timer timer;
    const char *name;
    happy_cb cb;
    void *arg;
};

size_t happy_order(const struct net_addr *addrs, size_t n, struct net_addr *out)
{
    size_t i6 = 0, i4 = 0, o = 0;
    bool want6 = true;

    while (o < HAPPY_MAX_ADDRS) {
        /* the next address of the wanted family, else of the other one */
        size_t *idx = want6 ? &i6 : &i4;
        int fam = want6 ? AF_INET6 : AF_INET;
        while (*idx < n && addrs[*idx].ss.ss_family != fam)
            (*idx)++;
        if (*idx < n) {
            out[o++] = addrs[(*idx)++];
        } else {
            size_t *other = want6 ? &i4 : &i6;
            int ofam = want6 ? AF_INET : AF_INET6;
            while (*other < n && addrs[*other].ss.ss_family != ofam)
                (*other)++;
            if (*other >= n)
                break;
            out[o++] = addrs[(*other)++];
        }
        want6 = !want6;
    }
    return o;
}

static void stop_attempt(struct happy *h, struct attempt *a, bool close_fd)
{
    if (a->fd < 0)
        return;
    ev_io_stop(h->loop, &a->io);
    if (close_fd)
        close(a->fd);
    a->fd = -1;
    h->running--;
}

static void finish(struct happy *h, int fd)
{
    happy_cb cb = h->cb;
    void *arg = h->arg;
    int err = h->err ? h->err : ECONNREFUSED;

    ev_timer_stop(h->loop, &h->timer);
    for (size_t i = 0; i < h->n; i++)
        stop_attempt(h, &h->att[i], h->att[i].fd != fd);
    free(h);
    cb(arg, fd, fd >= 0 ? 0 : err);
}

static void attempt_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Starts the next address; those refused at once are skipped. False when
 * none is left. */
static bool launch(struct happy *h)
{
    char a[NET_ADDRSTRLEN];

    while (h->next < h->n) {
        size_t i = h->next++;
        int fd = conn_connect(&h->addrs[i], h->type, h->name);
        if (fd < 0) {
            h->err = errno ? errno : ECONNREFUSED;
            continue;
        }
        log_debug("upstream %s: connecting to %s", h->name,
                  net_addr_str(&h->addrs[i], a, sizeof(a)));
        h->att[i].fd = fd;
        h->att[i].h = h;
        ev_io_init(&h->att[i].io, attempt_cb, fd, EV_WRITE);
        h->att[i].io.data = &h->att[i];
        ev_io_start(h->loop, &h->att[i].io);
        h->running++;
        /* the next one starts after the stagger unless this one fails first */
        ev_timer_stop(h->loop, &h->timer);
        if (h->next < h->n) {
            ev_timer_set(&h->timer, h->stagger, 0.);
            ev_timer_start(h->loop, &h->timer);
        }
        return true;
    }
    return false;
}

static void attempt_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct attempt *a = w->data;
    struct happy *h = a->h;
    int err = conn_connect_error(a->fd);

    if (!err) {
        finish(h, a->fd);
        return;
    }
    log_debug("upstream %s: connect to %s: %s", h->name,
              net_addr_str(&h->addrs[a - h->att], (char[NET_ADDRSTRLEN]){0}, NET_ADDRSTRLEN),
              strerror(err));
    h->err = err;
    stop_attempt(h, a, true);
    /* a failure starts the next address at once */
    if (!launch(h) && h->running == 0)
        finish(h, -1);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct happy *h = w->data;

    if (!launch(h) && h->running == 0)
        finish(h, -1);
}

struct happy *happy_start(struct ev_loop *loop, const struct net_addr *addrs, size_t n, int type,
                          unsigned stagger_ms, const char *name, happy_cb cb, void *arg)
{
    struct happy *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->loop = loop;
    h->n = n < HAPPY_MAX_ADDRS ? n : HAPPY_MAX_ADDRS;
    memcpy(h->addrs, addrs, h->n * sizeof(*addrs));
    for (size_t i = 0; i < HAPPY_MAX_ADDRS; i++)
        h->att[i].fd = -1;
    h->type = type;
    h->stagger = stagger_ms / 1000.0;
    h->name = name;
    h->cb = cb;
    h->arg = arg;
    ev_init(&h->timer, timer_cb);
    h->timer.data = h;
    if (!launch(h)) {
        int e = h->err ? h->err : ECONNREFUSED;
        free(h);
        errno = e;
        return NULL;
    }
    return h;
}

void happy_cancel(struct happy *h)
{
    if (!h)
        return;
    ev_timer_stop(h->loop, &h->timer);
    for (size_t i = 0; i < h->n; i++)
        stop_attempt(h, &h->att[i], true);
    free(h);
}
