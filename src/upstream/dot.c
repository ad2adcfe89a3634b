/* dot — DNS over TLS (RFC 7858) to one upstream, with the TCP usage profile
 * of RFC 7766: queries are pipelined on a few long-lived connections and
 * answers may come back in any order. tcp:// upstreams (tcp_ops) use the
 * same connections in plaintext mode, chosen only by the URL scheme, so
 * RFC 7766 6.2.2's "keep concurrent connections to a minimum" holds for them
 * too; tls:// never runs without TLS.
 *
 * Each query gets a wire ID that is unused on its connection (the caller's
 * random ID is restored before done), is padded to 128-byte blocks (RFC
 * 8467; client-subnet is stripped on the way; TLS only: padding hides
 * nothing on a plaintext stream) and carries an empty edns-tcp-keepalive
 * option (RFC 7828) so the server tells us how long it keeps idle
 * connections; we close ours before that.
 *
 * Connections: at most the upstream's max_conns; another one opens only
 * when every open one is saturated. An idle connection closes after the
 * server's keepalive, or the upstream's idle_timeout_ms when the server names
 * none, except the last one, which stays warm until the server closes it. Queries in flight on a
 * connection that drops are retried once on a new connection; a connection
 * that cannot be set up (refused, TLS or verification failure) fails its
 * queries at once and starts an exponential backoff with jitter during
 * which new queries fail fast, so the caller moves to another upstream.
 *
 * Lifetime: libev callbacks enter up->scope; a connection that dies inside
 * one is torn down at once but freed only when the outermost callback
 * returns, answers and failures are delivered only then, and the upstream
 * state is freed then when close() runs from inside a done callback.
 *
 * Built without wolfSSL too, for tcp://; dot_ops is registered only with it. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/defer.h"
#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "dns/dns.h"
#include "upstream/conn.h"
#include "upstream/happy.h"
#include "upstream/frame.h"
#include "tls/tls.h"
#include "upstream/upstream.h"

enum {
    DOT_SETUP_MS = 10000,      /* connect + handshake */
    DOT_CONN_MAX_IDS = 4096,   /* in flight per connection, cancelled ones included */
    DOT_OUT_HIGH = 256 * 1024, /* queued bytes per connection before it counts as full */
    DOT_WRITE_CHUNK = 16384,   /* one TLS record */
    DOT_ID_BUCKETS = 256,
};

struct dot_up;
struct dot_conn;

/* One query. done.x is NULL once cancelled: a query already on the wire
 * keeps its ID reserved until its answer or its connection goes, so a late
 * answer can never be taken for a newer query's. */
struct dot_req {
    struct conn_done done;  /* done.x: the caller's xfer */
    uint8_t *ans;           /* the answer, until delivered */
    size_t ans_len;
    struct dot_conn *c;     /* set while in c's ID table */
    struct conn_link link;  /* on up->wait, c->flight, or a list being failed */
    struct dot_req *hnext;    /* ID table chain */
    uint16_t wire_id;
    bool retried;
    size_t len;
    uint8_t msg[];          /* padded query; its ID is the wire ID */
};

struct dot_conn {
    struct dot_up *up;
    struct dot_conn *next;  /* up->conns or up->graveyard */
    enum conn_state state;
    int fd;
    ev_io io;
    ev_timer timer;         /* setup deadline, then idle check */
    ev_timer stall;         /* while queries are out: has the path died? */
    struct tls_conn *tls;   /* NULL in plaintext mode */
    struct happy *happy;    /* racing the addresses; fd is -1 meanwhile */
    struct frame_rd fr;
    struct buf out;         /* framed queries the TLS layer has not taken yet */
    size_t out_retry;       /* length TLS asked us to offer again after EAGAIN */
    struct list flight;    /* in flight, cancelled ones included */
    struct dot_req *ids[DOT_ID_BUCKETS];
    unsigned live;          /* in flight with a caller still waiting */
    uint64_t idle_ms;
    bool server_idle;       /* idle_ms came from the server's keepalive */
    bool suspect;           /* the network changed under it: no new queries */
    uint64_t last_active;
};

