/* doq_listen — the DNS-over-QUIC listener (RFC 9250) on ngtcp2 with the
 * wolfSSL crypto backend; see frontend.h for its interface.
 *
 * One UDP socket; each datagram is matched to its connection by the
 * Destination Connection ID (we issue every CID a connection uses, so the
 * match is ours to keep). A new client's Initial opens a connection unless
 * the listener or that client is at its cap; once half the connection cap
 * is in use, a client must first prove its address with a Retry token
 * (stateless, keyed by a secret drawn at start), so spoofed Initials cost
 * one small packet each. A client that brings the NEW_TOKEN token its last
 * connection was given (RFC 9000 8.1.3) has proven its address already and
 * skips that round trip. On a wildcard address each datagram's destination
 * is read with IP(V6)_PKTINFO and the connection's packets leave from it:
 * a reply from another local address is not one the client would accept.
 *
 * Each query is one client bidirectional stream: the 2-byte length, the
 * message with Message ID 0, then FIN (doq_rx_feed, shared with the
 * upstream side, enforces it; anything else closes the connection with
 * DOQ_PROTOCOL_ERROR). The answer goes back on the same stream, length
 * prefixed, then FIN. A connection may have at most DOQ_STREAMS streams
 * open at once (the transport parameter; each closed stream lets the client
 * open one more). Session tickets let a client resume and send its queries
 * as 0-RTT early data, which DNS queries may be (RFC 9250 4.5); those are
 * counted.
 *
 * Lifetimes: a stream lives while ngtcp2 knows it or the query engine holds
 * it; a connection lives while it is open or any of its streams lives, so
 * an answer that comes late finds a closed connection, not freed memory.
 * ngtcp2 is never re-entered from its own callbacks: an answer given from
 * inside one (a cache hit) is written once ngtcp2 returns. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "frontend/frontend.h"
#include "tls/quic_crypto.h"
#include "tls/tlssrv.h"
#include "resolve/query.h"

#ifdef DV_HAVE_TLS

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "core/rand.h"
#include "upstream/doq.h"

enum {
    DOQ_CID_LEN = 16,
    DOQ_MAX_CIDS = 8,      /* CIDs issued per connection (active_connection_id_limit) */
    DOQ_STREAMS = 100,     /* streams a connection may have open at once */
    DOQ_PKT = 1452,        /* largest datagram we send */
    DOQ_RX = 65536,
    DOQ_CMSG = NET_PKTINFO_SPACE,
    DOQ_TOKEN_LIFETIME_S = 86400, /* a NEW_TOKEN token spares its client a Retry this long */
};

struct dq_conn;

/* One query stream. */
struct dq_stream {
    struct dq_stream *next; /* the connection's streams */
    struct dq_conn *c;
    int64_t sid;
    unsigned refs;      /* ngtcp2's (until closed) + the query engine's */
    bool closed;        /* ngtcp2 forgot it: nothing more to send */
    bool early;         /* the query came as 0-RTT data */
    bool blocked;       /* flow control: try again after the next read */
    struct doq_rx rx;
    uint8_t *tx;        /* the answer, length prefixed */
    size_t txlen, txoff;
};

struct dq_conn {
    struct dq_conn *prev, *next;
    struct fe_doq *d;
    ngtcp2_conn *conn;  /* NULL once closed */
    WOLFSSL *ssl;
    struct tlssrv_ctx *tls;
    ngtcp2_crypto_conn_ref ref;
    ngtcp2_cid cids[DOQ_MAX_CIDS];
    size_t ncids;
    struct net_addr peer;
    ngtcp2_path_storage ps;
    ngtcp2_ccerr ccerr;
    ev_timer timer;
    unsigned refs;      /* open + one per live stream */
    bool in_ngtcp2;     /* inside a call into ngtcp2: do not write now */
    struct dq_stream *streams;
};

