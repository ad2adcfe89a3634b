/* tls — wolfSSL client contexts and connections; see tls.h for the contract. */
#include "tls/tls.h"

#ifdef DV_HAVE_TLS

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "core/err.h"
#include "core/log.h"
#include "tls/tls_time.h"
#include "upstream/upstream.h"

#define TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

enum {
    PIN_LEN = 32,
    NAMES_MAX = 256,
    RX_CAP = 32768, /* two full records, or a burst of many small ones */
};

struct tls_ctx {
    WOLFSSL_CTX *ctx;
    char *upstream;
    char *name;        /* verified name; an IP literal in wolfSSL's notation */
    bool name_is_ip;
    char *alpn;
    bool alpn_required;
    uint8_t (*pins)[PIN_LEN];
    size_t n_pins;
    WOLFSSL_SESSION *session; /* the newest verified session, offered on connect */
    /* boot without a real-time clock (tls_time.h) */
    char *ca_path;       /* the CA file, to reload once the clock is set */
    bool ca_relaxed;     /* CAs loaded without checking their dates */
    bool session_relaxed; /* session came from a handshake whose dates were not checked */
};

struct tls_conn {
    struct tls_ctx *t;
    WOLFSSL *ssl;
    bool want_write;
    bool ready;
    bool resumed;
    bool shut;
    unsigned tickets;     /* new tickets saved from this connection */
    bool ticket_came;     /* wolfSSL took a ticket since the last check */
    uint32_t ticket_sig;  /* fingerprint of the ticket we hold, to spot new ones */
    bool time_relaxed;    /* a validity-date error was forgiven (tls_time.h) */
    int verr;             /* first error the verify callback saw */
    int vdepth;
    char vnames[NAMES_MAX]; /* names of the certificate behind verr */
    /* Our own read buffer under wolfSSL (io_recv): one recv takes every
     * record the socket holds, where wolfSSL alone reads each record's
     * header and body with a system call apiece. */
    int fd;
    uint8_t *rx;
    size_t rx_off, rx_len;
    bool rx_drained;      /* the last recv came back short: the socket is empty */
};

static bool tls_inited;

static int tls_global_init(void)
{
    if (tls_inited)
        return 0;
    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        return DV_ETLS;
    tls_inited = true;
    return 0;
}

/* wolfSSL prints IP SANs as dotted quads for v4 and eight upper-case
 * 4-digit groups for v6; the name it compares must be in the same form. */
static char *ip_name(const char *host, bool *is_ip)
{
    uint8_t a[16];
    char out[48];

    *is_ip = true;
    if (inet_pton(AF_INET, host, a) == 1) {
        snprintf(out, sizeof(out), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        return strdup(out);
    }
    if (inet_pton(AF_INET6, host, a) == 1) {
        size_t n = 0;
        for (int i = 0; i < 8; i++)
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%02X%02X%s", a[2 * i],
                                  a[2 * i + 1], i < 7 ? ":" : "");
        return strdup(out);
    }
    *is_ip = false;
    return strdup(host);
}

static int decode_pins(struct tls_ctx *t, char *const *pins, size_t n)
{
    t->pins = calloc(n ? n : 1, sizeof(*t->pins));
    if (!t->pins)
        return DV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint8_t raw[64];
        word32 rawlen = sizeof(raw);
        if (Base64_Decode((const byte *)pins[i], (word32)strlen(pins[i]), raw, &rawlen) != 0 ||
            rawlen != PIN_LEN) {
            log_err("upstream %s: pin '%s' is not a base64 SHA-256 digest", t->upstream,
                    pins[i]);
            return DV_EINVAL;
        }
        memcpy(t->pins[i], raw, PIN_LEN);
    }
    t->n_pins = n;
    return 0;
}

static int verify_cb(int ok, WOLFSSL_X509_STORE_CTX *st);

/* Every TLS 1.3 suite; for TLS 1.2 only ECDHE key exchange with AEAD
 * ciphers (BCP 195, RFC 9325 §4.2): no CBC, no static RSA, no SHA-1 MAC.
 * A server that offers nothing better fails the handshake (and says so in
 * the log) rather than carry DNS over a weaker channel. */
