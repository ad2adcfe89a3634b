/* doq — the DNS-over-QUIC upstream (RFC 9250) on ngtcp2 with wolfSSL.
 *
 * One QUIC connection per upstream at a time, on its own connected UDP
 * socket, driven from the libev loop: reads feed ngtcp2, one timer follows
 * ngtcp2_conn_get_expiry (loss detection, ACK delay, idle, keep-alive and
 * pacing all live behind it), and every event ends in the write loop, which
 * stops when ngtcp2 has nothing to send or pacing says wait.
 *
 * Each query gets a new client bidirectional stream: the 2-byte length, the
 * query with Message ID 0 (the caller's ID goes back into the answer), then
 * FIN. Streams beyond the server's limit wait in a queue until it raises the
 * limit. The TLS session, the server's transport parameters and its latest
 * NEW_TOKEN are kept per upstream, so the next connection skips any Retry
 * and sends its queries as 0-RTT early data (RFC 9250 4.5 allows it for
 * opcode QUERY, the only one we forward); if the server rejects them they go
 * again after the handshake.
 * A connection lost with queries in flight (idle timeout, the path gone
 * quiet, a close without an error) moves them once to a new connection; a
 * DoQ error code from the server fails them so the caller can fail over.
 * After a network change the connection moves to the local address the
 * kernel now picks (client migration, the doq_migrate functions) where the
 * server allows it; otherwise a new connection with 0-RTT takes over.
 * A host with several addresses races handshakes (happy eyeballs, the
 * race_* functions): the first attempt is the primary and carries any 0-RTT
 * streams, later ones start 250 ms apart or at once after a failure, and the
 * first handshake to complete keeps the queries; the rest are closed.
 *
 * Lifetimes: a struct doq_req lives while any of these holds it — the
 * caller's xfer (until done or cancel), the upstream's wait list, the done list,
 * or an open stream whose user data points at it (a cancelled query's stream
 * is reset with REQUEST_CANCELLED and freed when ngtcp2 closes it). done is
 * never called from inside ngtcp2: completions collect in the conn_scope
 * every callback enters, delivered after ngtcp2 returns, so the owner may
 * send, cancel or close freely. */
#include "upstream/doq.h"

#include <stdlib.h>
#include <string.h>

#include "core/defer.h"
#include "core/err.h"
#include "dns/dns.h"
#include "upstream/upstream.h"

/* ---- the response stream reader (pure; see doq.h) ---------------------- */

void doq_rx_init(struct doq_rx *r)
{
    memset(r, 0, sizeof(*r));
    frame_init(&r->fr);
}

void doq_rx_free(struct doq_rx *r)
{
    frame_free(&r->fr);
    free(r->msg);
    doq_rx_init(r);
}

int doq_rx_feed(struct doq_rx *r, const uint8_t *data, size_t len, bool fin)
{
    const uint8_t *msg;
    size_t mlen;
    long used;

    if (r->fin)
        return DV_EPROTO; /* nothing may follow the end of the stream */
    r->fin = fin;
    if (r->msg)
        /* one message per stream: only the FIN may follow it */
        return len ? DV_EPROTO : 0;
    if (len == 0)
        return fin ? DV_EPROTO : 0;
    used = frame_read(&r->fr, data, len, &msg, &mlen);
    if (used < 0)
        return (int)used;
    if (!msg)
        return fin ? DV_EPROTO : 0; /* cut short by the FIN */
    if ((size_t)used != len || mlen < DNS_HDR_LEN || dns_get16(msg) != 0)
        return DV_EPROTO;
    r->msg = malloc(mlen);
    if (!r->msg)
        return DV_ENOMEM;
    memcpy(r->msg, msg, mlen);
    r->len = mlen;
    frame_free(&r->fr);
    return 1;
}

int doq_error_to_rc(uint64_t code)
{
    switch (code) {
    case DOQ_NO_ERROR:
    case DOQ_REQUEST_CANCELLED:
        return DV_ECONN;
    case DOQ_INTERNAL_ERROR:
    case DOQ_EXCESSIVE_LOAD:
        return DV_ESERVFAIL; /* the server gave up on it: another may not */
    default:
        return DV_EPROTO;
    }
}

#ifdef DV_HAVE_TLS

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP IPPROTO_UDP
#endif
#ifndef UDP_SEGMENT /* Linux 4.18; older C libraries lack the name */
#define UDP_SEGMENT 103
#endif

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "core/log.h"
#include "core/netmon.h"
#include "core/rand.h"
#include "upstream/conn.h"
#include "upstream/happy.h"
#include "tls/quic_crypto.h"
#include "tls/tls.h"

enum {
    DOQ_CID_LEN = 16,
    DOQ_TP_MAX = 256,      /* encoded 0-RTT transport parameters */
    DOQ_TOKEN_MAX = 512,   /* address-validation token from NEW_TOKEN */
    DOQ_RX_BATCH = 16,     /* datagrams per recvmmsg */
    DOQ_RX_ROUNDS = 4,     /* recvmmsg calls per wakeup before writing again */
    DOQ_MAX_UDP = 1472,    /* largest datagram we accept (transport parameter) */
    DOQ_GSO_SEGS = 10,     /* datagrams per send with UDP GSO */
};

#define DOQ_ALPN "doq"
#define DOQ_HANDSHAKE_TIMEOUT (10 * NGTCP2_SECONDS)
/* PINGs while answers are outstanding, so a slow answer never lets an
 * otherwise silent connection idle out; none when there is nothing to wait
 * for, so an unused connection goes away by the idle timeout */
#define DOQ_KEEPALIVE (500 * NGTCP2_MILLISECONDS)
/* nothing from the server for this long while an answer is awaited, though
 * the keep-alive PINGs above ask for ACKs: the path has died */
#define DOQ_STALL (1000 * NGTCP2_MILLISECONDS)
/* The coarsest the expiry timer may be (RFC 9002's kGranularity). On
 * loopback ngtcp2 wants each answer acknowledged srtt/8 later, a few
 * microseconds: a packet, an AEAD seal and a wake-up per query for an ACK the
 * next query's packet carries anyway when it comes within the millisecond.
 * The ACK is still well inside the 25 ms max_ack_delay we advertise. */
#define DOQ_TIMER_GRANULARITY NGTCP2_MILLISECONDS

struct doq_up;
struct doq_conn;

struct doq_req {
    struct conn_link link; /* on one of: up->wait, c->flight, a list being moved */
    struct doq_up *up;
    struct doq_conn *c;   /* while a stream of c carries it */
    struct conn_done done; /* done.x: NULL once done ran or the owner cancelled */
    int64_t sid;          /* -1 while queued */
    size_t sent;          /* bytes of wire handed to ngtcp2 */
    bool blocked;         /* stream flow control: wait for MAX_STREAM_DATA */
    bool retried;         /* already moved once to a new connection */
    struct doq_rx rx;
    size_t len;           /* prefix + query */
    uint8_t wire[];       /* 2-byte length, then the query with ID 0 */
};

struct doq_conn {
    struct doq_up *up;
    ngtcp2_conn *conn;
    ngtcp2_crypto_conn_ref ref;
    struct tls_conn *tls;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    ngtcp2_tstamp timer_at; /* the expiry timer was armed for, while active */
    ev_timer stall;        /* while answers are awaited: has the path died? */
    ngtcp2_tstamp last_rx, waiting_since;
    ngtcp2_tstamp tx_after_rx; /* the first send since last_rx; 0: none yet */
    ngtcp2_tstamp opened_at;
    bool waiting;
    ngtcp2_path_storage ps;
    struct list flight;   /* queries with an open stream, oldest first */
    ngtcp2_ccerr ccerr;    /* what we close with when we close */
    int fail_rc;           /* set by a callback that failed the connection */
    bool early;            /* 0-RTT offered */
    bool early_rejected;
    bool handshake_done;
    /* happy eyeballs: a racer is an attempt started while the primary
     * connection (up->conn) was still in its handshake; it carries no
     * streams until it wins */
    bool racer;
    bool lost_race;        /* closed because another attempt won */
    /* connection migration (doq_migrate and after it) */
    bool migrating;        /* moved to a new path that is being validated */
    bool migrate_failed;   /* ... which failed: doq_migrate_later_cb reconnects */
    bool migrate_wanted;   /* the route is gone: doq_migrate_later_cb moves c */
    bool moved_early;      /* moved on a send error, before netmon told us */
    struct doq_conn *rnext; /* in up->racers */
    size_t aidx;           /* its address in u->addrs */
    unsigned num;          /* for log lines */
    uint8_t *pending;      /* what the socket would not take yet (made on
                              first need): a datagram, or a GSO train */
    size_t pending_len;
    size_t pending_seg;    /* its segment size when a train, else 0 */
};

