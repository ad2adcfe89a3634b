#include "upstream/pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rand.h"

/* An upstream's health: pool.c's alone (u->health; NULL until the first
 * report, which reads as healthy and unmeasured). */
struct pool_health {
    unsigned fails;       /* consecutive failures */
    uint64_t down_until;  /* monotonic ms; skipped before this unless all are down */
    double rtt_ewma;      /* ms */
};

/* A strategy, as a row of the table below: how it orders the healthy
 * upstreams for one query, and how many attempts start at once. */
struct pool_strategy_ops {
    void (*order)(struct pool *p, struct upstream **order, size_t n);
    size_t fanout;
};

struct pool {
    char *name;
    struct upstream **ups;
    unsigned *weights;
    size_t n;
    enum cfg_strategy strategy;
    const struct pool_strategy_ops *ops;
    unsigned hedge_ms;
    unsigned rr;
    unsigned refs;
};

enum {
    POOL_FAILS_DOWN = 3,         /* consecutive failures before backing off */
    POOL_BACKOFF_MIN_MS = 1000,
    POOL_BACKOFF_MAX_MS = 60000,
    POOL_FAIL_PENALTY_MS = 2000, /* what a failure weighs in the latency EWMA */
    POOL_EXPLORE = 16,           /* 1 query in this many tries a random upstream */
};

static const struct pool_strategy_ops *pool_strategy_ops_of(enum cfg_strategy s);

struct pool *pool_new(const char *name, struct upstream **ups, const unsigned *weights,
                      size_t n, enum cfg_strategy strategy, unsigned hedge_after_ms)
{
    struct pool *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->name = strdup(name);
    p->ups = calloc(n ? n : 1, sizeof(*p->ups));
    p->weights = calloc(n ? n : 1, sizeof(*p->weights));
    if (!p->name || !p->ups || !p->weights) {
        free(p->name);
        free(p->ups);
        free(p->weights);
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        p->ups[i] = ups[i];
        p->weights[i] = weights && weights[i] ? weights[i] : 1;
        upstream_ref(ups[i]);
    }
    p->n = n;
    p->strategy = strategy;
    p->ops = pool_strategy_ops_of(strategy);
    p->hedge_ms = hedge_after_ms;
    p->rr = rand_u32();
    p->refs = 1;
    return p;
}

void pool_ref(struct pool *p)
{
    p->refs++;
}

void pool_unref(struct pool *p)
{
    if (!p || --p->refs > 0)
        return;
    for (size_t i = 0; i < p->n; i++)
        upstream_unref(p->ups[i]);
    free(p->ups);
    free(p->weights);
    free(p->name);
    free(p);
}

size_t pool_size(const struct pool *p)
{
    return p->n;
}

const char *pool_name(const struct pool *p)
{
    return p->name;
}

enum cfg_strategy pool_strategy(const struct pool *p)
{
    return p->strategy;
}

unsigned pool_hedge_ms(const struct pool *p)
{
    return p->hedge_ms;
}

size_t pool_fanout(const struct pool *p)
{
    return p->ops->fanout;
}

/* ---- health --------------------------------------------------------------- */

static const struct pool_health pool_health_none;

static const struct pool_health *pool_health_of(const struct upstream *u)
{
    return u->health ? u->health : &pool_health_none;
}

bool pool_healthy(const struct upstream *u, uint64_t now)
{
    return pool_health_of(u)->down_until <= now;
}

unsigned pool_fails(const struct upstream *u)
{
    return pool_health_of(u)->fails;
}

double pool_rtt_ms(const struct upstream *u)
{
    return pool_health_of(u)->rtt_ewma;
}

void pool_forget(struct upstream *u)
{
    if (u->health) {
        u->health->fails = 0;
        u->health->down_until = 0;
    }
}

void pool_health_free(struct upstream *u)
{
    free(u->health);
    u->health = NULL;
}

/* ---- strategies ----------------------------------------------------------- */

static void swap(struct upstream **v, size_t a, size_t b)
{
    struct upstream *t = v[a];
    v[a] = v[b];
    v[b] = t;
}

/* Weighted shuffle of order[0..n): each position drawn in proportion to the
 * weights of what is left. */
static void order_random(struct pool *p, struct upstream **order, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        unsigned total = 0;
        for (size_t j = i; j < n; j++)
            for (size_t k = 0; k < p->n; k++)
                total += p->ups[k] == order[j] ? p->weights[k] : 0;
        unsigned r = rand_uniform(total ? total : 1);
        for (size_t j = i; j < n; j++) {
            unsigned w = 0;
            for (size_t k = 0; k < p->n; k++)
                w += p->ups[k] == order[j] ? p->weights[k] : 0;
            if (r < w) {
                swap(order, i, j);
                break;
            }
            r -= w;
        }
    }
}