struct dot_up {
    struct ev_loop *loop;
    char *name;
    struct net_addr addr;
    struct tls_ctx *tls;    /* NULL in plaintext mode (tcp://) */
    bool plain;
    struct dot_conn *conns;
    unsigned n_conns;
    unsigned n_suspect;     /* of n_conns */
    struct dot_conn *graveyard;
    struct list wait;      /* accepted, no connection yet */
    struct conn_policy pol;
    struct conn_scope scope; /* callback depth, answers to deliver, deferred free */
    struct defer kick;     /* queries assigned this loop turn go out before it sleeps */
    /* its addresses, read at each connect (a bootstrap upstream may change
     * them); only dot_conn_open reads it, which never runs after close() */
    const struct upstream *u;
    struct ustats *st;       /* the upstream's counters, ustats_sink after close */
};

static uint8_t dot_rxbuf[16384];

/* ---- small helpers ------------------------------------------------------ */

static struct dot_req *dot_id_find(const struct dot_conn *c, uint16_t id)
{
    for (struct dot_req *q = c->ids[id % DOT_ID_BUCKETS]; q; q = q->hnext)
        if (q->wire_id == id)
            return q;
    return NULL;
}

static void dot_id_remove(struct dot_conn *c, struct dot_req *q)
{
    for (struct dot_req **pp = &c->ids[q->wire_id % DOT_ID_BUCKETS]; *pp; pp = &(*pp)->hnext) {
        if (*pp == q) {
            *pp = q->hnext;
            break;
        }
    }
    q->hnext = NULL;
    q->c = NULL;
}

/* An ID nobody on c uses: random probes first (the table is sparse), then
 * a scan, so it always succeeds below DOT_CONN_MAX_IDS entries. */
static uint16_t dot_id_pick(const struct dot_conn *c)
{
    uint16_t id = (uint16_t)rand_u32();

    for (int i = 0; i < 16; i++, id = (uint16_t)rand_u32())
        if (!dot_id_find(c, id))
            return id;
    while (dot_id_find(c, id))
        id++;
    return id;
}

static struct dot_req *dot_req_pop(struct list *l)
{
    return conn_elem(conn_list_pop(l), struct dot_req, link);
}

static void dot_req_free(struct dot_req *q)
{
    free(q->ans);
    free(q);
}

/* Queues q's outcome (its answer with rc 0), delivered when the callback
 * unwinds. */
static void dot_req_finish(struct dot_up *up, struct dot_req *q, int rc)
{
    conn_scope_complete(&up->scope, &q->done, rc, q->ans, q->ans_len);
}

/* ---- connections -------------------------------------------------------- */

static void dot_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void dot_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void dot_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void dot_up_dispatch(struct dot_up *up, bool may_complete);

/* The stream under the framing: TLS, or the bare socket for tcp://. Both
 * return the count, DV_EAGAIN, DV_ECONN or (TLS) DV_ETLS. */
static long dot_conn_recv(struct dot_conn *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls)
        return tls_conn_read(c->tls, buf, len);
    do
        n = recv(c->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        return (long)n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return DV_EAGAIN;
    if (n < 0)
        log_debug("upstream %s: recv: %s", c->up->name, strerror(errno));
    return DV_ECONN;
}

