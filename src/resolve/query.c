#include "resolve/query.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"
#include "upstream/pool.h"

/* One client waiting for an in-flight question. It keeps its own parsed
 * query so its reply can restore its ID, question case, RD bit and EDNS. */
struct waiter {
    struct waiter *next;
    struct query_client c;
    struct dns_query_info qi;
};

/* One upstream exchange shared by every client asking the same question. */
struct inflight {
    struct inflight *hnext;
    uint32_t hash;
    struct query_engine *qe;
    struct dns_question key; /* lower-cased */
    bool do_bit, cd_bit;

    uint8_t msg[DNS_HDR_LEN + DNS_NAME_MAX + 4 + 11]; /* upstream query */
    size_t msg_len;
    struct xfer x;
    bool xfer_active;

    struct pool *pool;
    struct upstream **order;
    size_t n_order, attempt;
    uint64_t deadline, attempt_start;
    ev_timer timer;

    uint8_t *fallback; /* a SERVFAIL/REFUSED answer kept in case nobody does better */
    size_t fallback_len;
    struct waiter *waiters;
};

struct query_engine {
    struct ev_loop *loop;
    struct query_opts opts;
    struct pool *pool;
    struct inflight **table;
    size_t nbuckets, count;
    uint32_t seed;
    struct query_stats st;
};

static uint8_t reply_buf[DNS_MSG_MAX];

static uint64_t qe_now(const struct query_engine *qe)
{
    return net_now_ms();
}