struct doq_up {
    struct upstream *u;
    struct tls_ctx *tls;
    struct doq_conn *conn;
    struct list wait;        /* waiting for a stream */
    struct conn_scope scope;  /* callback depth, finished queries, deferred free */
    struct defer kick;        /* runs the wait list before the loop next polls */
    uint8_t tp[DOQ_TP_MAX];   /* the server's transport parameters, for 0-RTT */
    size_t tplen;
    uint8_t token[DOQ_TOKEN_MAX]; /* proves our address next time: no Retry */
    size_t tokenlen;
    unsigned conns;           /* connections made, for log lines */
    /* happy eyeballs (RFC 8305) over several bootstrap addresses (u->addrs,
     * in upstream/happy.h order): a new handshake starts every 250 ms while
     * none has completed, or at once when one failed; the attempts run side
     * by side, the first to complete wins and the others are closed */
    size_t addr_idx;          /* the latest attempt's address */
    size_t race_left;         /* addresses still to try in this round */
    bool in_race;             /* the next connection continues a round */
    struct doq_conn *racers;  /* attempts besides conn, oldest first */
    ev_timer stagger;         /* starts the next attempt */
    struct ustats *st;        /* u's counters; ustats_sink once closed */
    struct defer migrate_later; /* migration work outside ngtcp2's calls */
    ngtcp2_tstamp unreach_at;   /* a send found no route: the connection after
                                   it was opened on the new network */
};

static uint8_t doq_rxbuf[DOQ_RX_BATCH][DOQ_MAX_UDP];
/* recvmmsg's headers over doq_rxbuf, set up once (doq_rx_headers): the
 * kernel writes back only msg_len and msg_flags, no name, no control data */
static struct mmsghdr doq_rxmm[DOQ_RX_BATCH];
static struct iovec doq_rxiov[DOQ_RX_BATCH];
/* Packets made in one flush collect here and leave in one send with UDP
 * GSO (UDP_SEGMENT: equal datagrams, the last one may be shorter) where
 * the kernel has it; doq_gso_off after a kernel refused it, or from the
 * start with DNSVEIL_DISABLE_GSO=1 in the environment, for where the kernel
 * takes it and the datagrams still come out wrong: qemu-user running a
 * big-endian build passes UDP_SEGMENT's value to the host unswapped. */
static uint8_t doq_txbuf[DOQ_GSO_SEGS * 1500];
static bool doq_gso_off;

static ngtcp2_tstamp doq_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

/* ---- lists --------------------------------------------------------------- */

static struct doq_req *doq_req_first(const struct list *l)
{
    return conn_elem(l->head, struct doq_req, link);
}

static struct doq_req *doq_req_next(const struct doq_req *q)
{
    return conn_elem(q->link.l.next, struct doq_req, link);
}

static void doq_req_free(struct doq_req *q)
{
    doq_rx_free(&q->rx);
    free(q);
}

/* Frees q once nothing holds it any more. */
static void doq_req_put(struct doq_req *q)
{
    if (!q->done.x && !q->done.queued && !q->c && !q->link.on)
        doq_req_free(q);
}

static void doq_req_reset_stream(struct doq_req *q)
{
    q->c = NULL;
    q->sid = -1;
    q->sent = 0;
    q->blocked = false;
    doq_rx_free(&q->rx);
}

/* Records the outcome; done runs when the callback leaves the scope. */
static void doq_req_finish(struct doq_req *q, int rc)
{
    struct doq_up *up = q->up;

    if (!q->done.x || q->done.queued)
        return;
    conn_scope_complete(&up->scope, &q->done, rc, q->rx.msg, q->rx.len);
}

static struct doq_req *doq_req_of(struct conn_done *d)
{
    return conn_elem(d, struct doq_req, done);
}

/* After done ran: q goes when nothing else holds it. */
static void doq_req_release(struct conn_done *d)
{
    doq_req_put(doq_req_of(d));
}

static void doq_up_destroy(void *arg)
{
    struct doq_up *up = arg;

    defer_cancel(&up->kick);
    defer_cancel(&up->migrate_later);
    tls_ctx_del(up->tls);
    free(up);
}

/* ---- connection ---------------------------------------------------------- */

static void doq_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void doq_conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void doq_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void doq_race_stagger_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void doq_race_arm(struct doq_up *up, double after);
static void doq_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void doq_conn_watch_stall(struct doq_conn *c, bool waiting);
static void doq_up_schedule(struct doq_up *up);
static int doq_migrate_validated_cb(ngtcp2_conn *conn, uint32_t flags, const ngtcp2_path *path,
                                    const ngtcp2_path *fallback,
                                    ngtcp2_path_validation_result res, void *user_data);
static void doq_migrate_later_cb(void *arg);
static void doq_migrate_soon(struct doq_conn *c);
static void doq_migrate_abandoned(struct doq_conn *c);
static bool doq_migrate(struct doq_up *up, const char *why);
static bool doq_can_migrate(struct doq_conn *c);

static ngtcp2_conn *doq_get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct doq_conn *c = ref->user_data;
    return c->conn;
}

static void doq_rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx)
{
    rand_bytes(dest, destlen);
}

static int doq_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, ngtcp2_stateless_reset_token *token,
                      size_t cidlen, void *user_data)
{
    rand_bytes(cid->data, cidlen);
    cid->datalen = cidlen;
    rand_bytes(token->data, sizeof(token->data));
    return 0;
}

/* A broken answer stream: the whole connection is closed with
 * DOQ_PROTOCOL_ERROR (RFC 9250 4.3.3), the query fails with rc. */
static int doq_conn_protocol_error(struct doq_conn *c, struct doq_req *q, int rc)
{
    if (q)
        doq_req_finish(q, rc);
    ngtcp2_ccerr_set_application_error(&c->ccerr, DOQ_PROTOCOL_ERROR, NULL, 0);
    c->fail_rc = DV_EPROTO;
    return NGTCP2_ERR_CALLBACK_FAILURE;
}

static int doq_recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    struct doq_conn *c = user_data;
    struct doq_req *q = stream_user_data;
    bool fin = flags & NGTCP2_STREAM_DATA_FLAG_FIN;
    int rc;

    /* the data is consumed here, whatever becomes of it */
    ngtcp2_conn_extend_max_stream_offset(conn, sid, datalen);
    ngtcp2_conn_extend_max_offset(conn, datalen);
    if (!q) {
        log_debug("upstream %s: doq: data on unknown stream %lld", c->up->u->name,
                  (long long)sid);
        return doq_conn_protocol_error(c, NULL, DV_EPROTO);
    }
    rc = doq_rx_feed(&q->rx, data, datalen, fin);
    if (rc == 1) {
        doq_req_finish(q, 0);
        return 0;
    }
    if (rc == DV_ENOMEM) {
        doq_req_finish(q, DV_ENOMEM);
        return 0;
    }
    if (rc < 0) {
        log_warn("upstream %s: doq: malformed answer stream %lld (closing with PROTOCOL_ERROR)",
                 c->up->u->name, (long long)sid);
        return doq_conn_protocol_error(c, q, DV_EPROTO);
    }
    return 0;
}

static int doq_stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final_size,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    struct doq_conn *c = user_data;
    struct doq_req *q = stream_user_data;

    if (q && q->done.x && !q->rx.msg) {
        log_debug("upstream %s: doq: stream %lld reset with error 0x%llx", c->up->u->name,
                  (long long)sid, (unsigned long long)app_error_code);
        ustats_doq_error(c->up->st, app_error_code);
        doq_req_finish(q, doq_error_to_rc(app_error_code));
    }
    return 0;
}

static int doq_stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    struct doq_conn *c = user_data;
    struct doq_req *q = stream_user_data;

    if (!q)
        return 0;
    if (q->done.x && !q->rx.msg && (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        ustats_doq_error(c->up->st, app_error_code);
    if (q->done.x && !q->rx.msg)
        doq_req_finish(q, (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)
                           ? doq_error_to_rc(app_error_code)
                           : DV_EPROTO);
    conn_list_unlink(&q->link);
    q->c = NULL;
    q->sid = -1;
    doq_req_put(q);
    return 0;
}

static int doq_extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max_data,
                                     void *user_data, void *stream_user_data)
{
    struct doq_req *q = stream_user_data;

    if (q)
        q->blocked = false;
    return 0;
}