static long dot_conn_send(struct dot_conn *c, const void *buf, size_t len)
{
    ssize_t n;

    if (c->tls)
        return tls_conn_write(c->tls, buf, len);
    do
        n = send(c->fd, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return DV_EAGAIN;
    log_debug("upstream %s: send: %s", c->up->name, strerror(errno));
    return DV_ECONN;
}

static bool dot_conn_wants_write(const struct dot_conn *c)
{
    return c->tls && tls_conn_wants_write(c->tls);
}

static void dot_conn_watch(struct dot_conn *c)
{
    int ev;

    if (c->state == CONN_DEAD || c->fd < 0)
        return;
    if (c->state == CONN_CONNECTING)
        ev = EV_WRITE;
    else if (c->state == CONN_HANDSHAKE)
        ev = dot_conn_wants_write(c) ? EV_WRITE : EV_READ;
    else
        ev = EV_READ | (buf_used(&c->out) || dot_conn_wants_write(c) ? EV_WRITE : 0);
    conn_io_watch(c->up->loop, &c->io, c->fd, ev);
}

static void dot_conn_arm_timer(struct dot_conn *c, uint64_t ms)
{
    conn_timer_arm(c->up->loop, &c->timer, (double)ms / 1000.0);
}

static void dot_conn_happy_cb(void *arg, int fd, int err);

static struct dot_conn *dot_conn_open(struct dot_up *up)
{
    struct dot_conn *c;

    if (!conn_has_addr(up->u, up->name) || !(c = calloc(1, sizeof(*c))))
        return NULL;
    c->up = up;
    c->idle_ms = up->pol.idle_ms;
    frame_init(&c->fr);
    buf_init(&c->out);
    if (conn_stream_open(up->loop, up->u, up->name, dot_conn_happy_cb, c, &c->fd, &c->happy))
        goto fail;
    if (c->fd >= 0 && !up->plain && tls_conn_new(up->tls, c->fd, &c->tls))
        goto fail;
    c->state = CONN_CONNECTING;
    ev_io_init(&c->io, dot_conn_io_cb, c->fd, EV_WRITE);
    c->io.data = c;
    if (c->fd >= 0)
        ev_io_start(up->loop, &c->io);
    ev_init(&c->timer, dot_conn_timer_cb);
    c->timer.data = c;
    conn_stall_init(&c->stall, dot_conn_stall_cb, c);
    dot_conn_arm_timer(c, DOT_SETUP_MS);
    c->next = up->conns;
    up->conns = c;
    up->n_conns++;
    ustats_conn_opened(up->st);
    return c;
fail:
    if (c->fd >= 0)
        close(c->fd);
    conn_policy_failed(&up->pol, net_now_ms());
    frame_free(&c->fr);
    buf_free(&c->out);
    free(c);
    return NULL;
}

static void dot_conn_free(struct dot_conn *c)
{
    struct dot_req *q;

    ustats_conn_closed(c->up->st);
    while ((q = dot_req_pop(&c->flight)))
        dot_req_free(q); /* cancelled leftovers only: live ones were handed back */
    frame_free(&c->fr);
    buf_free(&c->out);
    free(c);
}

/* Stops c's I/O, closes the socket and parks c for freeing once no
 * callback is running. Its queries stay on c->flight for the caller. */
static void dot_conn_close(struct dot_conn *c, bool polite)
{
    struct dot_up *up = c->up;

    if (c->state == CONN_DEAD)
        return;
    for (struct dot_conn **pp = &up->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            up->n_conns--;
            up->n_suspect -= c->suspect;
            break;
        }
    }
    ev_io_stop(up->loop, &c->io);
    ev_timer_stop(up->loop, &c->timer);
    happy_cancel(c->happy);
    c->happy = NULL;
    ev_timer_stop(up->loop, &c->stall);
    if (c->tls) {
        if (polite && c->state == CONN_READY)
            tls_conn_shutdown(c->tls);
        tls_conn_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_DEAD;
    c->next = up->graveyard;
    up->graveyard = c;
}

/* Fails every query on l with rc, delivered when the callback unwinds. */
static void dot_reqs_fail(struct dot_up *up, struct list *l, int rc)
{
    struct dot_req *q;

    while ((q = dot_req_pop(l))) {
        if (q->done.x)
            dot_req_finish(up, q, rc);
        else
            dot_req_free(q);
    }
}

/* Hands every query of a dead connection back: retried once on a new
 * connection when c had been working, else failed with rc. */
static void dot_conn_fail(struct dot_conn *c, int rc)
{
    struct dot_up *up = c->up;
    bool was_ready = c->state == CONN_READY;
    struct list failed = {0};
    struct dot_req *q;

    if (c->state == CONN_DEAD)
        return;
    dot_conn_close(c, false);
    if (!was_ready) {
        uint64_t wait = conn_policy_failed(&up->pol, net_now_ms());
        log_debug("upstream %s: connection failed (%s); next attempt in %llu ms", up->name,
                  dv_strerror(rc), (unsigned long long)wait);
    } else {
        log_debug("upstream %s: connection lost (%s), %u queries in flight", up->name,
                  dv_strerror(rc), c->live);
    }
    /* back to front so the retried keep their order at the head of wait */
    while ((q = conn_elem(c->flight.tail, struct dot_req, link))) {
        conn_list_unlink(&q->link);
        dot_id_remove(c, q);
        if (!q->done.x)
            dot_req_free(q);
        else if (was_ready && !q->retried) {
            q->retried = true;
            conn_list_push_front(&up->wait, &q->link);
        } else
            conn_list_push_front(&failed, &q->link);
    }
    c->live = 0;
    dot_reqs_fail(up, &failed, rc);
    dot_up_dispatch(up, true);
}

/* Moves q onto c: a fresh wire ID and its frame at the end of c->out. */
static int dot_conn_submit(struct dot_conn *c, struct dot_req *q)
{
    uint8_t len[2];

    /* room first: half a frame in the queue would desynchronise the stream */
    if (buf_reserve(&c->out, 2 + q->len))
        return DV_ENOMEM;
    q->wire_id = dot_id_pick(c);
    dns_put16(q->msg, q->wire_id);
    frame_put_len(len, q->len);
    (void)buf_append(&c->out, len, 2);
    (void)buf_append(&c->out, q->msg, q->len);
    q->c = c;
    q->hnext = c->ids[q->wire_id % DOT_ID_BUCKETS];
    c->ids[q->wire_id % DOT_ID_BUCKETS] = q;
    conn_list_push(&c->flight, &q->link);
    c->live++;
    c->last_active = net_now_ms();
    if (!ev_is_active(&c->stall))
        ev_timer_again(c->up->loop, &c->stall);
    return 0;
}

static bool dot_conn_has_room(const struct dot_conn *c)
{
    return c->state != CONN_DEAD && !c->suspect && c->flight.n < DOT_CONN_MAX_IDS &&
           buf_used(&c->out) < DOT_OUT_HIGH;
}

/* Gives the stream as much of c->out as it takes. 0, or the error that
 * killed c. */
static int dot_conn_flush(struct dot_conn *c)
{
    while (buf_used(&c->out)) {
        size_t n = c->out_retry ? c->out_retry : buf_used(&c->out);
        if (n > DOT_WRITE_CHUNK)
            n = DOT_WRITE_CHUNK;
        long w = dot_conn_send(c, buf_head(&c->out), n);
        if (w > 0)
            ustats_bytes(c->up->st, 0, (uint64_t)w);
        if (w == DV_EAGAIN) {
            c->out_retry = n;
            break;
        }
        if (w < 0)
            return (int)w;
        c->out_retry = 0;
        buf_consume(&c->out, (size_t)w);
    }
    if (!buf_used(&c->out))
        c->out.off = c->out.len = 0;
    return 0;
}

/* Notes the server's edns-tcp-keepalive timeout, if the answer has one. */
static void dot_conn_keepalive(struct dot_conn *c, const uint8_t *msg, size_t len)
{
    struct dns_rr opt;
    struct dns_edns e;

    if (dns_msg_find_opt(msg, len, &opt) != 1 || dns_edns_read(msg, len, &opt, &e) ||
        !e.has_keepalive || e.keepalive_len != 2)
        return;
    uint64_t ms = (uint64_t)e.keepalive * 100;
    /* close a little before the server would, so no query races its close */
    ms -= ms / 10;
    if (c->server_idle && ms == c->idle_ms)
        return;
    c->idle_ms = ms;
    c->server_idle = true;
    dot_conn_arm_timer(c, ms > 1000 ? ms : 1000);
}

/* One framed message from the server. 0, or DV_EPROTO when the stream
 * cannot be trusted any more. The answer is delivered when the callback
 * unwinds. */
static int dot_conn_answer(struct dot_conn *c, const uint8_t *msg, size_t len)
{
    struct dot_up *up = c->up;
    struct dot_req *q;

    if (len < DNS_HDR_LEN) {
        log_debug("upstream %s: %zu-byte frame", c->up->name, len);
        return DV_EPROTO;
    }
    q = dot_id_find(c, dns_get16(msg));
    if (!q) {
        log_debug("upstream %s: answer with unknown ID %u", c->up->name, dns_get16(msg));
        return 0;
    }
    dot_id_remove(c, q);
    conn_list_unlink(&q->link);
    c->last_active = net_now_ms();
    if (!q->done.x) {
        log_debug("upstream %s: late answer to a cancelled query dropped", up->name);
        dot_req_free(q);
        return 0;
    }
    c->live--;
    if (!(dns_get16(msg + 2) & DNS_FLAG_QR)) {
        dot_req_finish(up, q, DV_EPROTO);
        return 0;
    }
    dot_conn_keepalive(c, msg, len);
    q->ans = malloc(len);
    if (!q->ans) {
        dot_req_finish(up, q, DV_ENOMEM);
        return 0;
    }
    memcpy(q->ans, msg, len);
    q->ans_len = len;
    dot_req_finish(up, q, 0);
    return 0;
}

/* Reads until the stream has nothing more. 0, or the error that killed c. */
static int dot_conn_read(struct dot_conn *c)
{
    struct dot_up *up = c->up;
    size_t answered = c->flight.n;

    for (;;) {
        long n = dot_conn_recv(c, dot_rxbuf, sizeof(dot_rxbuf));
        if (n > 0)
            ustats_bytes(up->st, (uint64_t)n, 0);
        if (n == DV_EAGAIN) {
            /* ACK now when a server that Nagles may hold an answer for it:
             * what arrived was no answer (a TLS 1.3 session ticket) or more
             * answers are due. Not when queries about to go out carry the
             * ACK, nor when nothing is awaited (a system call per query at
             * a steady rate for nothing). */
            if ((answered == c->flight.n || c->live) && !buf_used(&c->out))
                conn_quickack(c->fd);
            return 0;
        }
        if (n < 0) {
            if (n == DV_ECONN && frame_partial(&c->fr))
                log_debug("upstream %s: stream ended inside a message", up->name);
            return (int)n;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            const uint8_t *msg;
            size_t mlen;
            long used = frame_read(&c->fr, dot_rxbuf + off, (size_t)n - off, &msg, &mlen);
            if (used < 0)
                return (int)used;
            off += (size_t)used;
            if (!msg)
                continue;
            int rc = dot_conn_answer(c, msg, mlen);
            if (rc)
                return rc;
        }
    }
}

static void dot_up_retire_suspects(struct dot_up *up);

static void dot_conn_ready(struct dot_conn *c)
{
    struct dot_up *up = c->up;

    c->state = CONN_READY;
    dot_up_retire_suspects(up);
    conn_policy_ok(&up->pol);
    if (c->tls)
        ustats_handshake(up->st, tls_conn_resumed(c->tls) ? USTATS_HS_RESUMED : USTATS_HS_FULL);
    c->last_active = net_now_ms();
    dot_conn_arm_timer(c, c->idle_ms);
    log_debug("upstream %s: connected (%u open, %u queued)", up->name, up->n_conns, c->live);
}

static void dot_conn_io(struct dot_conn *c, int revents)
{
    struct dot_up *up = c->up;
    int rc;

    if (c->state == CONN_CONNECTING) {
        int soerr = conn_connect_error(c->fd);
        if (soerr) {
            log_debug("upstream %s: connect: %s", up->name, strerror(soerr));
            dot_conn_fail(c, DV_ECONN);
            return;
        }
        if (up->plain)
            dot_conn_ready(c);
        else
            c->state = CONN_HANDSHAKE;
    }
    if (c->state == CONN_HANDSHAKE) {
        rc = tls_conn_handshake(c->tls);
        if (rc == DV_EAGAIN) {
            dot_conn_watch(c);
            return;
        }
        if (rc) {
            dot_conn_fail(c, rc);
            return;
        }
        dot_conn_ready(c);
    }
    rc = dot_conn_read(c);
    if (!rc)
        rc = dot_conn_flush(c);
    if (rc) {
        dot_conn_fail(c, rc);
        return;
    }
    dot_conn_watch(c);
    /* a drained connection can take queries that waited for room */
    if (up->wait.n && dot_conn_has_room(c))
        dot_up_dispatch(up, true);
}

/* The address race is over: carry on as a connect that just completed. */
static void dot_conn_happy_cb(void *arg, int fd, int err)
{
    struct dot_conn *c = arg;
    struct dot_up *up = c->up;

    conn_scope_enter(&up->scope);
    c->happy = NULL;
    if (fd < 0) {
        log_debug("upstream %s: no address answered: %s", up->name, strerror(err));
        dot_conn_fail(c, DV_ECONN);
    } else {
        c->fd = fd;
        if (!up->plain && tls_conn_new(up->tls, c->fd, &c->tls)) {
            dot_conn_fail(c, DV_ETLS);
        } else {
            conn_io_watch(up->loop, &c->io, fd, EV_WRITE);
        }
    }
    conn_scope_leave(&up->scope);
}

static void dot_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct dot_conn *c = w->data;
    struct dot_up *up = c->up;

    conn_scope_enter(&up->scope);
    dot_conn_io(c, revents);
    conn_scope_leave(&up->scope);
}