static void order_fastest(struct pool *p, struct upstream **order, size_t n)
{
    /* insertion sort by EWMA: groups are small */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && pool_rtt_ms(order[j]) < pool_rtt_ms(order[j - 1]); j--)
            swap(order, j, j - 1);
    if (n < 2)
        return;
    size_t a = rand_uniform((uint32_t)n), b = rand_uniform((uint32_t)n - 1);
    if (b >= a)
        b++;
    size_t first = rand_uniform(POOL_EXPLORE) == 0 ? a
                   : pool_rtt_ms(order[a]) <= pool_rtt_ms(order[b]) ? a : b;
    /* move the pick to the front, keeping the rest in EWMA order */
    struct upstream *pick = order[first];
    memmove(order + 1, order, first * sizeof(*order));
    order[0] = pick;
}

/* failover and parallel: the configured order */
static void order_configured(struct pool *p, struct upstream **order, size_t n)
{
}

/* the configured order rotated by one per query */
static void order_rotated(struct pool *p, struct upstream **order, size_t n)
{
    size_t shift = p->rr++ % n;

    if (shift == 0)
        return;
    /* rotate left by shift, in place (three reversals) */
    for (size_t i = 0, j = shift - 1; i < j; i++, j--)
        swap(order, i, j);
    for (size_t i = shift, j = n - 1; i < j; i++, j--)
        swap(order, i, j);
    for (size_t i = 0, j = n - 1; i < j; i++, j--)
        swap(order, i, j);
}

static const struct pool_strategy_ops pool_strategies[] = {
    [CFG_STRATEGY_FAILOVER] = {order_configured, 1},
    [CFG_STRATEGY_PARALLEL] = {order_configured, SIZE_MAX}, /* every upstream at once */
    [CFG_STRATEGY_ROUND_ROBIN] = {order_rotated, 1},
    [CFG_STRATEGY_RANDOM] = {order_random, 1},
    [CFG_STRATEGY_FASTEST] = {order_fastest, 1},
};

static const struct pool_strategy_ops *pool_strategy_ops_of(enum cfg_strategy s)
{
    if ((size_t)s >= sizeof(pool_strategies) / sizeof(pool_strategies[0]) ||
        !pool_strategies[s].order)
        return &pool_strategies[CFG_STRATEGY_FAILOVER];
    return &pool_strategies[s];
}

void pool_plan(struct pool *p, uint64_t now, struct upstream **order)
{
    size_t k = 0;

    for (size_t i = 0; i < p->n; i++)
        if (pool_healthy(p->ups[i], now))
            order[k++] = p->ups[i];
    size_t healthy = k;
    for (size_t i = 0; i < p->n; i++)
        if (!pool_healthy(p->ups[i], now))
            order[k++] = p->ups[i];
    if (healthy >= 2)
        p->ops->order(p, order, healthy);
}

void pool_report(struct upstream *u, int rc, uint64_t rtt_ms, uint64_t now)
{
    double sample = rc == 0 ? (double)rtt_ms : (double)POOL_FAIL_PENALTY_MS;
    struct pool_health *h = u->health;

    if (!h && !(h = u->health = calloc(1, sizeof(*h))))
        return; /* out of memory: this report is lost, nothing else */
    h->rtt_ewma = h->rtt_ewma == 0 ? sample : 0.8 * h->rtt_ewma + 0.2 * sample;
    if (rc == 0) {
        if (h->fails >= POOL_FAILS_DOWN)
            log_info("upstream %s is answering again", u->name);
        h->fails = 0;
        h->down_until = 0;
        return;
    }
    if (++h->fails >= POOL_FAILS_DOWN) {
        unsigned shift = h->fails - POOL_FAILS_DOWN;
        uint64_t backoff = (uint64_t)POOL_BACKOFF_MIN_MS << (shift > 6 ? 6 : shift);
        if (backoff > POOL_BACKOFF_MAX_MS)
            backoff = POOL_BACKOFF_MAX_MS;
        /* jitter, so a group's upstreams do not come back in lockstep */
        backoff += rand_uniform((uint32_t)(backoff / 4 + 1));
        if (h->fails == POOL_FAILS_DOWN)
            log_warn("upstream %s failed %u times in a row; backing off", u->name, h->fails);
        h->down_until = now + backoff;
    }
}
