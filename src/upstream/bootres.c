#include "upstream/bootres.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "dns/dns.h"
#include "upstream/happy.h"
#include "upstream/upstream.h"

enum {
    ROUND_MS = 5000,     /* a round's deadline */
    MIN_TTL_S = 5,
    MAX_TTL_S = 86400,
    RETRY_S = 5,
    RETRY_MAX_S = 300,
    QBUF = DNS_HDR_LEN + DNS_NAME_MAX + 4,
};

struct ask {
    struct xfer x; /* first: done finds the ask from it */
    struct bootres *b;
    uint16_t qtype;
    bool active;
    struct dns_question q;
    uint8_t msg[QBUF];
};

struct bootres {
    struct ev_loop *loop;
    struct upstream *target, *via;
    struct ask ask[2]; /* A, AAAA */
    struct net_addr found[HAPPY_MAX_ADDRS];
    size_t nfound;
    uint32_t min_ttl;
    unsigned retry_s;
    ev_timer timer; /* the round's deadline, then the next round */
};

static void round_start(struct bootres *b);

static void schedule(struct bootres *b, unsigned secs)
{
    ev_timer_stop(b->loop, &b->timer);
    ev_timer_set(&b->timer, (double)secs, 0.);
    ev_timer_start(b->loop, &b->timer);
}

static void round_end(struct bootres *b)
{
    const char *name = b->target->name;

    ev_timer_stop(b->loop, &b->timer);
    for (int i = 0; i < 2; i++) {
        if (b->ask[i].active)
            b->via->ops->cancel(b->via, &b->ask[i].x);
        b->ask[i].active = false;
    }
    struct net_addr ordered[HAPPY_MAX_ADDRS];
    size_t n = happy_order(b->found, b->nfound, ordered);
    bool same = n && n == b->target->n_addrs &&
                memcmp(ordered, b->target->addrs, n * sizeof(*ordered)) == 0;
    if (n && (same || upstream_set_addrs(b->target, b->found, b->nfound) == 0)) {
        char a[NET_ADDRSTRLEN];
        unsigned ttl = b->min_ttl < MIN_TTL_S ? MIN_TTL_S
                       : b->min_ttl > MAX_TTL_S ? MAX_TTL_S : b->min_ttl;
        log_msg(same ? DV_LOG_DEBUG : DV_LOG_INFO,"upstream %s: %s is %s%s (through %s; again in %u s)", name, b->target->host,
                 net_addr_str(&b->target->addrs[0], a, sizeof(a)),
                 b->target->n_addrs > 1 ? " and more" : "", b->via->name, ttl);
        b->retry_s = RETRY_S;
        schedule(b, ttl);
        return;
    }
    log_warn("upstream %s: cannot resolve %s through %s; again in %u s%s", name,
             b->target->host, b->via->name, b->retry_s,
             b->target->n_addrs ? " (keeping the addresses it had)" : "");
    schedule(b, b->retry_s);
    b->retry_s = b->retry_s * 2 > RETRY_MAX_S ? RETRY_MAX_S : b->retry_s * 2;
}

/* The A or AAAA records of the answer section (a CNAME chain's end
 * included): address and TTL. */
static void take_answer(struct bootres *b, const struct ask *k, const uint8_t *ans, size_t len)
{
    struct dns_rr_iter it;
    struct dns_rr rr;

    if (dns_response_check(ans, len, &k->q) || DNS_RCODE(dns_get16(ans + 2)) != DNS_RCODE_NOERROR ||
        dns_rr_iter_init(&it, ans, len))
        return;
    while (dns_rr_next(&it, &rr) == 1 && b->nfound < HAPPY_MAX_ADDRS) {
        struct net_addr a = {0};
        if (rr.section != DNS_SEC_ANSWER || rr.type != k->qtype || rr.rclass != DNS_CLASS_IN)
            continue;
        if (rr.type == DNS_TYPE_A && rr.rdlen == 4) {
            struct sockaddr_in *s = (struct sockaddr_in *)&a.ss;
            s->sin_family = AF_INET;
            s->sin_port = htons(b->target->port);
            memcpy(&s->sin_addr, ans + rr.rdata_off, 4);
            a.len = sizeof(*s);
        } else if (rr.type == DNS_TYPE_AAAA && rr.rdlen == 16) {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a.ss;
            s->sin6_family = AF_INET6;
            s->sin6_port = htons(b->target->port);
            memcpy(&s->sin6_addr, ans + rr.rdata_off, 16);
            a.len = sizeof(*s);
        } else {
            continue;
        }
        b->found[b->nfound++] = a;
        if (rr.ttl < b->min_ttl)
            b->min_ttl = rr.ttl;
    }
}