static void dot_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dot_conn *c = w->data;
    struct dot_up *up = c->up;
    uint64_t now = net_now_ms();

    conn_scope_enter(&up->scope);
    if (c->state != CONN_READY) {
        log_debug("upstream %s: connection setup timed out", up->name);
        dot_conn_fail(c, DV_ETIMEOUT);
    } else if (c->live) {
        dot_conn_arm_timer(c, c->idle_ms > 1000 ? c->idle_ms : 1000);
    } else if (c->last_active + c->idle_ms > now) {
        dot_conn_arm_timer(c, c->last_active + c->idle_ms - now);
    } else if (up->n_conns == 1 && !c->server_idle) {
        dot_conn_arm_timer(c, c->idle_ms); /* the warm one: kept until the server ends it */
    } else {
        log_debug("upstream %s: closing idle connection", up->name);
        dot_conn_close(c, true);
    }
    conn_scope_leave(&up->scope);
}

/* ---- the upstream ------------------------------------------------------- */

/* Frees the connections torn down since; no callback of theirs runs. */
static void dot_up_settle(void *arg)
{
    struct dot_up *up = arg;
    struct dot_conn *c;

    while ((c = up->graveyard)) {
        up->graveyard = c->next;
        dot_conn_free(c);
    }
}

/* After done: the delivered query goes. */
static void dot_req_release(struct conn_done *d)
{
    dot_req_free(conn_elem(d, struct dot_req, done));
}