struct fe_doq {
    ev_io io;
    struct ev_loop *loop;
    struct query_engine *qe;
    const struct net_addr *local;
    struct net_addr bound;
    struct net_addr rx_dst; /* where the datagram being handled was sent: bound, or
                               on a wildcard address the one read with pktinfo */
    bool pktinfo;           /* bound to a wildcard address */
    struct fe_doq_opts opts;
    struct tlssrv_ctx *tls;
    int fd;
    unsigned refs;
    bool closing;
    struct dq_conn *conns;
    size_t nconns;
    uint8_t secret[32]; /* Retry tokens */
    struct fe_doq_stats st;
};

static ngtcp2_tstamp now_ts(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void doq_unref(struct fe_doq *d)
{
    if (--d->refs > 0)
        return;
    if (d->fd >= 0)
        close(d->fd);
    tlssrv_ctx_unref(d->tls);
    free(d);
}

static void dq_conn_unref(struct dq_conn *c)
{
    if (--c->refs > 0)
        return;
    struct fe_doq *d = c->d;
    free(c);
    doq_unref(d);
}

static void stream_unref(struct dq_stream *s)
{
    if (--s->refs > 0)
        return;
    doq_rx_free(&s->rx);
    free(s->tx);
    struct dq_conn *c = s->c;
    free(s);
    dq_conn_unref(c);
}

/* ngtcp2 is done with s (closed, or the connection went). */
static void stream_forget(struct dq_stream *s)
{
    struct dq_conn *c = s->c;

    for (struct dq_stream **p = &c->streams; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    s->closed = true;
    stream_unref(s);
}

/* Sends one datagram to `to`, from the local address `from` when the
 * socket is on a wildcard address (NULL: the kernel picks). */
static void send_pkt(struct fe_doq *d, const uint8_t *pkt, size_t len, const struct net_addr *to,
                     const struct sockaddr *from)
{
    uint8_t cbuf[DOQ_CMSG];
    struct iovec iov = {.iov_base = (void *)pkt, .iov_len = len};
    struct msghdr mh = {.msg_name = (void *)&to->ss, .msg_namelen = to->len,
                        .msg_iov = &iov, .msg_iovlen = 1};

    if (d->pktinfo && from && from->sa_family == to->ss.ss_family) {
        mh.msg_control = cbuf;
        mh.msg_controllen = net_pktinfo_write(cbuf, from, 0);
    }
    while (sendmsg(d->fd, &mh, MSG_DONTWAIT) < 0 && errno == EINTR)
        ;
    /* a datagram lost to a full socket buffer is QUIC's to repair */
}

/* Sends what ngtcp2 just wrote to the peer address of the path it wrote it
 * for (c->ps): after a client migrated (RFC 9000 9), that is its new
 * address, while c->peer stays the one it connected from. */
static void send_on_path(struct dq_conn *c, const uint8_t *pkt, size_t len)
{
    struct net_addr to;

    if (c->ps.path.remote.addrlen > sizeof(to.ss))
        return;
    memcpy(&to.ss, c->ps.path.remote.addr, c->ps.path.remote.addrlen);
    to.len = c->ps.path.remote.addrlen;
    send_pkt(c->d, pkt, len, &to, (const struct sockaddr *)c->ps.path.local.addr);
}

static void dq_conn_account_close(struct dq_conn *c);

/* Closes c now: ngtcp2 state, TLS, timer; its streams are forgotten (a held
 * one keeps c's memory until the query engine lets go). */
static void dq_conn_close(struct dq_conn *c)
{
    struct fe_doq *d = c->d;

    if (!c->conn)
        return;
    dq_conn_account_close(c);
    ev_timer_stop(d->loop, &c->timer);
    while (c->streams)
        stream_forget(c->streams);
    ngtcp2_conn_del(c->conn);
    c->conn = NULL;
    wolfSSL_free(c->ssl);
    c->ssl = NULL;
    tlssrv_ctx_unref(c->tls);
    c->tls = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->nconns--;
    dq_conn_unref(c);
}

/* Sends a CONNECTION_CLOSE with c->ccerr, then closes. */
static void dq_conn_close_send(struct dq_conn *c)
{
    uint8_t buf[DOQ_PKT];
    ngtcp2_pkt_info pi;

    if (!c->conn)
        return;
    if (!ngtcp2_conn_in_closing_period(c->conn) && !ngtcp2_conn_in_draining_period(c->conn)) {
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &c->ps.path, &pi, buf,
                                                            sizeof(buf), &c->ccerr, now_ts());
        if (n > 0)
            send_on_path(c, buf, (size_t)n);
    }
    dq_conn_close(c);
}

static void dq_conn_arm_timer(struct dq_conn *c)
{
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn), now = now_ts();

    ev_timer_stop(c->d->loop, &c->timer);
    if (expiry == UINT64_MAX)
        return;
    ev_timer_set(&c->timer, expiry > now ? (double)(expiry - now) / NGTCP2_SECONDS : 0., 0.);
    ev_timer_start(c->d->loop, &c->timer);
}

