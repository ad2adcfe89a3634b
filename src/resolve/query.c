#include "resolve/query.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "dns/dns.h"
#include "resolve/cache.h"
#include "resolve/cname.h"
#include "resolve/limits.h"
#include "resolve/obs.h"
#include "resolve/policy.h"
#include "resolve/qlog.h"
#include "resolve/portal.h"
#include "upstream/pool.h"

/* One client waiting for an in-flight question. It keeps its own parsed
 * query so its reply can restore its ID, question case, RD bit and EDNS. */
struct waiter {
    struct waiter *next;
    struct query_client c;
    struct dns_query_info qi;
    int ticket; /* its count against the in-flight caps, or -1 */
    struct waiter_log *log; /* only while the query log is on */
};

/* What the query log needs to know about a waiting query when it ends. */
struct waiter_log {
    uint64_t start_us;
    int rule;
    bool app_known;
    uint32_t uid;
    char comm[16];
    char group[64];
    char cgroup[]; /* "" when unknown */
};

enum { QMSG_MAX = DNS_HDR_LEN + DNS_NAME_MAX + 4 + 11 };

/* One try of one upstream. Several may be active at once: the parallel
 * strategy starts them together, hedging and a slow upstream start the next
 * without giving up on the earlier ones, whose late answer is still good. */
struct attempt {
    struct xfer x; /* first: xfer_done finds the attempt from it */
    struct inflight *f;
    struct upstream *u;
    uint64_t start;
    uint64_t start_us; /* for the latency histogram, finer than start */
    bool active;
    uint8_t msg[QMSG_MAX]; /* the query with this attempt's own ID */
};

/* One upstream exchange shared by every client asking the same question. */
struct inflight {
    struct inflight *hnext;
    uint32_t hash;
    struct query_engine *qe;
    struct dns_question key; /* lower-cased */
    bool do_bit, cd_bit;
    unsigned cflags;         /* cache key bits */
    struct cache *cache;     /* where the answer goes; NULL = not cached */
    ev_timer stale_timer;    /* RFC 8767 client timeout */

    uint8_t msg[QMSG_MAX]; /* the upstream query */
    size_t msg_len;

    struct pool *pool;
    struct attempt *att; /* one per upstream, in the pool's order */
    size_t n_att, next, active;
    uint64_t deadline;
    ev_timer timer;      /* the next attempt's start, or the deadline */

    uint8_t *fallback; /* a SERVFAIL/REFUSED answer kept in case nobody does better */
    size_t fallback_len;
    const struct upstream *answered_by; /* for the query log */
    struct waiter *waiters;
};
/* inflight_new puts the attempts right after the inflight */
_Static_assert(_Alignof(struct attempt) <= _Alignof(struct inflight), "attempt alignment");

struct query_engine {
    struct ev_loop *loop;
    struct query_opts opts;
    struct policy *policy;
    struct cache *cache;
    struct limits *limits;
    struct inflight **table;
    size_t nbuckets, count;
    uint32_t seed;
    int *views; /* the cache view of each policy group, or an error */
    size_t n_views;
    struct query_stats st;
    uint64_t bad_warn_at;    /* ms: no "bad answer" warning before this */
    uint64_t bad_unreported; /* bad answers since the last warning */
    struct qlog *qlog; /* NULL: off */
    struct portal *portal; /* NULL without [portal] */
    struct obs *obs; /* per-listener, per-rule and top-k counters; may be NULL */
};

enum { BAD_WARN_INTERVAL_MS = 10000 };

static uint8_t reply_buf[DNS_MSG_MAX];

static uint64_t qe_now(const struct query_engine *qe)
{
    return net_now_ms();
}

static uint32_t key_hash(uint32_t seed, const struct dns_question *q, bool do_bit, bool cd,
                         const struct pool *pool)
{
    uint32_t h = 2166136261u ^ seed ^ (uint32_t)(uintptr_t)pool;

    for (size_t i = 0; i < q->name_len; i++)
        h = (h ^ q->name[i]) * 16777619u;
    h = (h ^ q->qtype) * 16777619u;
    h = (h ^ q->qclass) * 16777619u;
    h = (h ^ (uint32_t)(do_bit | cd << 1)) * 16777619u;
    return h;
}

static struct inflight **bucket(struct query_engine *qe, uint32_t h)
{
    return &qe->table[h & (qe->nbuckets - 1)];
}

/* Coalescing key: the question, DO, CD and the pool that would answer it. */
static struct inflight *table_find(struct query_engine *qe, uint32_t h,
                                   const struct dns_question *q, bool do_bit, bool cd,
                                   const struct pool *pool)
{
    for (struct inflight *f = *bucket(qe, h); f; f = f->hnext)
        if (f->hash == h && f->do_bit == do_bit && f->cd_bit == cd && f->pool == pool &&
            f->key.qtype == q->qtype && f->key.qclass == q->qclass &&
            f->key.name_len == q->name_len && !memcmp(f->key.name, q->name, q->name_len))
            return f;
    return NULL;
}

static void table_grow(struct query_engine *qe)
{
    size_t n = qe->nbuckets * 2;
    struct inflight **t = calloc(n, sizeof(*t));

    if (!t)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < qe->nbuckets; i++) {
        struct inflight *f = qe->table[i], *next;
        for (; f; f = next) {
            next = f->hnext;
            f->hnext = t[f->hash & (n - 1)];
            t[f->hash & (n - 1)] = f;
        }
    }
    free(qe->table);
    qe->table = t;
    qe->nbuckets = n;
}

static void table_remove(struct query_engine *qe, struct inflight *f)
{
    for (struct inflight **pp = bucket(qe, f->hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == f) {
            *pp = f->hnext;
            qe->count--;
            return;
        }
    }
}

/* The cache key bits: DO, CD and the view of the group that answers, found
 * by the group's name so that a reload that moves groups keeps each group's
 * answers its own. False when the group has no view (out of memory): its
 * answers are then not cached. */
