/* tls — the TLS client layer every encrypted transport shares, on wolfSSL.
 *
 * One tls_ctx per upstream holds the trust store, the name to verify, the
 * optional SPKI pins, the ALPN protocol and the session to resume. A tls_conn
 * is one TLS connection over a socket the caller owns and polls: every call
 * is non-blocking and says through DV_EAGAIN + tls_conn_wants_write() which
 * readiness to wait for.
 *
 * Verification is never optional: the chain must lead to a trusted CA (the
 * system store, or the configured CA file instead of it), the leaf must match
 * the upstream's name (a DNS name in its SANs, or for an IP-literal host an
 * IP SAN), and when pins are configured the SHA-256 of the DER
 * SubjectPublicKeyInfo of at least one certificate the server presented (leaf
 * or intermediates, as sent) must equal one of them. A failure is logged once
 * with the upstream's name and the reason, and the connection is unusable. */
#ifndef DV_TLS_TLS_H
#define DV_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct tls_ctx;
struct tls_conn;
struct upstream;

struct tls_opts {
    const char *upstream;   /* name for log lines */
    const char *host;       /* URL host: a DNS name or an IP literal */
    const char *tls_name;   /* name to verify and send as SNI; NULL = host */
    const char *ca_file;    /* PEM bundle; NULL = the system store */
    char *const *pins;      /* base64 SHA-256 SPKI pins; any may match */
    size_t n_pins;
    const char *alpn;       /* e.g. "dot", "h2"; NULL = none */
    bool alpn_required;     /* fail unless the server selects alpn */
};

/* Builds a context from o (copied). 0, DV_ENOMEM, DV_EINVAL (bad pin, CA
 * file unreadable; the reason is logged) or DV_ETLS. */
int tls_ctx_new(const struct tls_opts *o, struct tls_ctx **pctx);
/* tls_ctx_new with the options an upstream's settings give (its name, URL
 * host, tls_name, CA file, pins) and the transport's ALPN. Same returns. */
int tls_ctx_new_upstream(const struct upstream *u, const char *alpn, bool alpn_required,
                         struct tls_ctx **pctx);
/* Frees ctx; every tls_conn made from it must be freed first. */
void tls_ctx_del(struct tls_ctx *ctx);

/* A client connection on the connected (or connecting) non-blocking socket
 * fd, which stays the caller's to poll and close. Offers the last session
 * this ctx saw, so a reconnect resumes. 0, DV_ENOMEM or DV_ETLS. */
int tls_conn_new(struct tls_ctx *ctx, int fd, struct tls_conn **pconn);
/* Frees c and sends nothing: the caller closes the socket. */
void tls_conn_free(struct tls_conn *c);

/* Advances the handshake. 0 once it is complete and verified; DV_EAGAIN
 * (wait for readable, or writable when tls_conn_wants_write); DV_ETLS
 * (verification or protocol failure, already logged); DV_ECONN (the peer
 * closed or reset the connection). */
int tls_conn_handshake(struct tls_conn *c);

/* Reads decrypted bytes into buf. The count (> 0), DV_EAGAIN, DV_ECONN
 * (closed by the peer, cleanly or not) or DV_ETLS. */
long tls_conn_read(struct tls_conn *c, void *buf, size_t len);
/* Writes from buf. The count accepted (> 0, may be short), DV_EAGAIN,
 * DV_ECONN or DV_ETLS. After DV_EAGAIN the next call must offer the same
 * bytes again (a TLS record may be half sent). */
long tls_conn_write(struct tls_conn *c, const void *buf, size_t len);

/* True when the last DV_EAGAIN waits for the socket to become writable. */
bool tls_conn_wants_write(const struct tls_conn *c);
/* True when the handshake resumed a session instead of a full exchange. */
bool tls_conn_resumed(const struct tls_conn *c);
/* Sends a close_notify if it fits in the socket buffer; never blocks. */
void tls_conn_shutdown(struct tls_conn *c);

/* ---- QUIC (DoQ) ------------------------------------------------------
 * QUIC carries the handshake itself, so these connections have no socket;
 * verification, session resumption and logging are the ones above. */

/* The context's WOLFSSL_CTX, for the QUIC crypto glue to configure before the
 * first connection is made from it. */
void *tls_ctx_native(struct tls_ctx *ctx);
/* A client connection for QUIC, offering the last saved session. When that
 * session allows early data, 0-RTT is enabled and *pearly set. 0, DV_ENOMEM
 * or DV_ETLS (the context was not configured for QUIC). */
int tls_conn_new_quic(struct tls_ctx *ctx, bool *pearly, struct tls_conn **pconn);
/* The connection's WOLFSSL, for ngtcp2. */
void *tls_conn_native(struct tls_conn *c);
/* Checks a QUIC handshake that just completed the way tls_conn_handshake
 * does (pins, ALPN) and marks c ready. 0 or DV_ETLS (logged). */
int tls_conn_quic_completed(struct tls_conn *c);
/* Logs, once, why a QUIC handshake failed (certificate, name, alert). */
void tls_conn_quic_failed(struct tls_conn *c);
/* Keeps a session ticket the server sent after the handshake. */
void tls_conn_quic_tickets(struct tls_conn *c);
/* True once the handshake is done if the server accepted our 0-RTT data. */
bool tls_conn_early_accepted(const struct tls_conn *c);

#endif
