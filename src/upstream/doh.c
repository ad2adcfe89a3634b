/* doh — DNS over HTTPS (RFC 8484) on HTTP/2 over the TLS layer; the HTTP/2
 * exchange itself is h2.c's, which takes bytes and returns responses.
 *
 * Per upstream: a small pool of connections (up to the upstream's
 * max_conns; another one is opened only when every live one has as many
 * streams open as the server allows), a queue of requests waiting for a
 * stream, and the conn_scope's list of finished requests waiting to be
 * reported. Every outcome is reported from a loop callback, after the
 * session has returned, through leave(): a done() that frees the upstream or
 * cancels another request can then never pull the ground from under a
 * running nghttp2 call.
 *
 * A request is in exactly one place at a time: the upstream's queue, one
 * connection's session, or the finished list.
 *
 * The same pool carries ODoH's exchanges (doh_send_http): other paths and
 * media types, bodies passed through untouched. */
#include "upstream/doh.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/defer.h"
#include "core/err.h"
#include "dns/dns.h"

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

long doh_b64url(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    size_t o = 0, i = 0;

    if (cap <= need)
        return DV_ESPACE;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        out[o++] = b64url_alphabet[in[i] >> 2];
        out[o++] = b64url_alphabet[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
        out[o++] = b64url_alphabet[v >> 10];
        out[o++] = b64url_alphabet[v >> 4 & 63];
        out[o++] = b64url_alphabet[(v & 15) << 2];
    }
    out[o] = 0;
    return (long)o;
}

/* RFC 3986 pchar plus '/' and '?' (a path may carry a fixed query); '%' is
 * allowed for escapes the operator wrote. Never space, '#' or controls,
 * which would change the request or be rejected by nghttp2. */
static bool path_char_ok(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("-._~!$&'()*+,;=:@/?%", ch));
}

int doh_path(const char *url_path, char *out, size_t cap)
{
    static const char tmpl[] = "{?dns}";
    const char *p = url_path && *url_path ? url_path : "/dns-query";
    size_t n = strlen(p);

    if (n >= strlen(tmpl) && strcmp(p + n - strlen(tmpl), tmpl) == 0)
        n -= strlen(tmpl);
    if (n == 0 || p[0] != '/')
        return DV_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!path_char_ok((unsigned char)p[i]))
            return DV_EINVAL; /* '{' lands here: only {?dns} is understood */
    if (n >= cap)
        return DV_ESPACE;
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

int doh_authority(const char *host, uint16_t port, char *out, size_t cap)
{
    bool v6 = strchr(host, ':') != NULL;
    int n;

    if (port == 443)
        n = snprintf(out, cap, v6 ? "[%s]" : "%s", host);
    else
        n = snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    return n < 0 || (size_t)n >= cap ? DV_ESPACE : 0;
}


int doh_answer_rc(const struct h2_req *r)
{
    if (r->status != 200)
        return DV_EHTTP; /* counted by status in the metrics */
    if (!r->ctype_ok || buf_used(&r->resp) < DNS_HDR_LEN)
        return DV_EPROTO;
    /* the query went with ID 0 (RFC 8484 4.1): another ID is another answer */
    if (dns_get16(buf_head(&r->resp)) != 0)
        return DV_EPROTO;
    return 0;
}

#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "upstream/conn.h"
#include "upstream/happy.h"
#include "tls/tls.h"
#include "upstream/upstream.h"

enum {
    DOH_STREAMS_CAP = 1000,  /* our own bound on streams per connection */
    DOH_RETRIES = 2,         /* refused streams are retried on another connection */
    DOH_OUT_HIGH = 256 * 1024, /* stop serializing frames while this much is unsent */
    DOH_WAIT_MAX = 16384,    /* queries waiting for a stream */
};

/* seconds */
#define DOH_CONNECT_TIMEOUT 5.0 /* TCP connect + TLS handshake */
#define DOH_PING_BUSY 1.0       /* streams open and the server silent this long: PING */
#define DOH_PING_IDLE 20.0      /* no stream open: PING this often */
#define DOH_PING_TIMEOUT 3.0    /* no PING ACK within this: the connection is dead */

static const char dns_ctype[] = "application/dns-message";

enum req_where { R_NONE, R_QUEUE, R_CONN, R_DONE };

struct doh_conn;
struct doh_up;

struct doh_req {
    struct list_link link; /* the upstream's queue */
    enum req_where where;
    struct doh_up *d;
    struct doh_conn *c;    /* while R_CONN */
    struct conn_done done;
    struct h2_req h;       /* the exchange; h.resp is the answer */
    uint8_t *q;            /* the body: padded query with ID 0, or the caller's */
    char *path;            /* an owned :path (GET, ODoH), else NULL */
    struct doh_http *http; /* an ODoH exchange, else NULL */
    unsigned tries;
};

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_READY };