static bool query_cflags(const struct query_engine *qe, const struct dns_query_info *qi,
                         unsigned group, unsigned *pflags)
{
    if (group >= qe->n_views || qe->views[group] < 0)
        return false;
    *pflags = cache_flags(qi) | (unsigned)qe->views[group] << CACHE_F_VIEW_SHIFT;
    return true;
}

/* What the client can receive; over UDP never more than udp_max_size, so a
 * spoofed query cannot buy a large answer (the client retries over TCP). */
static size_t client_limit(const struct query_engine *qe, const struct query_client *c,
                           const struct dns_query_info *qi)
{
    size_t max = qe->opts.limits ? qe->opts.limits->udp_max_size : DNS_MSG_MAX;

    if (c->tcp)
        return DNS_MSG_MAX;
    if (!qi->edns.present || qi->edns.udp_size < DNS_UDP_CLASSIC)
        return DNS_UDP_CLASSIC;
    return qi->edns.udp_size < max ? qi->edns.udp_size : max;
}

/* The sink of a CNAME target's lookup (see "CNAME answers" below). */
static const struct query_sink_ops chase_sink;

/* Every reply to a client leaves through here. */
static void reply(struct query_engine *qe, const struct query_client *c, const uint8_t *msg,
                  size_t len)
{
    if (c->ops != &chase_sink) /* counted once, as the client's reply */
        obs_reply(qe->obs, c, msg, len);
    c->ops->send(c->ctx, c, msg, len);
}

static void send_error(struct query_engine *qe, const struct query_client *c,
                       const struct dns_query_info *qi, bool have_q, int rcode)
{
    int n = dns_reply_error(qi, have_q, rcode, reply_buf, sizeof(reply_buf));

    if (n < 0)
        return;
    switch (rcode) {
    case DNS_RCODE_SERVFAIL: qe->st.servfail++; break;
    case DNS_RCODE_FORMERR: qe->st.formerr++; break;
    case DNS_RCODE_NOTIMP: qe->st.notimp++; break;
    default: break;
    }
    reply(qe, c, reply_buf, (size_t)n);
}

/* The answer as this client must see it: its ID, its question's case, its RD
 * bit, EDNS only if it used EDNS, and truncated to what it can receive. */
static void send_answer(struct query_engine *qe, const struct query_client *c,
                        const struct dns_query_info *qi, const uint8_t *ans, size_t len)
{
    uint16_t flags;
    size_t limit = client_limit(qe, c, qi);

    memcpy(reply_buf, ans, len);
    dns_msg_restore(reply_buf, len, qi->hdr.id, &qi->q);
    flags = (uint16_t)((dns_get16(reply_buf + 2) & ~DNS_FLAG_RD) | (qi->hdr.flags & DNS_FLAG_RD));
    dns_put16(reply_buf + 2, flags);
    len = dns_msg_fit_edns(reply_buf, len, qi->edns.present, DNS_EDNS_DEFAULT);
    if (len > limit) {
        len = dns_msg_truncate(reply_buf, len, limit);
        qe->st.truncated++;
    }
    qe->st.answered++;
    reply(qe, c, reply_buf, len);
}

/* Moves the transport's count of ignored answers into the stats; called
 * whenever an attempt ends, by an answer or a cancel. */
static void attempt_collect(struct attempt *a)
{
    a->f->qe->st.upstream_ignored += a->x.ignored;
    a->x.ignored = 0;
}

static void waiter_release(struct query_engine *qe, struct waiter *w)
{
    limits_inflight_put(qe->limits, w->ticket);
    w->c.ops->release(w->c.ctx);
    free(w->log);
    free(w);
}

/* ---- the query log ---------------------------------------------------------- */

static int reply_rcode(const uint8_t *msg, size_t len)
{
    return len >= DNS_HDR_LEN ? DNS_RCODE(dns_get16(msg + 2)) : -1;
}

/* One line for a query answered at once (local, cache, error). */
static void log_now(struct query_engine *qe, const struct query_client *c,
                    const struct dns_query_info *qi, const struct policy_client *pc,
                    const struct policy_decision *pd, int rcode, uint64_t start_us,
                    const char *source)
{
    struct qlog_entry e = {
        .client = &c->peer, .tcp = c->tcp, .name = qi->q.name, .name_len = qi->q.name_len,
        .qtype = qi->q.qtype, .rcode = rcode, .latency_us = qlog_now_us() - start_us,
        .source = source,
    };

    if (pc && pc->app_ok) {
        e.app_known = true;
        e.uid = pc->uid;
        e.cgroup = pc->cgroup;
        e.comm = pc->comm;
    }
    if (pd) {
        e.rule = pd->rule ? pd->rule->line : 0;
        e.group = pd->action == CFG_ACTION_GROUP ? pool_name(pd->pool) : NULL;
    }
    qlog_write(qe->qlog, &e);
    obs_recent(qe->obs, &e);
}

/* What a waiting query keeps for its line: copies, since the policy and
 * its strings may be replaced before the answer comes. NULL on ENOMEM (the
 * line is then not written). */
static struct waiter_log *waiter_log_new(const struct policy_client *pc,
                                         const struct policy_decision *pd, uint64_t start_us)
{
    const char *cg = pc->app_ok && pc->cgroup ? pc->cgroup : "";
    struct waiter_log *l = calloc(1, sizeof(*l) + strlen(cg) + 1);

    if (!l)
        return NULL;
    l->start_us = start_us;
    l->rule = pd->rule ? pd->rule->line : 0;
    snprintf(l->group, sizeof(l->group), "%s", pd->pool ? pool_name(pd->pool) : "");
    if (pc->app_ok) {
        l->app_known = true;
        l->uid = pc->uid;
        snprintf(l->comm, sizeof(l->comm), "%s", pc->comm ? pc->comm : "");
    }
    strcpy(l->cgroup, cg);
    return l;
}

