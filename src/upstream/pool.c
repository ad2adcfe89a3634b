#include "upstream/pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct pool {
    char *name;
    struct upstream **ups;
    size_t n;
    unsigned refs;
};

enum {
    POOL_FAILS_DOWN = 3,         /* consecutive failures before backing off */
    POOL_BACKOFF_MIN_MS = 1000,
    POOL_BACKOFF_MAX_MS = 60000,
};

struct pool *pool_new(const char *name, struct upstream **ups, size_t n)
{
    struct pool *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->name = strdup(name);
    p->ups = calloc(n ? n : 1, sizeof(*p->ups));
    if (!p->name || !p->ups) {
        free(p->name);
        free(p->ups);
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        p->ups[i] = ups[i];
        upstream_ref(ups[i]);
    }
    p->n = n;
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

void pool_plan(struct pool *p, uint64_t now, struct upstream **order)
{
    size_t k = 0;

    for (size_t i = 0; i < p->n; i++)
        if (p->ups[i]->down_until <= now)
            order[k++] = p->ups[i];
    for (size_t i = 0; i < p->n; i++)
        if (p->ups[i]->down_until > now)
            order[k++] = p->ups[i];
}

void pool_report(struct upstream *u, int rc, uint64_t rtt_ms, uint64_t now)
{
    if (rc == 0) {
        if (u->fails >= POOL_FAILS_DOWN)
            log_info("upstream %s is answering again", u->name);
        u->fails = 0;
        u->down_until = 0;
        u->rtt_ewma = u->rtt_ewma == 0 ? (double)rtt_ms : 0.8 * u->rtt_ewma + 0.2 * (double)rtt_ms;
        return;
    }
    if (++u->fails >= POOL_FAILS_DOWN) {
        unsigned shift = u->fails - POOL_FAILS_DOWN;
        uint64_t backoff = POOL_BACKOFF_MIN_MS << (shift > 6 ? 6 : shift);
        if (backoff > POOL_BACKOFF_MAX_MS)
            backoff = POOL_BACKOFF_MAX_MS;
        if (u->fails == POOL_FAILS_DOWN)
            log_warn("upstream %s failed %u times in a row; backing off", u->name, u->fails);
        u->down_until = now + backoff;
    }
}
