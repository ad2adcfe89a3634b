/* frontend — sockets that face clients. A UDP and a TCP listener per
 * configured address hand every message to the query engine and send its
 * replies back. Listeners are reference-counted: a query in flight holds its
 * listener (and TCP connection) until its reply is sent, so a reload or a
 * shutdown can close a listener without pulling a socket from under a reply. */
#ifndef DV_FRONTEND_FRONTEND_H
#define DV_FRONTEND_FRONTEND_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

struct query_engine;
struct fe_udp;
struct fe_tcp;
struct tlssrv_ctx;
struct fe_stream_proto;

struct fe_tcp_opts {
    unsigned idle_timeout_ms; /* RFC 7766 §6.2.3: close idle clients */
    unsigned max_conns;       /* open at once; at the cap the longest idle one is closed */
    unsigned max_conns_per_client; /* per client address; 0 = no limit */
};

/* Binds and starts serving. local is the address rules match queries on; it
 * is borrowed and must stay valid (fe_*_set_local moves it). NULL on
 * failure, with errno set. */
struct fe_udp *fe_udp_new(struct ev_loop *loop, const struct net_addr *a,
                          struct query_engine *qe, const struct net_addr *local);
struct fe_tcp *fe_tcp_new(struct ev_loop *loop, const struct net_addr *a,
                          struct query_engine *qe, const struct fe_tcp_opts *o,
                          const struct net_addr *local);
/* An encrypted listener: the TCP listener with its bytes through TLS from
 * tls (referenced), carrying RFC 7766 frames (DoT, RFC 7858) when proto is
 * NULL, else proto (DoH, stream.h) with proto_arg. Same bounds, same close. */
struct fe_tcp *fe_tcp_new_tls(struct ev_loop *loop, const struct net_addr *a,
                              struct query_engine *qe, const struct fe_tcp_opts *o,
                              const struct net_addr *local, struct tlssrv_ctx *tls,
                              const struct fe_stream_proto *proto, void *proto_arg);
/* New connections use tls from now on (a reloaded certificate); open ones
 * keep the context they started with. */
void fe_tcp_set_tls(struct fe_tcp *t, struct tlssrv_ctx *tls);
void fe_udp_set_local(struct fe_udp *u, const struct net_addr *local);
void fe_tcp_set_local(struct fe_tcp *t, const struct net_addr *local);

/* Stops reading new queries; replies still in flight are still sent. Then
 * drops the owner's reference (the object goes when the last query does). */
void fe_udp_close(struct fe_udp *u);
/* Stops accepting; idle connections close now, busy ones after their last
 * reply. Then drops the owner's reference. */
void fe_tcp_close(struct fe_tcp *t);

/* ---- DNS over QUIC (RFC 9250, doq_listen.c) ---- */
struct fe_doq;

struct fe_doq_opts {
    unsigned idle_timeout_ms;      /* QUIC max_idle_timeout */
    unsigned max_conns;            /* open at once; further Initials go unanswered */
    unsigned max_conns_per_client; /* per client address; 0 = no limit */
    unsigned retry_above;          /* open connections from which a Retry is asked */
};

struct fe_doq_stats {
    uint64_t conns, queries, early_queries; /* early: sent as 0-RTT data */
    uint64_t retries, bad_tokens, refused;  /* refused: at a connection cap */
    uint64_t handshake_failures; /* closed before the handshake completed */
    uint64_t idle_closed;        /* closed by the idle timeout */
    uint64_t tokens_sent;        /* NEW_TOKEN frames (RFC 9000 8.1.3) */
    uint64_t tokens_accepted;    /* returning clients validated by one: no Retry */
    uint64_t open;               /* connections open now (a gauge) */
};

/* Binds a UDP socket and serves DoQ with the QUIC server context tls
 * (tlssrv_ctx_new_quic; referenced). NULL with errno on failure. */
struct fe_doq *fe_doq_new(struct ev_loop *loop, const struct net_addr *a, struct query_engine *qe,
                          const struct fe_doq_opts *o, const struct net_addr *local,
                          struct tlssrv_ctx *tls);
/* New connections use tls from now on; open ones keep theirs. */
void fe_doq_set_tls(struct fe_doq *d, struct tlssrv_ctx *tls);
void fe_doq_set_local(struct fe_doq *d, const struct net_addr *local);
void fe_doq_stats(const struct fe_doq *d, struct fe_doq_stats *out);
/* Logs the counters, closes every connection (NO_ERROR) and the socket;
 * answers still held by the query engine find their connection closed. */
void fe_doq_close(struct fe_doq *d);

/* Open TCP client connections (for tests of the connection cap and drain). */
size_t fe_tcp_conns(const struct fe_tcp *t);

#endif