static void log_waiter(struct query_engine *qe, const struct waiter *w,
                       const struct upstream *u, int rcode, const char *source)
{
    const struct waiter_log *l = w->log;

    if (!qe->qlog || !l)
        return;
    struct qlog_entry e = {
        .client = &w->c.peer, .tcp = w->c.tcp, .name = w->qi.q.name,
        .name_len = w->qi.q.name_len, .qtype = w->qi.q.qtype, .app_known = l->app_known,
        .uid = l->uid, .cgroup = l->cgroup[0] ? l->cgroup : NULL,
        .comm = l->comm[0] ? l->comm : NULL, .rule = l->rule,
        .group = l->group[0] ? l->group : NULL,
        .upstream = u ? u->name : NULL, .transport = u ? u->ops->name : NULL, .rcode = rcode,
        .latency_us = qlog_now_us() - l->start_us, .source = source,
    };
    qlog_write(qe->qlog, &e);
    obs_recent(qe->obs, &e);
}

void query_engine_set_qlog(struct query_engine *qe, struct qlog *ql)
{
    qe->qlog = ql;
}

static void inflight_free(struct inflight *f)
{
    struct query_engine *qe = f->qe;

    for (size_t i = 0; i < f->n_att; i++) {
        if (f->att[i].active)
            f->att[i].u->ops->cancel(f->att[i].u, &f->att[i].x);
        attempt_collect(&f->att[i]);
    }
    ev_timer_stop(qe->loop, &f->timer);
    ev_timer_stop(qe->loop, &f->stale_timer);
    table_remove(qe, f);
    for (struct waiter *w = f->waiters, *next; w; w = next) {
        next = w->next;
        waiter_release(qe, w);
    }
    for (size_t i = 0; i < f->n_att; i++)
        upstream_unref(f->att[i].u);
    pool_unref(f->pool);
    free(f->fallback);
    free(f);
}

/* Answers w from an expired cache entry (TTL 30, RFC 8767). False when the
 * cache no longer has one. */
static bool send_stale(struct inflight *f, struct waiter *w)
{
    struct query_engine *qe = f->qe;
    size_t len = 0;

    if (!f->cache || qe->cache != f->cache)
        return false;
    int rc = cache_lookup_stale(f->cache, &w->qi.q, f->cflags, w->qi.hdr.id, net_now_ms(),
                                reply_buf, sizeof(reply_buf), &len);
    if (rc != CACHE_STALE && rc != CACHE_HIT)
        return false;
    qe->st.stale_served += rc == CACHE_STALE;
    /* the cache restored ID and case; shape EDNS and size as for any answer */
    uint8_t copy[DNS_MSG_MAX];
    memcpy(copy, reply_buf, len);
    send_answer(qe, &w->c, &w->qi, copy, len);
    return true;
}

/* True when the best f got is an upstream's SERVFAIL answer. */
static bool servfail_answer(const struct inflight *f)
{
    return f->fallback && f->fallback_len >= DNS_HDR_LEN &&
           DNS_RCODE(dns_get16(f->fallback + 2)) == DNS_RCODE_SERVFAIL;
}

/* Ends f: every waiter gets the answer, or when ans is NULL the best we
 * have: an upstream's SERVFAIL/REFUSED, a stale cache entry, or SERVFAIL. */
static void inflight_finish(struct inflight *f, const uint8_t *ans, size_t len)
{
    struct query_engine *qe = f->qe;

    if (ans && f->cache && qe->cache == f->cache)
        cache_insert(f->cache, &f->key, f->cflags, ans, len, net_now_ms());
    else if (!ans && f->cache && qe->cache == f->cache && servfail_answer(f))
        /* servfail_ttl damps a retry storm; the cache never lets it replace
         * an answer that is fresh or still servable stale */
        cache_insert(f->cache, &f->key, f->cflags, f->fallback, f->fallback_len, net_now_ms());
    else if (!ans && f->cache && qe->cache == f->cache && !f->waiters)
        cache_refresh_failed(f->cache, &f->key, f->cflags);
    for (struct waiter *w = f->waiters; w; w = w->next) {
        if (ans) {
            send_answer(qe, &w->c, &w->qi, ans, len);
            log_waiter(qe, w, f->answered_by, reply_rcode(ans, len), "upstream");
        } else if (send_stale(f, w)) {
            log_waiter(qe, w, NULL, reply_rcode(reply_buf, DNS_HDR_LEN), "stale");
        } else if (f->fallback) {
            send_answer(qe, &w->c, &w->qi, f->fallback, f->fallback_len);
            log_waiter(qe, w, NULL, reply_rcode(f->fallback, f->fallback_len), "upstream");
        } else {
            send_error(qe, &w->c, &w->qi, true, DNS_RCODE_SERVFAIL);
            log_waiter(qe, w, NULL, DNS_RCODE_SERVFAIL, "error");
        }
    }
    inflight_free(f);
}

/* The upstream is slow and the cache has an expired answer: waiting clients
 * get it now; the upstream exchange goes on to refresh the cache. */
static void inflight_stale_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct inflight *f = w->data;
    struct waiter **pp = &f->waiters;

    while (*pp) {
        struct waiter *wt = *pp;
        if (send_stale(f, wt)) {
            log_waiter(f->qe, wt, NULL, reply_rcode(reply_buf, DNS_HDR_LEN), "stale");
            *pp = wt->next;
            waiter_release(f->qe, wt);
        } else {
            pp = &wt->next;
        }
    }
}

static void xfer_done(struct xfer *x, int rc, const uint8_t *ans, size_t len);

/* A misbehaving upstream must not flood the log with the names clients ask
 * for: the name goes to the debug log, and a warning with the count of bad
 * answers at most every BAD_WARN_INTERVAL_MS. */
