/* doh — DNS over HTTPS (RFC 8484) on HTTP/2 (nghttp2) over the TLS layer.
 *
 * Per upstream: a small pool of connections (up to the upstream's
 * max_conns; another one is opened only when every live one has as many
 * streams open as the server allows), a queue of requests waiting for a
 * stream, and the conn_scope's list of finished requests waiting to be
 * reported. Every outcome is reported from a loop callback, after nghttp2
 * has returned, through leave(): a done() that frees the upstream or
 * cancels another request can then never pull the ground from under a
 * running nghttp2 call.
 *
 * A request is in exactly one place at a time: the upstream's queue, one
 * connection's stream list, or the finished list. */
#include "upstream/doh.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"

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

#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "core/buf.h"
#include "core/log.h"
#include "dns/dns.h"
#include "upstream/conn.h"
#include "upstream/tls.h"
#include "upstream/upstream.h"

enum {
    DOH_STREAMS_CAP = 1000,  /* our own bound on streams per connection */
    DOH_STREAMS_ASSUMED = 100, /* until the server's SETTINGS arrive (RFC 9113 6.5.2) */
    DOH_BODY_MAX = 65535,    /* a DNS message cannot be longer */
    DOH_RETRIES = 2,         /* refused streams are retried on another connection */
    DOH_STREAM_WINDOW = 1 << 20,
    DOH_CONN_WINDOW = 16 << 20,
    DOH_OUT_HIGH = 256 * 1024, /* stop serializing frames while this much is unsent */
    DOH_WAIT_MAX = 16384,    /* queries waiting for a stream */
};

/* seconds */
#define DOH_CONNECT_TIMEOUT 5.0 /* TCP connect + TLS handshake */
#define DOH_PING_BUSY 1.0       /* streams open and the server silent this long: PING */
#define DOH_PING_IDLE 20.0      /* no stream open: PING this often */
#define DOH_PING_TIMEOUT 3.0    /* no PING ACK within this: the connection is dead */

enum req_where { R_NONE, R_QUEUE, R_CONN, R_DONE };

struct doh_conn;
struct doh_up;

struct doh_req {
    struct doh_req *prev, *next;
    enum req_where where;
    struct doh_up *d;
    struct doh_conn *c; /* while R_CONN */
    struct conn_done done; /* done.x: NULL once cancelled while its stream is open */
    int32_t sid;
    uint8_t *q;         /* padded query, ID 0 */
    size_t qlen, qoff;  /* qoff: POST body bytes handed to nghttp2 */
    struct buf body;
    int status;
    bool ctype_ok;
    unsigned tries;
};

struct req_list {
    struct doh_req *head, *tail;
    size_t n;
};

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_READY };

struct doh_conn {
    struct doh_conn *next;
    struct doh_up *d;
    enum conn_state state;
    bool draining; /* GOAWAY seen, or stream IDs used up: no new streams */
    bool dead;     /* failed; freed by leave() */
    int fd;
    int events;
    ev_io io;
    ev_timer timer;
    struct tls_conn *tls;
    nghttp2_session *h2;
    struct buf out;         /* serialized frames not yet taken by TLS */
    struct req_list reqs;   /* streams in flight (and cancelled ones not yet closed) */
    size_t nlive;           /* reqs whose xfer still waits */
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
    struct req_list queue;
    struct conn_scope scope; /* callback depth, finished requests, deferred free */
    struct conn_policy pol;
    ev_timer kick;      /* runs leave() soon after send() */
    int last_status;    /* last bad HTTP status logged, to log each change once */
    ev_tstamp last_status_log;
    struct ustats *st;  /* the upstream's counters, ustats_sink after close */
};

static nghttp2_session_callbacks *h2_callbacks;
static nghttp2_option *h2_option;

/* ------------------------------------------------------------ request lists */