static uint32_t key_hash(uint32_t seed, const struct dns_question *q, bool do_bit, bool cd)
{
    uint32_t h = 2166136261u ^ seed;

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

static struct inflight *table_find(struct query_engine *qe, uint32_t h,
                                   const struct dns_question *q, bool do_bit, bool cd)
{
    for (struct inflight *f = *bucket(qe, h); f; f = f->hnext)
        if (f->hash == h && f->do_bit == do_bit && f->cd_bit == cd &&
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

static size_t client_limit(const struct query_client *c, const struct dns_query_info *qi)
{
    if (c->tcp)
        return DNS_MSG_MAX;
    if (!qi->edns.present || qi->edns.udp_size < DNS_UDP_CLASSIC)
        return DNS_UDP_CLASSIC;
    return qi->edns.udp_size;
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
    c->ops->send(c->ctx, &c->peer, reply_buf, (size_t)n);
}

/* The answer as this client must see it: its ID, its question's case, its RD
 * bit, EDNS only if it used EDNS, and truncated to what it can receive. */
static void send_answer(struct query_engine *qe, const struct query_client *c,
                        const struct dns_query_info *qi, const uint8_t *ans, size_t len)
{
    uint16_t flags;
    size_t limit = client_limit(c, qi);

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
    c->ops->send(c->ctx, &c->peer, reply_buf, len);
}

static void inflight_free(struct inflight *f)
{
    struct query_engine *qe = f->qe;

    if (f->xfer_active)
        f->order[f->attempt]->ops->cancel(f->order[f->attempt], &f->x);
    ev_timer_stop(qe->loop, &f->timer);
    table_remove(qe, f);
    for (struct waiter *w = f->waiters, *next; w; w = next) {
        next = w->next;
        w->c.ops->release(w->c.ctx);
        free(w);
    }
    for (size_t i = 0; i < f->n_order; i++)
        upstream_unref(f->order[i]);
    pool_unref(f->pool);
    free(f->order);
    free(f->fallback);
    free(f);
}

/* Ends f: every waiter gets the answer (or SERVFAIL when ans is NULL). */
static void inflight_finish(struct inflight *f, const uint8_t *ans, size_t len)
{
    struct query_engine *qe = f->qe;

    if (!ans && f->fallback) {
        ans = f->fallback;
        len = f->fallback_len;
    }
    for (struct waiter *w = f->waiters; w; w = w->next) {
        if (ans)
            send_answer(qe, &w->c, &w->qi, ans, len);
        else
            send_error(qe, &w->c, &w->qi, true, DNS_RCODE_SERVFAIL);
    }
    inflight_free(f);
}

static void xfer_done(struct xfer *x, int rc, const uint8_t *ans, size_t len);

/* Starts the next attempt, or ends f when no upstream or no time is left. */
static void inflight_next(struct inflight *f)
{
    struct query_engine *qe = f->qe;
    uint64_t now = qe_now(qe);

    while (f->attempt < f->n_order && now < f->deadline) {
        struct upstream *u = f->order[f->attempt];
        uint64_t left = f->deadline - now;
        size_t tries_left = f->n_order - f->attempt;
        /* share what is left among the upstreams still to try, but give each
         * at least half a second (or all that remains) */
        uint64_t slot = left / tries_left;
        if (slot < 500)
            slot = left < 500 ? left : 500;

        f->x.msg = f->msg;
        f->x.len = f->msg_len;
        f->x.done = xfer_done;
        f->x.owner = f;
        f->x.tpriv = NULL;
        f->attempt_start = now;
        /* a fresh ID per attempt: a late answer to an earlier one is not ours */
        dns_put16(f->msg, (uint16_t)arc4random());
        int src = u->ops->send(u, &f->x);
        if (src == 0) {
            f->xfer_active = true;
            qe->st.upstream_sent++;
            ev_timer_stop(qe->loop, &f->timer);
            ev_timer_set(&f->timer, (double)slot / 1000.0, 0.);
            ev_timer_start(qe->loop, &f->timer);
            return;
        }
        log_debug("upstream %s: send failed: %s", u->name, dv_strerror(src));
        qe->st.upstream_failed++;
        pool_report(u, src, 0, now);
        f->attempt++;
    }
    inflight_finish(f, NULL, 0);
}

static void inflight_fail_attempt(struct inflight *f, int rc)
{
    struct upstream *u = f->order[f->attempt];
    uint64_t now = qe_now(f->qe);

    f->qe->st.upstream_failed++;
    pool_report(u, rc, now - f->attempt_start, now);
    f->attempt++;
    inflight_next(f);
}

static void xfer_done(struct xfer *x, int rc, const uint8_t *ans, size_t len)
{
    struct inflight *f = x->owner;
    struct upstream *u = f->order[f->attempt];
    char name[DNS_NAME_MAX * 4 + 1];

    f->xfer_active = false;
    if (rc) {
        log_debug("upstream %s: %s", u->name, dv_strerror(rc));
        inflight_fail_attempt(f, rc);
        return;
    }
    rc = dns_response_check(ans, len, &f->key);
    if (rc) {
        dns_name_to_str(f->key.name, f->key.name_len, name, sizeof(name));
        log_warn("upstream %s: bad answer for %s: %s", u->name, name, dv_strerror(rc));
        inflight_fail_attempt(f, DV_EPROTO);
        return;
    }
    int rcode = DNS_RCODE(dns_get16(ans + 2));
    if (rcode == DNS_RCODE_SERVFAIL || rcode == DNS_RCODE_REFUSED) {
        /* another upstream may do better; keep this one in case none does */
        uint8_t *copy = malloc(len);
        if (copy) {
            memcpy(copy, ans, len);
            free(f->fallback);
            f->fallback = copy;
            f->fallback_len = len;
        }
        inflight_fail_attempt(f, DV_ESERVFAIL);
        return;
    }
    uint64_t now = qe_now(f->qe);
    pool_report(u, 0, now - f->attempt_start, now);
    inflight_finish(f, ans, len);
}

static void inflight_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct inflight *f = w->data;
    struct upstream *u = f->order[f->attempt];

    if (f->xfer_active) {
        u->ops->cancel(u, &f->x);
        f->xfer_active = false;
    }
    log_debug("upstream %s: no answer in time", u->name);
    inflight_fail_attempt(f, DV_ETIMEOUT);
}

/* Builds the upstream form of the question: our ID, the client's RD and CD,
 * the lower-cased name and our own EDNS (its DO bit is part of the key). */
static void build_upstream_query(struct inflight *f, uint16_t client_flags)
{
    struct dns_cur c;
    struct dns_hdr h = {
        .flags = client_flags & (DNS_FLAG_RD | DNS_FLAG_CD),
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
                                     const struct dns_query_info *qi)
{
    struct inflight *f = calloc(1, sizeof(*f));
    size_t n = pool_size(qe->pool);

    if (!f)
        return NULL;
    f->order = calloc(n ? n : 1, sizeof(*f->order));
    if (!f->order) {
        free(f);
        return NULL;
    }
    f->qe = qe;
    f->hash = h;
    f->key = *key;
    f->do_bit = qi->edns.do_bit;
    f->cd_bit = (qi->hdr.flags & DNS_FLAG_CD) != 0;
    f->pool = qe->pool;
    pool_ref(f->pool);
    pool_plan(f->pool, qe_now(qe), f->order);
    f->n_order = n;
    for (size_t i = 0; i < n; i++)
        upstream_ref(f->order[i]);
    f->deadline = qe_now(qe) + qe->opts.timeout_ms;
    ev_init(&f->timer, inflight_timer_cb);
    f->timer.data = f;
    build_upstream_query(f, qi->hdr.flags);

    f->hnext = *bucket(qe, h);
    *bucket(qe, h) = f;
    if (++qe->count > qe->nbuckets * 2)
        table_grow(qe);
    return f;
}

void query_submit(struct query_engine *qe, const uint8_t *msg, size_t len,
                  const struct query_client *c)
{
    struct dns_query_info qi;
    struct dns_question key;
    int rc = dns_query_parse(msg, len, &qi);

    switch (rc) {
    case 0:
        break;
    case DV_ENOTQUERY:
        qe->st.dropped++;
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
    key = qi.q;
    dns_name_lower(key.name, key.name_len);
    if (key.qtype == DNS_TYPE_AXFR || key.qtype == DNS_TYPE_IXFR) {
        send_error(qe, c, &qi, true, DNS_RCODE_NOTIMP);
        return;
    }

    bool do_bit = qi.edns.do_bit, cd = (qi.hdr.flags & DNS_FLAG_CD) != 0;
    uint32_t h = key_hash(qe->seed, &key, do_bit, cd);
    struct inflight *f = table_find(qe, h, &key, do_bit, cd);
    bool fresh = false;
    struct waiter *w = malloc(sizeof(*w));

    if (!w) {
        send_error(qe, c, &qi, true, DNS_RCODE_SERVFAIL);
        return;
    }
    if (f) {
        qe->st.coalesced++;
    } else {
        f = inflight_new(qe, h, &key, &qi);
        if (!f) {
            free(w);
            send_error(qe, c, &qi, true, DNS_RCODE_SERVFAIL);
            return;
        }
        fresh = true;
    }
    w->c = *c;
    w->qi = qi;
    w->next = f->waiters;
    f->waiters = w;
    c->ops->hold(c->ctx);
    if (fresh)
        inflight_next(f);
}

void query_count_drop(struct query_engine *qe)
{
    qe->st.dropped++;
}

struct query_engine *query_engine_new(struct ev_loop *loop, const struct query_opts *o,
                                      struct pool *pool)
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
    qe->seed = arc4random();
    query_engine_configure(qe, o, pool);
    return qe;
}

void query_engine_configure(struct query_engine *qe, const struct query_opts *o,
                            struct pool *pool)
{
    qe->opts = *o;
    pool_ref(pool);
    pool_unref(qe->pool);
    qe->pool = pool;
}

void query_engine_del(struct query_engine *qe)
{
    if (!qe)
        return;
    for (size_t i = 0; i < qe->nbuckets; i++)
        while (qe->table[i])
            inflight_finish(qe->table[i], NULL, 0);
    free(qe->table);
    pool_unref(qe->pool);
    free(qe);
}

size_t query_pending(const struct query_engine *qe)
{
    return qe->count;
}

void query_stats(const struct query_engine *qe, struct query_stats *out)
{
    *out = qe->st;
}

void query_stats_log(const struct query_engine *qe)
{
    const struct query_stats *s = &qe->st;

    log_msg(DV_LOG_INFO,
            "stats: queries=%llu answered=%llu servfail=%llu formerr=%llu notimp=%llu "
            "dropped=%llu coalesced=%llu truncated=%llu upstream_sent=%llu "
            "upstream_failed=%llu inflight=%zu",
            (unsigned long long)s->queries, (unsigned long long)s->answered,
            (unsigned long long)s->servfail, (unsigned long long)s->formerr,
            (unsigned long long)s->notimp, (unsigned long long)s->dropped,
            (unsigned long long)s->coalesced, (unsigned long long)s->truncated,
            (unsigned long long)s->upstream_sent, (unsigned long long)s->upstream_failed,
            qe->count);
}