static void report_bad_answer(struct query_engine *qe, const struct upstream *u,
                              const struct dns_question *q, int rc)
{
    char name[DNS_NAME_MAX * 4 + 1];
    uint64_t now = qe_now(qe);

    qe->st.bad_answers++;
    qe->bad_unreported++;
    if (log_level >= DV_LOG_DEBUG) {
        dns_name_to_str(q->name, q->name_len, name, sizeof(name));
        log_debug("upstream %s: bad answer for %s: %s", u->name, name, dv_strerror(rc));
    }
    if (now < qe->bad_warn_at)
        return;
    log_warn("upstream %s: bad answer: %s (%llu bad answers since the last warning, "
             "%llu in all)", u->name, dv_strerror(rc), (unsigned long long)qe->bad_unreported,
             (unsigned long long)qe->st.bad_answers);
    qe->bad_unreported = 0;
    qe->bad_warn_at = now + BAD_WARN_INTERVAL_MS;
}

/* Starts the next upstream of the plan. False when none is left (or every
 * remaining one refused at once). */
static bool attempt_launch(struct inflight *f, uint64_t now)
{
    struct query_engine *qe = f->qe;

    while (f->next < f->n_att) {
        struct attempt *a = &f->att[f->next++];
        memcpy(a->msg, f->msg, f->msg_len);
        /* an ID of its own: a late answer to another attempt is not this one */
        dns_put16(a->msg, (uint16_t)rand_u32());
        a->x.msg = a->msg;
        a->x.len = f->msg_len;
        a->x.done = xfer_done;
        a->x.owner = f;
        a->x.tpriv = NULL;
        a->x.ignored = 0;
        a->start = now;
        a->start_us = ustats_now_us();
        int rc = a->u->ops->send(a->u, &a->x);
        if (rc == 0) {
            a->active = true;
            f->active++;
            qe->st.upstream_sent++;
            ustats_sent(&a->u->stats);
            return true;
        }
        log_debug("upstream %s: send failed: %s", a->u->name, dv_strerror(rc));
        qe->st.upstream_failed++;
        ustats_fail(&a->u->stats, rc);
        pool_report(a->u, rc, 0, now);
    }
    return false;
}

/* Arms the timer: at the deadline, or earlier when another upstream should
 * be started (the remaining time shared among the upstreams still to try,
 * at least half a second each; sooner with hedging). */
static void inflight_schedule(struct inflight *f, uint64_t now)
{
    uint64_t at = f->deadline;

    if (f->next < f->n_att && now < f->deadline) {
        uint64_t left = f->deadline - now;
        uint64_t slot = left / (f->n_att - f->next + 1);
        unsigned hedge = pool_hedge_ms(f->pool);
        if (slot < 500)
            slot = 500;
        if (hedge && hedge < slot)
            slot = hedge;
        if (now + slot < at)
            at = now + slot;
    }
    ev_timer_stop(f->qe->loop, &f->timer);
    ev_timer_set(&f->timer, at > now ? (double)(at - now) / 1000.0 : 0., 0.);
    ev_timer_start(f->qe->loop, &f->timer);
}

/* Starts the exchange: as many attempts as the strategy starts at once
 * (pool_fanout: every upstream for parallel), each on the next upstream
 * that accepts the query. */
static void inflight_start(struct inflight *f)
{
    uint64_t now = qe_now(f->qe);
    size_t fanout = pool_fanout(f->pool);

    for (size_t started = 0; started < fanout && attempt_launch(f, now); started++)
        ;
    if (f->active == 0) {
        inflight_finish(f, NULL, 0);
        return;
    }
    inflight_schedule(f, now);
}

/* One attempt ended without a usable answer. With others still running we
 * wait for them; otherwise the next upstream is tried at once. */
static void attempt_failed(struct attempt *a, int rc)
{
    struct inflight *f = a->f;
    uint64_t now = qe_now(f->qe);

    a->active = false;
    f->active--;
    f->qe->st.upstream_failed++;
    pool_report(a->u, rc, now - a->start, now);
    if (f->active > 0)
        return;
    if (now < f->deadline && attempt_launch(f, now)) {
        inflight_schedule(f, now);
        return;
    }
    inflight_finish(f, NULL, 0);
}

static void xfer_done(struct xfer *x, int rc, const uint8_t *ans, size_t len)
{
    struct attempt *a = (struct attempt *)x;
    struct inflight *f = a->f;

    attempt_collect(a);
    if (rc) {
        log_debug("upstream %s: %s", a->u->name, dv_strerror(rc));
        ustats_fail(&a->u->stats, rc);
        attempt_failed(a, rc);
        return;
    }
    rc = dns_upstream_answer_check(ans, len, &f->key);
    if (rc) {
        report_bad_answer(f->qe, a->u, &f->key, rc);
        ustats_fail(&a->u->stats, DV_EPROTO);
        attempt_failed(a, DV_EPROTO);
        return;
    }
    int rcode = DNS_RCODE(dns_get16(ans + 2));
    ustats_answer(&a->u->stats, (unsigned)rcode, ustats_now_us() - a->start_us);
    if (rcode == DNS_RCODE_SERVFAIL || rcode == DNS_RCODE_REFUSED) {
        /* another upstream may do better; keep this one in case none does */
        uint8_t *copy = malloc(len);
        if (copy) {
            memcpy(copy, ans, len);
            free(f->fallback);
            f->fallback = copy;
            f->fallback_len = len;
        }
        attempt_failed(a, DV_ESERVFAIL);
        return;
    }
    uint64_t now = qe_now(f->qe);
    a->active = false;
    f->active--;
    pool_report(a->u, 0, now - a->start, now);
    f->answered_by = a->u;
    inflight_finish(f, ans, len);
}