static void dot_up_destroy(void *arg)
{
    struct dot_up *up = arg;
    struct conn_done *d;

    defer_cancel(&up->kick);
    dot_up_settle(up);
    while ((d = conn_scope_pop(&up->scope)))
        dot_req_release(d);
    tls_ctx_del(up->tls);
    free(up->name);
    free(up);
}

/* The connection the next query should use: the working one with the
 * fewest live queries and room; a new one only when all are full. */
static struct dot_conn *dot_up_pick(struct dot_up *up)
{
    struct dot_conn *best = NULL;

    for (struct dot_conn *c = up->conns, *next; c; c = next) {
        next = c->next;
        if (!dot_conn_has_room(c)) {
            /* full of IDs whose answers never came and nobody awaits:
             * only a new connection frees them */
            if (c->live == 0 && c->flight.n >= DOT_CONN_MAX_IDS)
                dot_conn_close(c, true);
            continue;
        }
        if (!best || (c->state == CONN_READY && best->state != CONN_READY) ||
            (c->state == best->state && c->live < best->live))
            best = c;
    }
    if (best)
        return best;
    if (!conn_policy_may_open(&up->pol, up->n_conns - up->n_suspect, net_now_ms()))
        return NULL;
    return dot_conn_open(up);
}

/* Puts waiting queries on connections. Those that can get none fail with
 * DV_ECONN when nothing is open and may_complete allows calling done;
 * otherwise they wait for room. */
