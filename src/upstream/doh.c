/* doh — DNS over HTTPS (RFC 8484) on HTTP/2 over the TLS layer; the HTTP/2
 * exchange itself is h2.c's, which takes bytes and returns responses.
 *
 * Per upstream: a small pool of connections (up to the upstream's
 * max_conns; another one is opened only when every live one has as many
 * streams open as the server allows), a queue of requests waiting for a
 * stream, and the conn_scope's list of finished requests waiting to be
 * reported. Every outcome is reported from a loop callback, after the
 * session has returned, when the outermost callback leaves the scope: a done() that frees the upstream or
 * cancels another request can then never pull the ground from under a
 * running nghttp2 call.
 *
 * A request is in exactly one place at a time: the upstream's wait list, one
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
static bool doh_path_char_ok(unsigned char ch)
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
        if (!doh_path_char_ok((unsigned char)p[i]))
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
};

/* seconds */
#define DOH_CONNECT_TIMEOUT 5.0 /* TCP connect + TLS handshake */
#define DOH_PING_BUSY 1.0       /* streams open and the server silent this long: PING */
#define DOH_PING_IDLE 20.0      /* no stream open: PING this often */
#define DOH_PING_TIMEOUT 3.0    /* no PING ACK within this: the connection is dead */

static const char dns_ctype[] = "application/dns-message";

struct doh_conn;
struct doh_up;

struct doh_req {
    struct conn_link link; /* the upstream's wait list */
    enum conn_req_where where;
    struct doh_up *up;
    struct doh_conn *c;    /* while CONN_REQ_SENT */
    struct conn_done done;
    struct h2_req h;       /* the exchange; h.resp is the answer */
    uint8_t *q;            /* the body: padded query with ID 0, or the caller's */
    char *path;            /* an owned :path (GET, ODoH), else NULL */
    struct doh_http *http; /* an ODoH exchange, else NULL */
    unsigned tries;
};

struct doh_conn {
    struct doh_conn *next;
    struct doh_up *up;
    enum conn_state state; /* CONN_DEAD: failed, freed by doh_up_settle */
    bool suspect;  /* the network changed under it: no new streams */
    int fd;
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
    struct list wait;
    struct conn_scope scope; /* callback depth, finished requests, deferred free */
    struct conn_policy pol;
    /* leaves the scope after send(), before the loop next sleeps: every request
     * of this turn goes out together, without a poll of its own */
    struct defer kick;
    /* its addresses, read at each connect (a bootstrap upstream may change
     * them); only doh_conn_open reads it, which never runs after close() */
    const struct upstream *u;
    int last_status;    /* last bad HTTP status logged, to log each change once */
    ev_tstamp last_status_log;
    struct ustats *st;  /* the upstream's counters, ustats_sink after close */
};

/* ------------------------------------------------------------ requests */

static void doh_req_free(struct doh_req *r)
{
    buf_free(&r->h.resp);
    free(r->q);
    free(r->path);
    free(r);
}

static struct doh_req *doh_req_of(struct conn_done *f)
{
    return conn_elem(f, struct doh_req, done);
}

static struct doh_req *doh_req_of_h2(struct h2_req *h)
{
    return list_elem(h, struct doh_req, h);
}

static struct doh_req *doh_wait_head(const struct doh_up *up)
{
    return conn_elem(up->wait.head, struct doh_req, link);
}

/* An unused connection closes after the upstream's idle_timeout_ms (s). */
static ev_tstamp doh_up_idle_s(const struct doh_up *up)
{
    return (ev_tstamp)up->pol.idle_ms / 1000.0;
}

/* A request left c's session: c may have become idle. */
static void doh_conn_unlive(struct doh_conn *c)
{
    if (h2_live(c->h2) == 0)
        c->idle_since = ev_now(c->up->loop);
}

/* Takes r out of wherever it is. */
static void doh_req_detach(struct doh_req *r)
{
    if (r->where == CONN_REQ_SENT) {
        h2_cancel(r->c->h2, &r->h);
        doh_conn_unlive(r->c);
        r->c = NULL;
    }
    conn_req_detach(&r->up->scope, &r->link, &r->done);
    r->where = CONN_REQ_NONE;
}

