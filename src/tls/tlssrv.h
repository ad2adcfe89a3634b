/* tlssrv — the server side of TLS for the encrypted listeners (DoT, DoH),
 * on wolfSSL. One tlssrv_ctx holds a certificate chain and its key, loaded
 * from PEM files; it is reference-counted so that a reload can build a new
 * one for new connections while connections made from the old one keep it
 * until they close. A tlssrv_conn is one accepted connection over a socket
 * the caller owns and polls: every call is non-blocking and says through
 * DV_EAGAIN + tlssrv_conn_wants_write() which readiness to wait for.
 *
 * TLS 1.3 is preferred, 1.2 the oldest accepted; session tickets let
 * returning clients resume. ALPN: a client that offers protocols must offer
 * the listener's, a client that offers none is served (RFC 7858 clients
 * predate ALPN). */
#ifndef DV_TLS_TLSSRV_H
#define DV_TLS_TLSSRV_H

#include <stdbool.h>
#include <stddef.h>

struct tlssrv_ctx;
struct tlssrv_conn;

/* Loads cert (a PEM chain, leaf first) and key (PEM) and checks that they
 * belong together. 0; DV_EINVAL with the reason logged (unreadable, not PEM,
 * mismatched); DV_ENOMEM; DV_ETLS (built without TLS). The caller holds the
 * one reference. */
int tlssrv_ctx_new(const char *cert, const char *key, struct tlssrv_ctx **pctx);
/* The same for QUIC (DoQ): TLS 1.3 only with its handshake carried by
 * ngtcp2, early data (0-RTT) allowed on resumption; the listener sets ALPN. */
int tlssrv_ctx_new_quic(const char *cert, const char *key, struct tlssrv_ctx **pctx);
/* The context's WOLFSSL_CTX, for a QUIC connection's WOLFSSL. */
void *tlssrv_ctx_native(struct tlssrv_ctx *ctx);
void tlssrv_ctx_ref(struct tlssrv_ctx *ctx);
/* Drops a reference; the last one frees ctx. NULL is ignored. */
void tlssrv_ctx_unref(struct tlssrv_ctx *ctx);

/* A server connection on the accepted non-blocking socket fd, which stays the
 * caller's. alpn: the one protocol the listener speaks ("dot", "h2"). Holds a
 * reference on ctx. 0, DV_ENOMEM or DV_ETLS. */
int tlssrv_conn_new(struct tlssrv_ctx *ctx, int fd, const char *alpn, struct tlssrv_conn **pconn);
/* Frees c and sends nothing: the caller closes the socket. NULL is ignored. */
void tlssrv_conn_free(struct tlssrv_conn *c);

/* Advances the handshake: 0 once complete, DV_EAGAIN, DV_ETLS (protocol or
 * ALPN failure, logged at debug level: clients are untrusted) or DV_ECONN. */
int tlssrv_conn_handshake(struct tlssrv_conn *c);
/* As the client layer's (tls/tls.h): the count, DV_EAGAIN, DV_ECONN or
 * DV_ETLS; after DV_EAGAIN a write must offer the same bytes again. */
long tlssrv_conn_read(struct tlssrv_conn *c, void *buf, size_t len);
long tlssrv_conn_write(struct tlssrv_conn *c, const void *buf, size_t len);
/* Bytes already buffered (decrypted, or records read and not yet
 * decrypted): readable without the socket saying so. */
bool tlssrv_conn_pending(const struct tlssrv_conn *c);
bool tlssrv_conn_wants_write(const struct tlssrv_conn *c);
/* True when the handshake resumed a session (a ticket). */
bool tlssrv_conn_resumed(const struct tlssrv_conn *c);
/* Sends a close_notify if it fits in the socket buffer; never blocks. */
void tlssrv_conn_shutdown(struct tlssrv_conn *c);

#endif
