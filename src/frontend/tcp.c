/* TCP listener (RFC 7766): every complete frame on a connection becomes a
 * query at once, so queries are pipelined and answers leave in whatever order
 * they complete. A connection lives while it has queries pending or has been
 * active within the idle timeout.
 *
 * Every client is untrusted, so what one connection holds is bounded: input
 * is read in bounded chunks, parsing stops while the unsent output is above
 * its high-water mark (cache hits are answered inside query_submit, so the
 * pending cap alone would not stop them), a frame must complete within the
 * idle timeout of its first byte (bytes dribbled one at a time do not keep
 * a connection alive), one client address may hold only so many
 * connections, and at the listener's cap the oldest idle connection makes
 * room for a new one instead of every newcomer waiting in the backlog (a
 * connection gets a quarter of the idle timeout to send its first query
 * before it can be closed that way).
 *
 * With a TLS context the same listener serves DNS over TLS (RFC 7858): the
 * handshake runs first under the same deadline as a frame, then the bytes
 * go through TLS instead of straight to the socket; every bound above holds
 * alike. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"
#include "frontend/accept.h"
#include "frontend/frontend.h"
#include "frontend/stream.h"
#include "tls/tlssrv.h"
#include "resolve/query.h"

enum {
    TCP_OUT_HIGH = 256 * 1024, /* stop reading while this much is unsent */
    TCP_MAX_PENDING = 256,     /* and while this many queries are in flight */
    TCP_READ_CHUNK = 16384,    /* at most this much per recv */
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
    ev_tstamp active; /* accepted, or last frame or reply: who is evicted first */
    struct net_addr peer;
    struct net_addr dst; /* on a wildcard listener: the address connected to */
    bool has_dst;
    struct tlssrv_conn *tls; /* DoT: NULL on a plain listener */
    void *ps;                /* the stream protocol's state (DoH), or NULL */
    bool shaking;            /* the TLS handshake is not done yet */
    bool keepalive;          /* the client sent edns-tcp-keepalive (RFC 7828) */
    struct buf in, out;
};

struct fe_tcp {
    ev_io io;
    struct fe_accept_guard guard;
    struct ev_loop *loop;
    struct query_engine *qe;
    struct fe_tcp_opts opts;
    const struct net_addr *local;
    int fd;
    unsigned refs;
    bool closing;
    struct tcp_conn *conns;
    size_t nconns;
    bool full; /* accept stopped: at the cap with no idle connection to close */
    struct tlssrv_ctx *tls; /* DoT: new connections use it; NULL = plain */
    const struct fe_stream_proto *proto; /* NULL: RFC 7766 framing */
    void *proto_arg;
    ev_timer wake; /* full only while the idle connections are new: until then */
};

/* Starts accepting again unless closing, full, or paused by the guard. */
static void tcp_resume(void *arg)
{
    struct fe_tcp *t = arg;

    if (t->closing || t->fd < 0 || t->full || fe_accept_guard_paused(&t->guard))
        return;
    ev_io_start(t->loop, &t->io);
}

static void tcp_unref(struct fe_tcp *t)
{
    if (--t->refs > 0)
        return;
    if (t->fd >= 0)
        close(t->fd);
    tlssrv_ctx_unref(t->tls);
    free(t);
}

static void tcp_conn_unref(struct tcp_conn *c)
{
    if (--c->refs > 0)
        return;
    buf_free(&c->in);
    buf_free(&c->out);
    struct fe_tcp *t = c->t;
    if (c->ps)
        t->proto->free(c->ps);
    free(c);
    tcp_unref(t);
}