/* Queues r's outcome for delivery from the scope; r has left its connection. */
static void doh_req_finish(struct doh_req *r, int rc)
{
    doh_req_detach(r);
    r->where = CONN_REQ_DONE;
    r->done.raw = r->http != NULL;
    conn_scope_complete(&r->up->scope, &r->done, rc, buf_head(&r->h.resp), buf_used(&r->h.resp));
}

/* Back to the upstream's wait list for another connection, while tries last. */
static void doh_req_retry(struct doh_req *r, int rc)
{
    if (++r->tries > DOH_RETRIES) {
        doh_req_finish(r, rc);
        return;
    }
    doh_req_detach(r);
    r->where = CONN_REQ_WAIT;
    conn_list_push(&r->up->wait, &r->link);
}

/* ------------------------------------------------------------ connections */

static void doh_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void doh_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void doh_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void doh_req_response(struct doh_req *r);

static void doh_conn_watch(struct doh_conn *c, int events)
{
    if (c->fd >= 0)
        conn_io_watch(c->up->loop, &c->io, c->fd, events);
}

/* Fails every stream of c and marks it for doh_up_settle to free. Streams the
 * server never saw go back to the wait list; the rest fail with rc so the query
 * can fail over. */
static void doh_conn_fail(struct doh_conn *c, int rc)
{
    if (c->state == CONN_DEAD)
        return;
    c->state = CONN_DEAD;
    happy_cancel(c->happy);
    c->happy = NULL;
    if (c->fd >= 0) {
        ev_io_stop(c->up->loop, &c->io);
        if (c->tls)
            tls_conn_shutdown(c->tls);
    }
    ev_timer_stop(c->up->loop, &c->timer);
    ev_timer_stop(c->up->loop, &c->stall);
    if (c->h2)
        h2_abort(c->h2, rc);
}

static void doh_conn_free(struct doh_conn *c)
{
    happy_cancel(c->happy);
    ev_timer_stop(c->up->loop, &c->stall);
    ustats_conn_closed(c->up->st);
    h2_del(c->h2);
    if (c->tls)
        tls_conn_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->out);
    free(c);
}

/* Connection-level success resets the backoff; failures grow it. */
static void doh_up_conn_failed(struct doh_up *up, const char *why)
{
    uint64_t wait = conn_policy_failed(&up->pol, net_now_ms());

    log_info("upstream %s: doh connection failed (%s); next attempt in %.1fs", up->name, why,
             (double)wait / 1000.0);
}

/* The session's events: a response, or a stream the server never saw. They
 * run inside h2 calls; the outcome waits in the scope. */
static void doh_h2_done_ev(void *arg, struct h2_req *h, int rc)
{
    struct doh_conn *c = arg;
    struct doh_req *r = doh_req_of_h2(h);

    r->where = CONN_REQ_NONE;
    r->c = NULL;
    doh_conn_unlive(c);
    if (rc)
        doh_req_finish(r, rc);
    else
        doh_req_response(r);
}

static void doh_h2_refused_ev(void *arg, struct h2_req *h)
{
    struct doh_conn *c = arg;
    struct doh_req *r = doh_req_of_h2(h);

    r->where = CONN_REQ_NONE;
    r->c = NULL;
    doh_conn_unlive(c);
    doh_req_retry(r, DV_ECONN);
}

static const struct h2_events doh_h2_events = {.done = doh_h2_done_ev, .refused = doh_h2_refused_ev};

/* Serializes the session's pending frames into c->out until it holds high
 * bytes. 0, or DV_E* after failing c. */
static int doh_conn_serialize(struct doh_conn *c, size_t high)
{
    while (buf_used(&c->out) < high) {
        const uint8_t *p;
        long n = h2_send(c->h2, &p);
        if (n < 0) {
            doh_conn_fail(c, DV_EPROTO);
            return DV_EPROTO;
        }
        if (n == 0)
            break;
        if (buf_append(&c->out, p, (size_t)n)) {
            doh_conn_fail(c, DV_ENOMEM);
            return DV_ENOMEM;
        }
    }
    return 0;
}