static void inflight_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct inflight *f = w->data;
    uint64_t now = qe_now(f->qe);

    /* a few ms of slack: the loop's timer may fire just before our clock */
    if (now + 2 < f->deadline && attempt_launch(f, now)) {
        inflight_schedule(f, now);
        return;
    }
    if (now + 2 < f->deadline) {
        inflight_schedule(f, now); /* nothing left to start: wait for the deadline */
        return;
    }
    for (size_t i = 0; i < f->n_att; i++) {
        struct attempt *a = &f->att[i];
        if (!a->active)
            continue;
        log_debug("upstream %s: no answer in time", a->u->name);
        a->u->ops->cancel(a->u, &a->x);
        attempt_collect(a);
        a->active = false;
        f->active--;
        f->qe->st.upstream_failed++;
        ustats_fail(&a->u->stats, DV_ETIMEOUT);
        pool_report(a->u, DV_ETIMEOUT, now - a->start, now);
    }
    inflight_finish(f, NULL, 0);
}

/* Builds the upstream form of the question: our ID, RD always (a forwarder
 * asks for recursion whatever the client's RD: the exchange is shared by
 * every client of the question, and RD is no part of the key), the client's
 * CD, the lower-cased name and our own EDNS (its DO bit is part of the key). */
static void build_upstream_query(struct inflight *f, uint16_t client_flags)
{
    struct dns_cur c;
    struct dns_hdr h = {
        .flags = DNS_FLAG_RD | (client_flags & DNS_FLAG_CD),
        .qdcount = 1,
        .arcount = 1,
    };

    dns_cur_init_w(&c, f->msg, sizeof(f->msg));
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, f->key.name, f->key.name_len);
    dns_cur_put_u16(&c, f->key.qtype);
    dns_cur_put_u16(&c, f->key.qclass);
    dns_edns_write(&c, DNS_EDNS_DEFAULT, f->do_bit, 0);
    f->msg_len = c.pos;
}

static struct inflight *inflight_new(struct query_engine *qe, uint32_t h,
                                     const struct dns_question *key,
                                     const struct dns_query_info *qi, struct pool *pool,
                                     bool cached, unsigned cflags)
{
    size_t n = pool_size(pool);
    /* the attempts share the inflight's allocation; the plan of a usual
     * pool fits on the stack: three allocations per miss were one */
    struct inflight *f = calloc(1, sizeof(*f) + (n + 1) * sizeof(*f->att));
    struct upstream *order_small[16];
    struct upstream **order = n + 1 <= 16 ? order_small : calloc(n + 1, sizeof(*order));

    if (!f || !order)
        goto fail;
    if (order == order_small)
        memset(order_small, 0, sizeof(order_small));
    f->att = (struct attempt *)(void *)(f + 1);
    f->qe = qe;
    f->hash = h;
    f->key = *key;
    f->do_bit = qi->edns.do_bit;
    f->cd_bit = (qi->hdr.flags & DNS_FLAG_CD) != 0;
    f->cflags = cflags;
    f->cache = cached ? qe->cache : NULL;
    f->pool = pool;
    pool_ref(f->pool);
    pool_plan(f->pool, qe_now(qe), order);
    f->n_att = n;
    for (size_t i = 0; i < n; i++) {
        f->att[i].f = f;
        f->att[i].u = order[i];
        upstream_ref(order[i]);
    }
    if (order != order_small)
        free(order);
    f->deadline = qe_now(qe) + qe->opts.timeout_ms;
    ev_init(&f->timer, inflight_timer_cb);
    f->timer.data = f;
    ev_init(&f->stale_timer, inflight_stale_cb);
    f->stale_timer.data = f;
    build_upstream_query(f, qi->hdr.flags);

    f->hnext = *bucket(qe, h);
    *bucket(qe, h) = f;
    if (++qe->count > qe->nbuckets * 2)
        table_grow(qe);
    return f;
fail:
    if (order != order_small)
        free(order);
    free(f);
    return NULL;
}

/* The allow list and the rate limit, before any other work. False when the
 * query ends here: REFUSED for a client outside the allow list, nothing for
 * one over its rate on UDP (its source may be spoofed: any reply would go
 * to the victim), REFUSED on TCP. parse_rc says whether qi is usable. */
static bool client_admit(struct query_engine *qe, const struct query_client *c,
                         const struct dns_query_info *qi, int parse_rc)
{
    if (!qe->opts.limits)
        return true;
    if (!limits_allowed(qe->limits, &c->peer)) {
        qe->st.refused++;
        obs_bound(qe->obs, c, OBS_REFUSED_ACL);
        if (parse_rc == 0)
            send_error(qe, c, qi, true, DNS_RCODE_REFUSED);
        return false;
    }
    if (!limits_rate_take(qe->limits, &c->peer, net_now_ms())) {
        qe->st.ratelimited++;
        obs_bound(qe->obs, c, OBS_REFUSED_RATE);
        if (c->tcp && parse_rc == 0)
            send_error(qe, c, qi, true, DNS_RCODE_REFUSED);
        return false;
    }
    return true;
}

/* Counts a query that will wait for an upstream against the global and the
 * per-client caps, its ticket in *ticket (-1 without limits). False when over
 * a cap: the client has had SERVFAIL at once. */
static bool inflight_admit(struct query_engine *qe, const struct query_client *c,
                           const struct dns_query_info *qi, int *ticket)
{
    *ticket = -1;
    if (!qe->opts.limits)
        return true;
    *ticket = limits_inflight_take(qe->limits, &c->peer, net_now_ms());
    if (*ticket >= 0)
        return true;
    qe->st.overloaded++;
    obs_bound(qe->obs, c, OBS_OVERLOADED);
    send_error(qe, c, qi, true, DNS_RCODE_SERVFAIL);
    return false;
}

/* Captive portal (portal.h): a portal-detection name, or any name while the
 * user has opened the portal, goes to the network's own resolver instead of
 * the pool the rules chose, logged, past the cache. False for the usual
 * way, also when the network names no resolver. */
static bool portal_route(struct query_engine *qe, const struct dns_question *key,
                         struct policy_decision *pd)
{
    char name[DNS_NAME_MAX * 4 + 1], where[NET_ADDRSTRLEN];
    enum portal_route r;
    struct net_addr a;
    struct pool *pool;