#define TLS_CIPHERS                                                                    \
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"  \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                       \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                       \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* ---- boot without a real-time clock (tls_time.h) --------------------------
 * While the clock reads earlier than this build, the trust store is loaded
 * without date checks (in either mode: a root that "is not valid yet" in 1970
 * says nothing, and a store left empty could never recover), and in "auto"
 * mode the verify callback forgives exactly the two validity-date errors;
 * signatures, chain, name and pins are untouched. Once the clock is set, a
 * context loaded that way reloads its CAs with date checks and forgets a
 * session made without them, so every new connection gets the full checks. */

static int64_t wall_now(void)
{
    return (int64_t)time(NULL);
}

static bool clock_unset(int64_t now)
{
    return tls_time_relaxed_at(TLS_TIME_AUTO, now, tls_time_build_epoch());
}

/* Loads the CA file into t (or the system store as a fallback when system
 * is true). A bundle with one certificate wolfSSL cannot parse must not cost
 * every other CA in it. 0 or -1. */
static int load_trust(struct tls_ctx *t, bool system)
{
    int64_t now = wall_now();
    bool early = clock_unset(now);
    long flags = WOLFSSL_LOAD_FLAG_IGNORE_ERR | (early ? WOLFSSL_LOAD_FLAG_DATE_ERR_OKAY : 0);

    (void)tls_time_relaxed(now); /* says once what an unset clock means */
    t->ca_relaxed = early;
    if (wolfSSL_CTX_load_verify_locations_ex(t->ctx, t->ca_path, NULL, (word32)flags) ==
        WOLFSSL_SUCCESS)
        return 0;
    if (system && wolfSSL_CTX_load_system_CA_certs(t->ctx) == WOLFSSL_SUCCESS)
        return 0;
    return -1;
}

/* Called before each new connection. */
static void time_check_refresh(struct tls_ctx *t)
{
    int64_t now = wall_now();

    if ((!t->ca_relaxed && !t->session_relaxed) || tls_time_relaxed(now) || clock_unset(now))
        return;
    if (t->session_relaxed && t->session) {
        wolfSSL_SESSION_free(t->session);
        t->session = NULL;
    }
    t->session_relaxed = false;
    if (t->ca_relaxed) {
        bool system = strcmp(t->ca_path, TLS_SYSTEM_CA) == 0;
        if (wolfSSL_CTX_UnloadCAs(t->ctx) != WOLFSSL_SUCCESS || load_trust(t, system))
            log_err("upstream %s: cannot reload CA certificates from %s", t->upstream,
                    t->ca_path); /* an empty store: every handshake fails closed */
    }
}

/* True when the verify callback may accept this failure: it is a validity
 * date, and the clock is not set yet (tls_time_check = "auto"). */
static bool time_forgives(struct tls_conn *c, int err)
{
    if (err != ASN_BEFORE_DATE_E && err != ASN_AFTER_DATE_E)
        return false;
    if (!tls_time_relaxed(wall_now()))
        return false;
    c->time_relaxed = true;
    return true;
}

