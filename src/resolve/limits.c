#include "resolve/limits.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/rand.h"

enum {
    LIMITS_SLOTS = 4096, /* a power of two */
    LIMITS_PROBE = 8,
};

struct client {
    uint8_t key[16];   /* IPv4 as ::ffff:a.b.c.d, IPv6 as its /64 */
    bool used;
    unsigned inflight;
    double tokens;
    uint64_t stamp;    /* when tokens was last refilled */
};

struct limits {
    const struct cfg_limits *cfg;
    uint32_t seed;
    unsigned inflight;
    struct client slots[LIMITS_SLOTS];
};

struct limits *limits_new(void)
{
    struct limits *l = calloc(1, sizeof(*l));

    if (l)
        l->seed = rand_u32();
    return l;
}

void limits_del(struct limits *l)
{
    free(l);
}

void limits_configure(struct limits *l, const struct cfg_limits *cfg)
{
    l->cfg = cfg;
}

static bool prefix_match(const uint8_t *net, const uint8_t *ip, unsigned prefix)
{
    unsigned bytes = prefix / 8;

    if (memcmp(net, ip, bytes))
        return false;
    if (prefix % 8) {
        uint8_t mask = (uint8_t)(0xff << (8 - prefix % 8));
        return (net[bytes] & mask) == (ip[bytes] & mask);
    }
    return true;
}

static const uint8_t *addr_bytes(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return (const uint8_t *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
    return (const uint8_t *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
}

bool limits_allowed(const struct limits *l, const struct net_addr *a)
{
    if (a->ss.ss_family != AF_INET && a->ss.ss_family != AF_INET6)
        return false;
    for (size_t i = 0; i < l->cfg->n_allow; i++) {
        const struct cfg_subnet *s = &l->cfg->allow[i];
        if (s->addr.ss.ss_family == a->ss.ss_family &&
            prefix_match(addr_bytes(&s->addr), addr_bytes(a), s->prefix))
            return true;
    }
    return false;
}

static void client_key(const struct net_addr *a, uint8_t key[16])
{
    memset(key, 0, 16);
    if (a->ss.ss_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, addr_bytes(a), 4);
    } else if (a->ss.ss_family == AF_INET6) {
        memcpy(key, addr_bytes(a), 8);
    }
}

static double burst_of(const struct cfg_limits *cfg)
{
    unsigned b = cfg->rate_limit_burst ? cfg->rate_limit_burst : cfg->rate_limit;
    return b ? b : 1;
}

/* An entry that holds nothing: no query in flight and a bucket that would be
 * full by now, so forgetting it changes nothing. */
static bool client_idle(const struct limits *l, const struct client *c, uint64_t now)
{
    if (!c->used)
        return true;
    if (c->inflight)
        return false;
    if (!l->cfg->rate_limit)
        return true;
    return c->tokens + (double)(now - c->stamp) * l->cfg->rate_limit / 1000.0 >= burst_of(l->cfg);
}

/* The entry of a's client: its own, a reusable one, or when the probe
 * window is crowded the first of it, shared. */
static struct client *client_get(struct limits *l, const struct net_addr *a, uint64_t now)
{
    uint8_t key[16];
    uint32_t h = 2166136261u ^ l->seed;
    struct client *spare = NULL;

    client_key(a, key);
    for (size_t i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    for (unsigned i = 0; i < LIMITS_PROBE; i++) {
        struct client *c = &l->slots[(h + i) & (LIMITS_SLOTS - 1)];
        if (c->used && !memcmp(c->key, key, 16))
            return c;
        if (!spare && client_idle(l, c, now))
            spare = c;
    }
    if (!spare)
        return &l->slots[h & (LIMITS_SLOTS - 1)];
    memcpy(spare->key, key, 16);
    spare->used = true;
    spare->inflight = 0;
    spare->tokens = burst_of(l->cfg);
    spare->stamp = now;
    return spare;
}

bool limits_rate_take(struct limits *l, const struct net_addr *a, uint64_t now_ms)
{
    if (!l->cfg->rate_limit)
        return true;
    struct client *c = client_get(l, a, now_ms);
    double burst = burst_of(l->cfg);

    if (now_ms > c->stamp) {
        c->tokens += (double)(now_ms - c->stamp) * l->cfg->rate_limit / 1000.0;
        c->stamp = now_ms;
    }
    if (c->tokens > burst)
        c->tokens = burst;
    if (c->tokens < 1.0)
        return false;
    c->tokens -= 1.0;
    return true;
}

int limits_inflight_take(struct limits *l, const struct net_addr *a, uint64_t now_ms)
{
    if (l->inflight >= l->cfg->max_inflight)
        return -1;
    struct client *c = client_get(l, a, now_ms);
    if (c->inflight >= l->cfg->max_inflight_per_client)
        return -1;
    c->inflight++;
    l->inflight++;
    return (int)(c - l->slots);
}

void limits_inflight_put(struct limits *l, int ticket)
{
    if (ticket < 0 || ticket >= LIMITS_SLOTS)
        return;
    l->slots[ticket].inflight--;
    l->inflight--;
}

unsigned limits_inflight(const struct limits *l)
{
    return l->inflight;
}