static void list_push(struct req_list *l, struct doh_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_unlink(struct req_list *l, struct doh_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static void req_free(struct doh_req *r)
{
    buf_free(&r->body);
    free(r->q);
    free(r);
}

static struct doh_req *req_of(struct conn_done *f)
{
    return (struct doh_req *)(void *)((char *)f - offsetof(struct doh_req, done));
}

/* An unused connection closes after the upstream's idle_timeout_ms (s). */
static ev_tstamp idle_close(const struct doh_up *d)
{
    return (ev_tstamp)d->pol.idle_ms / 1000.0;
}

static void conn_unlive(struct doh_conn *c)
{
    if (--c->nlive == 0)
        c->idle_since = ev_now(c->d->loop);
}

/* Takes r out of wherever it is. */
static void req_detach(struct doh_req *r)
{
    switch (r->where) {
    case R_QUEUE:
        list_unlink(&r->d->queue, r);
        break;
    case R_CONN:
        list_unlink(&r->c->reqs, r);
        if (r->done.x)
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

/* Queues r's outcome for leave(); a cancelled request is just freed. */
static void req_finish(struct doh_req *r, int rc)
{
    req_detach(r);
    if (!r->done.x) {
        req_free(r);
        return;
    }
    r->where = R_DONE;
    conn_scope_complete(&r->d->scope, &r->done, rc, buf_head(&r->body), buf_used(&r->body));
}

/* Back to the upstream's queue for another connection, while tries last. */
static void req_retry(struct doh_req *r, int rc)
{
    if (!r->done.x || ++r->tries > DOH_RETRIES) {
        req_finish(r, rc);
        return;
    }
    req_detach(r);
    r->sid = -1;
    r->qoff = 0;
    r->status = 0;
    r->ctype_ok = false;
    r->body.off = r->body.len = 0;
    r->where = R_QUEUE;
    list_push(&r->d->queue, r);
}

/* ------------------------------------------------------------ connections */

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void enter(struct doh_up *d);
static void leave(struct doh_up *d);

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
    if (c->fd >= 0) {
        ev_io_stop(c->d->loop, &c->io);
        if (c->tls)
            tls_conn_shutdown(c->tls);
    }
    ev_timer_stop(c->d->loop, &c->timer);
    while (c->reqs.head) {
        struct doh_req *r = c->reqs.head;
        if (r->sid < 0)
            req_retry(r, rc);
        else
            req_finish(r, rc);
    }
}

static void conn_free(struct doh_conn *c)
{
    ustats_conn_closed(c->d->st);
    if (c->h2)
        nghttp2_session_del(c->h2);
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

/* Moves nghttp2's pending frames into c->out and as much of it as TLS takes
 * to the socket. Without TLS (the fuzz target) the bytes are dropped. */
/* Serializes nghttp2's pending frames into c->out until it holds high
 * bytes. 0, or DV_E* after failing c. */
static int conn_serialize(struct doh_conn *c, size_t high)
{
    while (buf_used(&c->out) < high) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->h2, &p);
        if (n < 0) {
            log_debug("upstream %s: doh: %s", c->d->name, nghttp2_strerror((int)n));
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

static void conn_flush(struct doh_conn *c)
{
    if (c->dead || c->state != C_READY)
        return;
    for (;;) {
        if (conn_serialize(c, DOH_OUT_HIGH))
            return;
        if (buf_used(&c->out) == 0)
            break;
        if (!c->tls) {
            c->out.off = c->out.len = 0;
            continue;
        }
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
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        /* GOAWAY exchanged and every stream closed */
        log_debug("upstream %s: doh connection finished", c->d->name);
        conn_fail(c, DV_ECONN);
        return;
    }
    conn_watch(c, EV_READ);
}

static bool conn_has_room(const struct doh_conn *c)
{
    uint32_t max;

    if (c->dead || c->draining || c->state != C_READY)
        return false;
    max = nghttp2_session_get_remote_settings(c->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (max > DOH_STREAMS_CAP)
        max = DOH_STREAMS_CAP;
    return c->reqs.n < max;
}

static void conn_arm_timer(struct doh_conn *c);

static int conn_session_new(struct doh_conn *c)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOH_STREAM_WINDOW},
    };

    if (nghttp2_session_client_new2(&c->h2, h2_callbacks, c, h2_option))
        return DV_ENOMEM;
    /* a 16 KB answer must never wait for a WINDOW_UPDATE round trip */
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, DOH_CONN_WINDOW))
        return DV_ENOMEM;
    return 0;
}

static void conn_ready(struct doh_conn *c)
{
    struct doh_up *d = c->d;

    c->state = C_READY;
    c->last_rx = c->idle_since = ev_now(d->loop);
    conn_policy_ok(&d->pol);
    ustats_handshake(d->st, tls_conn_resumed(c->tls) ? USTATS_HS_RESUMED : USTATS_HS_FULL);
    if (conn_session_new(c)) {
        conn_fail(c, DV_ENOMEM);
        return;
    }
    log_debug("upstream %s: doh connection ready (%s)", d->name,
              c->tls && tls_conn_resumed(c->tls) ? "resumed" : "full handshake");
    conn_arm_timer(c);
    conn_flush(c);
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

    while (!c->dead) {
        long n = tls_conn_read(c->tls, in, sizeof(in));
        if (n > 0)
            ustats_bytes(c->d->st, (uint64_t)n, 0);
        if (n == DV_EAGAIN) {
            /* as in dot.c: ACK at once, so a server that Nagles its answer
             * behind a session ticket is not held for our delayed ACK */
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
        ssize_t m = nghttp2_session_mem_recv(c->h2, in, (size_t)n);
        if (m < 0) {
            log_warn("upstream %s: doh: HTTP/2 error from server: %s", c->d->name,
                     nghttp2_strerror((int)m));
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
    } else if (!c->nlive && now >= c->idle_since + idle_close(d)) {
        log_debug("upstream %s: doh connection idle, closing", d->name);
        c->draining = true;
        nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
        conn_flush(c);
        if (!c->dead)
            conn_fail(c, DV_ECONN);
    } else if (!c->ping_out && (c->waiting ? now >= c->waiting_since + DOH_PING_BUSY
                                           : now >= c->last_rx + DOH_PING_IDLE)) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            c->ping_out = true;
            c->ping_sent = now;
            conn_flush(c);
        }
    }
    if (!c->dead)
        conn_arm_timer(c);
    leave(d);
}

static struct doh_conn *conn_open(struct doh_up *d)
{
    struct doh_conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->d = d;
    c->fd = -1;
    buf_init(&c->out);
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    c->opened = ev_now(d->loop);
    ustats_conn_opened(d->st); /* conn_free counts the close, on failure too */
    c->fd = conn_connect(&d->addr, SOCK_STREAM, d->name);
    if (c->fd < 0) {
        c->fd = -1;
        goto fail;
    }
    if (tls_conn_new(d->tls, c->fd, &c->tls))
        goto fail;
    ev_io_init(&c->io, conn_io_cb, c->fd, EV_WRITE);
    c->io.data = c;
    c->events = EV_WRITE;
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

#define NV(n, v, vlen) \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

static ssize_t body_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct doh_req *r = nghttp2_session_get_stream_user_data(s, sid);
    size_t n;

    if (!r)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    n = r->qlen - r->qoff;
    if (n > length)
        n = length;
    memcpy(buf, r->q + r->qoff, n);
    r->qoff += n;
    if (r->qoff == r->qlen)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Opens r's stream on c. 0 or DV_E* (r untouched). */
static int conn_submit(struct doh_conn *c, struct doh_req *r)
{
    struct doh_up *d = c->d;
    static const char ctype[] = "application/dns-message";
    char clen[8], *path = d->path;
    size_t plen = strlen(d->path);
    nghttp2_data_provider prd = {.source = {.ptr = r}, .read_callback = body_read_cb};
    int32_t sid;

    if (d->get) {
        size_t cap = plen + 5 + r->qlen / 3 * 4 + 4 + 1;
        if (!(path = malloc(cap)))
            return DV_ENOMEM;
        memcpy(path, d->path, plen);
        /* a path that already carries a query gets dns= appended to it */
        path[plen++] = strchr(d->path, '?') ? '&' : '?';
        memcpy(path + plen, "dns=", 4);
        plen += 4;
        plen += (size_t)doh_b64url(r->q, r->qlen, path + plen, cap - plen);
        nghttp2_nv nva[] = {
            NV(":method", "GET", 3),
            NV(":scheme", "https", 5),
            NV(":authority", d->authority, strlen(d->authority)),
            NV(":path", path, plen),
            NV("accept", ctype, sizeof(ctype) - 1),
        };
        /* nghttp2 copies the header block */
        sid = nghttp2_submit_request(c->h2, NULL, nva, sizeof(nva) / sizeof(nva[0]), NULL, r);
        free(path);
    } else {
        int cl = snprintf(clen, sizeof(clen), "%zu", r->qlen);
        nghttp2_nv nva[] = {
            NV(":method", "POST", 4),
            NV(":scheme", "https", 5),
            NV(":authority", d->authority, strlen(d->authority)),
            NV(":path", path, plen),
            NV("accept", ctype, sizeof(ctype) - 1),
            NV("content-type", ctype, sizeof(ctype) - 1),
            NV("content-length", clen, (size_t)cl),
        };
        sid = nghttp2_submit_request(c->h2, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, r);
    }
    if (sid < 0) {
        if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
            c->draining = true;
        log_debug("upstream %s: doh submit: %s", d->name, nghttp2_strerror(sid));
        return DV_EPROTO;
    }
    r->sid = sid;
    r->c = c;
    r->where = R_CONN;
    list_push(&c->reqs, r);
    c->nlive++;
    if (!c->waiting) {
        c->waiting = true;
        c->waiting_since = ev_now(d->loop);
        conn_arm_timer(c);
    }
    /* a fresh connection would be better long before IDs run out */
    if (nghttp2_session_get_next_stream_id(c->h2) > (1u << 31) - 1000)
        c->draining = true;
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

/* The server ended its response: judge it. */
static void req_response(struct doh_req *r)
{
    struct doh_up *d = r->d;
    int rc = 0;

    if (r->status != 200) {
        log_status(d, r->status);
        ustats_http_status(d->st, (unsigned)r->status);
        rc = DV_EHTTP;
    } else if (!r->ctype_ok) {
        log_warn("upstream %s: doh answer without content-type application/dns-message",
                 d->name);
        rc = DV_EPROTO;
    } else if (buf_used(&r->body) < DNS_HDR_LEN) {
        log_debug("upstream %s: doh answer of %zu bytes", d->name, buf_used(&r->body));
        rc = DV_EPROTO;
    }
    /* ID 0 went on the wire (RFC 8484 4.1): delivery puts the caller's back */
    req_finish(r, rc);
}

/* Media type, parameters ignored, case-insensitive (RFC 9110 8.3.1). */
static bool ctype_is_dns(const uint8_t *v, size_t len)
{
    static const char want[] = "application/dns-message";
    size_t n = 0;

    while (n < len && v[n] != ';' && v[n] != ' ' && v[n] != '\t')
        n++;
    return n == sizeof(want) - 1 && strncasecmp((const char *)v, want, n) == 0;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    struct doh_req *r;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_RESPONSE)
        return 0;
    r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!r)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        /* nghttp2 checked it is 3 digits */
        r->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        r->ctype_ok = ctype_is_dns(value, valuelen);
    }
    return 0;
}