/* Moves the session's pending frames into c->out and as much of it as TLS
 * takes to the socket. */
static void doh_conn_flush(struct doh_conn *c)
{
    if (c->state != CONN_READY)
        return;
    for (;;) {
        if (doh_conn_serialize(c, DOH_OUT_HIGH))
            return;
        if (buf_used(&c->out) == 0)
            break;
        long w = tls_conn_write(c->tls, buf_head(&c->out), buf_used(&c->out));
        if (w > 0)
            ustats_bytes(c->up->st, 0, (uint64_t)w);
        if (w == DV_EAGAIN) {
            doh_conn_watch(c, tls_conn_wants_write(c->tls) ? EV_READ | EV_WRITE : EV_READ);
            return;
        }
        if (w < 0) {
            doh_conn_fail(c, DV_ECONN);
            return;
        }
        buf_consume(&c->out, (size_t)w);
        if (buf_used(&c->out) == 0)
            c->out.off = c->out.len = 0;
    }
    if (h2_finished(c->h2)) {
        /* GOAWAY exchanged and every stream closed */
        log_debug("upstream %s: doh connection finished", c->up->name);
        doh_conn_fail(c, DV_ECONN);
        return;
    }
    doh_conn_watch(c, EV_READ);
}

static bool doh_conn_has_room(const struct doh_conn *c)
{
    return c->state == CONN_READY && !c->suspect && h2_has_room(c->h2, DOH_STREAMS_CAP);
}

static bool doh_conn_draining(const struct doh_conn *c)
{
    return c->state == CONN_READY && h2_draining(c->h2);
}

static void doh_conn_arm_timer(struct doh_conn *c);

static size_t doh_conn_live(const struct doh_conn *c)
{
    return c->h2 ? h2_live(c->h2) : 0;
}

static void doh_up_retire_suspects(struct doh_up *up);

static void doh_conn_read(struct doh_conn *c);

static void doh_conn_ready(struct doh_conn *c)
{
    struct doh_up *up = c->up;

    c->state = CONN_READY;
    doh_up_retire_suspects(up);
    c->last_rx = c->idle_since = ev_now(up->loop);
    conn_policy_ok(&up->pol);
    ustats_handshake(up->st, tls_conn_resumed(c->tls) ? USTATS_HS_RESUMED : USTATS_HS_FULL);
    if (h2_new(&doh_h2_events, c, up->authority, up->name, &c->h2)) {
        c->h2 = NULL;
        doh_conn_fail(c, DV_ENOMEM);
        return;
    }
    log_debug("upstream %s: doh connection ready (%s)", up->name,
              tls_conn_resumed(c->tls) ? "resumed" : "full handshake");
    doh_conn_arm_timer(c);
    /* bytes that came with the end of the handshake (the server's SETTINGS)
     * may wait in the TLS layer's buffer, where no poll sees them */
    doh_conn_read(c);
}

static void doh_conn_handshake(struct doh_conn *c)
{
    int rc = tls_conn_handshake(c->tls);

    if (rc == DV_EAGAIN) {
        doh_conn_watch(c, tls_conn_wants_write(c->tls) ? EV_WRITE : EV_READ);
        return;
    }
    if (rc) {
        /* the TLS layer logged why (certificate, ALPN other than h2, ...) */
        doh_up_conn_failed(c->up, rc == DV_ETLS ? "TLS" : "closed during handshake");
        doh_conn_fail(c, rc == DV_ETLS ? DV_ETLS : DV_ECONN);
        return;
    }
    doh_conn_ready(c);
}