struct doh_conn {
    struct doh_conn *next;
    struct doh_up *d;
    enum conn_state state;
    bool dead;     /* failed; freed by leave() */
    bool suspect;  /* the network changed under it: no new streams */
    int fd;
    int events;
    ev_io io;
    ev_timer timer;
    struct happy *happy; /* racing the addresses; fd is -1 meanwhile */
    ev_timer stall; /* while requests are out: has the path died? */
    struct tls_conn *tls;
    struct h2 *h2;          /* the HTTP/2 session, once the handshake is done */
    struct buf out;         /* serialized frames not yet taken by TLS */
    ev_tstamp opened, last_rx, idle_since, ping_sent;
    ev_tstamp waiting_since; /* first request sent since the server last spoke */
    bool waiting;
    bool ping_out;
};

struct doh_up {
    struct ev_loop *loop;
    char *name;
    char *authority;
    char *path;
    bool get;
    struct net_addr addr;
    struct tls_ctx *tls;
    struct doh_conn *conns;
    struct list queue;
    struct conn_scope scope; /* callback depth, finished requests, deferred free */
    struct conn_policy pol;
    /* runs leave() after send(), before the loop next sleeps: every request
     * of this turn goes out together, without a poll of its own */
    struct defer kick;
    /* its addresses, read at each connect (a bootstrap upstream may change
     * them); only conn_open reads it, which never runs after close() */
    const struct upstream *u;
    int last_status;    /* last bad HTTP status logged, to log each change once */
    ev_tstamp last_status_log;
    struct ustats *st;  /* the upstream's counters, ustats_sink after close */
};

/* ------------------------------------------------------------ requests */

static void req_free(struct doh_req *r)
{
    buf_free(&r->h.resp);
    free(r->q);
    free(r->path);
    free(r);
}

static struct doh_req *req_of(struct conn_done *f)
{
    return (struct doh_req *)(void *)((char *)f - offsetof(struct doh_req, done));
}

static struct doh_req *req_of_h2(struct h2_req *h)
{
    return list_elem(h, struct doh_req, h);
}

static struct doh_req *queue_head(const struct doh_up *d)
{
    return list_elem(d->queue.head, struct doh_req, link);
}

/* An unused connection closes after the upstream's idle_timeout_ms (s). */
static ev_tstamp idle_close(const struct doh_up *d)
{
    return (ev_tstamp)d->pol.idle_ms / 1000.0;
}

/* A request left c's session: c may have become idle. */
static void conn_unlive(struct doh_conn *c)
{
    if (h2_live(c->h2) == 0)
        c->idle_since = ev_now(c->d->loop);
}

/* Takes r out of wherever it is. */
static void req_detach(struct doh_req *r)
{
    switch (r->where) {
    case R_QUEUE:
        list_unlink(&r->d->queue, &r->link);
        break;
    case R_CONN:
        h2_cancel(r->c->h2, &r->h);
        conn_unlive(r->c);
        r->c = NULL;
        break;
    case R_DONE:
        conn_scope_remove(&r->d->scope, &r->done);
        break;
    case R_NONE:
        break;
    }
    r->where = R_NONE;
}

/* Queues r's outcome for leave(); r has left its connection. */
static void req_finish(struct doh_req *r, int rc)
{
    req_detach(r);
    r->where = R_DONE;
    r->done.raw = r->http != NULL;
    conn_scope_complete(&r->d->scope, &r->done, rc, buf_head(&r->h.resp), buf_used(&r->h.resp));
}

/* Back to the upstream's queue for another connection, while tries last. */
static void req_retry(struct doh_req *r, int rc)
{
    if (++r->tries > DOH_RETRIES) {
        req_finish(r, rc);
        return;
    }
    req_detach(r);
    r->where = R_QUEUE;
    list_push(&r->d->queue, &r->link);
}

/* ------------------------------------------------------------ connections */

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_stall_init(struct doh_conn *c);
static void enter(struct doh_up *d);
static void leave(struct doh_up *d);
static void req_response(struct doh_req *r);

static void conn_watch(struct doh_conn *c, int events)
{
    if (c->fd < 0 || c->events == events)
        return;
    ev_io_stop(c->d->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->d->loop, &c->io);
    c->events = events;
}

/* Fails every stream of c and marks it for leave() to free. Streams the
 * server never saw go back to the queue; the rest fail with rc so the query
 * can fail over. */