static void ask_done(struct xfer *x, int rc, const uint8_t *ans, size_t len)
{
    struct ask *k = (struct ask *)x;
    struct bootres *b = k->b;

    k->active = false;
    if (rc == 0)
        take_answer(b, k, ans, len);
    else
        log_debug("upstream %s: bootstrap %s %s: %s", b->target->name, b->target->host,
                  k->qtype == DNS_TYPE_A ? "A" : "AAAA", dv_strerror(rc));
    if (!b->ask[0].active && !b->ask[1].active)
        round_end(b);
}

static bool ask_send(struct bootres *b, struct ask *k, uint16_t qtype)
{
    struct dns_cur c;
    struct dns_hdr h = {.id = (uint16_t)rand_u32(), .flags = DNS_FLAG_RD, .qdcount = 1};
    int n;

    k->b = b;
    k->qtype = qtype;
    n = dns_name_from_str(b->target->host, k->q.name);
    if (n <= 0)
        return false;
    dns_name_lower(k->q.name, (size_t)n);
    k->q.name_len = (uint16_t)n;
    k->q.qtype = qtype;
    k->q.qclass = DNS_CLASS_IN;
    dns_cur_init_w(&c, k->msg, sizeof(k->msg));
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, k->q.name, k->q.name_len);
    dns_cur_put_u16(&c, qtype);
    dns_cur_put_u16(&c, DNS_CLASS_IN);
    if (c.err)
        return false;
    memset(&k->x, 0, sizeof(k->x));
    k->x.msg = k->msg;
    k->x.len = c.pos;
    k->x.done = ask_done;
    k->x.owner = b;
    k->active = b->via->ops->send(b->via, &k->x) == 0;
    return k->active;
}

static void round_start(struct bootres *b)
{
    b->nfound = 0;
    b->min_ttl = UINT32_MAX;
    ask_send(b, &b->ask[0], DNS_TYPE_A);
    ask_send(b, &b->ask[1], DNS_TYPE_AAAA);
    if (!b->ask[0].active && !b->ask[1].active) {
        round_end(b);
        return;
    }
    ev_timer_stop(b->loop, &b->timer);
    ev_timer_set(&b->timer, ROUND_MS / 1000.0, 0.);
    ev_timer_start(b->loop, &b->timer);
}

/* The round's deadline (what is in flight is cancelled), or the next round. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct bootres *b = w->data;

    if (b->ask[0].active || b->ask[1].active)
        round_end(b);
    else
        round_start(b);
}

struct bootres *bootres_new(struct ev_loop *loop, struct upstream *target, struct upstream *via)
{
    struct bootres *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->loop = loop;
    b->target = target;
    b->via = via;
    b->retry_s = RETRY_S;
    upstream_ref(target);
    upstream_ref(via);
    ev_init(&b->timer, timer_cb);
    b->timer.data = b;
    /* from the loop, not from inside the daemon's setup */
    ev_timer_set(&b->timer, 0., 0.);
    ev_timer_start(loop, &b->timer);
    return b;
}

void bootres_del(struct bootres *b)
{
    if (!b)
        return;
    ev_timer_stop(b->loop, &b->timer);
    for (int i = 0; i < 2; i++)
        if (b->ask[i].active)
            b->via->ops->cancel(b->via, &b->ask[i].x);
    upstream_unref(b->target);
    upstream_unref(b->via);
    free(b);
}