static int doq_extend_max_streams_cb(ngtcp2_conn *conn, uint64_t max_streams, void *user_data)
{
    struct doq_conn *c = user_data;

    /* queued queries get their streams after ngtcp2 returns */
    if (c->up->wait.head)
        doq_up_schedule(c->up);
    return 0;
}

/* The server refused our early data: ngtcp2 forgot every stream opened in
 * 0-RTT, so their queries go back to the front of the queue, to be sent
 * again once the handshake is done. */
static int doq_early_data_rejected_cb(ngtcp2_conn *conn, void *user_data)
{
    struct doq_conn *c = user_data;
    struct list again = {0};
    unsigned n = 0;

    c->early_rejected = true;
    while (c->flight.head) {
        struct doq_req *q = doq_req_first(&c->flight);
        conn_list_unlink(&q->link);
        doq_req_reset_stream(q);
        if (q->done.x && !q->done.queued) {
            conn_list_push(&again, &q->link);
            n++;
        } else {
            doq_req_put(q);
        }
    }
    conn_list_splice_front(&c->up->wait, &again);
    log_debug("upstream %s: doq: 0-RTT rejected, %u queries will be sent again",
              c->up->u->name, n);
    return 0;
}

static int doq_handshake_completed_cb(ngtcp2_conn *conn, void *user_data)
{
    struct doq_conn *c = user_data;
    struct doq_up *up = c->up;
    ngtcp2_ssize n;

    if (tls_conn_quic_completed(c->tls)) {
        /* pins or ALPN refused it: close as TLS would, bad_certificate */
        ngtcp2_ccerr_set_tls_alert(&c->ccerr, 42, NULL, 0);
        c->fail_rc = DV_ETLS;
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    c->handshake_done = true;
    if (c->early && !tls_conn_early_accepted(c->tls)) {
        /* wolfSSL only tells once the handshake is over */
        int rv = ngtcp2_conn_tls_early_data_rejected(conn);
        if (rv)
            return rv;
    }
    n = ngtcp2_conn_encode_0rtt_transport_params(conn, up->tp, sizeof(up->tp));
    up->tplen = n > 0 ? (size_t)n : 0;
    ustats_handshake(up->st, tls_conn_resumed(c->tls) ? USTATS_HS_RESUMED : USTATS_HS_FULL);
    if (c->early)
        ustats_handshake(up->st, c->early_rejected ? USTATS_HS_EARLY_REJECTED
                                                   : USTATS_HS_EARLY_ACCEPTED);
    log_debug("upstream %s: doq: connection %u ready (%s)", up->u->name, c->num,
              !c->early ? "no 0-RTT" : c->early_rejected ? "0-RTT rejected" : "0-RTT accepted");
    return 0;
}

/* A server that validates addresses hands out tokens; the next connection
 * presents the newest one and skips the Retry round trip (which would also
 * cost the 0-RTT data sent before it). */
static int doq_recv_new_token_cb(ngtcp2_conn *conn, const uint8_t *token, size_t tokenlen,
                             void *user_data)
{
    struct doq_conn *c = user_data;

    if (tokenlen <= sizeof(c->up->token)) {
        memcpy(c->up->token, token, tokenlen);
        c->up->tokenlen = tokenlen;
    }
    return 0;
}

static const ngtcp2_callbacks doq_conn_callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .encrypt = quic_crypto_encrypt_cb,
    .decrypt = quic_crypto_decrypt_cb,
    .hp_mask = quic_crypto_hp_mask_cb,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .update_key = quic_crypto_update_key_cb,
    .delete_crypto_aead_ctx = quic_crypto_delete_aead_ctx_cb,
    .delete_crypto_cipher_ctx = quic_crypto_delete_cipher_ctx_cb,
    .get_path_challenge_data2 = ngtcp2_crypto_get_path_challenge_data2_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .rand = doq_rand_cb,
    .get_new_connection_id2 = doq_new_cid_cb,
    .handshake_completed = doq_handshake_completed_cb,
    .recv_stream_data = doq_recv_stream_data_cb,
    .stream_reset = doq_stream_reset_cb,
    .stream_close = doq_stream_close_cb,
    .extend_max_stream_data = doq_extend_max_stream_data_cb,
    .extend_max_local_streams_bidi = doq_extend_max_streams_cb,
    .tls_early_data_rejected = doq_early_data_rejected_cb,
    .recv_new_token = doq_recv_new_token_cb,
    .path_validation = doq_migrate_validated_cb,
};

static int doq_conn_open(struct doq_up *up, struct doq_conn **pc)
{
    struct upstream *u = up->u;
    struct doq_conn *c = calloc(1, sizeof(*c));
    struct sockaddr_storage local;
    socklen_t locallen = sizeof(local);
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    WOLFSSL *ssl;
    int rc = DV_ENOMEM;

    *pc = NULL;
    if (!c)
        return DV_ENOMEM;
    c->up = up;
    ngtcp2_ccerr_default(&c->ccerr);
    if (!conn_has_addr(u, u->name)) {
        free(c);
        return DV_ECONN;
    }
    c->aidx = up->addr_idx % u->n_addrs;
    const struct net_addr *addr = &u->addrs[c->aidx];
    if (!up->in_race)
        up->race_left = u->n_addrs ? u->n_addrs - 1 : 0;
    up->in_race = false;
    c->opened_at = doq_now();
    c->fd = conn_connect(addr, SOCK_DGRAM, u->name);
    if (c->fd < 0) {
        rc = c->fd;
        c->fd = -1;
        goto fail;
    }
    if (getsockname(c->fd, (struct sockaddr *)&local, &locallen) < 0) {
        log_debug("upstream %s: doq: getsockname: %s", u->name, strerror(errno));
        rc = DV_ECONN;
        goto fail;
    }
    ngtcp2_path_storage_init(&c->ps, (const struct sockaddr *)&local, locallen,
                             (const struct sockaddr *)&addr->ss, addr->len, NULL);

    rc = tls_conn_new_quic(up->tls, &c->early, &c->tls);
    if (rc)
        goto fail;
    ssl = tls_conn_native(c->tls);
    c->ref.get_conn = doq_get_conn;
    c->ref.user_data = c;
    wolfSSL_set_app_data(ssl, &c->ref);
    /* early data needs both the ticket and the parameters it was issued with */
    if (c->early && up->tplen == 0) {
        wolfSSL_set_quic_early_data_enabled(ssl, 0);
        c->early = false;
    }

    ngtcp2_settings_default(&settings);
    settings.initial_ts = doq_now();
    settings.handshake_timeout = DOQ_HANDSHAKE_TIMEOUT;
    if (up->tokenlen) {
        settings.token = up->token;
        settings.tokenlen = up->tokenlen;
    }
    ngtcp2_transport_params_default(&params);
    /* the server opens no streams; ours carry one answer each, up to 64 KB */
    params.initial_max_streams_bidi = 0;
    params.initial_max_streams_uni = 0;
    params.initial_max_stream_data_bidi_local = 128 * 1024;
    params.initial_max_data = 1024 * 1024;
    params.max_idle_timeout = (uint64_t)u->cfg.idle_timeout_ms * NGTCP2_MILLISECONDS;
    params.max_udp_payload_size = DOQ_MAX_UDP;

    dcid.datalen = DOQ_CID_LEN;
    rand_bytes(dcid.data, dcid.datalen);
    scid.datalen = DOQ_CID_LEN;
    rand_bytes(scid.data, scid.datalen);
    if (ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &c->ps.path, NGTCP2_PROTO_VER_V1,
                               &doq_conn_callbacks, &settings, &params, NULL, c) != 0) {
        rc = DV_ENOMEM;
        goto fail;
    }
    ngtcp2_conn_set_tls_native_handle(c->conn, ssl);
    if (c->early &&
        ngtcp2_conn_decode_and_set_0rtt_transport_params(c->conn, up->tp, up->tplen) != 0) {
        wolfSSL_set_quic_early_data_enabled(ssl, 0);
        c->early = false;
    }

    ev_io_init(&c->rio, doq_conn_read_cb, c->fd, EV_READ);
    ev_io_init(&c->wio, doq_conn_write_cb, c->fd, EV_WRITE);
    ev_init(&c->timer, doq_conn_timer_cb);
    conn_stall_init(&c->stall, doq_conn_stall_cb, c);
    c->rio.data = c->wio.data = c->timer.data = c;
    ev_io_start(u->loop, &c->rio);
    if (up->race_left)
        doq_race_arm(up, HAPPY_STAGGER_MS / 1000.0);
    c->num = ++up->conns;
    ustats_conn_opened(up->st);
    char as[NET_ADDRSTRLEN + 3] = "";
    if (u->n_addrs > 1) /* which of the host's addresses */
        snprintf(as, sizeof(as), " (%s)", net_addr_str(addr, (char[NET_ADDRSTRLEN]){0},
                                                       NET_ADDRSTRLEN));
    log_debug("upstream %s: doq: connection %u to %s%s%s", u->name, up->conns, u->host, as,
              c->early ? " with 0-RTT" : "");
    *pc = c;
    return 0;
