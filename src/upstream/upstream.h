/* upstream — one configured upstream server and the transport interface every
 * protocol implements (plain, dot, doh, doq, odoh).
 *
 * The query layer owns the retry/deadline logic; a transport only moves one
 * query to its server and reports the outcome through xfer->done. */
#ifndef DV_UPSTREAM_UPSTREAM_H
#define DV_UPSTREAM_UPSTREAM_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/net.h"
#include "upstream/ustats.h"

struct upstream;
struct xfer;

/* Called exactly once per xfer that send() accepted, unless the xfer was
 * cancelled first; never from inside send(). rc is 0 with the answer in
 * ans[0..len) (valid only during the call; the transport has matched the
 * message ID) or a DV_E* code with ans NULL. */
typedef void (*xfer_done_fn)(struct xfer *x, int rc, const uint8_t *ans, size_t len);

/* One exchange with one upstream. Owned by the caller, who keeps it and the
 * query bytes alive until done runs or cancel returns. */
struct xfer {
    const uint8_t *msg; /* query in wire form; its ID is used on the wire */
    size_t len;
    xfer_done_fn done;
    void *owner;
    void *tpriv; /* transport-private, set by send() */
    unsigned ignored; /* answers with our ID for another question, dropped */
};

struct transport_ops {
    const char *name; /* "plain", "tcp", "dot", "doh", "doq", "odoh" */
    /* Sets up u->priv from u's settings. 0 or DV_E*. */
    int (*open)(struct upstream *u);
    /* Queues x. 0, or DV_E* (then done is never called). */
    int (*send)(struct upstream *u, struct xfer *x);
    /* Forgets x; done will not be called for it. */
    void (*cancel)(struct upstream *u, struct xfer *x);
    /* Frees u->priv and every connection. No xfer is pending when called. */
    void (*close)(struct upstream *u);
    /* The network changed (an address, a default route, a link, a sleep):
     * connections from local addresses that are gone close now, their
     * queries moved to a new connection; the others take no new queries
     * and a new connection is warmed up at once when the upstream was in
     * use. May be NULL (nothing long-lived to check). */
    void (*netchange)(struct upstream *u);
};

enum upstream_proto {
    UPSTREAM_UDP, UPSTREAM_TCP, UPSTREAM_TLS, UPSTREAM_HTTPS, UPSTREAM_QUIC, UPSTREAM_ODOH
};

struct pool_health;

struct upstream {
    char *name;
    char *url;
    const struct transport_ops *ops;
    enum upstream_proto proto;
    struct net_addr addr;
    char *host;        /* the URL's host (a name or an IP literal) */
    char *path;        /* the URL's path for DoH ("/dns-query"), else NULL */
    struct cfg_upstream cfg; /* a private copy of its settings */
    struct ev_loop *loop;
    void *priv;

    /* health: pool.c's alone, read through pool.h (pool_healthy, ...) */
    struct pool_health *health;
    unsigned refs;

    /* every bootstrap address of a host that is a name, in the order
     * connections race them (upstream/happy.h); n_addrs is 1 for an IP */
    struct net_addr *addrs;
    size_t n_addrs;          /* 0 until a bootstrap upstream answered */
    uint16_t port;           /* the URL's port, for addresses learnt later */
    struct ustats stats;  /* counters for metrics; see ustats.h */
};

/* Creates an upstream from its settings; the URL scheme picks the transport
 * (udp://IP[:PORT], tcp://IP[:PORT]; later transports add theirs). cfg is
 * copied. On failure returns NULL and writes the reason to err. */
struct upstream *upstream_new(struct ev_loop *loop, const struct cfg_upstream *cfg,
                              const struct config *global, char *err, size_t errlen);
/* Replaces u's addresses (learnt through a bootstrap upstream; the ports
 * must be set): connections opened from now on race them. 0 or DV_ENOMEM. */
int upstream_set_addrs(struct upstream *u, const struct net_addr *addrs, size_t n);
void upstream_ref(struct upstream *u);
/* The network changed: the transport checks its connections (see
 * transport_ops.netchange) and the backoff learnt on the old network ends. */
void upstream_netchange(struct upstream *u);
/* Drops a reference; the last one closes the transport and frees u. */
void upstream_unref(struct upstream *u);

extern const struct transport_ops plain_ops;
extern const struct transport_ops dot_ops;
extern const struct transport_ops tcp_ops; /* dot.c in plaintext mode */
extern const struct transport_ops doq_ops;
extern const struct transport_ops doh_ops;
extern const struct transport_ops odoh_ops;

#endif