static struct dq_stream *next_tx(struct dq_conn *c)
{
    for (struct dq_stream *s = c->streams; s; s = s->next)
        if (s->tx && s->txoff < s->txlen && !s->blocked)
            return s;
    return NULL;
}

/* Writes what ngtcp2 has: answers on their streams, then ACKs and the
 * rest, until it has nothing more. */
static void dq_conn_write(struct dq_conn *c)
{
    uint8_t buf[DOQ_PKT];
    ngtcp2_tstamp ts = now_ts();

    if (!c->conn)
        return;
    for (struct dq_stream *s = c->streams; s; s = s->next)
        s->blocked = false;
    for (int i = 0; i < 4096; i++) {
        struct dq_stream *s = next_tx(c);
        ngtcp2_vec v;
        ngtcp2_ssize ndata = -1;
        ngtcp2_pkt_info pi;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
        if (s) {
            v.base = s->tx + s->txoff;
            v.len = s->txlen - s->txoff;
            flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &c->ps.path, &pi, buf, sizeof(buf),
                                                   &ndata, flags, s ? s->sid : -1,
                                                   s ? &v : NULL, s ? 1 : 0, ts);
        if (ndata >= 0 && s)
            s->txoff += (size_t)ndata;
        if (n == NGTCP2_ERR_WRITE_MORE)
            continue;
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
            n == NGTCP2_ERR_STREAM_NOT_FOUND) {
            if (s)
                s->blocked = true;
            continue;
        }
        if (n < 0) {
            ngtcp2_ccerr_set_liberr(&c->ccerr, (int)n, NULL, 0);
            dq_conn_close_send(c);
            return;
        }
        if (n == 0)
            break;
        send_on_path(c, buf, (size_t)n);
    }
    ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
    dq_conn_arm_timer(c);
}

/* ---- the query engine's side ---- */

static void sink_send(void *ctx, const struct query_client *qc, const uint8_t *msg, size_t len)
{
    struct dq_stream *s = ctx;

    if (s->closed || s->tx || !s->c->conn)
        return;
    if (!(s->tx = malloc(len + 2)))
        return;
    s->tx[0] = (uint8_t)(len >> 8);
    s->tx[1] = (uint8_t)len;
    memcpy(s->tx + 2, msg, len);
    s->txlen = len + 2;
    if (!s->c->in_ngtcp2)
        dq_conn_write(s->c);
}

static void sink_hold(void *ctx)
{
    struct dq_stream *s = ctx;

    s->refs++;
}

static void sink_release(void *ctx)
{
    stream_unref(ctx);
}

static const struct query_sink_ops doq_sink = {
    .send = sink_send,
    .hold = sink_hold,
    .release = sink_release,
};