fail:
    if (c->conn)
        ngtcp2_conn_del(c->conn);
    tls_conn_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    free(c->pending);
    free(c);
    return rc;
}

/* One send of len bytes: a datagram, or when seg is set a train of
 * datagrams of seg bytes (the last may be shorter) through UDP GSO. */
static ssize_t doq_sendmsg(int fd, const uint8_t *buf, size_t len, size_t seg)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (!seg)
        return send(fd, buf, len, 0);
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s16 = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s16, sizeof(s16));
    return sendmsg(fd, &mh, 0);
}

/* Sends len bytes of datagrams of seg bytes each (0: one datagram). What
 * the socket would not take yet waits in c->pending; false when the
 * connection is over. */
static bool doq_conn_send(struct doq_conn *c, const uint8_t *pkt, size_t len, size_t seg)
{
    if (seg >= len)
        seg = 0; /* a single datagram */
    for (;;) {
        if (seg && doq_gso_off) { /* one by one */
            for (size_t off = 0; off < len; off += seg) {
                size_t n = len - off < seg ? len - off : seg;
                if (!doq_conn_send(c, pkt + off, n, 0))
                    return false;
                if (c->pending_len) /* the rest is QUIC's to repair */
                    return true;
            }
            return true;
        }
        if (doq_sendmsg(c->fd, pkt, len, seg) >= 0) {
            ustats_bytes(c->up->st, 0, len);
            if (!c->tx_after_rx)
                c->tx_after_rx = doq_now();
            return true;
        }
        if (errno == EINTR)
            continue;
        if (seg && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
                    errno == EOPNOTSUPP)) {
            /* no GSO here (an old kernel, or a device without checksum
             * offload): datagram by datagram from now on */
            log_debug("upstream %s: doq: no UDP GSO (%s)", c->up->u->name, strerror(errno));
            doq_gso_off = true;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c->pending && !(c->pending = malloc(sizeof(doq_txbuf))))
                return true; /* dropped: QUIC's to repair */
            if (pkt != c->pending)
                memmove(c->pending, pkt, len); /* pkt may lie inside it */
            c->pending_len = len;
            c->pending_seg = seg;
            ev_io_start(c->up->u->loop, &c->wio);
            return true;
        }
        /* a lost datagram is QUIC's to repair; only a refused port is final,
         * or a lost route unless the connection can move (doq_can_migrate) */
        if (errno == ECONNREFUSED ||
            ((errno == EHOSTUNREACH || errno == ENETUNREACH) && !doq_can_migrate(c))) {
            log_debug("upstream %s: doq: send: %s", c->up->u->name, strerror(errno));
            if (errno != ECONNREFUSED)
                c->up->unreach_at = doq_now();
            return false;
        }
        if (errno == EHOSTUNREACH || errno == ENETUNREACH)
            doq_migrate_soon(c);
        return true;
    }
}

/* The next stream with bytes ngtcp2 may take now, oldest first. */
static struct doq_req *doq_conn_next_tx(struct doq_conn *c)
{
    for (struct doq_req *q = doq_req_first(&c->flight); q; q = doq_req_next(q))
        if (q->sent < q->len && !q->blocked)
            return q;
    return NULL;
}

/* Is there a stream after q with bytes ngtcp2 may take now? */
static bool doq_conn_next_tx_after(struct doq_req *q)
{
    for (q = doq_req_next(q); q; q = doq_req_next(q))
        if (q->sent < q->len && !q->blocked)
            return true;
    return false;
}

/* Re-arms only when ngtcp2's expiry moved: most flushes leave it where it
 * was, and a stop and start in libev's heap costs more than the flush. */
static void doq_conn_arm_timer(struct doq_conn *c)
{
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
    struct ev_loop *loop = c->up->u->loop;
    ngtcp2_tstamp now;

    if (expiry == UINT64_MAX) {
        ev_timer_stop(loop, &c->timer);
        return;
    }
    if (ev_is_active(&c->timer) && expiry == c->timer_at)
        return;
    now = doq_now();
    c->timer_at = expiry;
    /* not while the handshake runs or stream data waits for congestion
     * control or pacing: those deadlines are meant to the microsecond */
    if (c->handshake_done && !doq_conn_next_tx(c) && expiry < now + DOQ_TIMER_GRANULARITY)
        expiry = now + DOQ_TIMER_GRANULARITY;
    conn_timer_arm(loop, &c->timer, expiry > now ? (double)(expiry - now) / NGTCP2_SECONDS : 0.);
}

/* Writes until ngtcp2 has nothing more or congestion control and pacing say
 * wait (the timer then wakes us). 0, or an ngtcp2 error for the connection. */
static int doq_conn_write(struct doq_conn *c)
{
    ngtcp2_tstamp ts = doq_now();
    size_t maxlen = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);

    size_t off = 0, seg = 0; /* the train in doq_txbuf so far, its datagram size */

    if (c->pending_len)
        return 0; /* the socket is full; doq_conn_write_cb comes back */
    if (maxlen > sizeof(doq_txbuf) / DOQ_GSO_SEGS)
        maxlen = sizeof(doq_txbuf) / DOQ_GSO_SEGS;
    for (;;) {
        struct doq_req *q = doq_conn_next_tx(c);
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_FIN;
        ngtcp2_vec v;
        ngtcp2_ssize wdatalen = -1;
        ngtcp2_ssize n;
        ngtcp2_pkt_info pi;

        if (q) {
            v.base = q->wire + q->sent;
            v.len = q->len - q->sent;
            /* room for the next stream's query in this packet, if one
             * waits; the last one closes the packet in this call rather
             * than in one more with no stream. A packet that fills up
             * while more wait is padded to the full size, so a burst
             * makes datagrams of one size: a GSO train */
            if (doq_conn_next_tx_after(q))
                flags |= NGTCP2_WRITE_STREAM_FLAG_MORE | NGTCP2_WRITE_STREAM_FLAG_PADDING;
        }
        n = ngtcp2_conn_writev_stream(c->conn, &c->ps.path, &pi, doq_txbuf + off, maxlen, &wdatalen,
                                      flags, q ? q->sid : -1, q ? &v : NULL, q ? 1 : 0, ts);
        if (q && wdatalen >= 0)
            q->sent += (size_t)wdatalen;
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_WRITE_MORE:
                continue; /* the packet has room for more streams */
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                q->blocked = true;
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
            case NGTCP2_ERR_STREAM_NOT_FOUND:
                q->sent = q->len; /* the server stopped it; stream_close follows */
                continue;
            default:
                ngtcp2_ccerr_set_liberr(&c->ccerr, (int)n, NULL, 0);
                return (int)n;
            }
        }
        if (n == 0)
            break;
        if (off && (size_t)n > seg) {
            /* longer than the train's datagrams: the train goes first (if
             * the socket then is full, this packet is QUIC's to repair) */
            if (!doq_conn_send(c, doq_txbuf, off, seg))
                return NGTCP2_ERR_DROP_CONN;
            if (c->pending_len)
                break;
            memmove(doq_txbuf, doq_txbuf + off, (size_t)n);
            off = 0;
        }
        if (!off)
            seg = (size_t)n;
        off += (size_t)n;
        /* a shorter datagram ends a train, and so does a full buffer */
        if ((size_t)n < seg || off + maxlen > sizeof(doq_txbuf) || doq_gso_off) {
            if (!doq_conn_send(c, doq_txbuf, off, seg))
                return NGTCP2_ERR_DROP_CONN;
            off = 0;
            if (c->pending_len)
                break;
        }
    }
    if (off && !doq_conn_send(c, doq_txbuf, off, seg))
        return NGTCP2_ERR_DROP_CONN;
    ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
    return 0;
}