    if (!qe->portal || pd->action != CFG_ACTION_GROUP)
        return false;
    r = portal_match(qe->portal, key->name, key->name_len, qe_now(qe));
    if (r == PORTAL_NO || !(pool = portal_pool(qe->portal, &a)))
        return false;
    dns_name_to_str(key->name, key->name_len, name, sizeof(name));
    if (r == PORTAL_NAME)
        log_info("portal: %s (a portal-detection name) via the network's resolver %s", name,
                 net_addr_str(&a, where, sizeof(where)));
    else
        log_info("portal: %s via the network's resolver %s (portal open %u s more)", name,
                 net_addr_str(&a, where, sizeof(where)), portal_left(qe->portal, qe_now(qe)));
    pd->pool = pool;
    pd->group = 0;
    pd->rule = NULL;
    return true;
}

void query_engine_set_portal(struct query_engine *qe, struct portal *p)
{
    qe->portal = p;
}

/* ---- CNAME answers: chasing the target ------------------------------------ */

/* A query a rule answers with a CNAME: stub resolvers do not follow it, so
 * the target is looked up as an internal query (policy, cache, upstream,
 * as any client's, with the client's address for the rules) whose reply
 * comes back through chase_sink and is joined to the CNAME (cname.h). A
 * rule on the target's way may answer with a CNAME again: the depth is
 * bounded, so a loop among rules ends in SERVFAIL. */
struct chase {
    struct query_engine *qe;
    struct query_client sub; /* the target's lookup; ctx is this chase */
    struct waiter w;         /* the client that asked, its query and log */
    uint8_t target[DNS_NAME_MAX];
    size_t target_len;
    uint32_t ttl;
    unsigned depth;          /* CNAME rules passed, this one included */
    unsigned holds;          /* the engine holds the sub-client */
    bool answered;
    bool submitting;         /* inside query_submit for the target */
};

static void chase_maybe_free(struct chase *ch)
{
    if (!ch->answered || ch->holds || ch->submitting)
        return;
    ch->w.c.ops->release(ch->w.c.ctx);
    free(ch->w.log);
    free(ch);
}

static void chase_finish(struct chase *ch, const uint8_t *msg, size_t len)
{
    struct query_engine *qe = ch->qe;
    int rcode = msg ? reply_rcode(msg, len) : DNS_RCODE_SERVFAIL;
    uint8_t *buf = NULL;
    int n = DV_ESERVFAIL;

    ch->answered = true;
    if (rcode != DNS_RCODE_SERVFAIL && (buf = malloc(DNS_MSG_MAX)))
        n = cname_compose(&ch->w.qi, ch->target, ch->target_len, ch->ttl, msg, len, buf,
                          DNS_MSG_MAX);
    if (n > 0) {
        send_answer(qe, &ch->w.c, &ch->w.qi, buf, (size_t)n);
    } else {
        rcode = DNS_RCODE_SERVFAIL;
        send_error(qe, &ch->w.c, &ch->w.qi, true, rcode);
    }
    free(buf);
    log_waiter(qe, &ch->w, NULL, rcode, "local");
}

static void chase_send(void *ctx, const struct query_client *c, const uint8_t *msg, size_t len)
{
    struct chase *ch = ctx;

    if (!ch->answered)
        chase_finish(ch, msg, len);
}

static void chase_hold(void *ctx)
{
    struct chase *ch = ctx;

    ch->holds++;
}

static void chase_release(void *ctx)
{
    struct chase *ch = ctx;

    ch->holds--;
    chase_maybe_free(ch);
}

static const struct query_sink_ops chase_sink = {
    .send = chase_send,
    .hold = chase_hold,
    .release = chase_release,
};

/* Answers qi (from c, matched by pd's CNAME rule) with the CNAME and the
 * target's records. */
static void chase_start(struct query_engine *qe, const struct query_client *c,
                        const struct dns_query_info *qi, const struct policy_client *pc,
                        const struct policy_decision *pd, uint64_t start_us)
{
    const struct cfg_rule *r = pd->rule;
    unsigned depth = c->ops == &chase_sink ? ((const struct chase *)c->ctx)->depth + 1 : 1;
    uint8_t q[QMSG_MAX];
    struct chase *ch;
    int n;

    if (depth > CNAME_MAX_DEPTH) {
        char name[DNS_NAME_MAX * 4 + 1];
        dns_name_to_str(qi->q.name, qi->q.name_len, name, sizeof(name));
        log_debug("%s: more than %d CNAME rules in a row (a loop?): SERVFAIL", name,
                  CNAME_MAX_DEPTH);
        send_error(qe, c, qi, true, DNS_RCODE_SERVFAIL);
        if (qe->qlog)
            log_now(qe, c, qi, pc, pd, DNS_RCODE_SERVFAIL, start_us, "local");
        return;
    }
    ch = calloc(1, sizeof(*ch));
    if (!ch || (n = cname_target_query(qi, r->answer_cname, r->answer_cname_len, q,
                                       sizeof(q))) < 0) {
        free(ch);
        send_error(qe, c, qi, true, DNS_RCODE_SERVFAIL);
        return;
    }
    ch->qe = qe;
    memcpy(ch->target, r->answer_cname, r->answer_cname_len);
    ch->target_len = r->answer_cname_len;
    ch->ttl = r->answer_ttl;
    ch->depth = depth;
    ch->w.c = *c;
    ch->w.qi = *qi;
    ch->w.ticket = -1;
    ch->w.log = qe->qlog ? waiter_log_new(pc, pd, start_us) : NULL;
    ch->sub = *c;
    ch->sub.tcp = true; /* the whole answer; the client's size applies at the end */
    ch->sub.ops = &chase_sink;
    ch->sub.ctx = ch;
    c->ops->hold(c->ctx);
    ch->submitting = true;
    query_submit(qe, q, (size_t)n, &ch->sub);
    ch->submitting = false;
    if (!ch->answered && !ch->holds) /* dropped without a word: cannot happen */
        chase_finish(ch, NULL, 0);
    chase_maybe_free(ch);
}