static void doh_conn_read(struct doh_conn *c)
{
    uint8_t in[16384];
    size_t live = c->h2 ? h2_live(c->h2) : 0;

    while (c->state != CONN_DEAD) {
        long n = tls_conn_read(c->tls, in, sizeof(in));
        if (n > 0)
            ustats_bytes(c->up->st, (uint64_t)n, 0);
        if (n == DV_EAGAIN) {
            /* as in dot.c: ACK at once when a server that Nagles may hold
             * an answer for it (what came answered nothing, a session
             * ticket, or more answers are due); not when nothing is */
            if (!c->h2 || h2_live(c->h2) == live || h2_live(c->h2))
                conn_quickack(c->fd);
            break;
        }
        if (n < 0) {
            log_debug("upstream %s: doh connection closed by server", c->up->name);
            doh_conn_fail(c, DV_ECONN);
            return;
        }
        c->last_rx = ev_now(c->up->loop);
        c->ping_out = false; /* any bytes prove the server alive */
        c->waiting = false;
        if (h2_recv(c->h2, in, (size_t)n)) {
            doh_conn_fail(c, DV_EPROTO);
            return;
        }
    }
    doh_conn_flush(c);
}

static void doh_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *up = c->up;

    conn_scope_enter(&up->scope);
    if (c->state == CONN_CONNECTING) {
        int soerr = conn_connect_error(c->fd);
        if (soerr) {
            log_debug("upstream %s: doh connect: %s", up->name, strerror(soerr));
            doh_up_conn_failed(up, strerror(soerr));
            doh_conn_fail(c, DV_ECONN);
        } else {
            c->state = CONN_HANDSHAKE;
            doh_conn_handshake(c);
        }
    } else if (c->state == CONN_HANDSHAKE) {
        doh_conn_handshake(c);
    } else {
        if (revents & EV_READ)
            doh_conn_read(c);
        if (c->state != CONN_DEAD && (revents & EV_WRITE))
            doh_conn_flush(c);
    }
    if (c->state != CONN_DEAD)
        doh_conn_arm_timer(c);
    conn_scope_leave(&up->scope);
}

/* The one timer of a connection: connect deadline, then PING for liveness
 * (busy: when the server has been silent since a request went out, even
 * one cancelled since; idle: now and then) with a deadline for the ACK,
 * then closing after a long idle spell. */
static void doh_conn_arm_timer(struct doh_conn *c)
{
    ev_tstamp now = ev_now(c->up->loop), at;

    if (c->state != CONN_READY)
        at = c->opened + DOH_CONNECT_TIMEOUT;
    else if (c->ping_out)
        at = c->ping_sent + DOH_PING_TIMEOUT;
    else if (c->waiting)
        at = c->waiting_since + DOH_PING_BUSY;
    else {
        at = c->last_rx + DOH_PING_IDLE;
        if (c->idle_since + doh_up_idle_s(c->up) < at)
            at = c->idle_since + doh_up_idle_s(c->up);
    }
    conn_timer_arm(c->up->loop, &c->timer, at > now ? at - now : 0.);
}

static void doh_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *up = c->up;
    ev_tstamp now = ev_now(loop);

    conn_scope_enter(&up->scope);
    if (c->state != CONN_READY) {
        log_info("upstream %s: doh connect/handshake timed out", up->name);
        doh_up_conn_failed(up, "timeout");
        doh_conn_fail(c, DV_ETIMEOUT);
    } else if (c->ping_out && now >= c->ping_sent + DOH_PING_TIMEOUT) {
        log_info("upstream %s: doh connection: no PING ACK in %.0fs, closing", up->name,
                 DOH_PING_TIMEOUT);
        doh_conn_fail(c, DV_ETIMEOUT);
    } else if (!h2_live(c->h2) && now >= c->idle_since + doh_up_idle_s(up)) {
        log_debug("upstream %s: doh connection idle, closing", up->name);
        h2_terminate(c->h2);
        doh_conn_flush(c);
        if (c->state != CONN_DEAD)
            doh_conn_fail(c, DV_ECONN);
    } else if (!c->ping_out && (c->waiting ? now >= c->waiting_since + DOH_PING_BUSY
                                           : now >= c->last_rx + DOH_PING_IDLE)) {
        if (h2_ping(c->h2) == 0) {
            c->ping_out = true;
            c->ping_sent = now;
            doh_conn_flush(c);
        }
    }
    if (c->state != CONN_DEAD)
        doh_conn_arm_timer(c);
    conn_scope_leave(&up->scope);
}