/* Keep-alive only while some query still waits for its answer. */
static void doq_conn_update_keepalive(struct doq_conn *c)
{
    bool waiting = false;

    for (struct doq_req *q = doq_req_first(&c->flight); q && !waiting; q = doq_req_next(q))
        waiting = q->done.x && !q->rx.msg;
    ngtcp2_conn_set_keep_alive_timeout(c->conn, waiting ? DOQ_KEEPALIVE : UINT64_MAX);
    doq_conn_watch_stall(c, waiting);
}

/* Gives queued queries streams, as many as the server allows: before the
 * handshake only when 0-RTT is on. */
static int doq_conn_open_streams(struct doq_conn *c)
{
    struct doq_up *up = c->up;

    if (c->racer || (!c->handshake_done && (!c->early || c->early_rejected)))
        return 0;
    while (up->wait.head) {
        struct doq_req *q = doq_req_first(&up->wait);
        int64_t sid;
        int rv = ngtcp2_conn_open_bidi_stream(c->conn, &sid, q);
        if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
            break; /* doq_extend_max_streams_cb calls us back */
        if (rv) {
            ngtcp2_ccerr_set_liberr(&c->ccerr, rv, NULL, 0);
            return rv;
        }
        conn_list_unlink(&q->link);
        q->sid = sid;
        q->c = c;
        conn_list_push(&c->flight, &q->link);
    }
    return 0;
}

static void doq_race_won(struct doq_up *up, struct doq_conn *w);
static bool doq_conn_flush(struct doq_conn *c);

/* Takes racer c out of up->racers. */
static void doq_race_unlink(struct doq_up *up, struct doq_conn *c)
{
    for (struct doq_conn **p = &up->racers; *p; p = &(*p)->rnext) {
        if (*p == c) {
            *p = c->rnext;
            break;
        }
    }
    c->rnext = NULL;
    c->racer = false;
}

/* The primary attempt failed: the oldest racer becomes the primary. */
static bool doq_race_promote(struct doq_up *up)
{
    struct doq_conn *r = up->racers;

    if (!r)
        return false;
    doq_race_unlink(up, r);
    up->conn = r;
    return true;
}

/* A connection died before its handshake: the next one goes to the next
 * address. True while this round has addresses left to try. */
static bool doq_race_next(struct doq_up *up)
{
    size_t n = up->u->n_addrs;

    if (n < 2)
        return false;
    up->addr_idx = (up->addr_idx + 1) % n;
    if (!up->race_left)
        return false;
    up->race_left--;
    up->in_race = true;
    return true;
}

/* Ends c: sends our CONNECTION_CLOSE when send_close, and fails or requeues
 * its queries. retry moves each unanswered query to the next connection
 * once; otherwise they fail with rc. When the connection never got ready,
 * the queued queries fail too: there is no point in trying again at once. */
static void doq_conn_fail(struct doq_conn *c, int rc, bool retry, bool send_close)
{
    struct doq_up *up = c->up;
    struct ev_loop *loop = up->u->loop;
    struct list again = {0};
    bool racer = c->racer; /* a side attempt: the queue is not its to fail */

    if (send_close && !ngtcp2_conn_in_closing_period(c->conn) &&
        !ngtcp2_conn_in_draining_period(c->conn) && !c->pending_len) {
        ngtcp2_pkt_info pi;
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
            c->conn, &c->ps.path, &pi, doq_txbuf, sizeof(doq_txbuf), &c->ccerr, doq_now());
        if (n > 0)
            (void)send(c->fd, doq_txbuf, (size_t)n, 0);
    }
    if (up->conn == c) {
        up->conn = NULL;
        /* not even set up: a racer takes over, or the next address gets
         * the queries (once per round) */
        if (!c->handshake_done && !c->lost_race && (doq_race_promote(up) || doq_race_next(up)))
            retry = true;
    } else if (c->racer) {
        doq_race_unlink(up, c);
    }
    /* a failed attempt: the next address at once (RFC 8305 5) */
    if (!c->handshake_done && !c->lost_race && up->conn && up->race_left)
        doq_race_arm(up, 0.);
    while (c->flight.head) {
        struct doq_req *q = doq_req_first(&c->flight);
        conn_list_unlink(&q->link);
        doq_req_reset_stream(q);
        if (q->done.x && !q->done.queued && c->lost_race) {
            conn_list_push(&again, &q->link); /* early data to the loser: not a retry */
        } else if (q->done.x && !q->done.queued && retry && !q->retried) {
            q->retried = true;
            conn_list_push(&again, &q->link);
        } else {
            doq_req_finish(q, rc);
            doq_req_put(q);
        }
    }
    conn_list_splice_front(&up->wait, &again);
    if (!c->handshake_done && !retry && !racer && !c->lost_race) {
        while (up->wait.head) {
            struct doq_req *q = doq_req_first(&up->wait);
            conn_list_unlink(&q->link);
            doq_req_finish(q, rc);
        }
    }
    doq_migrate_abandoned(c);
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    ev_timer_stop(loop, &c->timer);
    ev_timer_stop(loop, &c->stall);
    ngtcp2_conn_del(c->conn);
    tls_conn_free(c->tls);
    close(c->fd);
    free(c->pending);
    free(c);
    ustats_conn_closed(up->st);
    if (up->wait.head)
        doq_up_schedule(up);
}