static void conn_fail(struct doh_conn *c, int rc)
{
    if (c->dead)
        return;
    c->dead = true;
    happy_cancel(c->happy);
    c->happy = NULL;
    if (c->fd >= 0) {
        ev_io_stop(c->d->loop, &c->io);
        if (c->tls)
            tls_conn_shutdown(c->tls);
    }
    ev_timer_stop(c->d->loop, &c->timer);
    ev_timer_stop(c->d->loop, &c->stall);
    if (c->h2)
        h2_abort(c->h2, rc);
}

static void conn_free(struct doh_conn *c)
{
    happy_cancel(c->happy);
    ev_timer_stop(c->d->loop, &c->stall);
    ustats_conn_closed(c->d->st);
    h2_del(c->h2);
    if (c->tls)
        tls_conn_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->out);
    free(c);
}

/* Connection-level success resets the backoff; failures grow it. */
static void up_conn_failed(struct doh_up *d, const char *why)
{
    uint64_t wait = conn_policy_failed(&d->pol, net_now_ms());

    log_info("upstream %s: doh connection failed (%s); next attempt in %.1fs", d->name, why,
             (double)wait / 1000.0);
}

/* The session's events: a response, or a stream the server never saw. They
 * run inside h2 calls; the outcome waits in the scope for leave(). */
static void h2_done_ev(void *arg, struct h2_req *h, int rc)
{
    struct doh_conn *c = arg;
    struct doh_req *r = req_of_h2(h);

    r->where = R_NONE;
    r->c = NULL;
    conn_unlive(c);
    if (rc)
        req_finish(r, rc);
    else
        req_response(r);
}

static void h2_refused_ev(void *arg, struct h2_req *h)
{
    struct doh_conn *c = arg;
    struct doh_req *r = req_of_h2(h);

    r->where = R_NONE;
    r->c = NULL;
    conn_unlive(c);
    req_retry(r, DV_ECONN);
}

static const struct h2_events doh_h2_events = {.done = h2_done_ev, .refused = h2_refused_ev};

/* Serializes the session's pending frames into c->out until it holds high
 * bytes. 0, or DV_E* after failing c. */
static int conn_serialize(struct doh_conn *c, size_t high)
{
    while (buf_used(&c->out) < high) {
        const uint8_t *p;
        long n = h2_send(c->h2, &p);
        if (n < 0) {
            conn_fail(c, DV_EPROTO);
            return DV_EPROTO;
        }
        if (n == 0)
            break;
        if (buf_append(&c->out, p, (size_t)n)) {
            conn_fail(c, DV_ENOMEM);
            return DV_ENOMEM;
        }
    }
    return 0;
}

/* Moves the session's pending frames into c->out and as much of it as TLS
 * takes to the socket. */
static void conn_flush(struct doh_conn *c)
{
    if (c->dead || c->state != C_READY)
        return;
    for (;;) {
        if (conn_serialize(c, DOH_OUT_HIGH))
            return;
        if (buf_used(&c->out) == 0)
            break;
        long w = tls_conn_write(c->tls, buf_head(&c->out), buf_used(&c->out));
        if (w > 0)
            ustats_bytes(c->d->st, 0, (uint64_t)w);
        if (w == DV_EAGAIN) {
            conn_watch(c, tls_conn_wants_write(c->tls) ? EV_READ | EV_WRITE : EV_READ);
            return;
        }
        if (w < 0) {
            conn_fail(c, DV_ECONN);
            return;
        }
        buf_consume(&c->out, (size_t)w);
        if (buf_used(&c->out) == 0)
            c->out.off = c->out.len = 0;
    }
    if (h2_finished(c->h2)) {
        /* GOAWAY exchanged and every stream closed */
        log_debug("upstream %s: doh connection finished", c->d->name);
        conn_fail(c, DV_ECONN);
        return;
    }
    conn_watch(c, EV_READ);
}

static bool conn_has_room(const struct doh_conn *c)
{
    return !c->dead && !c->suspect && c->state == C_READY && h2_has_room(c->h2, DOH_STREAMS_CAP);
}

static bool conn_draining(const struct doh_conn *c)
{
    return c->state == C_READY && h2_draining(c->h2);
}

static void conn_arm_timer(struct doh_conn *c);

static size_t conn_live(const struct doh_conn *c)
{
    return c->h2 ? h2_live(c->h2) : 0;
}

static void up_retire_suspects(struct doh_up *d);

static void conn_read(struct doh_conn *c);

