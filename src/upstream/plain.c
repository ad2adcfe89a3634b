/* plain — unencrypted DNS to an upstream, only where the configuration asks
 * for it (split domains on a local resolver). udp:// sends from a small pool
 * of connected sockets, each on its own kernel-chosen random source port
 * and retired after PS_USES queries (as unbound's outgoing range spreads
 * queries over random ports): an off-path spoofer must still guess a port
 * among several and the random ID, and no query pays socket + connect +
 * close. A query goes to a random socket that has no query with its ID in
 * flight. Truncated answers are retried over TCP (a one-shot connection:
 * truncation is rare). The
 * question name goes out in random letter case (0x20, draft-vixie-dnsext-
 * dns0x20) and an answer must echo it byte for byte: a spoofer must guess
 * the case too. A datagram with our ID but another question is ignored and
 * counted, never taken as the end of the exchange (as unbound does). tcp://
 * upstreams are dot.c's pooled connections in plaintext mode (tcp_ops). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "dns/dns.h"
#include "upstream/upstream.h"

enum {
    PS_USES = 16,  /* queries per socket before it is retired */
    PS_SPREAD = 4, /* sockets open before a query may share one */
    PS_LIVE = 32,  /* in flight per socket */
};

struct plain_xfer;

/* One connected UDP socket of the pool; freed when retired and empty. */
struct psock {
    struct plain_up *pu;
    struct psock *next;
    int fd;
    ev_io io;
    unsigned uses;
    unsigned live;
    struct plain_xfer *qs; /* in flight on it */
};

struct plain_up {
    struct upstream *u;
    struct psock *socks;
    unsigned n;
};

struct plain_xfer {
    ev_io io;
    int fd;
    bool tcp;
    bool connected;
    size_t sent;        /* TCP: bytes of frame written */
    struct buf in;      /* TCP: bytes read */
    struct xfer *x;
    struct upstream *u;
    struct psock *s;    /* UDP: the pool socket it went out on */
    struct plain_xfer *snext, *sprev;
    uint8_t msg[];      /* x->msg with the name in random case: what we send */
};

static uint8_t rxbuf[DNS_MSG_MAX];

