/* TCP listener (RFC 7766): every complete frame on a connection becomes a
 * query at once, so queries are pipelined and answers leave in whatever order
 * they complete. A connection lives while it has queries pending or has been
 * active within the idle timeout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "dns/dns.h"
#include "frontend/frontend.h"
#include "resolve/query.h"

enum {
    TCP_OUT_HIGH = 256 * 1024, /* stop reading while this much is unsent */
    TCP_MAX_PENDING = 256,     /* and while this many queries are in flight */
};

struct tcp_conn {
    struct tcp_conn *prev, *next;
    struct fe_tcp *t;
    ev_io io;
    ev_timer idle;
    int fd;           /* -1 once closed */
    unsigned refs;    /* ours while open + one per query in flight */
    unsigned pending; /* queries in flight */
    bool eof;         /* client sent FIN: answer what is pending, then close */
    struct net_addr peer;
    struct net_addr dst; /* on a wildcard listener: the address connected to */
    bool has_dst;
    struct buf in, out;
};

struct fe_tcp {
    ev_io io;
    struct ev_loop *loop;
    struct query_engine *qe;
    struct fe_tcp_opts opts;
    const struct net_addr *local;
    int fd;
    unsigned refs;
    bool closing;
    struct tcp_conn *conns;
    size_t nconns;
};

static void tcp_unref(struct fe_tcp *t)
{
    if (--t->refs > 0)
        return;
    if (t->fd >= 0)
        close(t->fd);
    free(t);
}

static void conn_unref(struct tcp_conn *c)
{
    if (--c->refs > 0)
        return;
    buf_free(&c->in);
    buf_free(&c->out);
    struct fe_tcp *t = c->t;
    free(c);
    tcp_unref(t);
}

static void conn_close(struct tcp_conn *c)
{
    struct fe_tcp *t = c->t;

    if (c->fd < 0)
        return;
    ev_io_stop(t->loop, &c->io);
    ev_timer_stop(t->loop, &c->idle);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* room again below the cap */
    if (t->nconns-- == t->opts.max_conns && !t->closing)
        ev_io_start(t->loop, &t->io);
    conn_unref(c);
}

/* Which events we want: read unless the client is done or we are backed up;
 * write while output is queued. */