static void dot_up_dispatch(struct dot_up *up, bool may_complete)
{
    struct dot_req *q;

    while (up->wait.n) {
        struct dot_conn *c = dot_up_pick(up);
        if (!c)
            break;
        q = dot_req_pop(&up->wait);
        if (dot_conn_submit(c, q)) {
            conn_list_push_front(&up->wait, &q->link);
            break;
        }
        if (c->state == CONN_READY)
            defer_arm(up->loop, &up->kick);
    }
    if (!may_complete || up->n_conns > up->n_suspect)
        return;
    dot_reqs_fail(up, &up->wait, DV_ECONN);
}

/* Before the loop sleeps: every query assigned during this turn (a burst the
 * listener read together) leaves in one write, so one TLS record, without
 * a trip through the poller for EV_WRITE. */
static void dot_up_kick_cb(void *arg)
{
    struct dot_up *up = arg;

    conn_scope_enter(&up->scope);
    for (struct dot_conn *c = up->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != CONN_READY || !buf_used(&c->out) || (c->io.events & EV_WRITE))
            continue;
        int rc = dot_conn_flush(c);
        if (rc)
            dot_conn_fail(c, rc);
        else
            dot_conn_watch(c);
    }
    conn_scope_leave(&up->scope);
}

/* Copies the query, adds the keepalive option and, over TLS, pads it. */
/* Replaces the client's edns-tcp-keepalive, if any, with our empty one
 * (RFC 7828) when the query has an OPT. The OPT is looked up once: the strip,
 * which looks it up again, runs only when there is a keepalive to strip. */