/* Decides what an ngtcp2 error means for c's queries, then drops c. */
static void doq_conn_liberr(struct doq_conn *c, int rv)
{
    const char *name = c->up->u->name;
    bool ready = c->handshake_done;

    switch (rv) {
    case NGTCP2_ERR_DRAINING: {
        /* the server closed (or reset) the connection */
        const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(c->conn);
        if (e->type == NGTCP2_CCERR_TYPE_APPLICATION && e->error_code != DOQ_NO_ERROR) {
            log_info("upstream %s: doq: server closed the connection with error 0x%llx",
                     name, (unsigned long long)e->error_code);
            ustats_doq_error(c->up->st, e->error_code);
            doq_conn_fail(c, doq_error_to_rc(e->error_code), false, false);
        } else if (e->type == NGTCP2_CCERR_TYPE_TRANSPORT && e->error_code != NGTCP2_NO_ERROR) {
            bool tls = (e->error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR;
            log_warn("upstream %s: doq: server closed the connection: %s 0x%llx", name,
                     tls ? "TLS alert" : "transport error",
                     (unsigned long long)(tls ? e->error_code & 0xff : e->error_code));
            doq_conn_fail(c, tls ? DV_ETLS : DV_ECONN, false, false);
        } else {
            log_debug("upstream %s: doq: server closed the connection", name);
            doq_conn_fail(c, DV_ECONN, ready, false);
        }
        return;
    }
    case NGTCP2_ERR_IDLE_CLOSE:
        log_debug("upstream %s: doq: connection idle, closed", name);
        doq_conn_fail(c, DV_ECONN, true, false);
        return;
    case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
        log_warn("upstream %s: doq: handshake timed out", name);
        doq_conn_fail(c, DV_ETIMEOUT, false, false);
        return;
    case NGTCP2_ERR_RECV_VERSION_NEGOTIATION:
        log_warn("upstream %s: doq: server does not speak QUIC v1", name);
        doq_conn_fail(c, DV_ECONN, false, false);
        return;
    case NGTCP2_ERR_CRYPTO:
        tls_conn_quic_failed(c->tls);
        ngtcp2_ccerr_set_tls_alert(&c->ccerr, ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
        doq_conn_fail(c, DV_ETLS, false, true);
        return;
    case NGTCP2_ERR_CALLBACK_FAILURE:
        if (c->fail_rc) {
            doq_conn_fail(c, c->fail_rc, false, true);
            return;
        }
        break;
    case NGTCP2_ERR_DROP_CONN:
        doq_conn_fail(c, DV_ECONN, ready, false);
        return;
    default:
        break;
    }
    log_debug("upstream %s: doq: connection failed: %s", name, ngtcp2_strerror(rv));
    if (c->ccerr.type == NGTCP2_CCERR_TYPE_TRANSPORT && c->ccerr.error_code == NGTCP2_NO_ERROR)
        ngtcp2_ccerr_set_liberr(&c->ccerr, rv, NULL, 0);
    doq_conn_fail(c, DV_ECONN, ready, true);
}

/* ---- happy eyeballs: racing handshakes ---------------------------------- */

/* The next attempt starts after `after` seconds. */
static void doq_race_arm(struct doq_up *up, double after)
{
    conn_timer_arm(up->u->loop, &up->stagger, after);
}

/* No handshake has completed in 250 ms (or an attempt failed): start one
 * to the next address beside those still running (RFC 8305 5). */
static void doq_race_stagger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doq_up *up = w->data;
    struct upstream *u = up->u;
    char a1[NET_ADDRSTRLEN], a2[NET_ADDRSTRLEN];

    if (!up->conn || up->conn->handshake_done)
        return;
    conn_scope_enter(&up->scope);
    while (up->conn && doq_race_next(up)) {
        struct doq_conn *r, **tail;
        size_t prev = up->addr_idx ? up->addr_idx - 1 : u->n_addrs - 1;
        log_debug("upstream %s: doq: no handshake with %s yet, racing %s", u->name,
                  net_addr_str(&u->addrs[prev], a1, sizeof(a1)),
                  net_addr_str(&u->addrs[up->addr_idx], a2, sizeof(a2)));
        if (doq_conn_open(up, &r) != 0)
            continue; /* refused at once: the next address */
        r->racer = true;
        for (tail = &up->racers; *tail; tail = &(*tail)->rnext)
            ;
        *tail = r;
        doq_conn_flush(r);
        break;
    }
    conn_scope_leave(&up->scope);
}

/* w completed its handshake first: it is the connection now, every other
 * attempt is closed (CONNECTION_CLOSE, DOQ_NO_ERROR) and any early data
 * they carried goes to w. */
static void doq_race_won(struct doq_up *up, struct doq_conn *w)
{
    struct doq_conn *old = up->conn;
    char as[NET_ADDRSTRLEN];

    ev_timer_stop(up->u->loop, &up->stagger);
    up->race_left = 0;
    up->addr_idx = w->aidx; /* the next connection starts where this one won */
    if (w->racer) {
        doq_race_unlink(up, w);
        up->conn = w;
    }
    if (old && old != w) {
        old->lost_race = true;
        ngtcp2_ccerr_set_application_error(&old->ccerr, DOQ_NO_ERROR, NULL, 0);
        log_debug("upstream %s: doq: connection %u (%s) won the race; closing connection %u",
                  up->u->name, w->num, net_addr_str(&up->u->addrs[w->aidx], as, sizeof(as)),
                  old->num);
        doq_conn_fail(old, DV_ECONN, true, true);
    }
    while (up->racers) {
        struct doq_conn *r = up->racers;
        r->lost_race = true;
        ngtcp2_ccerr_set_application_error(&r->ccerr, DOQ_NO_ERROR, NULL, 0);
        log_debug("upstream %s: doq: connection %u (%s) won the race; closing connection %u",
                  up->u->name, w->num, net_addr_str(&up->u->addrs[w->aidx], as, sizeof(as)),
                  r->num);
        doq_conn_fail(r, DV_ECONN, true, true);
    }
}

/* Ends the race without a winner: every racer closed, no attempt more. */
static void doq_race_stop(struct doq_up *up)
{
    ev_timer_stop(up->u->loop, &up->stagger);
    up->race_left = 0;
    while (up->racers) {
        struct doq_conn *r = up->racers;
        r->lost_race = true;
        ngtcp2_ccerr_set_application_error(&r->ccerr, DOQ_NO_ERROR, NULL, 0);
        doq_conn_fail(r, DV_ECANCEL, false, true);
    }
}

/* Every event ends here: new streams, the write loop, the timer. false when
 * the connection was dropped. */
/* After a read with no query to send: ngtcp2 acknowledges what it read
 * once srtt/8 has passed, on loopback sooner than we get to write, so each
 * answer, and the MAX_STREAMS a server sends once that ACK frees the stream,
 * would get an ACK-only packet of its own. When ngtcp2 wants the clock within
 * the timer's granularity anyway (that ACK deadline, a loss timer), the
 * expiry timer writes instead, at least 1 ms on (doq_conn_arm_timer); a
 * query in between carries the ACK. Anything due later (no ACK owed: only
 * ACK-only packets were read) is written now, as before. */
static bool doq_conn_write_later(struct doq_conn *c)
{
    if (!c->handshake_done || c->racer || c->up->wait.head || doq_conn_next_tx(c))
        return false;
    return ngtcp2_conn_get_expiry(c->conn) <= doq_now() + DOQ_TIMER_GRANULARITY;
}

static bool doq_conn_flush_ex(struct doq_conn *c, bool after_read)
{
    int rv;

    if (c->handshake_done && (c->racer || c->up->racers || ev_is_active(&c->up->stagger)))
        doq_race_won(c->up, c);
    rv = doq_conn_open_streams(c);

    if (!rv && !(after_read && doq_conn_write_later(c)))
        rv = doq_conn_write(c);
    if (rv) {
        doq_conn_liberr(c, rv);
        return false;
    }
    doq_conn_update_keepalive(c);
    doq_conn_arm_timer(c);
    return true;
}

static bool doq_conn_flush(struct doq_conn *c)
{
    return doq_conn_flush_ex(c, false);
}

static struct mmsghdr *doq_rx_headers(void)
{
    if (!doq_rxmm[0].msg_hdr.msg_iov) {
        for (int i = 0; i < DOQ_RX_BATCH; i++) {
            doq_rxiov[i].iov_base = doq_rxbuf[i];
            doq_rxiov[i].iov_len = sizeof(doq_rxbuf[i]);
            doq_rxmm[i].msg_hdr.msg_iov = &doq_rxiov[i];
            doq_rxmm[i].msg_hdr.msg_iovlen = 1;
        }
    }
    return doq_rxmm;
}

static void doq_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct doq_conn *c = w->data;
    struct doq_up *up = c->up;
    struct mmsghdr *mm = doq_rx_headers();

    conn_scope_enter(&up->scope);
    for (int round = 0; round < DOQ_RX_ROUNDS; round++) {
        int n = recvmmsg(c->fd, mm, DOQ_RX_BATCH, 0, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            /* ICMP unreachable on the connected socket */
            log_debug("upstream %s: doq: recv: %s", up->u->name, strerror(errno));
            doq_conn_fail(c, DV_ECONN, c->handshake_done, false);
            conn_scope_leave(&up->scope);
            return;
        }
        if (n > 0) { /* one clock for the batch: it arrived together */
            c->last_rx = doq_now();
            c->tx_after_rx = 0;
        }
        for (int i = 0; i < n; i++) {
            ngtcp2_pkt_info pi = {0};
            /* bigger than we allowed the server to send: not from it */
            if (mm[i].msg_hdr.msg_flags & MSG_TRUNC)
                continue;
            ustats_bytes(up->st, mm[i].msg_len, 0);
            int rv = ngtcp2_conn_read_pkt(c->conn, &c->ps.path, &pi, doq_rxbuf[i], mm[i].msg_len,
                                          c->last_rx);
            if (rv) {
                doq_conn_liberr(c, rv);
                conn_scope_leave(&up->scope);
                return;
            }
        }
        if (n < DOQ_RX_BATCH)
            break;
    }
    tls_conn_quic_tickets(c->tls);
    /* a MAX_DATA may have lifted connection-level flow control, which has no
     * per-stream callback: let blocked streams try again */
    for (struct doq_req *q = doq_req_first(&c->flight); q; q = doq_req_next(q))
        q->blocked = false;
    doq_conn_flush_ex(c, true);
    conn_scope_leave(&up->scope);
}

static void doq_conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct doq_conn *c = w->data;
    struct doq_up *up = c->up;
    size_t len = c->pending_len;

    conn_scope_enter(&up->scope);
    ev_io_stop(loop, &c->wio);
    c->pending_len = 0;
    if (!doq_conn_send(c, c->pending, len, c->pending_seg)) {
        doq_conn_fail(c, DV_ECONN, c->handshake_done, false);
    } else if (!c->pending_len) {
        doq_conn_flush(c);
    }
    conn_scope_leave(&up->scope);
}

static void doq_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doq_conn *c = w->data;
    struct doq_up *up = c->up;
    int rv;

    conn_scope_enter(&up->scope);
    rv = ngtcp2_conn_handle_expiry(c->conn, doq_now());
    if (rv)
        doq_conn_liberr(c, rv);
    else
        doq_conn_flush(c);
    conn_scope_leave(&up->scope);
}

/* ---- the transport ------------------------------------------------------- */