/* ---- ngtcp2 callbacks ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct dq_conn *c = ref->user_data;
    return c->conn;
}

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx)
{
    rand_bytes(dest, destlen);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, ngtcp2_stateless_reset_token *token,
                      size_t cidlen, void *user_data)
{
    struct dq_conn *c = user_data;

    if (c->ncids == DOQ_MAX_CIDS)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    rand_bytes(cid->data, cidlen);
    cid->datalen = cidlen;
    rand_bytes(token->data, sizeof(token->data));
    c->cids[c->ncids++] = *cid;
    return 0;
}

static int remove_cid_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user_data)
{
    struct dq_conn *c = user_data;

    for (size_t i = 0; i < c->ncids; i++) {
        if (ngtcp2_cid_eq(&c->cids[i], cid)) {
            c->cids[i] = c->cids[--c->ncids];
            break;
        }
    }
    return 0;
}

static int protocol_error(struct dq_conn *c)
{
    ngtcp2_ccerr_set_application_error(&c->ccerr, DOQ_PROTOCOL_ERROR, NULL, 0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    struct dq_conn *c = user_data;
    struct fe_doq *d = c->d;
    struct dq_stream *s = stream_user_data;
    int rc;

    ngtcp2_conn_extend_max_stream_offset(conn, sid, datalen);
    ngtcp2_conn_extend_max_offset(conn, datalen);
    if (!ngtcp2_is_bidi_stream(sid))
        return protocol_error(c); /* RFC 9250 4.2: queries come on bidi streams */
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return NGTCP2_ERR_CALLBACK_FAILURE;
        s->c = c;
        s->sid = sid;
        s->refs = 1;
        doq_rx_init(&s->rx);
        c->refs++;
        s->next = c->streams;
        c->streams = s;
        ngtcp2_conn_set_stream_user_data(conn, sid, s);
    }
    if (flags & NGTCP2_STREAM_DATA_FLAG_0RTT)
        s->early = true;
    rc = doq_rx_feed(&s->rx, data, datalen, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (rc < 0 && rc != DV_ENOMEM) {
        log_debug("doq listener: a malformed query stream (Message ID 0, one message, FIN); "
                  "closing with PROTOCOL_ERROR");
        return protocol_error(c);
    }
    if (rc == 1) {
        struct query_client qc = {.peer = c->peer, .local = d->local, .tcp = true,
                                  .ops = &doq_sink, .ctx = s};
        if (s->early)
            d->st.early_queries++;
        d->st.queries++;
        s->refs++;
        query_submit(d->qe, s->rx.msg, s->rx.len, &qc);
        stream_unref(s);
    }
    return 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    struct dq_stream *s = stream_user_data;

    if (ngtcp2_is_bidi_stream(sid))
        ngtcp2_conn_extend_max_streams_bidi(conn, 1); /* the client may open another */
    if (s)
        stream_forget(s);
    return 0;
}

/* A client that migrated (RFC 9000 9) proved its new address: its queries
 * count as from there now (access rules, rate limits, the query log). */
static int path_validated_cb(ngtcp2_conn *conn, uint32_t flags, const ngtcp2_path *path,
                             const ngtcp2_path *fallback, ngtcp2_path_validation_result res,
                             void *user_data)
{
    struct dq_conn *c = user_data;

    if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS &&
        path->remote.addrlen <= sizeof(c->peer.ss)) {
        memcpy(&c->peer.ss, path->remote.addr, path->remote.addrlen);
        c->peer.len = path->remote.addrlen;
    }
    return 0;
}

/* ---- address validation tokens and close accounting ---- */

/* RFC 9000 8.1.3: a token for the client's next connection, so that it
 * skips the Retry round trip (and keeps its 0-RTT) while we are loaded.
 * Bound to the client's IP address (not its port: the next connection
 * comes from another one) and to this listener's secret. */
static int handshake_completed_cb(ngtcp2_conn *conn, void *user_data)
{
    struct dq_conn *c = user_data;
    struct fe_doq *d = c->d;
    uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
    ngtcp2_ssize n = ngtcp2_crypto_generate_regular_token(
        token, d->secret, sizeof(d->secret), (const ngtcp2_sockaddr *)&c->peer.ss, c->peer.len,
        now_ts());

    if (n > 0 && ngtcp2_conn_submit_new_token(conn, token, (size_t)n) == 0)
        d->st.tokens_sent++;
    return 0; /* no token costs the client a Retry next time, nothing more */
}

