/* query — the per-query state machine. A client query enters through
 * query_submit() and ends in exactly one reply through its client's sink (the
 * answer, or FORMERR/NOTIMP/BADVERS/SERVFAIL), or in a counted drop when it
 * is not a DNS query at all. In between: identical questions in flight are
 * coalesced into one upstream exchange, and the upstreams of the pool are
 * tried in turn until one answers or the deadline passes. */
#ifndef DV_RESOLVE_QUERY_H
#define DV_RESOLVE_QUERY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

struct cache;
struct cfg_limits;
struct obs;
struct policy;
struct qlog;
struct query_engine;

struct query_client;

/* How a reply gets back to the client that asked. */
struct query_sink_ops {
    /* Sends one reply to c; the sink copies msg before returning. */
    void (*send)(void *ctx, const struct query_client *c, const uint8_t *msg, size_t len);
    /* A query that cannot be answered at once holds its sink until it sends
     * (or is dropped at shutdown) and releases it then. */
    void (*hold)(void *ctx);
    void (*release)(void *ctx);
};

struct query_client {
    struct net_addr peer;
    const struct net_addr *local; /* the listener's address, for rules */
    /* UDP on a wildcard address: the address the query was sent to and the
     * interface it came in on, so the reply leaves from that same address */
    struct net_addr dst;
    int ifindex;
    bool has_dst;
    bool tcp; /* replies are never truncated below 65535 bytes */
    const struct query_sink_ops *ops;
    void *ctx;
};

struct query_opts {
    unsigned timeout_ms;       /* client-facing deadline; SERVFAIL after it */
    unsigned stale_timeout_ms; /* RFC 8767 client timeout before a stale answer; 0 = off */
    /* the allow list, rate limit, in-flight caps and UDP answer size;
     * borrowed until the next configure; NULL = none */
    const struct cfg_limits *limits;
};

struct query_stats {
    uint64_t queries, answered, servfail, formerr, notimp, dropped;
    uint64_t coalesced, upstream_sent, upstream_failed, truncated;
    uint64_t local, cache_hits, stale_served, prefetches;
    uint64_t upstream_ignored, bad_answers; /* spoof defence, log throttle */
    uint64_t refused, ratelimited, overloaded; /* client bounds */
    uint64_t tcp_per_client, tcp_evicted;
    uint64_t app_lookups, app_failed; /* resolve/appid.c */
};

/* Each counter's name and meaning, for every place that shows them (the
 * SIGUSR1 log line, the control socket, the metrics endpoint). */
struct query_stat_desc {
    const char *name;
    const char *help;
    size_t offset; /* of its uint64_t in struct query_stats */
};
extern const struct query_stat_desc query_stat_descs[];
extern const size_t query_stat_ndescs;

static inline uint64_t query_stat_value(const struct query_stats *s,
                                        const struct query_stat_desc *d)
{
    return *(const uint64_t *)((const char *)s + d->offset);
}

/* cache may be NULL (no caching); it is shared, not owned, and must outlive
 * the engine or be replaced through query_engine_configure first. */
struct query_engine *query_engine_new(struct ev_loop *loop, const struct query_opts *o,
                                      struct policy *policy, struct cache *cache);
/* Fails every pending query with SERVFAIL first. */
void query_engine_del(struct query_engine *qe);
/* New settings, policy and cache for queries that start from now on; queries
 * in flight finish on the pools they started with. Takes a reference on
 * policy. */
void query_engine_configure(struct query_engine *qe, const struct query_opts *o,
                            struct policy *policy, struct cache *cache);

/* Logs every query to ql from now on (NULL: stop). Borrowed: the caller
 * keeps it alive while it is set, and replaces it before freeing it. */
void query_engine_set_qlog(struct query_engine *qe, struct qlog *ql);

/* Portal-detection names and an open portal go to p's resolver (see
 * portal.h); NULL turns that off. p must outlive its use or be replaced. */
struct portal;
void query_engine_set_portal(struct query_engine *qe, struct portal *p);

/* Counts every client message and reply in o (borrowed, may be NULL); the
 * owner unsets it before freeing it. */
void query_engine_set_obs(struct query_engine *qe, struct obs *o);

/* Handles one client message. msg is only read during the call. */
void query_submit(struct query_engine *qe, const uint8_t *msg, size_t len,
                  const struct query_client *c);
/* Counts a message the frontend dropped before parsing (an oversized
 * datagram, a zero-length TCP frame) on c's listener (c->local, c->tcp). */
void query_count_drop(struct query_engine *qe, const struct query_client *c);
/* Counts a TCP connection closed by a client bound: one over its client's
 * connection cap (per_client), or an idle one closed to make room. */
void query_count_tcp_closed(struct query_engine *qe, bool per_client);

size_t query_pending(const struct query_engine *qe);
void query_stats(const struct query_engine *qe, struct query_stats *out);
/* Writes "name=value ..." for every counter and the questions in flight.
 * Returns the length, as snprintf. */
int query_stats_format(const struct query_engine *qe, char *out, size_t cap);

#endif
