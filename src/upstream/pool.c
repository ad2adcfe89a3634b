#include "upstream/pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rand.h"

struct pool {
    char *name;
    struct upstream **ups;
    unsigned *weights;
    size_t n;
    enum cfg_strategy strategy;
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

static void swap(struct upstream **v, size_t a, size_t b)
{
    struct upstream *t = v[a];
    v[a] = v[b];
    v[b] = t;
}

/* Weighted shuffle of order[0..n): each position drawn in proportion to the
 * weights of what is left. */
static void order_random(const struct pool *p, struct upstream **order, size_t n)
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

static void order_fastest(struct upstream **order, size_t n)
{
    /* insertion sort by EWMA: groups are small */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && order[j]->rtt_ewma < order[j - 1]->rtt_ewma; j--)
            swap(order, j, j - 1);
    if (n < 2)
        return;
    size_t a = rand_uniform((uint32_t)n), b = rand_uniform((uint32_t)n - 1);
    if (b >= a)
        b++;
    size_t first = rand_uniform(POOL_EXPLORE) == 0 ? a
                   : order[a]->rtt_ewma <= order[b]->rtt_ewma ? a : b;
    /* move the pick to the front, keeping the rest in EWMA order */
    struct upstream *pick = order[first];
    memmove(order + 1, order, first * sizeof(*order));
    order[0] = pick;
}

void pool_plan(struct pool *p, uint64_t now, struct upstream **order)
{
    size_t k = 0;

    for (size_t i = 0; i < p->n; i++)
        if (p->ups[i]->down_until <= now)
            order[k++] = p->ups[i];
    size_t healthy = k;
    for (size_t i = 0; i < p->n; i++)
        if (p->ups[i]->down_until > now)
            order[k++] = p->ups[i];
    if (healthy < 2)
        return;
    switch (p->strategy) {
    case CFG_STRATEGY_FAILOVER:
    case CFG_STRATEGY_PARALLEL:
        break;
    case CFG_STRATEGY_ROUND_ROBIN: {
        size_t shift = p->rr++ % healthy;
        if (shift == 0)
            break;
        /* rotate left by shift, in place (three reversals) */
        for (size_t i = 0, j = shift - 1; i < j; i++, j--)
            swap(order, i, j);
        for (size_t i = shift, j = healthy - 1; i < j; i++, j--)
            swap(order, i, j);
        for (size_t i = 0, j = healthy - 1; i < j; i++, j--)
            swap(order, i, j);
        break;
    }
    case CFG_STRATEGY_RANDOM:
        order_random(p, order, healthy);
        break;
    case CFG_STRATEGY_FASTEST:
        order_fastest(order, healthy);
        break;
    }
}

void pool_report(struct upstream *u, int rc, uint64_t rtt_ms, uint64_t now)
{
    double sample = rc == 0 ? (double)rtt_ms : (double)POOL_FAIL_PENALTY_MS;

    u->rtt_ewma = u->rtt_ewma == 0 ? sample : 0.8 * u->rtt_ewma + 0.2 * sample;
    if (rc == 0) {
        if (u->fails >= POOL_FAILS_DOWN)
            log_info("upstream %s is answering again", u->name);
        u->fails = 0;
        u->down_until = 0;
        return;
    }
    if (++u->fails >= POOL_FAILS_DOWN) {
        unsigned shift = u->fails - POOL_FAILS_DOWN;
        uint64_t backoff = (uint64_t)POOL_BACKOFF_MIN_MS << (shift > 6 ? 6 : shift);
        if (backoff > POOL_BACKOFF_MAX_MS)
            backoff = POOL_BACKOFF_MAX_MS;
        /* jitter, so a group's upstreams do not come back in lockstep */
        backoff += rand_uniform((uint32_t)(backoff / 4 + 1));
        if (u->fails == POOL_FAILS_DOWN)
            log_warn("upstream %s failed %u times in a row; backing off", u->name, u->fails);
        u->down_until = now + backoff;
    }
}