/* The address race is over: carry on as a connect that just completed. */
static void doh_conn_happy_cb(void *arg, int fd, int err)
{
    struct doh_conn *c = arg;
    struct doh_up *up = c->up;

    conn_scope_enter(&up->scope);
    c->happy = NULL;
    if (fd < 0) {
        log_debug("upstream %s: no address answered: %s", up->name, strerror(err));
        doh_up_conn_failed(up, strerror(err));
        doh_conn_fail(c, DV_ECONN);
    } else {
        c->fd = fd;
        if (tls_conn_new(up->tls, c->fd, &c->tls)) {
            doh_up_conn_failed(up, "tls");
            doh_conn_fail(c, DV_ETLS);
        } else {
            doh_conn_watch(c, EV_WRITE);
        }
    }
    conn_scope_leave(&up->scope);
}

static struct doh_conn *doh_conn_open(struct doh_up *up)
{
    struct doh_conn *c;

    if (!conn_has_addr(up->u, up->name) || !(c = calloc(1, sizeof(*c))))
        return NULL;
    c->up = up;
    c->fd = -1;
    buf_init(&c->out);
    ev_init(&c->timer, doh_conn_timer_cb);
    c->timer.data = c;
    conn_stall_init(&c->stall, doh_conn_stall_cb, c);
    c->opened = ev_now(up->loop);
    ustats_conn_opened(up->st); /* doh_conn_free counts the close, on failure too */
    if (conn_stream_open(up->loop, up->u, up->name, doh_conn_happy_cb, c, &c->fd, &c->happy))
        goto fail;
    if (c->fd >= 0 && tls_conn_new(up->tls, c->fd, &c->tls))
        goto fail;
    ev_io_init(&c->io, doh_conn_io_cb, c->fd, EV_WRITE);
    c->io.data = c;
    if (c->fd >= 0)
        ev_io_start(up->loop, &c->io);
    doh_conn_arm_timer(c);
    c->next = up->conns;
    up->conns = c;
    return c;
fail:
    doh_up_conn_failed(up, "connect");
    doh_conn_free(c);
    return NULL;
}

/* ------------------------------------------------------------ requests */

/* Opens r's stream on c. 0 or DV_E* (r untouched). */
static int doh_conn_submit(struct doh_conn *c, struct doh_req *r)
{
    int rc = h2_submit(c->h2, &r->h);

    if (rc)
        return rc;
    r->c = c;
    r->where = CONN_REQ_SENT;
    if (!c->waiting) {
        c->waiting = true;
        c->waiting_since = ev_now(c->up->loop);
        doh_conn_arm_timer(c);
    }
    return 0;
}

static void doh_up_log_status(struct doh_up *up, int status)
{
    ev_tstamp now = ev_now(up->loop);

    if (status != up->last_status || now - up->last_status_log > 10.0) {
        up->last_status = status;
        up->last_status_log = now;
        log_warn("upstream %s: HTTP status %d from %s %s", up->name, status,
                 up->get ? "GET" : "POST", up->path);
    } else {
        log_debug("upstream %s: HTTP status %d", up->name, status);
    }
}

/* The server ended its response: judge it. An ODoH exchange takes any
 * complete response; its caller judges the status. */
static void doh_req_response(struct doh_req *r)
{
    struct doh_up *up = r->up;
    int rc = 0;

    if (r->http) {
        r->http->status = r->h.status;
        r->http->ctype_ok = r->h.ctype_ok;
        r->http->max_age = r->h.max_age;
    } else if ((rc = doh_answer_rc(&r->h))) {
        if (r->h.status != 200) {
            doh_up_log_status(up, r->h.status);
            ustats_http_status(up->st, (unsigned)r->h.status);
        }
        else if (!r->h.ctype_ok)
            log_warn("upstream %s: doh answer without content-type application/dns-message",
                     up->name);
        else
            log_debug("upstream %s: doh answer of %zu bytes", up->name, buf_used(&r->h.resp));
    }
    /* ID 0 went on the wire (RFC 8484 4.1): delivery puts the caller's back */
    doh_req_finish(r, rc);
}