int tls_ctx_new(const struct tls_opts *o, struct tls_ctx **pctx)
{
    struct tls_ctx *t;
    const char *name = o->tls_name ? o->tls_name : o->host;
    const char *ca = o->ca_file ? o->ca_file : TLS_SYSTEM_CA;
    int rc = tls_global_init();

    *pctx = NULL;
    if (rc)
        return rc;
    t = calloc(1, sizeof(*t));
    if (!t)
        return DV_ENOMEM;
    t->upstream = strdup(o->upstream);
    t->name = ip_name(name, &t->name_is_ip);
    t->alpn = o->alpn ? strdup(o->alpn) : NULL;
    t->alpn_required = o->alpn_required;
    rc = DV_ENOMEM;
    if (!t->upstream || !t->name || (o->alpn && !t->alpn))
        goto fail;
    rc = decode_pins(t, o->pins, o->n_pins);
    if (rc)
        goto fail;

    rc = DV_ETLS;
    t->ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (!t->ctx)
        goto fail;
    /* We keep the one session to offer in t->session. wolfSSL's own cache
     * would also copy every session and ticket into its static table (1.2
     * MiB, ~37 KiB a slot with the certificate chain): each reconnect
     * touched fresh pages of it, so RSS stepped up per upstream restart
     * until the whole table was resident, and nothing ever looked it up. */
    (void)wolfSSL_CTX_set_session_cache_mode(t->ctx, WOLFSSL_SESS_CACHE_OFF);
    /* 1.3 is negotiated whenever the server has it; nothing below 1.2 */
    if (wolfSSL_CTX_SetMinVersion(t->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS)
        goto fail;
    if (wolfSSL_CTX_set_cipher_list(t->ctx, TLS_CIPHERS) != WOLFSSL_SUCCESS) {
        log_err("upstream %s: cannot set the TLS cipher list", t->upstream);
        goto fail;
    }
    t->ca_path = strdup(ca);
    if (!t->ca_path) {
        rc = DV_ENOMEM;
        goto fail;
    }
    if (load_trust(t, !o->ca_file)) {
        log_err("upstream %s: cannot load CA certificates from %s", t->upstream, ca);
        rc = DV_EINVAL;
        goto fail;
    }
    wolfSSL_CTX_set_verify(t->ctx, WOLFSSL_VERIFY_PEER, verify_cb);
    *pctx = t;
    return 0;
fail:
    tls_ctx_del(t);
    return rc;
}

int tls_ctx_new_upstream(const struct upstream *u, const char *alpn, bool alpn_required,
                         struct tls_ctx **pctx)
{
    struct tls_opts o = {
        .upstream = u->name,
        .host = u->host,
        .tls_name = u->cfg.tls_name,
        .ca_file = u->cfg.ca_file,
        .pins = u->cfg.pins,
        .n_pins = u->cfg.n_pins,
        .alpn = alpn,
        .alpn_required = alpn_required,
    };

    return tls_ctx_new(&o, pctx);
}

void tls_ctx_del(struct tls_ctx *t)
{
    if (!t)
        return;
    if (t->session)
        wolfSSL_SESSION_free(t->session);
    if (t->ctx)
        wolfSSL_CTX_free(t->ctx);
    free(t->pins);
    free(t->ca_path);
    free(t->alpn);
    free(t->name);
    free(t->upstream);
    free(t);
}

/* Only failures reach here (wolfSSL calls it for a bad certificate, and we
 * keep its verdict); it notes what went wrong so the log can say it. */
static int verify_cb(int ok, WOLFSSL_X509_STORE_CTX *st)
{
    struct tls_conn *c = st->userCtx;

    if (!ok && c && time_forgives(c, st->error))
        return 1;
    if (ok || !c || c->verr)
        return ok;
    c->verr = st->error;
    c->vdepth = st->error_depth;
    if (st->current_cert) {
        WOLFSSL_X509 *x = st->current_cert;
        size_t n = 0;
        char *s;
        while ((s = wolfSSL_X509_get_next_altname(x)) && n + 2 < sizeof(c->vnames))
            n += (size_t)snprintf(c->vnames + n, sizeof(c->vnames) - n, "%s%s",
                                  n ? ", " : "", s);
        if (n == 0 && (s = wolfSSL_X509_get_subjectCN(x)))
            snprintf(c->vnames, sizeof(c->vnames), "CN=%s", s);
    }
    return 0;
}

static void log_verify_failure(const struct tls_conn *c)
{
    const struct tls_ctx *t = c->t;
    const char *names = c->vnames[0] ? c->vnames : "no names";
    char why[NAMES_MAX + 160];

    switch (c->verr) {
    case DOMAIN_NAME_MISMATCH:
    case IPADDR_MISMATCH:
        snprintf(why, sizeof(why), "hostname mismatch (wanted %s, cert has %s)", t->name,
                 names);
        break;
    case ASN_NO_SIGNER_E:
        snprintf(why, sizeof(why), "unknown CA (no trusted issuer for %s)", names);
        break;
    case ASN_AFTER_DATE_E:
        snprintf(why, sizeof(why), "certificate expired (%s, depth %d)", names, c->vdepth);
        break;
    case ASN_BEFORE_DATE_E:
        snprintf(why, sizeof(why), "certificate not yet valid (%s, depth %d)", names,
                 c->vdepth);
        break;
    default:
        snprintf(why, sizeof(why), "%s (error %d, depth %d)",
                 wolfSSL_ERR_reason_error_string((unsigned long)c->verr), c->verr, c->vdepth);
        break;
    }
    log_warn("upstream %s: certificate verify failed: %s", t->upstream, why);
}

static int ticket_cb(WOLFSSL *ssl, const unsigned char *tk, int len, void *arg);

/* wolfSSL's receive callback: records come out of c->rx, refilled by one
 * recv when empty. After a short read the socket is taken to be empty until
 * the caller next sees EAGAIN (tls_conn_read / _handshake), which means it
 * is back in its event loop and polls again; bytes that arrived meanwhile
 * keep the level-triggered watcher firing, so nothing is stranded. */
static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *c = arg;
    (void)ssl;

    if (c->rx_off == c->rx_len) {
        if (c->rx_drained)
            return WOLFSSL_CBIO_ERR_WANT_READ;
        ssize_t n;
        do
            n = recv(c->fd, c->rx, RX_CAP, 0);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            return WOLFSSL_CBIO_ERR_CONN_CLOSE;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->rx_drained = true;
                return WOLFSSL_CBIO_ERR_WANT_READ;
            }
            return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
        }
        c->rx_off = 0;
        c->rx_len = (size_t)n;
        c->rx_drained = (size_t)n < RX_CAP;
    }
    size_t k = c->rx_len - c->rx_off;
    if (k > (size_t)sz)
        k = (size_t)sz;
    memcpy(buf, c->rx + c->rx_off, k);
    c->rx_off += k;
    return (int)k;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *c = arg;
    ssize_t n;
    (void)ssl;

    do
        n = send(c->fd, buf, (size_t)sz, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    if (errno == ECONNRESET)
        return WOLFSSL_CBIO_ERR_CONN_RST;
    return errno == EPIPE ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_GENERAL;
}