static void conn_ready(struct doh_conn *c)
{
    struct doh_up *d = c->d;

    c->state = C_READY;
    up_retire_suspects(d);
    c->last_rx = c->idle_since = ev_now(d->loop);
    conn_policy_ok(&d->pol);
    ustats_handshake(d->st, tls_conn_resumed(c->tls) ? USTATS_HS_RESUMED : USTATS_HS_FULL);
    if (h2_new(&doh_h2_events, c, d->authority, d->name, &c->h2)) {
        c->h2 = NULL;
        conn_fail(c, DV_ENOMEM);
        return;
    }
    log_debug("upstream %s: doh connection ready (%s)", d->name,
              tls_conn_resumed(c->tls) ? "resumed" : "full handshake");
    conn_arm_timer(c);
    /* bytes that came with the end of the handshake (the server's SETTINGS)
     * may wait in the TLS layer's buffer, where no poll sees them */
    conn_read(c);
}

static void conn_handshake(struct doh_conn *c)
{
    int rc = tls_conn_handshake(c->tls);

    if (rc == DV_EAGAIN) {
        conn_watch(c, tls_conn_wants_write(c->tls) ? EV_WRITE : EV_READ);
        return;
    }
    if (rc) {
        /* the TLS layer logged why (certificate, ALPN other than h2, ...) */
        up_conn_failed(c->d, rc == DV_ETLS ? "TLS" : "closed during handshake");
        conn_fail(c, rc == DV_ETLS ? DV_ETLS : DV_ECONN);
        return;
    }
    conn_ready(c);
}