/* Handles a local action, a cache hit, or joins/starts the upstream
 * exchange for the question. */
void query_submit(struct query_engine *qe, const uint8_t *msg, size_t len,
                  const struct query_client *c)
{
    struct dns_query_info qi;
    struct dns_question key;
    struct policy_decision pd;
    int rc = dns_query_parse(msg, len, &qi);

    /* a CNAME target's lookup: the client was admitted once */
    if (c->ops != &chase_sink && !client_admit(qe, c, &qi, rc))
        return;
    switch (rc) {
    case 0:
        break;
    case DV_ENOTQUERY:
        qe->st.dropped++;
        obs_drop(qe->obs, c);
        return;
    case DV_ENOTIMP:
        send_error(qe, c, &qi, false, DNS_RCODE_NOTIMP);
        return;
    case DV_EBADVERS:
        send_error(qe, c, &qi, true, DNS_RCODE_BADVERS);
        return;
    default:
        /* a FORMERR reply need not echo a question we could not trust */
        send_error(qe, c, &qi, false, DNS_RCODE_FORMERR);
        return;
    }
    qe->st.queries++;
    uint64_t start_us = qe->qlog ? qlog_now_us() : 0;
    key = qi.q;
    dns_name_lower(key.name, key.name_len);
    if (qe->obs && c->ops != &chase_sink) {
        char name[DNS_NAME_MAX * 4 + 1];
        size_t nlen = dns_name_to_str(key.name, key.name_len, name, sizeof(name));
        obs_query(qe->obs, c, name, nlen);
    }
    if (key.qtype == DNS_TYPE_AXFR || key.qtype == DNS_TYPE_IXFR) {
        send_error(qe, c, &qi, true, DNS_RCODE_NOTIMP);
        if (qe->qlog)
            log_now(qe, c, &qi, NULL, NULL, DNS_RCODE_NOTIMP, start_us, "error");
        return;
    }

    /* only what is read before a lookup: zeroing the whole struct is
     * measurable on the cache-hit path */
    struct policy_client pc;
    pc.peer = &c->peer;
    pc.local = c->local;
    pc.dst = c->has_dst ? &c->dst : NULL;
    pc.tcp = c->tcp;
    pc.now_ms = 0;
    pc.app_tried = pc.app_ok = false;
    policy_decide(qe->policy, &key, &pc, &pd);
    if (pc.app_tried) {
        qe->st.app_lookups++;
        qe->st.app_failed += !pc.app_ok;
        obs_app(qe->obs, &pc);
    }
    obs_rule(qe->obs, pd.rule);
    bool portal = portal_route(qe, &key, &pd);
    if (pd.action == CFG_ACTION_ANSWER && pd.rule->answer_cname && key.qtype != DNS_TYPE_CNAME) {
        qe->st.local++;
        chase_start(qe, c, &qi, &pc, &pd, start_us);
        return;
    }
    if (pd.action != CFG_ACTION_GROUP) {
        int n = policy_local_answer(pd.rule, &qi, reply_buf, sizeof(reply_buf));
        qe->st.local++;
        if (n > 0)
            reply(qe, c, reply_buf, (size_t)n);
        if (qe->qlog && n > 0)
            log_now(qe, c, &qi, &pc, &pd, reply_rcode(reply_buf, (size_t)n), start_us, "local");
        return;
    }

    bool do_bit = qi.edns.do_bit, cd = (qi.hdr.flags & DNS_FLAG_CD) != 0;
    bool refresh = false, stale = false;
    unsigned cflags = 0;
    bool cached = !portal && qe->cache && query_cflags(qe, &qi, pd.group, &cflags);
    if (cached) {
        uint8_t hit[DNS_MSG_MAX];
        size_t hlen = 0;
        rc = cache_lookup(qe->cache, &qi.q, cflags, qi.hdr.id, net_now_ms(), hit, sizeof(hit),
                          &hlen);
        if (rc == CACHE_HIT || rc == CACHE_HIT_REFRESH) {
            qe->st.cache_hits++;
            send_answer(qe, c, &qi, hit, hlen);
            if (qe->qlog)
                log_now(qe, c, &qi, &pc, &pd, reply_rcode(hit, hlen), start_us, "cache");
            if (rc == CACHE_HIT)
                return;
            refresh = true; /* answered; refresh in the background */
            qe->st.prefetches++;
        }
        stale = rc == CACHE_STALE;
    }

    uint32_t h = key_hash(qe->seed, &key, do_bit, cd, pd.pool);
    struct inflight *f = table_find(qe, h, &key, do_bit, cd, pd.pool);
    bool fresh = f == NULL;

    int ticket = -1;

    if (f && refresh)
        return; /* already being fetched */
    if (refresh && qe->opts.limits && limits_inflight(qe->limits) >= qe->opts.limits->max_inflight)
        return; /* answered; no background work while at the cap */
    if (!refresh && !inflight_admit(qe, c, &qi, &ticket))
        return;
    if (!f && !(f = inflight_new(qe, h, &key, &qi, pd.pool, cached, cflags))) {
        limits_inflight_put(qe->limits, ticket);
        if (!refresh)
            send_error(qe, c, &qi, true, DNS_RCODE_SERVFAIL);
        return;
    }
    if (portal)
        f->cache = NULL; /* a portal's answers must not outlive it */
    if (!refresh) {
        struct waiter *w = malloc(sizeof(*w));
        if (!w) {
            limits_inflight_put(qe->limits, ticket);
            send_error(qe, c, &qi, true, DNS_RCODE_SERVFAIL);
            if (fresh && !f->waiters)
                inflight_free(f);
            return;
        }
        if (!fresh)
            qe->st.coalesced++;
        w->c = *c;
        w->qi = qi;
        w->ticket = ticket;
        w->log = qe->qlog ? waiter_log_new(&pc, &pd, start_us) : NULL;
        w->next = f->waiters;
        f->waiters = w;
        c->ops->hold(c->ctx);
    }
    if (!fresh)
        return;
    if (stale && qe->opts.stale_timeout_ms) {
        ev_timer_set(&f->stale_timer, qe->opts.stale_timeout_ms / 1000.0, 0.);
        ev_timer_start(qe->loop, &f->stale_timer);
    }
    inflight_start(f);
}