static int dot_query_keepalive(uint8_t *msg, size_t *len, size_t cap)
{
    struct dns_rr opt;
    struct dns_edns e;
    uint8_t none = 0;
    int found = dns_msg_find_opt(msg, *len, &opt);
    int rc;

    if (found < 0)
        return found;
    if (found == 0)
        return 0;
    if (dns_edns_read(msg, *len, &opt, &e) < 0)
        return DV_EMALFORMED;
    if (e.has_keepalive) {
        if ((rc = dns_edns_strip_opt(msg, len, DNS_OPT_KEEPALIVE)))
            return rc;
        if (dns_msg_find_opt(msg, *len, &opt) != 1)
            return 0;
    }
    return dns_edns_add_opt(msg, len, cap, opt.off, DNS_OPT_KEEPALIVE, &none, 0);
}

static struct dot_req *dot_req_new(const struct dot_up *up, const struct xfer *x, int *prc)
{
    size_t cap = x->len + CONN_QUERY_ROOM;
    /* only the header zeroed: every byte of msg used is written below */
    struct dot_req *q = malloc(sizeof(*q) + cap);
    int rc = DV_ENOMEM;

    if (!q)
        goto fail;
    memset(q, 0, sizeof(*q));
    memcpy(q->msg, x->msg, x->len);
    q->len = x->len;
    rc = dot_query_keepalive(q->msg, &q->len, cap);
    if (!rc && !up->plain)
        rc = conn_pad_query(q->msg, &q->len, cap);
    if (rc)
        goto fail;
    return q;
fail:
    free(q);
    *prc = rc;
    return NULL;
}

static int dot_open(struct upstream *u)
{
    struct dot_up *up = calloc(1, sizeof(*up));
    int rc;

    /* the scheme table pairs tcp:// with tcp_ops; anything else is a bug */
    if ((u->proto == UPSTREAM_TCP) != (u->ops == &tcp_ops)) {
        free(up);
        return DV_EINVAL;
    }
    if (!up)
        return DV_ENOMEM;
    up->loop = u->loop;
    up->addr = u->addr;
    up->u = u;
    conn_policy_init(&up->pol, &u->cfg);
    conn_scope_init(&up->scope, dot_up_settle, dot_req_release, dot_up_destroy, up);
    defer_init(&up->kick, dot_up_kick_cb, up);
    up->name = strdup(u->name);
    if (!up->name) {
        free(up);
        return DV_ENOMEM;
    }
    /* plaintext only ever for tcp://: a tls:// upstream without a context
     * fails to open */
    up->plain = u->proto == UPSTREAM_TCP;
    /* most DoT servers predate the ALPN id, so it is not required */
    rc = up->plain ? 0 : tls_ctx_new_upstream(u, "dot", false, &up->tls);
    if (rc) {
        free(up->name);
        free(up);
        return rc;
    }
    up->st = &u->stats;
    u->priv = up;
    return 0;
}

static int dot_send(struct upstream *u, struct xfer *x)
{
    struct dot_up *up = u->priv;
    struct dot_req *q;
    int rc = 0;

    if ((rc = conn_send_check(x, up->wait.n, up->name)))
        return rc;
    /* fail fast while backing off, so the caller tries another upstream */
    if (up->n_conns == up->n_suspect && conn_policy_backoff(&up->pol, net_now_ms()))
        return DV_ECONN;
    q = dot_req_new(up, x, &rc);
    if (!q)
        return rc;
    q->done.x = x;
    x->tpriv = q;
    conn_list_push(&up->wait, &q->link);
    dot_up_dispatch(up, false);
    if (q->link.on == &up->wait && up->n_conns == up->n_suspect) {
        conn_list_unlink(&q->link);
        dot_req_free(q);
        x->tpriv = NULL;
        return DV_ECONN;
    }
    return 0;
}

static void dot_cancel(struct upstream *u, struct xfer *x)
{
    struct dot_up *up = u->priv;
    struct dot_req *q = x->tpriv;

    if (!q)
        return;
    x->tpriv = NULL;
    if (q->c) {
        /* on the wire: keep its ID until the answer or the connection goes */
        q->done.x = NULL;
        q->c->live--;
        return;
    }
    /* waiting, or answered and not yet delivered */
    conn_req_detach(&up->scope, &q->link, &q->done);
    dot_req_free(q);
}