static void conn_read(struct doh_conn *c)
{
    uint8_t in[16384];
    size_t live = c->h2 ? h2_live(c->h2) : 0;

    while (!c->dead) {
        long n = tls_conn_read(c->tls, in, sizeof(in));
        if (n > 0)
            ustats_bytes(c->d->st, (uint64_t)n, 0);
        if (n == DV_EAGAIN) {
            /* as in dot.c: ACK at once when a server that Nagles may hold
             * an answer for it (what came answered nothing, a session
             * ticket, or more answers are due); not when nothing is */
            if (!c->h2 || h2_live(c->h2) == live || h2_live(c->h2))
                conn_quickack(c->fd);
            break;
        }
        if (n < 0) {
            log_debug("upstream %s: doh connection closed by server", c->d->name);
            conn_fail(c, DV_ECONN);
            return;
        }
        c->last_rx = ev_now(c->d->loop);
        c->ping_out = false; /* any bytes prove the server alive */
        c->waiting = false;
        if (h2_recv(c->h2, in, (size_t)n)) {
            conn_fail(c, DV_EPROTO);
            return;
        }
    }
    conn_flush(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *d = c->d;

    enter(d);
    if (c->state == C_CONNECTING) {
        int soerr = conn_connect_error(c->fd);
        if (soerr) {
            log_debug("upstream %s: doh connect: %s", d->name, strerror(soerr));
            up_conn_failed(d, strerror(soerr));
            conn_fail(c, DV_ECONN);
        } else {
            c->state = C_HANDSHAKE;
            conn_handshake(c);
        }
    } else if (c->state == C_HANDSHAKE) {
        conn_handshake(c);
    } else {
        if (revents & EV_READ)
            conn_read(c);
        if (!c->dead && (revents & EV_WRITE))
            conn_flush(c);
    }
    if (!c->dead)
        conn_arm_timer(c);
    leave(d);
}

/* The one timer of a connection: connect deadline, then PING for liveness
 * (busy: when the server has been silent since a request went out, even
 * one cancelled since; idle: now and then) with a deadline for the ACK,
 * then closing after a long idle spell. */
static void conn_arm_timer(struct doh_conn *c)
{
    ev_tstamp now = ev_now(c->d->loop), at;

    if (c->state != C_READY)
        at = c->opened + DOH_CONNECT_TIMEOUT;
    else if (c->ping_out)
        at = c->ping_sent + DOH_PING_TIMEOUT;
    else if (c->waiting)
        at = c->waiting_since + DOH_PING_BUSY;
    else {
        at = c->last_rx + DOH_PING_IDLE;
        if (c->idle_since + idle_close(c->d) < at)
            at = c->idle_since + idle_close(c->d);
    }
    ev_timer_stop(c->d->loop, &c->timer);
    ev_timer_set(&c->timer, at > now ? at - now : 0., 0.);
    ev_timer_start(c->d->loop, &c->timer);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *d = c->d;
    ev_tstamp now = ev_now(loop);

    enter(d);
    if (c->state != C_READY) {
        log_info("upstream %s: doh connect/handshake timed out", d->name);
        up_conn_failed(d, "timeout");
        conn_fail(c, DV_ETIMEOUT);
    } else if (c->ping_out && now >= c->ping_sent + DOH_PING_TIMEOUT) {
        log_info("upstream %s: doh connection: no PING ACK in %.0fs, closing", d->name,
                 DOH_PING_TIMEOUT);
        conn_fail(c, DV_ETIMEOUT);
    } else if (!h2_live(c->h2) && now >= c->idle_since + idle_close(d)) {
        log_debug("upstream %s: doh connection idle, closing", d->name);
        h2_terminate(c->h2);
        conn_flush(c);
        if (!c->dead)
            conn_fail(c, DV_ECONN);
    } else if (!c->ping_out && (c->waiting ? now >= c->waiting_since + DOH_PING_BUSY
                                           : now >= c->last_rx + DOH_PING_IDLE)) {
        if (h2_ping(c->h2) == 0) {
            c->ping_out = true;
            c->ping_sent = now;
            conn_flush(c);
        }
    }
    if (!c->dead)
        conn_arm_timer(c);
    leave(d);
}

/* The address race is over: carry on as a connect that just completed. */
static void conn_happy_cb(void *arg, int fd, int err)
{
    struct doh_conn *c = arg;
    struct doh_up *d = c->d;

    enter(d);
    c->happy = NULL;
    if (fd < 0) {
        log_debug("upstream %s: no address answered: %s", d->name, strerror(err));
        up_conn_failed(d, strerror(err));
        conn_fail(c, DV_ECONN);
    } else {
        c->fd = fd;
        if (tls_conn_new(d->tls, c->fd, &c->tls)) {
            up_conn_failed(d, "tls");
            conn_fail(c, DV_ETLS);
        } else {
            c->events = 0;
            conn_watch(c, EV_WRITE);
        }
    }
    leave(d);
}

static struct doh_conn *conn_open(struct doh_up *d)
{
    struct doh_conn *c;

    if (d->u->n_addrs == 0) {
        /* the bootstrap upstream has not answered yet: no backoff for that */
        log_debug("upstream %s: no address yet", d->name);
        return NULL;
    }
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    c->d = d;
    c->fd = -1;
    buf_init(&c->out);
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    conn_stall_init(c);
    c->opened = ev_now(d->loop);
    ustats_conn_opened(d->st); /* conn_free counts the close, on failure too */
    if (d->u->n_addrs > 1) {
        c->happy = happy_start(d->loop, d->u->addrs, d->u->n_addrs, SOCK_STREAM,
                               HAPPY_STAGGER_MS, d->name, conn_happy_cb, c);
        if (!c->happy)
            goto fail;
    } else {
        c->fd = conn_connect(&d->u->addrs[0], SOCK_STREAM, d->name);
        if (c->fd < 0) {
            c->fd = -1;
            goto fail;
        }
        if (tls_conn_new(d->tls, c->fd, &c->tls))
            goto fail;
    }
    ev_io_init(&c->io, conn_io_cb, c->fd, EV_WRITE);
    c->io.data = c;
    c->events = EV_WRITE;
    if (c->fd >= 0)
        ev_io_start(d->loop, &c->io);
    conn_arm_timer(c);
    c->next = d->conns;
    d->conns = c;
    return c;
fail:
    up_conn_failed(d, "connect");
    conn_free(c);
    return NULL;
}

/* ------------------------------------------------------------ requests */

/* Opens r's stream on c. 0 or DV_E* (r untouched). */
static int conn_submit(struct doh_conn *c, struct doh_req *r)
{
    int rc = h2_submit(c->h2, &r->h);

    if (rc)
        return rc;
    r->c = c;
    r->where = R_CONN;
    if (!c->waiting) {
        c->waiting = true;
        c->waiting_since = ev_now(c->d->loop);
        conn_arm_timer(c);
    }
    return 0;
}

static void log_status(struct doh_up *d, int status)
{
    ev_tstamp now = ev_now(d->loop);

    if (status != d->last_status || now - d->last_status_log > 10.0) {
        d->last_status = status;
        d->last_status_log = now;
        log_warn("upstream %s: HTTP status %d from %s %s", d->name, status,
                 d->get ? "GET" : "POST", d->path);
    } else {
        log_debug("upstream %s: HTTP status %d", d->name, status);
    }
}

/* The server ended its response: judge it. An ODoH exchange takes any
 * complete response; its caller judges the status. */
static void req_response(struct doh_req *r)
{
    struct doh_up *d = r->d;
    int rc = 0;

    if (r->http) {
        r->http->status = r->h.status;
        r->http->ctype_ok = r->h.ctype_ok;
        r->http->max_age = r->h.max_age;
    } else if ((rc = doh_answer_rc(&r->h))) {
        if (r->h.status != 200) {
            log_status(d, r->h.status);
            ustats_http_status(d->st, (unsigned)r->h.status);
        }
        else if (!r->h.ctype_ok)
            log_warn("upstream %s: doh answer without content-type application/dns-message",
                     d->name);
        else
            log_debug("upstream %s: doh answer of %zu bytes", d->name, buf_used(&r->h.resp));
    }
    /* ID 0 went on the wire (RFC 8484 4.1): delivery puts the caller's back */
    req_finish(r, rc);
}

/* ------------------------------------------------------------ the pool */

/* Gives queued requests a stream: on a live connection with room, else on a
 * new connection when none is still coming up and the pool has space. With
 * no connection live or coming and the backoff running, they fail now so
 * the query moves on to another upstream. */
static void up_dispatch(struct doh_up *d)
{
    while (d->queue.head) {
        struct doh_conn *best = NULL;
        size_t live = 0;
        bool pending = false;

        for (struct doh_conn *c = d->conns; c; c = c->next) {
            if (c->dead || conn_draining(c) || c->suspect)
                continue;
            live++;
            if (c->state != C_READY)
                pending = true;
            else if (conn_has_room(c) && (!best || h2_live(c->h2) > h2_live(best->h2)))
                best = c; /* fill the fullest: keeps the others idle to close */
        }
        if (best) {
            struct doh_req *r = queue_head(d);
            list_unlink(&d->queue, &r->link);
            r->where = R_NONE;
            int rc = conn_submit(best, r);
            if (rc == 0 && !ev_is_active(&best->stall))
                ev_timer_again(d->loop, &best->stall);
            /* each request whole (HEADERS, then its DATA) before the next
             * HEADERS: some servers (kresd) read one request at a time and
             * refuse a stream that starts while another is incomplete */
            if (rc == 0)
                conn_serialize(best, SIZE_MAX);
            if (rc && h2_draining(best->h2)) {
                r->where = R_QUEUE; /* out of stream IDs: another connection */
                list_push(&d->queue, &r->link);
            } else if (rc) {
                req_finish(r, rc);
            }
            continue;
        }
        if (pending)
            return; /* a connection coming up will take them */
        if (conn_policy_may_open(&d->pol, (unsigned)live, net_now_ms())) {
            if (conn_open(d))
                return;
        }
        if (live == 0) {
            while (d->queue.head)
                req_finish(queue_head(d), DV_ECONN);
        }
        return; /* the rest waits for a stream on a live connection */
    }
}

static void up_free(struct doh_up *d)
{
    while (d->conns) {
        struct doh_conn *c = d->conns;
        d->conns = c->next;
        if (c->h2)
            h2_abort(c->h2, DV_ECANCEL); /* its requests to the queue or the scope ... */
        conn_free(c);
    }
    while (d->queue.head) { /* ... freed here */
        struct doh_req *r = queue_head(d);
        req_detach(r);
        req_free(r);
    }
    for (struct conn_done *f; (f = conn_scope_pop(&d->scope));)
        req_free(req_of(f));
    defer_cancel(&d->kick);
    if (d->tls)
        tls_ctx_del(d->tls);
    free(d->name);
    free(d->authority);
    free(d->path);
    free(d);
}

static void enter(struct doh_up *d)
{
    conn_scope_enter(&d->scope);
}

/* The way out of every loop callback: the outermost hands out streams,
 * flushes and frees dead connections (settle), then reports a finished
 * request, and again until none is left: each report from a clean stack,
 * since done may send, cancel or close. */
static void leave(struct doh_up *d)
{
    conn_scope_leave(&d->scope);
}

static void up_settle(void *arg)
{
    struct doh_up *d = arg;

    up_dispatch(d);
    for (struct doh_conn **pc = &d->conns; *pc;) {
        struct doh_conn *c = *pc;
        if (!c->dead && c->state == C_READY && (buf_used(&c->out) || h2_want_write(c->h2)))
            conn_flush(c);
        if (c->dead) {
            *pc = c->next;
            conn_free(c);
        } else {
            pc = &c->next;
        }
    }
}

/* After done: the delivered request goes. */
static void req_release(struct conn_done *f)
{
    req_free(req_of(f));
}

static void up_destroy(void *arg)
{
    up_free(arg);
}

static void kick_cb(void *arg)
{
    struct doh_up *d = arg;

    enter(d);
    leave(d);
}

/* ------------------------------------------------------------ transport ops */

static int doh_open(struct upstream *u)
{
    struct doh_up *d;
    char path[2048], auth[300];
    int rc;

    if (doh_path(u->path, path, sizeof(path))) {
        log_err("upstream %s: DoH path '%s' is not a request path (only the {?dns} template "
                "is understood)", u->name, u->path ? u->path : "");
        return DV_EINVAL;
    }
    if (doh_authority(u->cfg.tls_name ? u->cfg.tls_name : u->host, u->port,
                      auth, sizeof(auth)))
        return DV_EINVAL;
    d = calloc(1, sizeof(*d));
    if (!d)
        return DV_ENOMEM;
    d->loop = u->loop;
    conn_scope_init(&d->scope, up_settle, req_release, up_destroy, d);
    defer_init(&d->kick, kick_cb, d);
    conn_policy_init(&d->pol, &u->cfg);
    d->addr = u->addr;
    d->u = u;
    d->get = u->cfg.doh_get;
    d->name = strdup(u->name);
    d->path = strdup(path);
    d->authority = strdup(auth);
    if (!d->name || !d->path || !d->authority) {
        up_free(d);
        return DV_ENOMEM;
    }
    /* DoH needs HTTP/2 here; HTTP/1.1 is not spoken */
    rc = tls_ctx_new_upstream(u, "h2", true, &d->tls);
    if (rc) {
        up_free(d);
        return rc;
    }
    d->st = &u->stats;
    u->priv = d;
    return 0;
}

/* A new request for x, queued; fails fast while the pool backs off. */
static int up_queue(struct doh_up *d, struct xfer *x, struct doh_req *r)
{
    bool live = false;

    for (struct doh_conn *c = d->conns; c; c = c->next)
        live |= !c->dead && !conn_draining(c) && !c->suspect;
    if (!live && conn_policy_backoff(&d->pol, net_now_ms()))
        return DV_ECONN; /* backing off: let the query try elsewhere now */
    if (d->queue.n >= DOH_WAIT_MAX)
        return DV_ECONN; /* the server cannot keep up: do not hoard queries */
    buf_init(&r->h.resp);
    r->d = d;
    r->done.x = x;
    r->h.sid = -1;
    r->where = R_QUEUE;
    list_push(&d->queue, &r->link);
    x->tpriv = r;
    if (!d->scope.depth)
        defer_arm(d->loop, &d->kick); /* dispatched before the loop sleeps */
    return 0;
}

/* The GET form's :path: the URL path with dns= and the query in base64url. */
static char *get_path(const struct doh_up *d, const uint8_t *q, size_t len)
{
    size_t plen = strlen(d->path), cap = plen + 5 + len / 3 * 4 + 4 + 1;
    char *path = malloc(cap);

    if (!path)
        return NULL;
    memcpy(path, d->path, plen);
    /* a path that already carries a query gets dns= appended to it */
    path[plen++] = strchr(d->path, '?') ? '&' : '?';
    memcpy(path + plen, "dns=", 4);
    plen += 4;
    doh_b64url(q, len, path + plen, cap - plen);
    return path;
}

static int doh_send(struct upstream *u, struct xfer *x)
{
    struct doh_up *d = u->priv;
    struct doh_req *r;
    size_t cap, qlen;
    int rc;

    if (x->len < DNS_HDR_LEN || x->len > DNS_MSG_MAX)
        return DV_EINVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return DV_ENOMEM;
    cap = x->len + CONN_QUERY_ROOM;
    r->q = malloc(cap);
    if (!r->q) {
        free(r);
        return DV_ENOMEM;
    }
    memcpy(r->q, x->msg, x->len);
    qlen = x->len;
    rc = conn_pad_query(r->q, &qlen, cap);
    if (rc) {
        req_free(r);
        return rc;
    }
    dns_put16(r->q, 0);
    r->h.ctype = dns_ctype;
    if (d->get) {
        if (!(r->path = get_path(d, r->q, qlen))) {
            req_free(r);
            return DV_ENOMEM;
        }
        r->h.path = r->path;
    } else {
        r->h.path = d->path;
        r->h.body = r->q;
        r->h.len = qlen;
    }
    rc = up_queue(d, x, r);
    if (rc)
        req_free(r);
    return rc;
}

int doh_send_http(struct upstream *u, struct doh_http *h)
{
    struct doh_up *d = u->priv;
    struct doh_req *r;
    int rc;

    if (u->ops != &doh_ops || !h->path || h->x.len > H2_BODY_MAX)
        return DV_EINVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return DV_ENOMEM;
    r->http = h;
    r->path = strdup(h->path);
    if (h->x.len && (r->q = malloc(h->x.len)))
        memcpy(r->q, h->x.msg, h->x.len);
    if (!r->path || (h->x.len && !r->q)) {
        req_free(r);
        return DV_ENOMEM;
    }
    r->h.path = r->path;
    r->h.ctype = h->ctype;
    r->h.body = r->q;
    r->h.len = h->x.len;
    rc = up_queue(d, &h->x, r);
    if (rc)
        req_free(r);
    return rc;
}

static void doh_cancel(struct upstream *u, struct xfer *x)
{
    struct doh_req *r = x->tpriv;

    if (!r)
        return;
    x->tpriv = NULL;
    /* the stream, if open, is reset and no longer names r */
    if (r->where == R_CONN && !r->d->scope.depth)
        defer_arm(r->d->loop, &r->d->kick); /* flush the RST_STREAM */
    req_detach(r);
    req_free(r);
}

static void doh_close(struct upstream *u)
{
    struct doh_up *d = u->priv;

    u->priv = NULL;
    if (!d)
        return;
    d->st = &ustats_sink;
    for (struct doh_conn *c = d->conns; c; c = c->next) {
        if (c->dead)
            continue;
        if (c->state == C_READY) {
            h2_terminate(c->h2);
            conn_flush(c); /* best effort: a GOAWAY if the socket takes it */
        }
        ev_io_stop(d->loop, &c->io);
        ev_timer_stop(d->loop, &c->timer);
    }
    conn_scope_close(&d->scope); /* now, or once the stack unwinds */
}

/* ------------------------------------------------------------ network changes */

/* Ends c without failing anything: the requests still awaited go back to the
 * queue for another connection (the path failed, not the queries). */
static void conn_requeue(struct doh_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    happy_cancel(c->happy);
    c->happy = NULL;
    if (c->fd >= 0)
        ev_io_stop(c->d->loop, &c->io);
    ev_timer_stop(c->d->loop, &c->timer);
    ev_timer_stop(c->d->loop, &c->stall);
    if (c->h2)
        h2_release(c->h2);
}

/* A connection made after the change is up: the suspect ones go, and what
 * they still owe is asked again (settle hands it out). */
static void up_retire_suspects(struct doh_up *d)
{
    for (struct doh_conn *c = d->conns; c; c = c->next) {
        if (c->suspect && !c->dead) {
            if (conn_live(c))
                log_debug("upstream %s: %zu requests moved off a suspect connection", d->name,
                          conn_live(c));
            conn_requeue(c);
        }
    }
}

/* Every CONN_STALL_CHECK_MS while requests are out: data unacknowledged
 * through a retransmission means the path died (a NAT that forgot us, a
 * route gone), which the PING would learn only seconds later: the
 * connection turns suspect and a new one takes its requests once it is up. */
static void conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *d = c->d;

    if (c->dead || c->suspect || !conn_live(c)) {
        ev_timer_stop(loop, w);
        return;
    }
    if (c->state != C_READY || !conn_stream_stalled(c->fd, CONN_STALL_MS))
        return;
    enter(d);
    log_info("upstream %s: doh connection stalled with %zu requests out; connecting afresh",
             d->name, conn_live(c));
    ev_timer_stop(loop, w);
    c->suspect = true;
    conn_open(d);
    leave(d);
}