/* Whether hd carries a NEW_TOKEN token of ours for peer, still fresh. A bad
 * one is no error (RFC 9000 8.1.3: the client may have it from another
 * server): the client is treated as unvalidated. */
static bool token_regular_ok(const struct fe_doq *d, const ngtcp2_pkt_hd *hd,
                             const struct net_addr *peer)
{
    return hd->tokenlen && hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR &&
           ngtcp2_crypto_verify_regular_token(hd->token, hd->tokenlen, d->secret,
                                              sizeof(d->secret),
                                              (const ngtcp2_sockaddr *)&peer->ss, peer->len,
                                              DOQ_TOKEN_LIFETIME_S * NGTCP2_SECONDS,
                                              now_ts()) == 0;
}

/* Counts why c ends: before its handshake completed (a bad certificate for
 * the client, a wrong ALPN, a client that went away) is a failure; a
 * listener shutting down is not. */
static void dq_conn_account_close(struct dq_conn *c)
{
    if (!c->d->closing && !ngtcp2_conn_get_handshake_completed2(c->conn))
        c->d->st.handshake_failures++;
}

static const ngtcp2_callbacks callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .encrypt = quic_crypto_encrypt_cb,
    .decrypt = quic_crypto_decrypt_cb,
    .hp_mask = quic_crypto_hp_mask_cb,
    .update_key = quic_crypto_update_key_cb,
    .delete_crypto_aead_ctx = quic_crypto_delete_aead_ctx_cb,
    .delete_crypto_cipher_ctx = quic_crypto_delete_cipher_ctx_cb,
    .get_path_challenge_data2 = ngtcp2_crypto_get_path_challenge_data2_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .rand = rand_cb,
    .get_new_connection_id2 = new_cid_cb,
    .remove_connection_id = remove_cid_cb,
    .recv_stream_data = recv_stream_data_cb,
    .stream_close = stream_close_cb,
    .path_validation = path_validated_cb,
    .handshake_completed = handshake_completed_cb,
};

/* ---- connections ---- */

static void dq_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dq_conn *c = w->data;
    int rv;

    c->refs++;
    c->in_ngtcp2 = true;
    rv = ngtcp2_conn_handle_expiry(c->conn, now_ts());
    c->in_ngtcp2 = false;
    if (rv == NGTCP2_ERR_IDLE_CLOSE && ngtcp2_conn_get_handshake_completed2(c->conn))
        c->d->st.idle_closed++;
    if (rv)
        dq_conn_close(c); /* the idle timeout, or the handshake's: nothing to say */
    else
        dq_conn_write(c);
    dq_conn_unref(c);
}

static struct dq_conn *dq_conn_find(struct fe_doq *d, const uint8_t *dcid, size_t len)
{
    for (struct dq_conn *c = d->conns; c; c = c->next)
        for (size_t i = 0; i < c->ncids; i++)
            if (c->cids[i].datalen == len && !memcmp(c->cids[i].data, dcid, len))
                return c;
    return NULL;
}

/* odcid: the client came back with a Retry token of ours for it; else
 * new_token: it presented a valid NEW_TOKEN token (its address is proven). */