/* The caller goes back to its poll: the next recv may find new bytes. */
static int io_wait(struct tls_conn *c, int rc)
{
    if (rc == DV_EAGAIN)
        c->rx_drained = false;
    return rc;
}

int tls_conn_new(struct tls_ctx *t, int fd, struct tls_conn **pconn)
{
    struct tls_conn *c = calloc(1, sizeof(*c));

    *pconn = NULL;
    if (!c)
        return DV_ENOMEM;
    time_check_refresh(t);
    c->t = t;
    c->fd = fd;
    c->rx = fd >= 0 ? malloc(RX_CAP) : NULL; /* QUIC moves its own bytes */
    c->ssl = c->rx || fd < 0 ? wolfSSL_new(t->ctx) : NULL;
    if (!c->ssl) {
        free(c->rx);
        free(c);
        return DV_ENOMEM;
    }
    wolfSSL_SetCertCbCtx(c->ssl, c);
    if (wolfSSL_set_fd(c->ssl, fd) != WOLFSSL_SUCCESS)
        goto fail;
    if (fd >= 0) {
        wolfSSL_SSLSetIORecv(c->ssl, io_recv);
        wolfSSL_SSLSetIOSend(c->ssl, io_send);
        wolfSSL_SetIOReadCtx(c->ssl, c);
        wolfSSL_SetIOWriteCtx(c->ssl, c);
    }
    /* SNI carries names only (RFC 6066 3); an IP is checked, never sent */
    if (!t->name_is_ip &&
        wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, t->name, (word16)strlen(t->name)) !=
            WOLFSSL_SUCCESS)
        goto fail;
    /* checked on the leaf during the handshake: its SANs (IP SANs appear in
     * their text form), or its CN when it has no SAN at all */
    if (wolfSSL_check_domain_name(c->ssl, t->name) != WOLFSSL_SUCCESS)
        goto fail;
    if (t->alpn &&
        wolfSSL_UseALPN(c->ssl, t->alpn, (word32)strlen(t->alpn),
                        t->alpn_required ? WOLFSSL_ALPN_FAILED_ON_MISMATCH
                                         : WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS)
        goto fail;
    if (wolfSSL_UseSessionTicket(c->ssl) != WOLFSSL_SUCCESS ||
        wolfSSL_set_SessionTicket_cb(c->ssl, ticket_cb, c) != WOLFSSL_SUCCESS)
        goto fail;
    /* a stale or rejected session only costs a full handshake */
    if (t->session)
        (void)wolfSSL_set_session(c->ssl, t->session);
    *pconn = c;
    return 0;
fail:
    tls_conn_free(c);
    return DV_ETLS;
}