/* ------------------------------------------------------------ the pool */

/* Gives queued requests a stream: on a live connection with room, else on a
 * new connection when none is still coming up and the pool has space. With
 * no connection live or coming and the backoff running, they fail now so
 * the query moves on to another upstream. */
static void doh_up_dispatch(struct doh_up *up)
{
    while (up->wait.head) {
        struct doh_conn *best = NULL;
        size_t live = 0;
        bool pending = false;

        for (struct doh_conn *c = up->conns; c; c = c->next) {
            if (c->state == CONN_DEAD || doh_conn_draining(c) || c->suspect)
                continue;
            live++;
            if (c->state != CONN_READY)
                pending = true;
            else if (doh_conn_has_room(c) && (!best || h2_live(c->h2) > h2_live(best->h2)))
                best = c; /* fill the fullest: keeps the others idle to close */
        }
        if (best) {
            struct doh_req *r = doh_wait_head(up);
            conn_list_unlink(&r->link);
            r->where = CONN_REQ_NONE;
            int rc = doh_conn_submit(best, r);
            if (rc == 0 && !ev_is_active(&best->stall))
                ev_timer_again(up->loop, &best->stall);
            /* each request whole (HEADERS, then its DATA) before the next
             * HEADERS: some servers (kresd) read one request at a time and
             * refuse a stream that starts while another is incomplete */
            if (rc == 0)
                doh_conn_serialize(best, SIZE_MAX);
            if (rc && h2_draining(best->h2)) {
                r->where = CONN_REQ_WAIT; /* out of stream IDs: another connection */
                conn_list_push(&up->wait, &r->link);
            } else if (rc) {
                doh_req_finish(r, rc);
            }
            continue;
        }
        if (pending)
            return; /* a connection coming up will take them */
        if (conn_policy_may_open(&up->pol, (unsigned)live, net_now_ms())) {
            if (doh_conn_open(up))
                return;
        }
        if (live == 0) {
            while (up->wait.head)
                doh_req_finish(doh_wait_head(up), DV_ECONN);
        }
        return; /* the rest waits for a stream on a live connection */
    }
}

static void doh_up_destroy(void *arg)
{
    struct doh_up *up = arg;

    while (up->conns) {
        struct doh_conn *c = up->conns;
        up->conns = c->next;
        if (c->h2)
            h2_abort(c->h2, DV_ECANCEL); /* its requests to the wait list or the scope ... */
        doh_conn_free(c);
    }
    while (up->wait.head) { /* ... freed here */
        struct doh_req *r = doh_wait_head(up);
        doh_req_detach(r);
        doh_req_free(r);
    }
    for (struct conn_done *f; (f = conn_scope_pop(&up->scope));)
        doh_req_free(doh_req_of(f));
    defer_cancel(&up->kick);
    if (up->tls)
        tls_ctx_del(up->tls);
    free(up->name);
    free(up->authority);
    free(up->path);
    free(up);
}

static void doh_up_settle(void *arg)
{
    struct doh_up *up = arg;

    doh_up_dispatch(up);
    for (struct doh_conn **pc = &up->conns; *pc;) {
        struct doh_conn *c = *pc;
        if (c->state == CONN_READY && (buf_used(&c->out) || h2_want_write(c->h2)))
            doh_conn_flush(c);
        if (c->state == CONN_DEAD) {
            *pc = c->next;
            doh_conn_free(c);
        } else {
            pc = &c->next;
        }
    }
}

/* After done: the delivered request goes. */
static void doh_req_release(struct conn_done *f)
{
    doh_req_free(doh_req_of(f));
}

static void doh_up_kick_cb(void *arg)
{
    struct doh_up *up = arg;

    conn_scope_enter(&up->scope);
    conn_scope_leave(&up->scope);
}

/* ------------------------------------------------------------ transport ops */