static void conn_update(struct tcp_conn *c)
{
    struct ev_loop *loop = c->t->loop;
    int ev = 0;

    if (c->fd < 0)
        return;
    if (!c->eof && !c->t->closing && buf_used(&c->out) < TCP_OUT_HIGH &&
        c->pending < TCP_MAX_PENDING)
        ev |= EV_READ;
    if (buf_used(&c->out))
        ev |= EV_WRITE;
    if (!ev && !c->pending) {
        conn_close(c);
        return;
    }
    if (ev != (c->io.events & (EV_READ | EV_WRITE))) {
        ev_io_stop(loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        if (ev)
            ev_io_start(loop, &c->io);
    }
}

static void conn_flush(struct tcp_conn *c)
{
    while (buf_used(&c->out)) {
        ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            log_debug("tcp send: %s", strerror(errno));
            conn_close(c);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    conn_update(c);
}

static void tcp_send(void *ctx, const struct query_client *qc, const uint8_t *msg, size_t len)
{
    struct tcp_conn *c = ctx;
    uint8_t pfx[2];

    if (c->fd < 0)
        return; /* the client went away; nobody to answer */
    dns_put16(pfx, (uint16_t)len);
    if (buf_append(&c->out, pfx, 2) || buf_append(&c->out, msg, len)) {
        conn_close(c);
        return;
    }
    ev_timer_again(c->t->loop, &c->idle);
    /* try now: most replies fit the socket buffer and need no EV_WRITE round */
    conn_flush(c);
}

static void tcp_hold(void *ctx)
{
    struct tcp_conn *c = ctx;

    c->refs++;
    c->pending++;
}

static void tcp_release(void *ctx)
{
    struct tcp_conn *c = ctx;

    c->pending--;
    /* frames held back at the pending cap: parse them from the loop, not
     * from inside the query engine that is calling us */
    if (c->fd >= 0 && buf_used(&c->in) >= 2)
        ev_feed_event(c->t->loop, &c->io, EV_READ);
    conn_update(c);
    conn_unref(c);
}

static const struct query_sink_ops tcp_sink = {
    .send = tcp_send,
    .hold = tcp_hold,
    .release = tcp_release,
};

/* Hands every complete frame to the query engine. A zero-length frame is
 * not DNS: the connection is closed. */
static void conn_parse(struct tcp_conn *c)
{
    struct query_client qc = {
        .peer = c->peer, .local = c->t->local, .tcp = true, .ops = &tcp_sink, .ctx = c,
        .dst = c->dst, .has_dst = c->has_dst};

    c->refs++; /* a reply sent from inside submit may close c */
    while (c->fd >= 0 && buf_used(&c->in) >= 2 && c->pending < TCP_MAX_PENDING) {
        size_t flen = dns_get16(buf_head(&c->in));
        if (flen == 0) {
            query_count_drop(c->t->qe);
            conn_close(c);
            break;
        }
        if (buf_used(&c->in) < 2 + flen)
            break;
        query_submit(c->t->qe, buf_head(&c->in) + 2, flen, &qc);
        if (c->fd >= 0)
            buf_consume(&c->in, 2 + flen);
    }
    conn_update(c);
    conn_unref(c);
}

static bool conn_has_frame(const struct tcp_conn *c)
{
    return buf_used(&c->in) >= 2 && buf_used(&c->in) >= 2u + dns_get16(buf_head(&c->in));
}

static void conn_read(struct tcp_conn *c)
{
    if (conn_has_frame(c)) {
        conn_parse(c);
        return;
    }
    if (buf_reserve(&c->in, 4096)) {
        conn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* a partial frame at EOF can never complete */
        c->eof = true;
        conn_update(c);
        return;
    }
    c->in.len += (size_t)n;
    ev_timer_again(c->t->loop, &c->idle);
    conn_parse(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct tcp_conn *c = w->data;

    c->refs++;
    if (revents & EV_WRITE)
        conn_flush(c);
    if ((revents & EV_READ) && c->fd >= 0)
        conn_read(c);
    conn_unref(c);
}

static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tcp_conn *c = w->data;

    if (c->pending) {
        ev_timer_again(loop, w);
        return;
    }
    log_debug("tcp: closing idle connection");
    conn_close(c);
}

static void tcp_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fe_tcp *t = w->data;

    for (int i = 0; i < 64 && t->nconns < t->opts.max_conns; i++) {
        struct net_addr peer;
        peer.len = sizeof(peer.ss);
        int fd = accept4(t->fd, (struct sockaddr *)&peer.ss, &peer.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("tcp accept: %s", strerror(errno));
            return;
        }
        struct tcp_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->t = t;
        c->fd = fd;
        c->peer = peer;
        c->refs = 1;
        if (t->local && net_addr_is_any(t->local)) {
            /* rules naming the sending program look its socket up by both ends */
            c->dst.len = sizeof(c->dst.ss);
            c->has_dst = getsockname(fd, (struct sockaddr *)&c->dst.ss, &c->dst.len) == 0;
        }
        buf_init(&c->in);
        buf_init(&c->out);
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_init(&c->idle, conn_idle_cb);
        c->idle.repeat = t->opts.idle_timeout_ms / 1000.0;
        c->idle.data = c;
        ev_timer_again(loop, &c->idle);
        ev_io_start(loop, &c->io);
        c->next = t->conns;
        if (t->conns)
            t->conns->prev = c;
        t->conns = c;
        t->refs++;
        t->nconns++;
    }
    if (t->nconns >= t->opts.max_conns) {
        /* the kernel keeps further clients in the backlog until one closes */
        ev_io_stop(loop, &t->io);
    }
}

struct fe_tcp *fe_tcp_new(struct ev_loop *loop, const struct net_addr *a,
                          struct query_engine *qe, const struct fe_tcp_opts *o,
                          const struct net_addr *local)
{
    struct fe_tcp *t;
    int fd = net_listen(a, SOCK_STREAM, 128);

    if (fd < 0)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (!t) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    t->loop = loop;
    t->qe = qe;
    t->opts = *o;
    t->local = local;
    if (!t->opts.max_conns)
        t->opts.max_conns = 1;
    t->fd = fd;
    t->refs = 1;
    ev_io_init(&t->io, tcp_accept_cb, fd, EV_READ);
    t->io.data = t;
    ev_io_start(loop, &t->io);
    return t;
}

void fe_tcp_close(struct fe_tcp *t)
{
    if (!t)
        return;
    t->closing = true;
    ev_io_stop(t->loop, &t->io);
    close(t->fd);
    t->fd = -1;
    for (struct tcp_conn *c = t->conns, *next; c; c = next) {
        next = c->next;
        if (c->pending)
            conn_update(c); /* stops reading; closes after the last reply */
        else
            conn_close(c);
    }
    tcp_unref(t);
}

size_t fe_tcp_conns(const struct fe_tcp *t)
{
    return t->nconns;
}

void fe_tcp_set_local(struct fe_tcp *t, const struct net_addr *local)
{
    t->local = local;
}