void tls_conn_free(struct tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        wolfSSL_free(c->ssl);
    free(c->rx);
    free(c);
}

bool tls_conn_wants_write(const struct tls_conn *c)
{
    return c->want_write;
}

bool tls_conn_resumed(const struct tls_conn *c)
{
    return c->resumed;
}

/* Maps a failed wolfSSL call. Handshake failures are logged here, once. */
static int tls_conn_error(struct tls_conn *c, int ret, const char *what)
{
    int err = wolfSSL_get_error(c->ssl, ret);

    c->want_write = false;
    switch (err) {
    case WOLFSSL_ERROR_WANT_READ:
        return DV_EAGAIN;
    case WOLFSSL_ERROR_WANT_WRITE:
        c->want_write = true;
        return DV_EAGAIN;
    case WOLFSSL_ERROR_ZERO_RETURN:
    case SOCKET_PEER_CLOSED_E:
    case SOCKET_ERROR_E:
        log_debug("upstream %s: tls %s: connection closed by peer", c->t->upstream, what);
        return DV_ECONN;
    default:
        break;
    }
    if (c->verr) {
        log_verify_failure(c);
    } else if (err == DOMAIN_NAME_MISMATCH || err == IPADDR_MISMATCH) {
        c->verr = err;
        log_verify_failure(c);
    } else if (!c->ready) {
        log_warn("upstream %s: tls handshake failed: %s (%d)", c->t->upstream,
                 wolfSSL_ERR_reason_error_string((unsigned long)err), err);
    } else {
        log_debug("upstream %s: tls %s: %s (%d)", c->t->upstream, what,
                  wolfSSL_ERR_reason_error_string((unsigned long)err), err);
    }
    return DV_ETLS;
}

static uint32_t ticket_sig(WOLFSSL *ssl, bool *have)
{
    uint8_t tk[4096];
    word32 n = sizeof(tk);
    uint32_t h = 2166136261u;

    *have = false;
    if (wolfSSL_get_SessionTicket(ssl, tk, &n) != WOLFSSL_SUCCESS || n == 0)
        return 0;
    *have = true;
    for (word32 i = 0; i < n; i++)
        h = (h ^ tk[i]) * 16777619u;
    return h ^ n;
}

static void save_session(struct tls_conn *c)
{
    WOLFSSL_SESSION *s = wolfSSL_get1_session(c->ssl);

    if (!s)
        return;
    if (c->t->session)
        wolfSSL_SESSION_free(c->t->session);
    c->t->session = s;
    c->t->session_relaxed = c->time_relaxed;
}

/* TLS 1.3 tickets arrive after the handshake, inside later reads; each one
 * that differs from what we hold replaces the session to offer next time.
 * Only called once the connection passed verification. */
static void check_new_ticket(struct tls_conn *c)
{
    bool have;
    uint32_t sig;

    if (!c->ticket_came || c->tickets >= 2)
        return; /* servers send their tickets up front */
    c->ticket_came = false;
    sig = ticket_sig(c->ssl, &have);
    if (have && sig != c->ticket_sig) {
        c->ticket_sig = sig;
        c->tickets++;
        save_session(c);
    }
}

/* Told by wolfSSL as it stores a ticket, before the TLS 1.3 fields that go
 * with it are set: the session is saved after the read returns, and no
 * read without a ticket pays for hashing the one we hold. */
static int ticket_cb(WOLFSSL *ssl, const unsigned char *tk, int len, void *arg)
{
    struct tls_conn *c = arg;
    (void)ssl;
    (void)tk;
    (void)len;

    c->ticket_came = true;
    return 0;
}

static void spki_pin(WOLFSSL_X509 *x, uint8_t out[PIN_LEN], bool *ok)
{
    uint8_t der[4096];
    int len = (int)sizeof(der);

    *ok = wolfSSL_X509_get_pubkey_buffer(x, der, &len) == WOLFSSL_SUCCESS &&
          wc_Sha256Hash(der, (word32)len, out) == 0;
}

/* Pins are checked once the chain has verified: the SHA-256 of the DER
 * SubjectPublicKeyInfo of any certificate the server sent may match. */