static void tcp_conn_close(struct tcp_conn *c)
{
    struct fe_tcp *t = c->t;

    if (c->fd < 0)
        return;
    ev_io_stop(t->loop, &c->io);
    ev_timer_stop(t->loop, &c->idle);
    if (c->tls) {
        tlssrv_conn_shutdown(c->tls);
        tlssrv_conn_free(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    t->nconns--;
    if (t->full) {
        t->full = false; /* room again below the cap */
        ev_timer_stop(t->loop, &t->wake);
        tcp_resume(t);
    }
    tcp_conn_unref(c);
}

static bool tcp_conn_has_frame(const struct tcp_conn *c)
{
    if (c->t->proto)
        return false; /* the protocol consumes all it is given */
    return buf_used(&c->in) >= 2 && buf_used(&c->in) >= 2u + dns_get16(buf_head(&c->in));
}

/* Which events we want: read unless the client is done or we are backed up;
 * write while output is queued. */
static void tcp_conn_update(struct tcp_conn *c)
{
    struct ev_loop *loop = c->t->loop;
    int ev = 0;

    if (c->fd < 0)
        return;
    if (c->shaking) {
        ev = tlssrv_conn_wants_write(c->tls) ? EV_WRITE : EV_READ;
        if (ev != (c->io.events & (EV_READ | EV_WRITE))) {
            ev_io_stop(loop, &c->io);
            ev_io_set(&c->io, c->fd, ev);
            ev_io_start(loop, &c->io);
        }
        return;
    }
    if (!c->eof && !c->t->closing && buf_used(&c->out) < TCP_OUT_HIGH &&
        c->pending < TCP_MAX_PENDING)
        ev |= EV_READ;
    if (buf_used(&c->out))
        ev |= EV_WRITE;
    if (!ev && !c->pending) {
        tcp_conn_close(c);
        return;
    }
    if (ev != (c->io.events & (EV_READ | EV_WRITE))) {
        ev_io_stop(loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        if (ev)
            ev_io_start(loop, &c->io);
    }
    /* frames held back while we were backed up: the socket may never become
     * readable again for them, so parse them from the loop */
    if ((ev & EV_READ) && (tcp_conn_has_frame(c) || (c->tls && tlssrv_conn_pending(c->tls))))
        ev_feed_event(loop, &c->io, EV_READ);
}

/* send() or its TLS equivalent: the count, or -1 with errno (EAGAIN to wait
 * for writability, anything else to close). */
static ssize_t tcp_conn_send(struct tcp_conn *c, const void *p, size_t len)
{
    if (!c->tls)
        return send(c->fd, p, len, MSG_NOSIGNAL);
    long n = tlssrv_conn_write(c->tls, p, len);
    if (n >= 0)
        return n;
    errno = n == DV_EAGAIN ? EAGAIN : ECONNRESET;
    return -1;
}

/* recv() or its TLS equivalent, with the same returns (0 at EOF). */
static ssize_t tcp_conn_recv(struct tcp_conn *c, void *p, size_t len)
{
    if (!c->tls)
        return recv(c->fd, p, len, 0);
    long n = tlssrv_conn_read(c->tls, p, len);
    if (n >= 0)
        return n;
    if (n == DV_ECONN)
        return 0;
    errno = n == DV_EAGAIN ? EAGAIN : ECONNRESET;
    return -1;
}

/* Advances a DoT handshake; once done the connection reads queries. */
static void tcp_conn_handshake(struct tcp_conn *c)
{
    int rc = tlssrv_conn_handshake(c->tls);

    if (rc == DV_EAGAIN) {
        tcp_conn_update(c);
        return;
    }
    if (rc) {
        tcp_conn_close(c);
        return;
    }
    c->shaking = false;
    if (c->t->proto && !(c->ps = c->t->proto->open(c->t->proto_arg, c))) {
        tcp_conn_close(c);
        return;
    }
    tcp_conn_update(c);
    ev_feed_event(c->t->loop, &c->io, EV_READ); /* a query may have come with it */
}

static void tcp_conn_flush(struct tcp_conn *c)
{
    while (buf_used(&c->out)) {
        ssize_t n = tcp_conn_send(c, buf_head(&c->out), buf_used(&c->out));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            log_debug("tcp send: %s", strerror(errno));
            tcp_conn_close(c);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    tcp_conn_update(c);
}

/* RFC 7828: a client that asked for edns-tcp-keepalive is told our idle
 * timeout in every answer that has an OPT RR. msg is returned unchanged
 * when the option does not fit or the OPT RR is not last. */
static const uint8_t *tcp_with_keepalive(const struct tcp_conn *c, const uint8_t *msg, size_t *len)
{
    static uint8_t buf[DNS_MSG_MAX];
    size_t n = *len;
    struct dns_rr opt;
    unsigned t = c->t->opts.idle_timeout_ms / 100; /* in units of 100 ms */
    uint8_t v[2];

    if (t > 0xffff)
        t = 0xffff;
    v[0] = (uint8_t)(t >> 8);
    v[1] = (uint8_t)t;
    if (n > sizeof(buf) - 6)
        return msg;
    memcpy(buf, msg, n);
    if (dns_edns_strip_opt(buf, &n, DNS_OPT_KEEPALIVE) || dns_msg_find_opt(buf, n, &opt) != 1 ||
        dns_edns_add_opt(buf, &n, sizeof(buf), opt.off, DNS_OPT_KEEPALIVE, v, 2))
        return msg;
    *len = n;
    return buf;
}

static void tcp_send(void *ctx, const struct query_client *qc, const uint8_t *msg, size_t len)
{
    struct tcp_conn *c = ctx;
    uint8_t pfx[2];

    if (c->fd < 0)
        return; /* the client went away; nobody to answer */
    if (c->keepalive)
        msg = tcp_with_keepalive(c, msg, &len);
    dns_put16(pfx, (uint16_t)len);
    if (buf_append(&c->out, pfx, 2) || buf_append(&c->out, msg, len)) {
        tcp_conn_close(c);
        return;
    }
    ev_timer_again(c->t->loop, &c->idle);
    c->active = ev_now(c->t->loop);
    /* try now: most replies fit the socket buffer and need no EV_WRITE round */
    tcp_conn_flush(c);
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
    /* frames held back at the pending cap are fed to the loop by tcp_conn_update,
     * not parsed from inside the query engine that is calling us */
    tcp_conn_update(c);
    tcp_conn_unref(c);
}

static const struct query_sink_ops tcp_sink = {
    .send = tcp_send,
    .hold = tcp_hold,
    .release = tcp_release,
};

static bool tcp_query_has_keepalive(const uint8_t *msg, size_t len)
{
    struct dns_rr opt;
    struct dns_edns e;

    return dns_msg_find_opt(msg, len, &opt) == 1 && dns_edns_read(msg, len, &opt, &e) == 0 &&
           e.has_keepalive;
}

/* Hands complete frames to the query engine while there is room for their
 * answers. A zero-length frame is not DNS: the connection is closed. */
static void tcp_conn_parse(struct tcp_conn *c)
{
    struct query_client qc = {
        .peer = c->peer, .local = c->t->local, .tcp = true, .ops = &tcp_sink, .ctx = c,
        .dst = c->dst, .has_dst = c->has_dst};
    bool parsed = false;

    c->refs++; /* a reply sent from inside submit may close c */
    while (c->fd >= 0 && buf_used(&c->in) >= 2 && c->pending < TCP_MAX_PENDING &&
           buf_used(&c->out) < TCP_OUT_HIGH) {
        size_t flen = dns_get16(buf_head(&c->in));
        if (flen == 0) {
            query_count_drop(c->t->qe, &qc);
            tcp_conn_close(c);
            break;
        }
        if (buf_used(&c->in) < 2 + flen)
            break;
        if (!c->keepalive)
            c->keepalive = tcp_query_has_keepalive(buf_head(&c->in) + 2, flen);
        query_submit(c->t->qe, buf_head(&c->in) + 2, flen, &qc);
        parsed = true;
        if (c->fd >= 0)
            buf_consume(&c->in, 2 + flen);
    }
    /* the next frame's deadline starts now, not at its last byte */
    if (parsed && c->fd >= 0) {
        ev_timer_again(c->t->loop, &c->idle);
        c->active = ev_now(c->t->loop);
    }
    tcp_conn_update(c);
    tcp_conn_unref(c);
}

static void tcp_conn_read(struct tcp_conn *c)
{
    if (tcp_conn_has_frame(c)) {
        tcp_conn_parse(c);
        return;
    }
    /* bounded: one recv must not pull in thousands of pipelined queries */
    if (buf_reserve(&c->in, TCP_READ_CHUNK)) {
        tcp_conn_close(c);
        return;
    }
    size_t room = c->in.cap - c->in.len;
    bool first = buf_used(&c->in) == 0;
    ssize_t n = tcp_conn_recv(c, c->in.data + c->in.len, room < TCP_READ_CHUNK ? room : TCP_READ_CHUNK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        tcp_conn_close(c);
        return;
    }
    if (n == 0) {
        /* a partial frame at EOF can never complete */
        c->eof = true;
        tcp_conn_update(c);
        return;
    }
    c->in.len += (size_t)n;
    if (c->t->proto) {
        /* only requests and answers extend its life (fe_conn_touch) */
        c->refs++;
        c->t->proto->input(c->ps, c);
        tcp_conn_update(c);
        tcp_conn_unref(c);
        return;
    }
    /* a frame's deadline runs from its first byte: later bytes do not
     * extend it, so a client dribbling one byte at a time is closed */
    if (first)
        ev_timer_again(c->t->loop, &c->idle);
    tcp_conn_parse(c);
}

static void tcp_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct tcp_conn *c = w->data;

    c->refs++;
    if (c->shaking) {
        tcp_conn_handshake(c);
        tcp_conn_unref(c);
        return;
    }
    if (revents & EV_WRITE)
        tcp_conn_flush(c);
    if ((revents & EV_READ) && c->fd >= 0)
        tcp_conn_read(c);
    tcp_conn_unref(c);
}

static void tcp_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tcp_conn *c = w->data;

    if (c->pending) {
        ev_timer_again(loop, w);
        return;
    }
    log_debug("tcp: closing idle connection");
    tcp_conn_close(c);
}

static size_t tcp_conns_of(const struct fe_tcp *t, const struct net_addr *peer)
{
    size_t n = 0;

    for (const struct tcp_conn *c = t->conns; c; c = c->next)
        n += net_addr_same_host(&c->peer, peer);
    return n;
}

/* At the cap: closes the connection that has been idle longest (nothing in
 * flight, nothing unsent). A connection younger than the grace period is
 * spared, or clients that reconnect at once when closed could take turns
 * closing every newcomer before its first query arrives. False when no
 * connection may be closed; *wait is then how long until one may (0 when
 * every connection is busy: the next to close makes room). */
static bool tcp_evict_idle(struct fe_tcp *t, ev_tstamp *wait)
{
    struct tcp_conn *oldest = NULL;
    ev_tstamp grace = t->opts.idle_timeout_ms / 4000.0;

    *wait = 0;
    for (struct tcp_conn *c = t->conns; c; c = c->next)
        if (!c->pending && !buf_used(&c->out) && (!oldest || c->active < oldest->active))
            oldest = c;
    if (!oldest)
        return false;
    ev_tstamp age = ev_now(t->loop) - oldest->active;
    if (age < grace) {
        *wait = grace - age;
        return false;
    }
    log_debug("tcp: at the connection cap, closing the longest idle connection");
    query_count_tcp_closed(t->qe, false);
    tcp_conn_close(oldest);
    return true;
}

static void tcp_wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct fe_tcp *t = w->data;

    t->full = false;
    tcp_resume(t);
}

static void tcp_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fe_tcp *t = w->data;

    for (int i = 0; i < 64; i++) {
        ev_tstamp wait;
        if (t->nconns >= t->opts.max_conns && !tcp_evict_idle(t, &wait)) {
            /* further clients wait in the backlog: until a connection closes
             * (each busy one finishes within the query deadline) or an idle
             * one is old enough to be closed */
            t->full = true;
            ev_io_stop(loop, &t->io);
            if (wait > 0) {
                ev_timer_set(&t->wake, wait, 0.);
                ev_timer_start(loop, &t->wake);
            }
            return;
        }
        struct net_addr peer;
        peer.len = sizeof(peer.ss);
        int fd = accept4(t->fd, (struct sockaddr *)&peer.ss, &peer.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (fe_accept_guard_failed(&t->guard, errno))
                return;
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("tcp accept: %s", strerror(errno));
            return;
        }
        if (t->opts.max_conns_per_client && tcp_conns_of(t, &peer) >= t->opts.max_conns_per_client) {
            char a[NET_ADDRSTRLEN];
            log_debug("tcp: %s already has %u connections; refusing another",
                      net_addr_str(&peer, a, sizeof(a)), t->opts.max_conns_per_client);
            query_count_tcp_closed(t->qe, true);
            close(fd);
            continue;
        }
        struct tcp_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        if (t->tls && tlssrv_conn_new(t->tls, fd, t->proto ? t->proto->alpn : "dot", &c->tls)) {
            free(c);
            close(fd);
            return;
        }
        c->shaking = c->tls != NULL;
        /* answers are written as they complete: never held back for an ACK */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        c->t = t;
        c->fd = fd;
        c->peer = peer;
        c->refs = 1;
        c->active = ev_now(loop);
        if (t->local && net_addr_is_any(t->local)) {
            /* rules naming the sending program look its socket up by both ends */
            c->dst.len = sizeof(c->dst.ss);
            c->has_dst = getsockname(fd, (struct sockaddr *)&c->dst.ss, &c->dst.len) == 0;
        }
        buf_init(&c->in);
        buf_init(&c->out);
        ev_io_init(&c->io, tcp_conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_init(&c->idle, tcp_conn_timer_cb);
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
    fe_accept_guard_init(&t->guard, loop, &t->io, "tcp", tcp_resume, t);
    ev_init(&t->wake, tcp_wake_cb);
    t->wake.data = t;
    ev_io_start(loop, &t->io);
    return t;
}

void fe_tcp_close(struct fe_tcp *t)
{
    if (!t)
        return;
    t->closing = true;
    ev_io_stop(t->loop, &t->io);
    ev_timer_stop(t->loop, &t->wake);
    fe_accept_guard_stop(&t->guard);
    close(t->fd);
    t->fd = -1;
    for (struct tcp_conn *c = t->conns, *next; c; c = next) {
        next = c->next;
        if (c->pending)
            tcp_conn_update(c); /* stops reading; closes after the last reply */
        else
            tcp_conn_close(c);
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

struct fe_tcp *fe_tcp_new_tls(struct ev_loop *loop, const struct net_addr *a,
                              struct query_engine *qe, const struct fe_tcp_opts *o,
                              const struct net_addr *local, struct tlssrv_ctx *tls,
                              const struct fe_stream_proto *proto, void *proto_arg)
{
    struct fe_tcp *t = fe_tcp_new(loop, a, qe, o, local);

    if (t) {
        fe_tcp_set_tls(t, tls);
        t->proto = proto;
        t->proto_arg = proto_arg;
    }
    return t;
}

void fe_tcp_set_tls(struct fe_tcp *t, struct tlssrv_ctx *tls)
{
    tlssrv_ctx_ref(tls);
    tlssrv_ctx_unref(t->tls);
    t->tls = tls;
}

/* ---- the stream protocol's side (stream.h) ---- */

struct buf *fe_conn_in(struct tcp_conn *c)
{
    return &c->in;
}

int fe_conn_write(struct tcp_conn *c, const void *p, size_t len)
{
    if (c->fd < 0)
        return 0;
    return buf_append(&c->out, p, len) ? DV_ENOMEM : 0;
}

void fe_conn_flush(struct tcp_conn *c)
{
    if (c->fd >= 0)
        tcp_conn_flush(c);
}

void fe_conn_hold(struct tcp_conn *c)
{
    tcp_hold(c);
}

void fe_conn_release(struct tcp_conn *c)
{
    tcp_release(c);
}

void fe_conn_client(const struct tcp_conn *c, struct query_client *qc)
{
    qc->peer = c->peer;
    qc->local = c->t->local;
    qc->dst = c->dst;
    qc->has_dst = c->has_dst;
    qc->tcp = true;
}

struct query_engine *fe_conn_qe(const struct tcp_conn *c)
{
    return c->t->qe;
}

void fe_conn_touch(struct tcp_conn *c)
{
    if (c->fd < 0)
        return;
    ev_timer_again(c->t->loop, &c->idle);
    c->active = ev_now(c->t->loop);
}

void fe_conn_finish(struct tcp_conn *c)
{
    c->eof = true;
    tcp_conn_update(c);
}

bool fe_conn_closed(const struct tcp_conn *c)
{
    return c->fd < 0;
}