static void ps_free(struct psock *s)
{
    struct plain_up *pu = s->pu;

    for (struct psock **pp = &pu->socks; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pu->n--;
    ev_io_stop(pu->u->loop, &s->io);
    close(s->fd);
    free(s);
}

/* Takes px off its socket; a retired socket goes with its last query. */
static void ps_detach(struct plain_xfer *px)
{
    struct psock *s = px->s;

    if (!s)
        return;
    if (px->sprev)
        px->sprev->snext = px->snext;
    else
        s->qs = px->snext;
    if (px->snext)
        px->snext->sprev = px->sprev;
    px->s = NULL;
    px->snext = px->sprev = NULL;
    s->live--;
    if (s->live == 0 && s->uses >= PS_USES)
        ps_free(s);
}

static void ps_read_cb(struct ev_loop *loop, ev_io *w, int revents);

static struct psock *ps_open(struct plain_up *pu)
{
    struct upstream *u = pu->u;
    struct psock *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->fd = net_socket(u->addr.ss.ss_family, SOCK_DGRAM);
    if (s->fd < 0) {
        free(s);
        return NULL;
    }
    /* connect binds a random ephemeral port and filters the source */
    if (connect(s->fd, (const struct sockaddr *)&u->addr.ss, u->addr.len) < 0) {
        log_debug("upstream %s: connect: %s", u->name, strerror(errno));
        close(s->fd);
        free(s);
        return NULL;
    }
    s->pu = pu;
    ev_io_init(&s->io, ps_read_cb, s->fd, EV_READ);
    s->io.data = s;
    ev_io_start(u->loop, &s->io);
    s->next = pu->socks;
    pu->socks = s;
    pu->n++;
    return s;
}

static bool ps_has_id(const struct psock *s, uint16_t id)
{
    for (const struct plain_xfer *q = s->qs; q; q = q->snext)
        if (dns_get16(q->x->msg) == id)
            return true;
    return false;
}

/* A random socket that may carry a query with this ID, or a new one. */
static struct psock *ps_pick(struct plain_up *pu, uint16_t id)
{
    struct psock *cand[64];
    size_t n = 0;

    if (pu->n >= PS_SPREAD)
        for (struct psock *s = pu->socks; s && n < sizeof(cand) / sizeof(cand[0]); s = s->next)
            if (s->uses < PS_USES && s->live < PS_LIVE && !ps_has_id(s, id))
                cand[n++] = s;
    if (n == 0)
        return ps_open(pu);
    return cand[rand_uniform((uint32_t)n)];
}

static void ps_attach(struct psock *s, struct plain_xfer *px)
{
    px->s = s;
    px->sprev = NULL;
    px->snext = s->qs;
    if (s->qs)
        s->qs->sprev = px;
    s->qs = px;
    s->live++;
    s->uses++;
}

static void px_close_fd(struct plain_xfer *px)
{
    if (px->fd >= 0) {
        ev_io_stop(px->u->loop, &px->io);
        close(px->fd);
        px->fd = -1;
    }
}

static void px_free(struct plain_xfer *px)
{
    ps_detach(px);
    px_close_fd(px);
    buf_free(&px->in);
    free(px);
}

/* Completes the xfer and frees our state; the owner may start a new xfer on
 * this upstream from inside done, so nothing touches px afterwards. */
static void px_finish(struct plain_xfer *px, int rc, const uint8_t *ans, size_t len)
{
    struct xfer *x = px->x;

    x->tpriv = NULL;
    ps_detach(px);
    px_close_fd(px);
    x->done(x, rc, rc ? NULL : ans, rc ? 0 : len);
    px_free(px);
}

/* Sends the name's letters in random case. Only the first question's name
 * is touched: it sits uncompressed right after the header in our query. */
static void randomize_case(uint8_t *msg, size_t len)
{
    uint8_t bits[DNS_NAME_MAX / 8 + 1];
    size_t p = DNS_HDR_LEN, k = 0;

    rand_bytes(bits, sizeof(bits));
    while (p < len && msg[p] && (msg[p] & 0xc0) == 0) {
        size_t l = msg[p++];
        for (size_t i = 0; i < l && p < len; i++, p++, k++) {
            uint8_t ch = msg[p];
            bool flip = bits[(k / 8) % sizeof(bits)] >> (k % 8) & 1;
            if (flip && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
                msg[p] = ch ^ 0x20;
        }
    }
}

/* True when ans carries exactly the question we sent: the name in our case,
 * byte for byte, then the same type and class. */
static bool same_question(const struct plain_xfer *px, const uint8_t *ans, size_t len)
{
    size_t qend = DNS_HDR_LEN;

    while (qend < px->x->len && px->msg[qend])
        qend += (size_t)px->msg[qend] + 1;
    qend += 1 + 4; /* root label, type, class */
    return qend <= px->x->len && len >= qend && dns_get16(ans + 4) == 1 &&
           memcmp(ans + DNS_HDR_LEN, px->msg + DNS_HDR_LEN, qend - DNS_HDR_LEN) == 0;
}

/* An answer with our ID but not our question: a spoofer's guess or a
 * confused server. Dropped and counted; the real answer may still come. */
static void px_ignore(struct plain_xfer *px)
{
    px->x->ignored++;
    log_debug("upstream %s: ignored an answer with our ID for another question",
              px->u->name);
}

static void px_tcp_cb(struct ev_loop *loop, ev_io *w, int revents);

/* UDP: the query on a pool socket. */
static int px_start_udp(struct plain_xfer *px)
{
    struct plain_up *pu = px->u->priv;
    struct psock *s = ps_pick(pu, dns_get16(px->msg));

    if (!s)
        return DV_ECONN;
    if (send(s->fd, px->msg, px->x->len, 0) < 0) {
        log_debug("upstream %s: send: %s", px->u->name, strerror(errno));
        s->uses = PS_USES; /* a socket that cannot send is done */
        if (s->live == 0)
            ps_free(s);
        return DV_ECONN;
    }
    ustats_bytes(&px->u->stats, 0, px->x->len);
    ps_attach(s, px);
    return 0;
}

/* TCP: a one-shot connection of its own. */
static int px_start(struct plain_xfer *px, bool tcp)
{
    struct upstream *u = px->u;

    if (!tcp)
        return px_start_udp(px);
    px->tcp = true;
    px->sent = 0;
    px->connected = false;
    px->fd = net_socket(u->addr.ss.ss_family, SOCK_STREAM);
    if (px->fd < 0)
        return DV_EIO;
    if (connect(px->fd, (const struct sockaddr *)&u->addr.ss, u->addr.len) < 0 &&
        errno != EINPROGRESS) {
        log_debug("upstream %s: connect: %s", u->name, strerror(errno));
        close(px->fd);
        px->fd = -1;
        return DV_ECONN;
    }
    ev_io_init(&px->io, px_tcp_cb, px->fd, EV_READ | EV_WRITE);
    px->io.data = px;
    ev_io_start(u->loop, &px->io);
    return 0;
}

/* Answers for the socket's queries. One finished query per call: its done
 * may open or close sockets, or the upstream, so nothing is touched after
 * it; the watcher fires again for datagrams still queued. */
static void ps_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct psock *s = w->data;
    (void)loop;
    (void)revents;

    for (;;) {
        ssize_t n = recv(s->fd, rxbuf, sizeof(rxbuf), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            /* ICMP port unreachable surfaces here as ECONNREFUSED: it ends
             * the oldest query, and the socket takes no new ones */
            log_debug("upstream %s: recv: %s", s->pu->u->name, strerror(errno));
            s->uses = PS_USES;
            if (s->qs) {
                struct plain_xfer *px = s->qs;
                while (px->snext)
                    px = px->snext;
                px_finish(px, DV_ECONN, NULL, 0);
            } else {
                ps_free(s);
            }
            return;
        }
        ustats_bytes(&s->pu->u->stats, (uint64_t)n, 0);
        if (n < DNS_HDR_LEN || !(dns_get16(rxbuf + 2) & DNS_FLAG_QR))
            continue;
        /* a connected socket filters the source; the ID must match too */
        struct plain_xfer *px = s->qs;
        while (px && dns_get16(px->x->msg) != dns_get16(rxbuf))
            px = px->snext;
        if (!px)
            continue;
        if (!same_question(px, rxbuf, (size_t)n)) {
            px_ignore(px);
            continue;
        }
        if (dns_get16(rxbuf + 2) & DNS_FLAG_TC) {
            ps_detach(px);
            int rc = px_start(px, true);
            if (rc)
                px_finish(px, rc, NULL, 0);
            return;
        }
        px_finish(px, 0, rxbuf, (size_t)n);
        return;
    }
}

static void px_tcp_write(struct plain_xfer *px)
{
    const struct xfer *x = px->x;
    uint8_t frame[2 + DNS_MSG_MAX];
    size_t total = 2 + x->len;

    dns_put16(frame, (uint16_t)x->len);
    memcpy(frame + 2, px->msg, x->len);
    while (px->sent < total) {
        ssize_t n = send(px->fd, frame + px->sent, total - px->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            log_debug("upstream %s: tcp send: %s", px->u->name, strerror(errno));
            px_finish(px, DV_ECONN, NULL, 0);
            return;
        }
        px->sent += (size_t)n;
        ustats_bytes(&px->u->stats, 0, (uint64_t)n);
    }
    ev_io_stop(px->u->loop, &px->io);
    ev_io_set(&px->io, px->fd, EV_READ);
    ev_io_start(px->u->loop, &px->io);
}

static void px_tcp_read(struct plain_xfer *px)
{
    for (;;) {
        if (buf_reserve(&px->in, 4096)) {
            px_finish(px, DV_ENOMEM, NULL, 0);
            return;
        }
        ssize_t n = recv(px->fd, px->in.data + px->in.len, px->in.cap - px->in.len, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            px_finish(px, DV_ECONN, NULL, 0);
            return;
        }
        if (n == 0) {
            px_finish(px, DV_ECONN, NULL, 0);
            return;
        }
        px->in.len += (size_t)n;
        ustats_bytes(&px->u->stats, (uint64_t)n, 0);
        /* skip answers to other IDs: the connection is ours alone, so any
         * mismatch is the server's error, but skipping costs nothing */
        while (buf_used(&px->in) >= 2) {
            size_t flen = dns_get16(buf_head(&px->in));
            if (buf_used(&px->in) < 2 + flen)
                break;
            const uint8_t *m = buf_head(&px->in) + 2;
            if (flen >= DNS_HDR_LEN && dns_get16(m) == dns_get16(px->x->msg)) {
                if (same_question(px, m, flen)) {
                    px_finish(px, 0, m, flen);
                    return;
                }
                px_ignore(px);
            }
            buf_consume(&px->in, 2 + flen);
        }
    }
}

static void px_tcp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct plain_xfer *px = w->data;

    if (!px->connected) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(px->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            log_debug("upstream %s: tcp connect: %s", px->u->name, strerror(soerr));
            px_finish(px, DV_ECONN, NULL, 0);
            return;
        }
        px->connected = true;
    }
    if (revents & EV_WRITE) {
        px_tcp_write(px);
        return;
    }
    if (revents & EV_READ)
        px_tcp_read(px);
}