static struct dq_conn *dq_conn_new(struct fe_doq *d, const ngtcp2_pkt_hd *hd, const ngtcp2_cid *odcid,
                                   bool new_token, const struct net_addr *peer)
{
    struct dq_conn *c = calloc(1, sizeof(*c));
    ngtcp2_settings st;
    ngtcp2_transport_params p;
    ngtcp2_cid scid;

    if (!c)
        return NULL;
    c->d = d;
    c->peer = *peer;
    ngtcp2_ccerr_default(&c->ccerr);
    ngtcp2_path_storage_init(&c->ps, (const struct sockaddr *)&d->rx_dst.ss, d->rx_dst.len,
                             (const struct sockaddr *)&peer->ss, peer->len, NULL);
    ngtcp2_settings_default(&st);
    st.initial_ts = now_ts();
    if (odcid) {
        st.token = hd->token;
        st.tokenlen = hd->tokenlen;
        st.token_type = NGTCP2_TOKEN_TYPE_RETRY;
    } else if (new_token) {
        st.token = hd->token;
        st.tokenlen = hd->tokenlen;
        st.token_type = NGTCP2_TOKEN_TYPE_NEW_TOKEN;
    }
    ngtcp2_transport_params_default(&p);
    p.initial_max_streams_bidi = DOQ_STREAMS;
    p.initial_max_streams_uni = 0;
    p.initial_max_stream_data_bidi_remote = 65536 + 2;
    p.initial_max_data = 1024 * 1024;
    p.max_idle_timeout = (uint64_t)d->opts.idle_timeout_ms * NGTCP2_MILLISECONDS;
    p.active_connection_id_limit = DOQ_MAX_CIDS;
    if (odcid) {
        p.original_dcid = *odcid;
        p.retry_scid = hd->dcid;
        p.retry_scid_present = 1;
    } else {
        p.original_dcid = hd->dcid;
    }
    p.original_dcid_present = 1;
    scid.datalen = DOQ_CID_LEN;
    rand_bytes(scid.data, scid.datalen);
    c->cids[c->ncids++] = scid;
    if (ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &c->ps.path, hd->version, &callbacks,
                               &st, &p, NULL, c) != 0) {
        free(c);
        return NULL;
    }
    if (!(c->ssl = wolfSSL_new(tlssrv_ctx_native(d->tls)))) {
        ngtcp2_conn_del(c->conn);
        free(c);
        return NULL;
    }
    c->tls = d->tls;
    tlssrv_ctx_ref(c->tls);
    c->ref.get_conn = get_conn;
    c->ref.user_data = c;
    wolfSSL_set_app_data(c->ssl, &c->ref);
    wolfSSL_set_accept_state(c->ssl);
    wolfSSL_set_quic_early_data_enabled(c->ssl, 1);
    (void)wolfSSL_UseALPN(c->ssl, (char *)"doq", 3, WOLFSSL_ALPN_FAILED_ON_MISMATCH);
    ngtcp2_conn_set_tls_native_handle(c->conn, c->ssl);
    ev_init(&c->timer, dq_conn_timer_cb);
    c->timer.data = c;
    c->refs = 1;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->nconns++;
    d->refs++;
    d->st.conns++;
    return c;
}

static void dq_conn_read(struct dq_conn *c, const uint8_t *pkt, size_t len,
                      const struct net_addr *peer)
{
    ngtcp2_pkt_info pi = {0};
    ngtcp2_path path = c->ps.path;
    int rv;

    path.remote.addr = (ngtcp2_sockaddr *)&peer->ss;
    path.remote.addrlen = peer->len;
    path.local.addr = (ngtcp2_sockaddr *)&c->d->rx_dst.ss;
    path.local.addrlen = c->d->rx_dst.len;
    c->refs++;
    c->in_ngtcp2 = true;
    rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, pkt, len, now_ts());
    c->in_ngtcp2 = false;
    if (rv) {
        if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING || rv == NGTCP2_ERR_DROP_CONN) {
            dq_conn_close(c);
        } else {
            if (c->ccerr.type == NGTCP2_CCERR_TYPE_TRANSPORT && c->ccerr.error_code == 0) {
                if (rv == NGTCP2_ERR_CRYPTO)
                    ngtcp2_ccerr_set_tls_alert(&c->ccerr,
                                               ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
                else
                    ngtcp2_ccerr_set_liberr(&c->ccerr, rv, NULL, 0);
            }
            log_debug("doq listener: closing a connection: %s", ngtcp2_strerror(rv));
            dq_conn_close_send(c);
        }
    } else {
        dq_conn_write(c);
    }
    dq_conn_unref(c);
}

/* ---- the socket ---- */