static int check_pins(struct tls_conn *c)
{
    const struct tls_ctx *t = c->t;
    WOLFSSL_X509_CHAIN *chain = wolfSSL_get_peer_chain(c->ssl);
    int n = chain ? wolfSSL_get_chain_count(chain) : 0;
    uint8_t leaf[PIN_LEN];
    bool have_leaf = false;

    for (int i = 0; i < n; i++) {
        WOLFSSL_X509 *x = wolfSSL_get_chain_X509(chain, i);
        uint8_t h[PIN_LEN];
        bool ok = false;
        if (x) {
            spki_pin(x, h, &ok);
            wolfSSL_X509_free(x);
        }
        if (!ok)
            continue;
        if (i == 0) {
            memcpy(leaf, h, PIN_LEN);
            have_leaf = true;
        }
        for (size_t p = 0; p < t->n_pins; p++)
            if (memcmp(h, t->pins[p], PIN_LEN) == 0)
                return 0;
    }
    char b64[64] = "unknown";
    if (have_leaf) {
        word32 blen = sizeof(b64) - 1;
        if (Base64_Encode_NoNl(leaf, PIN_LEN, (byte *)b64, &blen) == 0)
            b64[blen] = 0;
    }
    log_warn("upstream %s: certificate verify failed: pin mismatch (server key pin is %s)",
             t->upstream, b64);
    return DV_ETLS;
}
/* What every finished handshake checks, over TCP or QUIC: pins (a resumed
 * session was verified, pins included, when it was first made) and the ALPN
 * the server had to select. 0 (c is ready) or DV_ETLS. */
static int tls_conn_established(struct tls_conn *c)
{
    c->resumed = wolfSSL_session_reused(c->ssl) == 1;
    if (!c->resumed && c->t->n_pins && check_pins(c))
        return DV_ETLS;
    if (c->t->alpn_required) {
        char *proto = NULL;
        word16 plen = 0;
        if (wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &plen) != WOLFSSL_SUCCESS ||
            plen != strlen(c->t->alpn) || memcmp(proto, c->t->alpn, plen) != 0) {
            log_warn("upstream %s: tls: server did not select ALPN '%s'", c->t->upstream,
                     c->t->alpn);
            return DV_ETLS;
        }
    }
    c->ready = true;
    return 0;
}


int tls_conn_handshake(struct tls_conn *c)
{
    bool have;
    int ret;

    if (c->ready)
        return 0;
    ret = wolfSSL_connect(c->ssl);
    if (ret != WOLFSSL_SUCCESS)
        return io_wait(c, tls_conn_error(c, ret, "handshake"));
    c->want_write = false;
    if (tls_conn_established(c))
        return DV_ETLS;
    log_debug("upstream %s: tls: %s, %s, %s", c->t->upstream, wolfSSL_get_version(c->ssl),
              wolfSSL_get_cipher(c->ssl), c->resumed ? "resumed session" : "full handshake");
    c->ticket_sig = ticket_sig(c->ssl, &have);
    if (!c->resumed && (have || wolfSSL_version(c->ssl) < TLS1_3_VERSION))
        save_session(c); /* TLS 1.2 ticket or session ID: known now */
    return 0;
}

/* True when a read can only end in WANT_READ: our buffer is empty, the
 * socket was found empty, and wolfSSL holds no plaintext (over TCP it asks
 * io_recv for no more than the record it is reading, so it holds no whole
 * record either). wolfSSL formats a message and takes a lock for every
 * WANT_READ it returns: the last read of every readable event paid that. */
static bool read_would_block(const struct tls_conn *c)
{
    return c->ready && !c->want_write && c->rx && c->rx_off == c->rx_len && c->rx_drained &&
           !wolfSSL_has_pending(c->ssl);
}

long tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
    if (read_would_block(c)) {
        check_new_ticket(c);
        return io_wait(c, DV_EAGAIN);
    }
    int n = wolfSSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);

    if (n > 0) {
        c->want_write = false;
        check_new_ticket(c);
        return n;
    }
    int rc = tls_conn_error(c, n, "read");
    if (rc == DV_EAGAIN)
        check_new_ticket(c);
    return io_wait(c, rc);
}

long tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
    int n = wolfSSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);

    if (n > 0) {
        c->want_write = false;
        return n;
    }
    return tls_conn_error(c, n, "write");
}

void tls_conn_shutdown(struct tls_conn *c)
{
    if (c->ready && !c->shut) {
        c->shut = true;
        (void)wolfSSL_shutdown(c->ssl);
    }
}

/* ---- QUIC (DoQ) ---------------------------------------------------------
 * QUIC moves the TLS handshake bytes itself (ngtcp2 hands them to wolfSSL),
 * so a QUIC connection has no socket here. Everything that decides trust is
 * the code above: the same context (CA store, name, pins, ALPN, the session
 * to resume), the same verify callback, the same checks once the handshake
 * completes and the same log lines when it fails. */

void *tls_ctx_native(struct tls_ctx *t)
{
    return t->ctx;
}

void *tls_conn_native(struct tls_conn *c)
{
    return c->ssl;
}

int tls_conn_new_quic(struct tls_ctx *t, bool *pearly, struct tls_conn **pconn)
{
    /* wolfSSL never touches the descriptor of a QUIC connection */
    int rc = tls_conn_new(t, -1, pconn);

    *pearly = false;
    if (rc)
        return rc;
    if (!wolfSSL_is_quic((*pconn)->ssl)) {
        log_err("upstream %s: TLS context is not set up for QUIC", t->upstream);
        tls_conn_free(*pconn);
        *pconn = NULL;
        return DV_ETLS;
    }
    /* 0-RTT only on a session whose ticket allows early data, and only if
     * wolfSSL took that session (it refuses an expired one) */
    if (t->session && wolfSSL_SESSION_get_max_early_data(t->session) > 0 &&
        wolfSSL_set_session((*pconn)->ssl, t->session) == WOLFSSL_SUCCESS) {
        wolfSSL_set_quic_early_data_enabled((*pconn)->ssl, 1);
        *pearly = true;
    }
    return 0;
}

int tls_conn_quic_completed(struct tls_conn *c)
{
    bool have;

    if (tls_conn_established(c))
        return DV_ETLS;
    log_debug("upstream %s: quic tls: %s, %s", c->t->upstream, wolfSSL_get_cipher(c->ssl),
              c->resumed ? "resumed session" : "full handshake");
    c->ticket_sig = ticket_sig(c->ssl, &have);
    return 0;
}

void tls_conn_quic_failed(struct tls_conn *c)
{
    /* wolfSSL kept the error of the failed step; tls_conn_error logs it once */
    if (!c->ready)
        (void)tls_conn_error(c, -1, "handshake");
}

void tls_conn_quic_tickets(struct tls_conn *c)
{
    if (c->ready)
        check_new_ticket(c);
}

bool tls_conn_early_accepted(const struct tls_conn *c)
{
    return wolfSSL_get_early_data_status(c->ssl) == WOLFSSL_EARLY_DATA_ACCEPTED;
}

#else /* no wolfSSL */

/* Without wolfSSL only dot.c's plaintext mode (tcp://) links against these,
 * and it never calls them: no TLS scheme is registered. */
#include "core/err.h"

int tls_ctx_new_upstream(const struct upstream *u, const char *alpn, bool alpn_required,
                         struct tls_ctx **pctx)
{
    (void)u, (void)alpn, (void)alpn_required;
    *pctx = NULL;
    return DV_ETLS;
}

void tls_ctx_del(struct tls_ctx *ctx)
{
    (void)ctx;
}

int tls_conn_new(struct tls_ctx *ctx, int fd, struct tls_conn **pconn)
{
    (void)ctx, (void)fd;
    *pconn = NULL;
    return DV_ETLS;
}

void tls_conn_free(struct tls_conn *c)
{
    (void)c;
}

int tls_conn_handshake(struct tls_conn *c)
{
    (void)c;
    return DV_ETLS;
}

long tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
    (void)c, (void)buf, (void)len;
    return DV_ETLS;
}

long tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
    (void)c, (void)buf, (void)len;
    return DV_ETLS;
}

bool tls_conn_wants_write(const struct tls_conn *c)
{
    (void)c;
    return false;
}

void tls_conn_shutdown(struct tls_conn *c)
{
    (void)c;
}

#endif /* DV_HAVE_TLS */