static int on_data_cb(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *ud)
{
    struct doh_conn *c = ud;
    struct doh_req *r = nghttp2_session_get_stream_user_data(s, sid);

    if (!r)
        return 0;
    if (buf_used(&r->body) + len > DOH_BODY_MAX) {
        log_warn("upstream %s: doh answer longer than %d bytes", c->d->name, DOH_BODY_MAX);
        nghttp2_session_set_stream_user_data(s, sid, NULL);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
        req_finish(r, DV_EPROTO);
        return 0;
    }
    if (buf_append(&r->body, data, len)) {
        nghttp2_session_set_stream_user_data(s, sid, NULL);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
        req_finish(r, DV_ENOMEM);
    }
    return 0;
}

static int on_frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct doh_conn *c = ud;
    struct doh_req *r;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (!r)
            break;
        nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, NULL);
        req_response(r);
        break;
    case NGHTTP2_GOAWAY:
        /* nghttp2 closes our streams above last_stream_id as refused,
         * which retries them; the others may still complete here */
        c->draining = true;
        log_debug("upstream %s: doh GOAWAY (last stream %d, error %u)", c->d->name,
                  frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            log_debug("upstream %s: doh server allows %u streams", c->d->name,
                      nghttp2_session_get_remote_settings(
                          s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_out = false;
        break;
    default:
        break;
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud)
{
    struct doh_conn *c = ud;
    struct doh_req *r = nghttp2_session_get_stream_user_data(s, sid);

    if (!r)
        return 0;
    if (error_code == NGHTTP2_REFUSED_STREAM) {
        /* not processed by the server (RFC 9113 8.7): safe on another connection */
        r->sid = -1;
        req_retry(r, DV_ECONN);
        return 0;
    }
    if (r->done.x)
        log_debug("upstream %s: doh stream %d reset (error %u)", c->d->name, sid, error_code);
    req_finish(r, DV_EPROTO);
    return 0;
}

/* A request the session could not start (GOAWAY arrived, or the server
 * lowered its stream limit) never reached the server: send it elsewhere. */
static int on_frame_not_send_cb(nghttp2_session *s, const nghttp2_frame *frame, int err,
                                void *ud)
{
    struct doh_conn *c = ud;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    for (struct doh_req *r = c->reqs.head; r; r = r->next) {
        if (r->sid == frame->hd.stream_id) {
            nghttp2_session_set_stream_user_data(s, r->sid, NULL);
            r->sid = -1;
            req_retry(r, DV_ECONN);
            break;
        }
    }
    return 0;
}

static int h2_global_init(void)
{
    if (h2_callbacks)
        return 0;
    if (nghttp2_session_callbacks_new(&h2_callbacks))
        return DV_ENOMEM;
    if (nghttp2_option_new(&h2_option)) {
        nghttp2_session_callbacks_del(h2_callbacks);
        h2_callbacks = NULL;
        return DV_ENOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_callbacks, on_data_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(h2_callbacks,
                                                             on_frame_not_send_cb);
    nghttp2_option_set_peer_max_concurrent_streams(h2_option, DOH_STREAMS_ASSUMED);
    return 0;
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
            if (c->dead || c->draining)
                continue;
            live++;
            if (c->state != C_READY)
                pending = true;
            else if (conn_has_room(c) && (!best || c->reqs.n > best->reqs.n))
                best = c; /* fill the fullest: keeps the others idle to close */
        }
        if (best) {
            struct doh_req *r = d->queue.head;
            list_unlink(&d->queue, r);
            r->where = R_NONE;
            int rc = conn_submit(best, r);
            /* each request whole (HEADERS, then its DATA) before the next
             * HEADERS: some servers (kresd) read one request at a time and
             * refuse a stream that starts while another is incomplete */
            if (rc == 0)
                conn_serialize(best, SIZE_MAX);
            if (rc && best->draining) {
                r->where = R_QUEUE; /* out of stream IDs: another connection */
                list_push(&d->queue, r);
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
                req_finish(d->queue.head, DV_ECONN);
        }
        return; /* the rest waits for a stream on a live connection */
    }
}

static void up_free(struct doh_up *d)
{
    while (d->conns) {
        struct doh_conn *c = d->conns;
        d->conns = c->next;
        while (c->reqs.head) {
            struct doh_req *r = c->reqs.head;
            req_detach(r);
            req_free(r);
        }
        conn_free(c);
    }
    while (d->queue.head) {
        struct doh_req *r = d->queue.head;
        req_detach(r);
        req_free(r);
    }
    for (struct conn_done *f; (f = conn_scope_pop(&d->scope));)
        req_free(req_of(f));
    ev_timer_stop(d->loop, &d->kick);
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
        if (!c->dead && c->state == C_READY &&
            (buf_used(&c->out) || nghttp2_session_want_write(c->h2)))
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

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void up_init(struct doh_up *d, struct ev_loop *loop)
{
    d->loop = loop;
    conn_scope_init(&d->scope, up_settle, req_release, up_destroy, d);
    ev_timer_init(&d->kick, kick_cb, 0., 0.);
    d->kick.data = d;
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doh_up *d = w->data;

    enter(d);
    leave(d);
}

/* ------------------------------------------------------------ transport ops */

static int doh_open(struct upstream *u)
{
    struct doh_up *d;
    char path[2048], auth[300];
    int rc = h2_global_init();

    if (rc)
        return rc;
    if (doh_path(u->path, path, sizeof(path))) {
        log_err("upstream %s: DoH path '%s' is not a request path (only the {?dns} template "
                "is understood)", u->name, u->path ? u->path : "");
        return DV_EINVAL;
    }
    if (doh_authority(u->cfg.tls_name ? u->cfg.tls_name : u->host, net_addr_port(&u->addr),
                      auth, sizeof(auth)))
        return DV_EINVAL;
    d = calloc(1, sizeof(*d));
    if (!d)
        return DV_ENOMEM;
    up_init(d, u->loop);
    conn_policy_init(&d->pol, &u->cfg);
    d->addr = u->addr;
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

static int doh_send(struct upstream *u, struct xfer *x)
{
    struct doh_up *d = u->priv;
    struct doh_req *r;
    bool live = false;
    size_t cap;
    int rc;

    if (x->len < DNS_HDR_LEN || x->len > DNS_MSG_MAX)
        return DV_EINVAL;
    for (struct doh_conn *c = d->conns; c; c = c->next)
        live |= !c->dead && !c->draining;
    if (!live && conn_policy_backoff(&d->pol, net_now_ms()))
        return DV_ECONN; /* backing off: let the query try elsewhere now */
    if (d->queue.n >= DOH_WAIT_MAX)
        return DV_ECONN; /* the server cannot keep up: do not hoard queries */
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
    r->qlen = x->len;
    rc = conn_pad_query(r->q, &r->qlen, cap);
    if (rc) {
        req_free(r);
        return rc;
    }
    dns_put16(r->q, 0);
    buf_init(&r->body);
    r->d = d;
    r->done.x = x;
    r->sid = -1;
    r->where = R_QUEUE;
    list_push(&d->queue, r);
    x->tpriv = r;
    if (!d->scope.depth)
        ev_timer_start(d->loop, &d->kick); /* 0 s: dispatched on the next turn */
    return 0;
}

static void doh_cancel(struct upstream *u, struct xfer *x)
{
    struct doh_req *r = x->tpriv;

    if (!r)
        return;
    x->tpriv = NULL;
    if (r->where == R_CONN) {
        /* the stream stays ours until nghttp2 closes it: the request is
         * kept, without its xfer, so no callback sees freed memory */
        struct doh_conn *c = r->c;
        conn_unlive(c);
        r->done.x = NULL;
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_CANCEL);
        if (!r->d->scope.depth)
            ev_timer_start(r->d->loop, &r->d->kick);
        return;
    }
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
            nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
            conn_flush(c); /* best effort: a GOAWAY if the socket takes it */
        }
        ev_io_stop(d->loop, &c->io);
        ev_timer_stop(d->loop, &c->timer);
    }
    conn_scope_close(&d->scope); /* now, or once the stack unwinds */
}

const struct transport_ops doh_ops = {
    .name = "doh",
    .open = doh_open,
    .send = doh_send,
    .cancel = doh_cancel,
    .close = doh_close,
};

/* ------------------------------------------------------------ fuzzing */

struct fuzz_xfer {
    struct xfer x;
    unsigned calls;
    bool answered;
};

static void fuzz_done(struct xfer *x, int rc, const uint8_t *ans, size_t len)
{
    struct fuzz_xfer *f = (struct fuzz_xfer *)x;

    f->calls++;
    f->answered = rc == 0;
    if ((rc == 0) != (ans != NULL) || len > DOH_BODY_MAX || (rc == 0 && len < DNS_HDR_LEN) ||
        (rc == 0 && dns_get16(ans) != dns_get16(x->msg)))
        abort();
}

int doh_fuzz_response(const uint8_t *in, size_t len)
{
    static struct ev_loop *loop;
    static const uint8_t query[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                    3, 'w', 'w', 'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    struct fuzz_xfer fx[3];
    struct upstream u = {.name = "fuzz"};
    struct doh_up *d;
    struct doh_conn *c;
    int rc = DV_ENOMEM;

    if (!loop && !(loop = ev_loop_new(EVFLAG_AUTO)))
        return DV_ENOMEM;
    if (h2_global_init())
        return DV_ENOMEM;
    d = calloc(1, sizeof(*d));
    c = calloc(1, sizeof(*c));
    if (!d || !c) {
        free(d);
        free(c);
        return DV_ENOMEM;
    }
    up_init(d, loop);
    u.cfg.max_conns = 2;
    u.cfg.idle_timeout_ms = 30000;
    conn_policy_init(&d->pol, &u.cfg);
    d->pol.retry_at = UINT64_MAX; /* never a real connection */
    d->name = strdup(u.name);
    d->path = strdup("/dns-query");
    d->authority = strdup("fuzz.test");
    c->d = d;
    c->fd = -1;
    buf_init(&c->out);
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    d->conns = c;
    d->get = len % 2; /* both request forms, chosen by the input */
    u.priv = d;
    if (!d->name || !d->path || !d->authority || conn_session_new(c))
        goto out;
    c->state = C_READY;
    enter(d);
    for (size_t i = 0; i < 3; i++) {
        fx[i] = (struct fuzz_xfer){.x = {.msg = query, .len = sizeof(query),
                                         .done = fuzz_done}};
        if (doh_send(&u, &fx[i].x))
            abort();
    }
    leave(d); /* submits the three streams */
    enter(d);
    if (nghttp2_session_mem_recv(c->h2, in, len) >= 0)
        conn_flush(c);
    conn_fail(c, DV_ECONN);
    leave(d); /* reports every request */
    rc = 0;
    for (size_t i = 0; i < 3; i++) {
        if (fx[i].calls != 1)
            abort();
        rc += fx[i].answered;
    }
out:
    up_free(d);
    return rc;
}

#else /* no TLS or no nghttp2 */

int doh_fuzz_response(const uint8_t *in, size_t len)
{
    (void)in;
    (void)len;
    return DV_EINVAL;
}

#endif