static void send_retry(struct fe_doq *d, const ngtcp2_pkt_hd *hd, const struct net_addr *peer)
{
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2], buf[DOQ_PKT];
    ngtcp2_cid scid;
    ngtcp2_ssize tl, n;

    scid.datalen = DOQ_CID_LEN;
    rand_bytes(scid.data, scid.datalen);
    tl = ngtcp2_crypto_generate_retry_token2(token, d->secret, sizeof(d->secret), hd->version,
                                             (const ngtcp2_sockaddr *)&peer->ss, peer->len, &scid,
                                             &hd->dcid, now_ts());
    if (tl < 0)
        return;
    n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid, &hd->dcid,
                                  token, (size_t)tl);
    if (n > 0) {
        d->st.retries++;
        send_pkt(d, buf, (size_t)n, peer, (const struct sockaddr *)&d->rx_dst.ss);
    }
}

static void send_version_negotiation(struct fe_doq *d, const ngtcp2_version_cid *vc,
                                     const struct net_addr *peer)
{
    uint8_t buf[DOQ_PKT], r;
    uint32_t sv[] = {NGTCP2_PROTO_VER_V1};

    rand_bytes(&r, 1);
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), r, vc->scid,
                                                          vc->scidlen, vc->dcid, vc->dcidlen, sv,
                                                          1);
    if (n > 0)
        send_pkt(d, buf, (size_t)n, peer, (const struct sockaddr *)&d->rx_dst.ss);
}

static size_t conns_of(const struct fe_doq *d, const struct net_addr *peer)
{
    size_t n = 0;

    for (const struct dq_conn *c = d->conns; c; c = c->next)
        n += net_addr_same_host(&c->peer, peer);
    return n;
}

static void handle_pkt(struct fe_doq *d, const uint8_t *pkt, size_t len,
                       const struct net_addr *peer)
{
    ngtcp2_version_cid vc;
    ngtcp2_pkt_hd hd;
    ngtcp2_cid odcid;
    struct dq_conn *c;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt, len, DOQ_CID_LEN);

    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        send_version_negotiation(d, &vc, peer);
        return;
    }
    if (rv)
        return;
    if ((c = dq_conn_find(d, vc.dcid, vc.dcidlen))) {
        dq_conn_read(c, pkt, len, peer);
        return;
    }
    if (d->closing || ngtcp2_accept(&hd, pkt, len) != 0)
        return; /* not the start of a connection */
    if (d->nconns >= d->opts.max_conns ||
        (d->opts.max_conns_per_client && conns_of(d, peer) >= d->opts.max_conns_per_client)) {
        d->st.refused++;
        return; /* the client's Initial goes unanswered: it gives up */
    }
    bool validated = false, new_token = false;
    if (hd.tokenlen && hd.token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
        if (ngtcp2_crypto_verify_retry_token2(&odcid, hd.token, hd.tokenlen, d->secret,
                                              sizeof(d->secret), hd.version,
                                              (const ngtcp2_sockaddr *)&peer->ss, peer->len,
                                              &hd.dcid, 10 * NGTCP2_SECONDS, now_ts()) != 0) {
            d->st.bad_tokens++;
            return;
        }
        validated = true;
    } else if (token_regular_ok(d, &hd, peer)) {
        new_token = true;
        d->st.tokens_accepted++;
    } else if (d->nconns >= d->opts.retry_above) {
        send_retry(d, &hd, peer);
        return;
    }
    if (!(c = dq_conn_new(d, &hd, validated ? &odcid : NULL, new_token, peer)))
        return;
    dq_conn_read(c, pkt, len, peer);
}

/* recvfrom, and on a wildcard socket the datagram's destination into
 * d->rx_dst (what replies leave from and the path's local address). */
static ssize_t recv_pkt(struct fe_doq *d, uint8_t *buf, size_t cap, struct net_addr *peer)
{
    uint8_t cbuf[DOQ_CMSG];
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr mh = {.msg_name = &peer->ss, .msg_namelen = sizeof(peer->ss),
                        .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = d->pktinfo ? cbuf : NULL,
                        .msg_controllen = d->pktinfo ? sizeof(cbuf) : 0};
    ssize_t n = recvmsg(d->fd, &mh, MSG_DONTWAIT);

    if (n < 0)
        return n;
    peer->len = mh.msg_namelen;
    int ifindex;
    if (!d->pktinfo || !net_pktinfo_read(&mh, net_addr_port(&d->bound), &d->rx_dst, &ifindex))
        d->rx_dst = d->bound;
    return n;
}

