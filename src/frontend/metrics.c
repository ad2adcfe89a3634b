#include "frontend/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "frontend/accept.h"

enum {
    METRICS_MAX_CONNS = 8,
    METRICS_REQ_MAX = 4096,   /* a request line and a few headers */
    METRICS_TIMEOUT_S = 3,
};

struct mconn {
    struct mconn *next;
    struct metrics *m;
    ev_io io;
    ev_timer timer;
    int fd;
    bool responding;
    struct buf in, out;
};

struct metrics {
    ev_io io;
    struct fe_accept_guard guard;
    struct ev_loop *loop;
    int fd;
    metrics_render_fn fn;
    void *arg;
    struct mconn *conns;
    unsigned nconns;
};

int metrics_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n + 1))
        return DV_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static void mconn_close(struct mconn *c)
{
    struct metrics *m = c->m;

    ev_io_stop(m->loop, &c->io);
    ev_timer_stop(m->loop, &c->timer);
    close(c->fd);
    for (struct mconn **pp = &m->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (m->nconns-- == METRICS_MAX_CONNS && !fe_accept_guard_paused(&m->guard))
        ev_io_start(m->loop, &m->io);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void respond(struct mconn *c, const char *status, const char *type, struct buf *body)
{
    metrics_printf(&c->out,
                   "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n",
                   status, type, body ? buf_used(body) : 0);
    if (body)
        buf_append(&c->out, buf_head(body), buf_used(body));
    c->responding = true;
    ev_io_stop(c->m->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(c->m->loop, &c->io);
}

/* Only the request line matters: GET /metrics (or /) gets the counters. */
static void handle_request(struct mconn *c)
{
    const char *req = (const char *)buf_head(&c->in);
    struct buf body;

    if (strncmp(req, "GET ", 4) != 0) {
        respond(c, "405 Method Not Allowed", "text/plain", NULL);
        return;
    }
    const char *path = req + 4;
    size_t plen = strcspn(path, " \r\n");
    if (!((plen == 8 && !strncmp(path, "/metrics", 8)) || (plen == 1 && path[0] == '/'))) {
        respond(c, "404 Not Found", "text/plain", NULL);
        return;
    }
    buf_init(&body);
    c->m->fn(c->m->arg, &body);
    respond(c, "200 OK", "text/plain; version=0.0.4", &body);
    buf_free(&body);
}

static void mconn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mconn *c = w->data;

    if (c->responding) {
        ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n > 0)
            buf_consume(&c->out, (size_t)n);
        if (n <= 0 || buf_used(&c->out) == 0)
            mconn_close(c);
        return;
    }
    if (buf_reserve(&c->in, 1024)) {
        mconn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        mconn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = 0;
    if (strstr((const char *)buf_head(&c->in), "\r\n\r\n") ||
        strstr((const char *)buf_head(&c->in), "\n\n"))
        handle_request(c);
    else if (buf_used(&c->in) > METRICS_REQ_MAX)
        respond(c, "431 Request Header Fields Too Large", "text/plain", NULL);
}

static void mconn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    mconn_close(w->data);
}

static void metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct metrics *m = w->data;

    while (m->nconns < METRICS_MAX_CONNS) {
        int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            fe_accept_guard_failed(&m->guard, errno);
            return;
        }
        struct mconn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->m = m;
        c->fd = fd;
        buf_init(&c->in);
        buf_init(&c->out);
        ev_io_init(&c->io, mconn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->timer, mconn_timer_cb, METRICS_TIMEOUT_S, 0.);
        c->timer.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
        c->next = m->conns;
        m->conns = c;
        m->nconns++;
    }
    /* at the cap: leave further clients in the backlog until one closes */
    ev_io_stop(loop, &m->io);
}

static void metrics_resume(void *arg)
{
    struct metrics *m = arg;

    if (m->nconns < METRICS_MAX_CONNS)
        ev_io_start(m->loop, &m->io);
}

struct metrics *metrics_new(struct ev_loop *loop, const struct net_addr *a,
                            metrics_render_fn fn, void *arg)
{
    int fd = net_listen(a, SOCK_STREAM, 16);
    struct metrics *m;

    if (fd < 0)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    m->loop = loop;
    m->fd = fd;
    m->fn = fn;
    m->arg = arg;
    ev_io_init(&m->io, metrics_accept_cb, fd, EV_READ);
    m->io.data = m;
    fe_accept_guard_init(&m->guard, loop, &m->io, "metrics", metrics_resume, m);
    ev_io_start(loop, &m->io);
    return m;
}

void metrics_del(struct metrics *m)
{
    if (!m)
        return;
    while (m->conns)
        mconn_close(m->conns);
    ev_io_stop(m->loop, &m->io);
    fe_accept_guard_stop(&m->guard);
    close(m->fd);
    free(m);
}
