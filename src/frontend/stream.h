/* stream — the seam between the TCP listener (tcp.c: accepting, TLS, the
 * per-client and per-connection bounds, idle and frame deadlines, output
 * buffering) and a protocol other than RFC 7766 framing spoken over its
 * connections (DoH: doh_listen.c). The protocol consumes the input and
 * writes its output through these calls; tcp.c keeps every bound. */
#ifndef DV_FRONTEND_STREAM_H
#define DV_FRONTEND_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct query_client;
struct query_engine;
struct tcp_conn;

struct fe_stream_proto {
    const char *alpn; /* the one TLS ALPN protocol offered, e.g. "h2" */
    /* Per-connection state, made once the TLS handshake is done; NULL
     * closes the connection. arg is the listener's (fe_tcp_new_tls). */
    void *(*open)(void *arg, struct tcp_conn *c);
    /* New input in fe_conn_in(c): consume what can be. */
    void (*input)(void *st, struct tcp_conn *c);
    /* The connection is gone and nothing refers to it any more. */
    void (*free)(void *st);
};

struct buf *fe_conn_in(struct tcp_conn *c);
/* Appends to the output (sent by fe_conn_flush). 0 or DV_ENOMEM. */
int fe_conn_write(struct tcp_conn *c, const void *p, size_t len);
/* Sends what it can of the output now and re-arms the watchers. */
void fe_conn_flush(struct tcp_conn *c);
/* A query in flight keeps the connection (its reply still has somewhere
 * to go); each hold is matched by one release. */
void fe_conn_hold(struct tcp_conn *c);
void fe_conn_release(struct tcp_conn *c);
/* The client as the query engine sees it (the sink fields are left). */
void fe_conn_client(const struct tcp_conn *c, struct query_client *qc);
struct query_engine *fe_conn_qe(const struct tcp_conn *c);
/* The client was answered or asked: the idle deadline starts again. */
void fe_conn_touch(struct tcp_conn *c);
/* Reads no more; closes once the output is sent and nothing is pending. */
void fe_conn_finish(struct tcp_conn *c);
bool fe_conn_closed(const struct tcp_conn *c);

#endif