/* Runs the wait list: a connection when there is none, streams, writes. */
static void doq_up_kick_cb(void *arg)
{
    struct doq_up *up = arg;

    conn_scope_enter(&up->scope);
    if (!up->conn && up->wait.head) {
        int rc = doq_conn_open(up, &up->conn);
        while (rc && doq_race_next(up)) /* refused at once: the next address */
            rc = doq_conn_open(up, &up->conn);
        if (rc) {
            log_debug("upstream %s: doq: cannot connect: %s", up->u->name, dv_strerror(rc));
            while (up->wait.head) {
                struct doq_req *q = doq_req_first(&up->wait);
                conn_list_unlink(&q->link);
                doq_req_finish(q, rc);
            }
        }
    }
    if (up->conn)
        doq_conn_flush(up->conn);
    conn_scope_leave(&up->scope);
}

static void doq_up_schedule(struct doq_up *up)
{
    defer_arm(up->u->loop, &up->kick);
}

static int doq_open(struct upstream *u)
{
    struct doq_up *up = calloc(1, sizeof(*up));
    int rc;

    if (!up)
        return DV_ENOMEM;
    if (!doq_gso_off && getenv("DNSVEIL_DISABLE_GSO") && strcmp(getenv("DNSVEIL_DISABLE_GSO"), "0"))
        doq_gso_off = true;
    up->u = u;
    up->st = &u->stats;
    conn_scope_init(&up->scope, NULL, doq_req_release, doq_up_destroy, up);
    defer_init(&up->kick, doq_up_kick_cb, up);
    defer_init(&up->migrate_later, doq_migrate_later_cb, up);
    ev_init(&up->stagger, doq_race_stagger_cb);
    up->stagger.data = up;
    rc = tls_ctx_new_upstream(u, DOQ_ALPN, true, &up->tls);
    if (rc)
        goto fail;
    /* TLS 1.3 only, handshake bytes through ngtcp2, session tickets */
    if (ngtcp2_crypto_wolfssl_configure_client_context(tls_ctx_native(up->tls)) != 0 ||
        quic_crypto_configure(tls_ctx_native(up->tls)) != 0) {
        rc = DV_ETLS;
        goto fail;
    }
    u->priv = up;
    return 0;
fail:
    tls_ctx_del(up->tls);
    free(up);
    return rc;
}

static int doq_send(struct upstream *u, struct xfer *x)
{
    struct doq_up *up = u->priv;
    struct doq_req *q;
    size_t qlen = x->len;
    int rc;

    if ((rc = conn_send_check(x, up->wait.n, u->name)))
        return rc;
    /* only the header zeroed: every byte of wire used is written below */
    q = malloc(sizeof(*q) + 2 + x->len + CONN_QUERY_ROOM);
    if (!q)
        return DV_ENOMEM;
    memset(q, 0, sizeof(*q));
    memcpy(q->wire + 2, x->msg, x->len);
    dns_put16(q->wire + 2, 0); /* RFC 9250 4.2.1; delivery puts the caller's back */
    rc = conn_pad_query(q->wire + 2, &qlen, x->len + CONN_QUERY_ROOM);
    if (rc) {
        free(q);
        return rc;
    }
    frame_put_len(q->wire, qlen);
    q->len = 2 + qlen;
    q->sid = -1;
    q->up = up;
    q->done.x = x;
    doq_rx_init(&q->rx);
    conn_list_push(&up->wait, &q->link);
    x->tpriv = q;
    doq_up_schedule(up);
    return 0;
}

static void doq_cancel(struct upstream *u, struct xfer *x)
{
    struct doq_up *up = u->priv;
    struct doq_req *q = x->tpriv;

    if (!q)
        return;
    x->tpriv = NULL;
    q->done.x = NULL;
    if (q->done.queued)
        conn_scope_remove(&up->scope, &q->done);
    if (q->c) {
        /* tell the server to stop; the stream frees q when it closes */
        if (!q->rx.msg) {
            ngtcp2_conn_shutdown_stream(q->c->conn, 0, q->sid, DOQ_REQUEST_CANCELLED);
            doq_up_schedule(up);
        }
        return;
    }
    if (q->link.on == &up->wait)
        conn_list_unlink(&q->link);
    doq_req_put(q);
}

static void doq_close(struct upstream *u)
{
    struct doq_up *up = u->priv;

    if (!up)
        return;
    defer_cancel(&up->kick);
    defer_cancel(&up->migrate_later);
    doq_race_stop(up);
    if (up->conn) {
        ngtcp2_ccerr_set_application_error(&up->conn->ccerr, DOQ_NO_ERROR, NULL, 0);
        doq_conn_fail(up->conn, DV_ECANCEL, false, true);
    }
    /* nothing is pending (the caller's promise), so these are all orphans */
    while (up->wait.head) {
        struct doq_req *q = doq_req_first(&up->wait);
        conn_list_unlink(&q->link);
        doq_req_free(q);
    }
    for (struct conn_done *d; (d = conn_scope_pop(&up->scope));)
        doq_req_free(doq_req_of(d));
    u->priv = NULL;
    up->st = &ustats_sink;
    /* now, or when the callback whose done closed us unwinds: up outlives
     * u then, and nothing touches u any more */
    conn_scope_close(&up->scope);
}

/* ---- network changes ---------------------------------------------------- */

/* The path under the connection may be gone: a new connection (0-RTT with
 * the last session's ticket) takes over at once, and the queries still
 * unanswered on the old one go to it. Inside the scope. */
static void doq_up_replace(struct doq_up *up)
{
    struct doq_conn *c = up->conn;
    int rc;

    doq_race_stop(up);
    if (c) {
        ngtcp2_ccerr_set_application_error(&c->ccerr, DOQ_NO_ERROR, NULL, 0);
        doq_conn_fail(c, DV_ECONN, true, true);
    }
    if (!up->conn) {
        rc = doq_conn_open(up, &up->conn);
        if (rc)
            log_debug("upstream %s: doq: cannot connect: %s", up->u->name, dv_strerror(rc));
        else
            doq_conn_flush(up->conn);
    }
}

/* The stall check runs while answers are awaited (the keep-alive PINGs run
 * then too, so a live server sends something at least that often). */
static void doq_conn_watch_stall(struct doq_conn *c, bool waiting)
{
    if (waiting && !c->waiting) {
        c->waiting_since = doq_now();
        ev_timer_again(c->up->u->loop, &c->stall);
    } else if (!waiting) {
        ev_timer_stop(c->up->u->loop, &c->stall);
    }
    c->waiting = waiting;
}

/* Whether a datagram (or an error) waits on c's socket: then the server is
 * not silent, our loop was only late to read it (a slow router CPU, or a
 * long burst of work, runs this timer before the read in one iteration). */
static bool doq_conn_rx_waiting(const struct doq_conn *c)
{
    uint8_t b;

    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) >= 0 ||
           (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Silence counts from our first datagram the server has not answered, and
 * never from before answers were awaited: time our own loop spent before
 * sending (a burst of queries on a slow CPU) is not the server's. */
static void doq_conn_stall_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct doq_conn *c = w->data;
    struct doq_up *up = c->up;
    ngtcp2_tstamp since = c->tx_after_rx > c->waiting_since ? c->tx_after_rx : c->waiting_since;

    if (!c->handshake_done || !c->tx_after_rx || doq_now() < since + DOQ_STALL ||
        doq_conn_rx_waiting(c))
        return;
    conn_scope_enter(&up->scope);
    log_info("upstream %s: doq connection silent for %llu ms with answers awaited; "
             "connecting afresh", up->u->name,
             (unsigned long long)((doq_now() - since) / NGTCP2_MILLISECONDS));
    doq_up_replace(up);
    conn_scope_leave(&up->scope);
}

/* Whether up's connection replaced one whose send found no route while
 * this change was under way (netmon reports a burst up to NETMON_MAX_MS
 * after it began): it was opened on the new network already, and replacing
 * it too would cost another handshake for nothing. */
static bool doq_opened_after_change(struct doq_up *up)
{
    struct doq_conn *c = up->conn;
    ngtcp2_tstamp since = up->unreach_at;

    up->unreach_at = 0;
    if (!c || !since || c->opened_at < since || c->fd < 0 ||
        doq_now() - since > 2 * NETMON_MAX_MS * NGTCP2_MILLISECONDS || conn_local_gone(c->fd))
        return false;
    log_info("upstream %s: network changed: the doq connection opened after the old path "
             "failed stays", up->u->name);
    return true;
}