static int plain_open(struct upstream *u)
{
    struct plain_up *pu = calloc(1, sizeof(*pu));

    if (!pu)
        return DV_ENOMEM;
    pu->u = u;
    u->priv = pu;
    return 0;
}

static int plain_send(struct upstream *u, struct xfer *x)
{
    /* one allocation for the state and the query */
    struct plain_xfer *px = malloc(sizeof(*px) + x->len);
    int rc;

    if (!px)
        return DV_ENOMEM;
    memset(px, 0, sizeof(*px));
    px->x = x;
    px->u = u;
    px->fd = -1;
    buf_init(&px->in);
    memcpy(px->msg, x->msg, x->len);
    randomize_case(px->msg, x->len);
    rc = px_start(px, false);
    if (rc) {
        px_free(px);
        return rc;
    }
    x->tpriv = px;
    return 0;
}

static void plain_cancel(struct upstream *u, struct xfer *x)
{
    struct plain_xfer *px = x->tpriv;

    if (px) {
        x->tpriv = NULL;
        px_free(px);
    }
}

static void plain_close(struct upstream *u)
{
    struct plain_up *pu = u->priv;

    if (!pu)
        return;
    while (pu->socks)
        ps_free(pu->socks); /* no query is pending: every socket is empty */
    u->priv = NULL;
    free(pu);
}

/* Sockets connected from an address that may be gone take no new query. */
static void plain_netchange(struct upstream *u)
{
    struct plain_up *pu = u->priv;

    if (!pu)
        return;
    for (struct psock *s = pu->socks, *next; s; s = next) {
        next = s->next;
        s->uses = PS_USES;
        if (s->live == 0)
            ps_free(s);
    }
}

const struct transport_ops plain_ops = {
    .name = "plain",
    .open = plain_open,
    .send = plain_send,
    .cancel = plain_cancel,
    .close = plain_close,
    .netchange = plain_netchange,
};