static int doh_open(struct upstream *u)
{
    struct doh_up *up;
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
    up = calloc(1, sizeof(*up));
    if (!up)
        return DV_ENOMEM;
    up->loop = u->loop;
    conn_scope_init(&up->scope, doh_up_settle, doh_req_release, doh_up_destroy, up);
    defer_init(&up->kick, doh_up_kick_cb, up);
    conn_policy_init(&up->pol, &u->cfg);
    up->addr = u->addr;
    up->u = u;
    up->get = u->cfg.doh_get;
    up->name = strdup(u->name);
    up->path = strdup(path);
    up->authority = strdup(auth);
    if (!up->name || !up->path || !up->authority) {
        doh_up_destroy(up);
        return DV_ENOMEM;
    }
    /* DoH needs HTTP/2 here; HTTP/1.1 is not spoken */
    rc = tls_ctx_new_upstream(u, "h2", true, &up->tls);
    if (rc) {
        doh_up_destroy(up);
        return rc;
    }
    up->st = &u->stats;
    u->priv = up;
    return 0;
}

/* A new request for x, queued; fails fast while the pool backs off. */
static int doh_req_queue(struct doh_up *up, struct xfer *x, struct doh_req *r)
{
    bool live = false;

    for (struct doh_conn *c = up->conns; c; c = c->next)
        live |= c->state != CONN_DEAD && !doh_conn_draining(c) && !c->suspect;
    if (!live && conn_policy_backoff(&up->pol, net_now_ms()))
        return DV_ECONN; /* backing off: let the query try elsewhere now */
    if (up->wait.n >= CONN_WAIT_MAX)
        return DV_ECONN; /* an ODoH exchange: as conn_send_check */
    buf_init(&r->h.resp);
    r->up = up;
    r->done.x = x;
    r->h.sid = -1;
    r->where = CONN_REQ_WAIT;
    conn_list_push(&up->wait, &r->link);
    x->tpriv = r;
    if (!up->scope.depth)
        defer_arm(up->loop, &up->kick); /* dispatched before the loop sleeps */
    return 0;
}

/* The GET form's :path: the URL path with dns= and the query in base64url. */
static char *doh_get_path(const struct doh_up *up, const uint8_t *q, size_t len)
{
    size_t plen = strlen(up->path), cap = plen + 5 + len / 3 * 4 + 4 + 1;
    char *path = malloc(cap);

    if (!path)
        return NULL;
    memcpy(path, up->path, plen);
    /* a path that already carries a query gets dns= appended to it */
    path[plen++] = strchr(up->path, '?') ? '&' : '?';
    memcpy(path + plen, "dns=", 4);
    plen += 4;
    doh_b64url(q, len, path + plen, cap - plen);
    return path;
}

static int doh_send(struct upstream *u, struct xfer *x)
{
    struct doh_up *up = u->priv;
    struct doh_req *r;
    size_t cap, qlen;
    int rc;

    if ((rc = conn_send_check(x, up->wait.n, up->name)))
        return rc;
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
        doh_req_free(r);
        return rc;
    }
    dns_put16(r->q, 0);
    r->h.ctype = dns_ctype;
    if (up->get) {
        if (!(r->path = doh_get_path(up, r->q, qlen))) {
            doh_req_free(r);
            return DV_ENOMEM;
        }
        r->h.path = r->path;
    } else {
        r->h.path = up->path;
        r->h.body = r->q;
        r->h.len = qlen;
    }
    rc = doh_req_queue(up, x, r);
    if (rc)
        doh_req_free(r);
    return rc;
}

int doh_send_http(struct upstream *u, struct doh_http *h)
{
    struct doh_up *up = u->priv;
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
        doh_req_free(r);
        return DV_ENOMEM;
    }
    r->h.path = r->path;
    r->h.ctype = h->ctype;
    r->h.body = r->q;
    r->h.len = h->x.len;
    rc = doh_req_queue(up, &h->x, r);
    if (rc)
        doh_req_free(r);
    return rc;
}