static void doq_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fe_doq *d = w->data;
    static uint8_t buf[DOQ_RX];

    d->refs++;
    for (int i = 0; i < 64 && !d->closing; i++) {
        struct net_addr peer;
        ssize_t n = recv_pkt(d, buf, sizeof(buf), &peer);
        if (n < 0)
            break;
        handle_pkt(d, buf, (size_t)n, &peer);
    }
    doq_unref(d);
}

struct fe_doq *fe_doq_new(struct ev_loop *loop, const struct net_addr *a, struct query_engine *qe,
                          const struct fe_doq_opts *o, const struct net_addr *local,
                          struct tlssrv_ctx *tls)
{
    struct fe_doq *d;
    int fd = net_listen(a, SOCK_DGRAM, 0);

    if (fd < 0)
        return NULL;
    if (!(d = calloc(1, sizeof(*d)))) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    d->loop = loop;
    d->qe = qe;
    d->local = local;
    d->opts = *o;
    if (!d->opts.max_conns)
        d->opts.max_conns = 1;
    d->fd = fd;
    d->refs = 1;
    d->bound.len = sizeof(d->bound.ss);
    if (getsockname(fd, (struct sockaddr *)&d->bound.ss, &d->bound.len) < 0)
        d->bound = *a;
    d->rx_dst = d->bound;
    d->pktinfo = net_pktinfo_enable(d->fd, &d->bound);
    rand_bytes(d->secret, sizeof(d->secret));
    fe_doq_set_tls(d, tls);
    ev_io_init(&d->io, doq_io_cb, fd, EV_READ);
    d->io.data = d;
    ev_io_start(loop, &d->io);
    return d;
}

void fe_doq_set_tls(struct fe_doq *d, struct tlssrv_ctx *tls)
{
    tlssrv_ctx_ref(tls);
    tlssrv_ctx_unref(d->tls);
    d->tls = tls;
}

void fe_doq_set_local(struct fe_doq *d, const struct net_addr *local)
{
    d->local = local;
}

void fe_doq_stats(const struct fe_doq *d, struct fe_doq_stats *out)
{
    *out = d->st;
    out->open = d->nconns;
}

void fe_doq_close(struct fe_doq *d)
{
    if (!d)
        return;
    d->closing = true;
    ev_io_stop(d->loop, &d->io);
    log_info("doq listener: %llu connections, %llu queries (%llu as 0-RTT), %llu Retry sent, "
             "%llu refused at the caps, %llu handshake failures, %llu NEW_TOKEN sent, "
             "%llu accepted",
             (unsigned long long)d->st.conns, (unsigned long long)d->st.queries,
             (unsigned long long)d->st.early_queries, (unsigned long long)d->st.retries,
             (unsigned long long)d->st.refused, (unsigned long long)d->st.handshake_failures,
             (unsigned long long)d->st.tokens_sent, (unsigned long long)d->st.tokens_accepted);
    while (d->conns) {
        struct dq_conn *c = d->conns;
        ngtcp2_ccerr_set_application_error(&c->ccerr, DOQ_NO_ERROR, NULL, 0);
        dq_conn_close_send(c);
    }
    doq_unref(d);
}

#else /* !DV_HAVE_TLS */

struct fe_doq *fe_doq_new(struct ev_loop *loop, const struct net_addr *a, struct query_engine *qe,
                          const struct fe_doq_opts *o, const struct net_addr *local,
                          struct tlssrv_ctx *tls)
{
    errno = ENOTSUP;
    return NULL;
}
void fe_doq_set_tls(struct fe_doq *d, struct tlssrv_ctx *tls) {}
void fe_doq_set_local(struct fe_doq *d, const struct net_addr *local) {}
void fe_doq_stats(const struct fe_doq *d, struct fe_doq_stats *out) { memset(out, 0, sizeof(*out)); }
void fe_doq_close(struct fe_doq *d) {}

#endif