void query_count_drop(struct query_engine *qe, const struct query_client *c)
{
    qe->st.dropped++;
    obs_drop(qe->obs, c);
}

void query_count_tcp_closed(struct query_engine *qe, bool per_client)
{
    if (per_client)
        qe->st.tcp_per_client++;
    else
        qe->st.tcp_evicted++;
}

struct query_engine *query_engine_new(struct ev_loop *loop, const struct query_opts *o,
                                      struct policy *policy, struct cache *cache)
{
    struct query_engine *qe = calloc(1, sizeof(*qe));

    if (!qe)
        return NULL;
    qe->nbuckets = 256;
    qe->table = calloc(qe->nbuckets, sizeof(*qe->table));
    if (!qe->table) {
        free(qe);
        return NULL;
    }
    qe->loop = loop;
    qe->seed = rand_u32();
    if (!(qe->limits = limits_new())) {
        free(qe->table);
        free(qe);
        return NULL;
    }
    query_engine_configure(qe, o, policy, cache);
    return qe;
}

/* One cache view per group of the policy, by name. A group without one
 * (out of memory) is not cached. */
static void configure_views(struct query_engine *qe)
{
    size_t n = qe->cache ? policy_ngroups(qe->policy) : 0;
    int *v = n ? calloc(n, sizeof(*v)) : NULL;

    free(qe->views);
    qe->views = v;
    qe->n_views = v ? n : 0;
    for (size_t i = 0; i < qe->n_views; i++) {
        v[i] = cache_view(qe->cache, policy_group_name(qe->policy, i));
        if (v[i] < 0)
            log_err("group %s: no cache view: %s", policy_group_name(qe->policy, i),
                    dv_strerror(v[i]));
    }
}

void query_engine_configure(struct query_engine *qe, const struct query_opts *o,
                            struct policy *policy, struct cache *cache)
{
    qe->opts = *o;
    if (o->limits)
        limits_configure(qe->limits, o->limits);
    policy_ref(policy);
    policy_unref(qe->policy);
    qe->policy = policy;
    qe->cache = cache;
    configure_views(qe);
}

void query_engine_del(struct query_engine *qe)
{
    if (!qe)
        return;
    for (size_t i = 0; i < qe->nbuckets; i++)
        while (qe->table[i])
            inflight_finish(qe->table[i], NULL, 0);
    free(qe->table);
    free(qe->views);
    policy_unref(qe->policy);
    limits_del(qe->limits);
    free(qe);
}

void query_engine_set_obs(struct query_engine *qe, struct obs *o)
{
    qe->obs = o;
}

size_t query_pending(const struct query_engine *qe)
{
    return qe->count;
}

void query_stats(const struct query_engine *qe, struct query_stats *out)
{
    *out = qe->st;
}

#define STAT(field, name, help) {name, help, offsetof(struct query_stats, field)}
const struct query_stat_desc query_stat_descs[] = {
    STAT(queries, "queries", "Client queries accepted."),
    STAT(answered, "answered", "Answers sent to clients."),
    STAT(servfail, "servfail", "SERVFAIL replies sent."),
    STAT(formerr, "formerr", "FORMERR replies to malformed queries."),
    STAT(notimp, "notimp", "NOTIMP replies."),
    STAT(dropped, "dropped", "Datagrams dropped as not DNS queries."),
    STAT(coalesced, "coalesced", "Queries that joined an identical one in flight."),
    STAT(truncated, "truncated", "Answers truncated to the client's size."),
    STAT(upstream_sent, "upstream_sent", "Queries sent to upstreams."),
    STAT(upstream_failed, "upstream_failed", "Upstream attempts without a usable answer."),
    STAT(local, "local", "Queries answered by a rule."),
    STAT(cache_hits, "cache_hits", "Queries answered from the cache."),
    STAT(stale_served, "stale", "Expired answers served (RFC 8767)."),
    STAT(prefetches, "prefetches", "Background refreshes of popular entries."),
    STAT(upstream_ignored, "upstream_ignored",
         "Upstream answers with our ID but another question (or letter case), ignored."),
    STAT(bad_answers, "bad_answers", "Upstream answers that failed validation."),
    STAT(refused, "refused_clients", "Queries refused: client outside the allow list."),
    STAT(ratelimited, "ratelimited", "Queries over their client's rate limit."),
    STAT(overloaded, "overloaded", "SERVFAIL at once: too many queries in flight."),
    STAT(tcp_per_client, "tcp_per_client_closed",
         "TCP connections closed at once: their client had too many."),
    STAT(tcp_evicted, "tcp_evicted", "Idle TCP connections closed to make room at the cap."),
    STAT(app_lookups, "app_lookups", "Lookups of the program that sent a query."),
    STAT(app_failed, "app_failed", "Sender lookups that found no socket (the next rule decided)."),
};
#undef STAT
const size_t query_stat_ndescs = sizeof(query_stat_descs) / sizeof(query_stat_descs[0]);

int query_stats_format(const struct query_engine *qe, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < query_stat_ndescs; i++) {
        int w = snprintf(out + n, n < cap ? cap - n : 0, "%s=%llu ", query_stat_descs[i].name,
                         (unsigned long long)query_stat_value(&qe->st, &query_stat_descs[i]));
        n += w > 0 ? (size_t)w : 0;
    }
    int w = snprintf(out + (n < cap ? n : cap), n < cap ? cap - n : 0, "inflight=%zu", qe->count);
    return (int)(n + (w > 0 ? (size_t)w : 0));
}