static void conn_stall_init(struct doh_conn *c)
{
    ev_init(&c->stall, conn_stall_cb);
    c->stall.repeat = CONN_STALL_CHECK_MS / 1000.0;
    c->stall.data = c;
}

static void doh_netchange(struct upstream *u)
{
    struct doh_up *d = u->priv;
    unsigned gone = 0, suspect = 0;
    bool active = d->queue.head != NULL;

    enter(d);
    conn_policy_ok(&d->pol); /* a backoff from the old network means nothing now */
    for (struct doh_conn *c = d->conns; c; c = c->next) {
        if (c->dead)
            continue;
        active = true;
        if (c->state != C_READY || conn_local_gone(c->fd)) {
            /* its address is gone, or it was still being set up on the old path */
            conn_requeue(c);
            gone++;
        } else if (!c->suspect) {
            c->suspect = true;
            suspect++;
        }
    }
    if (active) {
        log_info("upstream %s: network changed: %u connections closed, %u suspect; "
                 "connecting afresh", d->name, gone, suspect);
        conn_open(d); /* warm before the next query, not after it */
    }
    leave(d);
}

const struct transport_ops doh_ops = {
    .name = "doh",
    .open = doh_open,
    .send = doh_send,
    .cancel = doh_cancel,
    .close = doh_close,
    .netchange = doh_netchange,
};

#else /* no TLS or no nghttp2 */

int doh_send_http(struct upstream *u, struct doh_http *h)
{
    return DV_EINVAL;
}

#endif