static void doh_cancel(struct upstream *u, struct xfer *x)
{
    struct doh_req *r = x->tpriv;

    if (!r)
        return;
    x->tpriv = NULL;
    /* the stream, if open, is reset and no longer names r */
    if (r->where == CONN_REQ_SENT && !r->up->scope.depth)
        defer_arm(r->up->loop, &r->up->kick); /* flush the RST_STREAM */
    doh_req_detach(r);
    doh_req_free(r);
}

static void doh_close(struct upstream *u)
{
    struct doh_up *up = u->priv;

    u->priv = NULL;
    if (!up)
        return;
    up->st = &ustats_sink;
    for (struct doh_conn *c = up->conns; c; c = c->next) {
        if (c->state == CONN_DEAD)
            continue;
        if (c->state == CONN_READY) {
            h2_terminate(c->h2);
            doh_conn_flush(c); /* best effort: a GOAWAY if the socket takes it */
        }
        ev_io_stop(up->loop, &c->io);
        ev_timer_stop(up->loop, &c->timer);
    }
    conn_scope_close(&up->scope); /* now, or once the stack unwinds */
}

/* ------------------------------------------------------------ network changes */

/* Ends c without failing anything: the requests still awaited go back to the
 * wait list for another connection (the path failed, not the queries). */
static void doh_conn_requeue(struct doh_conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    c->state = CONN_DEAD;
    happy_cancel(c->happy);
    c->happy = NULL;
    if (c->fd >= 0)
        ev_io_stop(c->up->loop, &c->io);
    ev_timer_stop(c->up->loop, &c->timer);
    ev_timer_stop(c->up->loop, &c->stall);
    if (c->h2)
        h2_release(c->h2);
}

/* A connection made after the change is up: the suspect ones go, and what
 * they still owe is asked again (settle hands it out). */
static void doh_up_retire_suspects(struct doh_up *up)
{
    for (struct doh_conn *c = up->conns; c; c = c->next) {
        if (c->suspect && c->state != CONN_DEAD) {
            if (doh_conn_live(c))
                log_debug("upstream %s: %zu requests moved off a suspect connection", up->name,
                          doh_conn_live(c));
            doh_conn_requeue(c);
        }
    }
}

/* Every CONN_STALL_CHECK_MS while requests are out: data unacknowledged
 * through a retransmission means the path died (a NAT that forgot us, a
 * route gone), which the PING would learn only seconds later: the
 * connection turns suspect and a new one takes its requests once it is up. */
static void doh_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doh_conn *c = w->data;
    struct doh_up *up = c->up;

    if (c->state == CONN_DEAD || c->suspect || !doh_conn_live(c)) {
        ev_timer_stop(loop, w);
        return;
    }
    if (c->state != CONN_READY || !conn_stream_stalled(c->fd, CONN_STALL_MS))
        return;
    conn_scope_enter(&up->scope);
    log_info("upstream %s: doh connection stalled with %zu requests out; connecting afresh",
             up->name, doh_conn_live(c));
    ev_timer_stop(loop, w);
    c->suspect = true;
    doh_conn_open(up);
    conn_scope_leave(&up->scope);
}

static void doh_netchange(struct upstream *u)
{
    struct doh_up *up = u->priv;
    unsigned gone = 0, suspect = 0;
    bool active = up->wait.head != NULL;

    conn_scope_enter(&up->scope);
    conn_policy_ok(&up->pol); /* a backoff from the old network means nothing now */
    for (struct doh_conn *c = up->conns; c; c = c->next) {
        if (c->state == CONN_DEAD)
            continue;
        active = true;
        if (c->state != CONN_READY || conn_local_gone(c->fd)) {
            /* its address is gone, or it was still being set up on the old path */
            doh_conn_requeue(c);
            gone++;
        } else if (!c->suspect) {
            c->suspect = true;
            suspect++;
        }
    }
    if (active) {
        log_info("upstream %s: network changed: %u connections closed, %u suspect; "
                 "connecting afresh", up->name, gone, suspect);
        doh_conn_open(up); /* warm before the next query, not after it */
    }
    conn_scope_leave(&up->scope);
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