static void doq_netchange(struct upstream *u)
{
    struct doq_up *up = u->priv;

    if (!up->conn && !up->wait.head)
        return; /* not in use: the next query connects on the new network anyway */
    conn_scope_enter(&up->scope);
    if (doq_migrate(up, "network changed") || doq_opened_after_change(up)) {
        conn_scope_leave(&up->scope);
        return;
    }
    /* not movable (see doq_migrate): a new connection with 0-RTT costs no
     * round trip more and works with every server */
    const ngtcp2_transport_params *tp =
        up->conn && up->conn->handshake_done
            ? ngtcp2_conn_get_remote_transport_params(up->conn->conn)
            : NULL;
    log_info("upstream %s: network changed: doq connection %s; a new one with 0-RTT takes over",
             u->name, !up->conn ? "none open"
                      : !tp ? "still in its handshake"
                      : tp->disable_active_migration ? "not migratable (the server forbids it)"
                                                     : "dropped");
    doq_up_replace(up);
    conn_scope_leave(&up->scope);
}

/* ---- connection migration (RFC 9000 9) ----------------------------------- */

/* Whether a and b hold the same IP address, ports aside. */
static bool doq_same_host(const ngtcp2_addr *a, const struct sockaddr_storage *b)
{
    const struct sockaddr *sa = (const struct sockaddr *)a->addr;

    if (sa->sa_family != b->ss_family)
        return false;
    if (sa->sa_family == AF_INET)
        return !memcmp(&((const struct sockaddr_in *)sa)->sin_addr,
                       &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr));
    if (sa->sa_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
    return false;
}

/* Whether c could move to another path: established, and the server
 * allows it. */
static bool doq_can_migrate(struct doq_conn *c)
{
    const ngtcp2_transport_params *tp;

    if (!c->handshake_done || c->racer || c->up->racers)
        return false;
    tp = ngtcp2_conn_get_remote_transport_params(c->conn);
    return tp && !tp->disable_active_migration;
}

/* The network changed under the established connection. When a new socket
 * to the server gets another local address from the kernel (ours is gone,
 * or the route now leaves by another interface) and the server allows
 * active migration, the connection moves to that socket with its streams
 * in flight: ngtcp2 sends from the new path at once, on a fresh connection
 * ID, and validates it with PATH_CHALLENGE meanwhile
 * (doq_migrate_validated_cb). false when it did not move: the caller
 * reconnects with 0-RTT. why starts the log line. Inside the scope. */
static bool doq_migrate(struct doq_up *up, const char *why)
{
    struct doq_conn *c = up->conn;
    struct upstream *u = up->u;
    struct sockaddr_storage local;
    socklen_t locallen = sizeof(local);
    struct net_addr to;
    char from_s[NET_ADDRSTRLEN], to_s[NET_ADDRSTRLEN];
    int fd, rv;

    if (!c || !doq_can_migrate(c))
        return false;
    const ngtcp2_path *cur = ngtcp2_conn_get_path(c->conn);
    if (cur->remote.addrlen > sizeof(to.ss))
        return false;
    memcpy(&to.ss, cur->remote.addr, cur->remote.addrlen);
    to.len = cur->remote.addrlen;
    fd = conn_connect(&to, SOCK_DGRAM, u->name);
    if (fd < 0)
        return false;
    if (getsockname(fd, (struct sockaddr *)&local, &locallen) < 0) {
        close(fd);
        return false;
    }
    if (doq_same_host(&cur->local, &local)) {
        close(fd); /* the path we have is still the one the kernel picks */
        if (!c->moved_early)
            return false;
        /* it moved here when the change broke a send: this is that change */
        c->moved_early = false;
        log_info("upstream %s: %s: doq connection %u has migrated already", u->name, why,
                 c->num);
        return true;
    }
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_init(&ps, (const struct sockaddr *)&local, locallen,
                             (const struct sockaddr *)&to.ss, to.len, NULL);
    struct net_addr was = {.len = 0}, now = {.ss = local, .len = locallen};
    if (cur->local.addrlen <= sizeof(was.ss)) {
        memcpy(&was.ss, cur->local.addr, cur->local.addrlen);
        was.len = cur->local.addrlen;
    }
    net_addr_str(&was, from_s, sizeof(from_s));
    net_addr_str(&now, to_s, sizeof(to_s));
    rv = ngtcp2_conn_initiate_immediate_migration(c->conn, &ps.path, doq_now());
    if (rv) {
        close(fd);
        /* no spare connection ID from the server, or the handshake not yet
         * confirmed: the server did not make it possible, nothing failed */
        if (rv != NGTCP2_ERR_CONN_ID_BLOCKED && rv != NGTCP2_ERR_INVALID_STATE)
            ustats_migration(up->st, false);
        log_info("upstream %s: doq connection %u cannot migrate from %s to %s: %s", u->name,
                 c->num, from_s, to_s, ngtcp2_strerror(rv));
        return false;
    }
    /* the old socket's address is gone or no longer routed: what is left
     * to send goes on the new one, and what it held back is QUIC's to
     * repair */
    ev_io_stop(u->loop, &c->rio);
    ev_io_stop(u->loop, &c->wio);
    close(c->fd);
    c->fd = fd;
    c->pending_len = 0;
    ev_io_set(&c->rio, fd, EV_READ);
    ev_io_set(&c->wio, fd, EV_WRITE);
    ev_io_start(u->loop, &c->rio);
    ngtcp2_path_storage_init(&c->ps, (const struct sockaddr *)&local, locallen,
                             (const struct sockaddr *)&to.ss, to.len, NULL);
    c->migrating = true;
    c->migrate_failed = false;
    c->moved_early = false;
    c->last_rx = doq_now(); /* the new path gets its own time before a stall */
    c->tx_after_rx = 0;
    log_info("upstream %s: %s: doq connection %u migrates from %s to %s", u->name, why, c->num,
             from_s, to_s);
    doq_conn_flush(c);
    return true;
}

/* ngtcp2 validated the new path, or gave up on it: count it, and on
 * failure connect afresh once ngtcp2 has returned. */
static int doq_migrate_validated_cb(ngtcp2_conn *conn, uint32_t flags, const ngtcp2_path *path,
                                    const ngtcp2_path *fallback,
                                    ngtcp2_path_validation_result res, void *user_data)
{
    struct doq_conn *c = user_data;
    struct doq_up *up = c->up;

    /* aborted: a newer migration replaced this one and reports for both */
    if (!c->migrating || res == NGTCP2_PATH_VALIDATION_RESULT_ABORTED)
        return 0;
    c->migrating = false;
    ustats_migration(up->st, res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS);
    if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) {
        log_info("upstream %s: doq connection %u migrated: the new path is validated",
                 up->u->name, c->num);
        return 0;
    }
    log_info("upstream %s: doq connection %u: the new path failed validation; connecting afresh",
             up->u->name, c->num);
    c->migrate_failed = true;
    defer_arm(up->u->loop, &up->migrate_later);
    return 0;
}

/* c ends (stalled, idle, closed) while its new path is still being
 * validated: that migration failed too. */
static void doq_migrate_abandoned(struct doq_conn *c)
{
    if (!c->migrating)
        return;
    c->migrating = false;
    ustats_migration(c->up->st, false);
    log_info("upstream %s: doq connection %u closed before its new path was validated",
             c->up->u->name, c->num);
}

/* A send found no route any more (the address went away, so will the
 * connection's path): the connection moves now, without waiting for
 * netmon's report, which comes in up to NETMON_MAX_MS. Its datagrams
 * meanwhile count as lost. */
static void doq_migrate_soon(struct doq_conn *c)
{
    if (c != c->up->conn || c->migrate_wanted)
        return;
    c->migrate_wanted = true;
    defer_arm(c->up->u->loop, &c->up->migrate_later);
}

/* Migration work that must not run inside ngtcp2 or the write loop: a move
 * a send error asked for, or a new connection when the new path failed. */
static void doq_migrate_later_cb(void *arg)
{
    struct doq_up *up = arg;
    struct doq_conn *c = up->conn;

    if (!c || !(c->migrate_failed || c->migrate_wanted))
        return;
    conn_scope_enter(&up->scope);
    if (c->migrate_failed) {
        doq_up_replace(up);
    } else {
        c->migrate_wanted = false;
        if (doq_migrate(up, "route lost")) {
            if (up->conn == c && c->migrating)
                c->moved_early = true;
        } else {
            log_info("upstream %s: doq connection %u lost its route and cannot migrate; "
                     "a new one with 0-RTT takes over", up->u->name, c->num);
            doq_up_replace(up);
        }
    }
    conn_scope_leave(&up->scope);
}

const struct transport_ops doq_ops = {
    .name = "doq",
    .open = doq_open,
    .send = doq_send,
    .cancel = doq_cancel,
    .close = doq_close,
    .netchange = doq_netchange,
};

#endif /* DV_HAVE_TLS */