static void dot_close(struct upstream *u)
{
    struct dot_up *up = u->priv;
    struct dot_req *q;

    if (!up)
        return;
    u->priv = NULL;
    up->st = &ustats_sink;
    defer_cancel(&up->kick);
    while (up->conns)
        dot_conn_close(up->conns, true);
    while ((q = dot_req_pop(&up->wait))) {
        if (q->done.x)
            q->done.x->tpriv = NULL;
        dot_req_free(q);
    }
    /* now, or once the callback whose done closed us unwinds */
    conn_scope_close(&up->scope);
}

/* ---- network changes ---------------------------------------------------- */

/* Takes c down and puts the queries still awaited on it back at the front of
 * the wait queue, in their order, for another connection: the path failed,
 * not the queries. */
static void dot_conn_requeue(struct dot_conn *c)
{
    struct dot_up *up = c->up;
    struct dot_req *q;

    dot_conn_close(c, false);
    while ((q = conn_elem(c->flight.tail, struct dot_req, link))) {
        conn_list_unlink(&q->link);
        dot_id_remove(c, q);
        if (q->done.x)
            conn_list_push_front(&up->wait, &q->link);
        else
            dot_req_free(q);
    }
    c->live = 0;
}

/* A connection made after the change is up: the suspect ones go, and what
 * they still owe is asked again on it (dot_up_dispatch runs next in dot_conn_io). */
static void dot_up_retire_suspects(struct dot_up *up)
{
    unsigned moved = 0;

    for (struct dot_conn *c = up->conns, *next; c; c = next) {
        next = c->next;
        if (!c->suspect)
            continue;
        moved += c->live;
        dot_conn_requeue(c);
    }
    if (moved)
        log_debug("upstream %s: %u queries moved off suspect connections", up->name, moved);
}

/* Every CONN_STALL_CHECK_MS while queries are out: data unacknowledged
 * through a retransmission means the path died (a NAT that forgot us, a
 * route gone): the connection turns suspect and a new one takes its queries
 * once it is up, well before the kernel's own timeout. */
static void dot_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dot_conn *c = w->data;
    struct dot_up *up = c->up;

    if (!c->live || c->suspect) {
        ev_timer_stop(loop, w);
        return;
    }
    if (c->state != CONN_READY || !conn_stream_stalled(c->fd, CONN_STALL_MS))
        return;
    conn_scope_enter(&up->scope);
    log_info("upstream %s: connection stalled with %u queries out; connecting afresh",
             up->name, c->live);
    ev_timer_stop(loop, w);
    c->suspect = true;
    up->n_suspect++;
    dot_conn_open(up);
    dot_up_dispatch(up, true);
    conn_scope_leave(&up->scope);
}

static void dot_netchange(struct upstream *u)
{
    struct dot_up *up = u->priv;
    bool active = up->n_conns > 0 || up->wait.n;
    unsigned gone = 0, suspect = 0;

    conn_scope_enter(&up->scope);
    conn_policy_ok(&up->pol); /* a backoff from the old network means nothing now */
    for (struct dot_conn *c = up->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != CONN_READY || conn_local_gone(c->fd)) {
            /* its address is gone, or it was still being set up on the old path */
            dot_conn_requeue(c);
            gone++;
        } else if (!c->suspect) {
            c->suspect = true;
            up->n_suspect++;
            suspect++;
        }
    }
    if (active) {
        log_info("upstream %s: network changed: %u connections closed, %u suspect; "
                 "connecting afresh", up->name, gone, suspect);
        dot_conn_open(up); /* warm before the next query, not after it */
    }
    dot_up_dispatch(up, true);
    conn_scope_leave(&up->scope);
}

const struct transport_ops dot_ops = {
    .name = "dot",
    .open = dot_open,
    .send = dot_send,
    .cancel = dot_cancel,
    .close = dot_close,
    .netchange = dot_netchange,
};

/* tcp://: the same connections without TLS and without padding. */
const struct transport_ops tcp_ops = {
    .name = "tcp",
    .open = dot_open,
    .send = dot_send,
    .cancel = dot_cancel,
    .close = dot_close,
    .netchange = dot_netchange,
};

