#include "resolve/cache.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

enum { Q_SMALL = 0, Q_MAIN = 1 };
enum { K_POSITIVE = 0, K_NEGATIVE = 1, K_SERVFAIL = 2 };
enum {
    FREQ_MAX = 3,        /* a 2-bit counter is enough to tell hot from cold */
    BUCKETS_MIN = 16,
    ENTRY_FRACTION = 8,  /* an entry may take at most 1/8 of the bound */
    INDEX_FRACTION = 8,  /* the index and ghost table at most 1/8 */
    SMALL_FRACTION = 10, /* S3-FIFO: the small queue holds ~10 % of the bytes */
};

struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* FIFO queue, next is newer */
    uint64_t hash;
    uint64_t stored;           /* ms, arrival of the answer */
    uint64_t expire;           /* ms, stored + life */
    uint32_t life;             /* seconds, after clamps */
    uint32_t hits;             /* since stored, for prefetch */
    uint32_t cost;             /* bytes charged against the bound */
    uint32_t flags;            /* CACHE_F_* with the view */
    uint16_t len;              /* of msg */
    uint16_t qtype, qclass;
    uint8_t nlen, kind, queue, freq;
    bool refreshing;
    /* The answer with its question name lower-cased: the name at offset 12
     * doubles as the key, so it is not stored twice. */
    uint8_t msg[];
};

struct queue {
    struct entry *head, *tail; /* oldest, newest */
    size_t bytes;
};

struct cache {
    struct cache_opts o;
    uint64_t seed[2];
    struct entry **tab;
    uint32_t *ghost; /* fingerprints of keys that left the small queue unused */
    size_t mask;     /* buckets - 1, for tab and ghost alike */
    struct queue q[2];
    size_t n, bytes;
    uint64_t now; /* the latest time seen, for eviction's expiry check */
    struct cache_stats st;
    char **views; /* group names; a name's index is its view number */
    size_t n_views;
};

struct key {
    uint64_t hash;
    uint16_t qtype, qclass;
    uint8_t nlen;
    uint32_t flags;
    /* The hash input: lower-cased name, then qtype, qclass and flags. */
    uint8_t buf[DNS_NAME_MAX + 8];
};

/* How one answer's TTLs are to be rewritten: clamp into [lo, hi], then cap. */
struct plan {
    int kind;
    uint32_t lo, hi, cap;
};

/* ---- memory accounting ------------------------------------------------- */

/* What malloc really takes for n bytes: glibc adds a size word and rounds to
 * 16 with a 32-byte minimum; big blocks are mmapped whole pages. */
static size_t alloc_cost(size_t n)
{
    if (n >= 128 * 1024)
        return (n + 2 * sizeof(size_t) + 4095) & ~(size_t)4095;
    size_t c = (n + sizeof(size_t) + 15) & ~(size_t)15;
    return c < 32 ? 32 : c;
}

static size_t index_cost(size_t buckets)
{
    return alloc_cost(buckets * sizeof(struct entry *)) + alloc_cost(buckets * sizeof(uint32_t));
}

/* The largest power-of-two bucket count whose index fits the fraction of the
 * bound; past it the load factor rises instead of the index growing. */
static size_t max_buckets(size_t size)
{
    size_t b = BUCKETS_MIN;

    while (b <= SIZE_MAX / 64 && index_cost(b * 2) <= size / INDEX_FRACTION)
        b *= 2;
    return b;
}

/* ---- hashing -------------------------------------------------------------- */

/* SipHash-1-3 with a per-cache random key: names come from clients, so an
 * attacker must not be able to choose names that share a bucket. */
static uint64_t rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13) ^ v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17) ^ v[2];
    v[2] = rotl(v[2], 32);
}

static uint64_t load_le64(const uint8_t *p, size_t n)
{
    uint64_t m = 0;

    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

static uint64_t siphash13(const uint64_t k[2], const uint8_t *p, size_t n)
{
    uint64_t v[4] = {
        k[0] ^ 0x736f6d6570736575ULL,
        k[1] ^ 0x646f72616e646f6dULL,
        k[0] ^ 0x6c7967656e657261ULL,
        k[1] ^ 0x7465646279746573ULL,
    };
    size_t whole = n & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(p + i, 8);
        v[3] ^= m;
        sip_round(v);
        v[0] ^= m;
    }
    uint64_t last = load_le64(p + whole, n - whole) | (uint64_t)n << 56;
    v[3] ^= last;
    sip_round(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_round(v);
    sip_round(v);
    sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed_init(struct cache *c)
{
    if (getrandom(c->seed, sizeof(c->seed), GRND_NONBLOCK) == (ssize_t)sizeof(c->seed))
        return;
    /* Entropy not ready (early boot on a router): weaker, but still not
     * something a remote client can predict. */
    struct timespec a, b;
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    uint64_t s = (uint64_t)a.tv_sec * 1000000000u + (uint64_t)a.tv_nsec;
    s ^= ((uint64_t)b.tv_nsec << 32) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
    c->seed[0] = splitmix(&s);
    c->seed[1] = splitmix(&s);
}

static int key_make(const struct cache *c, struct key *k, const struct dns_question *q,
                    unsigned flags)
{
    if (!q || q->name_len == 0 || q->name_len > DNS_NAME_MAX)
        return DV_EINVAL;
    k->nlen = (uint8_t)q->name_len;
    k->qtype = q->qtype;
    k->qclass = q->qclass;
    k->flags = (uint32_t)flags;
    memcpy(k->buf, q->name, k->nlen);
    dns_name_lower(k->buf, k->nlen);
    dns_put16(k->buf + k->nlen, k->qtype);
    dns_put16(k->buf + k->nlen + 2, k->qclass);
    dns_put16(k->buf + k->nlen + 4, (uint16_t)(k->flags >> 16));
    dns_put16(k->buf + k->nlen + 6, (uint16_t)k->flags);
    k->hash = siphash13(c->seed, k->buf, (size_t)k->nlen + 8);
    return 0;
}

/* ---- index, queues, ghost ---------------------------------------------- */

static struct entry *find(const struct cache *c, const struct key *k)
{
    for (struct entry *e = c->tab[k->hash & c->mask]; e; e = e->hnext) {
        if (e->hash == k->hash && e->nlen == k->nlen && e->qtype == k->qtype &&
            e->qclass == k->qclass && e->flags == k->flags &&
            memcmp(e->msg + DNS_HDR_LEN, k->buf, k->nlen) == 0)
            return e;
    }
    return NULL;
}

static void q_push(struct cache *c, struct entry *e, int which)
{
    struct queue *q = &c->q[which];

    e->queue = (uint8_t)which;
    e->next = NULL;
    e->prev = q->tail;
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->bytes += e->cost;
}

static void q_unlink(struct cache *c, struct entry *e)
{
    struct queue *q = &c->q[e->queue];

    if (e->prev)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        q->tail = e->prev;
    e->prev = e->next = NULL;
    q->bytes -= e->cost;
}

static void link_entry(struct cache *c, struct entry *e, int which)
{
    struct entry **b = &c->tab[e->hash & c->mask];

    e->hnext = *b;
    *b = e;
    q_push(c, e, which);
    c->n++;
    c->bytes += e->cost;
}

static void unlink_entry(struct cache *c, struct entry *e)
{
    struct entry **pp = &c->tab[e->hash & c->mask];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    q_unlink(c, e);
    c->n--;
    c->bytes -= e->cost;
}

static void drop(struct cache *c, struct entry *e)
{
    unlink_entry(c, e);
    free(e);
}

/* The ghost table is direct-mapped: a newer ghost overwrites an older one in
 * its slot, which ages ghosts out without a FIFO of their own. */
static uint32_t ghost_fp(uint64_t hash)
{
    return (uint32_t)(hash >> 32) | 1; /* 0 marks an empty slot */
}

static void ghost_put(struct cache *c, uint64_t hash)
{
    c->ghost[hash & c->mask] = ghost_fp(hash);
}

static bool ghost_take(struct cache *c, uint64_t hash)
{
    uint32_t *slot = &c->ghost[hash & c->mask];

    if (*slot != ghost_fp(hash))
        return false;
    *slot = 0;
    return true;
}

static int rehash(struct cache *c, size_t buckets)
{
    struct entry **tab = calloc(buckets, sizeof(*tab));
    uint32_t *ghost = calloc(buckets, sizeof(*ghost));

    if (!tab || !ghost) {
        free(tab);
        free(ghost);
        return DV_ENOMEM;
    }
    for (size_t i = 0; i <= c->mask; i++) {
        struct entry *e = c->tab[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            e->hnext = tab[e->hash & (buckets - 1)];
            tab[e->hash & (buckets - 1)] = e;
        }
    }
    c->bytes = c->bytes - index_cost(c->mask + 1) + index_cost(buckets);
    free(c->tab);
    free(c->ghost);
    c->tab = tab;
    c->ghost = ghost; /* old ghosts are forgotten: they were only hints */
    c->mask = buckets - 1;
    return 0;
}

/* ---- time ------------------------------------------------------------------ */

static void touch(struct cache *c, uint64_t now)
{
    if (now > c->now)
        c->now = now;
}

static uint64_t stale_ms(const struct cache *c, const struct entry *e)
{
    /* A stale SERVFAIL is worth nothing. */
    return e->kind == K_SERVFAIL ? 0 : (uint64_t)c->o.max_stale * 1000;
}

/* Past its lifetime and its stale window: of no use to anyone. */
static bool dead(const struct cache *c, const struct entry *e, uint64_t now)
{
    return now >= e->expire + stale_ms(c, e);
}

/* ---- eviction (S3-FIFO) ------------------------------------------------ */

/* Frees one entry. Entries hit while in the small queue move to main instead
 * (reinsertion costs a list move here, never on the hit path); main gives an
 * entry one more round per counted hit, like CLOCK. Entries past all use go
 * first whatever their count. false when the cache is empty. */
static bool evict_one(struct cache *c)
{
    struct queue *small = &c->q[Q_SMALL], *mainq = &c->q[Q_MAIN];

    for (;;) {
        struct entry *e;
        if (small->head && (small->bytes > c->o.size / SMALL_FRACTION || !mainq->head)) {
            e = small->head;
            if (dead(c, e, c->now)) {
                c->st.expired++;
            } else if (e->freq > 0) {
                q_unlink(c, e);
                e->freq = 0;
                q_push(c, e, Q_MAIN);
                continue;
            } else {
                ghost_put(c, e->hash);
                c->st.evictions++;
            }
            drop(c, e);
            return true;
        }
        e = mainq->head;
        if (!e)
            return false;
        if (dead(c, e, c->now)) {
            c->st.expired++;
        } else if (e->freq > 0) {
            e->freq--;
            q_unlink(c, e);
            q_push(c, e, Q_MAIN);
            continue;
        } else {
            c->st.evictions++;
        }
        drop(c, e);
        return true;
    }
}

static bool make_room(struct cache *c, size_t need)
{
    while (c->bytes + need > c->o.size) {
        if (!evict_one(c))
            return false;
    }
    return true;
}

/* ---- answer policy ----------------------------------------------------------- */

/* RFC 2181 §8: a TTL with the top bit set reads as zero. */
static uint32_t ttl_value(uint32_t ttl)
{
    return ttl > 0x7fffffffu ? 0 : ttl;
}

static uint32_t clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static uint32_t plan_ttl(const struct plan *p, uint32_t ttl)
{
    uint32_t t = clamp(ttl_value(ttl), p->lo, p->hi);
    return t < p->cap ? t : p->cap;
}

static void put32(uint8_t *p, uint32_t v)
{
    dns_put16(p, (uint16_t)(v >> 16));
    dns_put16(p + 2, (uint16_t)v);
}

/* Decides whether a checked answer may be cached and how its TTLs are
 * rewritten. 1 (cacheable, *p filled), 0 (never cached) or DV_EMALFORMED. */
static int classify(const struct cache *c, const struct dns_question *q, const uint8_t *msg,
                    size_t len, struct plan *p)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    struct dns_cur cur;
    uint16_t hflags = dns_get16(msg + 2);
    int rcode = DNS_RCODE(hflags), rc;
    bool have_type = false, have_soa = false;
    uint32_t soa_ttl = 0, soa_min = 0;

    if (hflags & DNS_FLAG_TC)
        return 0;
    if (rcode != DNS_RCODE_NOERROR && rcode != DNS_RCODE_NXDOMAIN &&
        rcode != DNS_RCODE_SERVFAIL)
        return 0;

    /* The question name must sit uncompressed at offset 12: it is the key, and
     * dns_msg_restore writes the client's spelling over it. */
    dns_cur_init(&cur, msg, len);
    dns_cur_seek(&cur, DNS_HDR_LEN);
    dns_name_read(&cur, NULL);
    if (cur.err || cur.pos != DNS_HDR_LEN + (size_t)q->name_len)
        return DV_EMALFORMED;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return DV_EMALFORMED;
    while ((rc = dns_rr_next(&it, &rr)) == 1) {
        if (rr.type == DNS_TYPE_OPT) {
            if (rr.ttl >> 24) /* extended rcode: BADCOOKIE and friends */
                return 0;
        } else if (rr.section == DNS_SEC_ANSWER) {
            if (rr.type == q->qtype || q->qtype == DNS_TYPE_ANY)
                have_type = true;
        } else if (rr.section == DNS_SEC_AUTHORITY && rr.type == DNS_TYPE_SOA && !have_soa &&
                   rr.rdlen >= 22) {
            have_soa = true;
            soa_ttl = ttl_value(rr.ttl);
            dns_cur_seek(&cur, rr.rdata_off + rr.rdlen - 4);
            soa_min = dns_cur_u32(&cur);
        }
    }
    if (rc < 0 || cur.err)
        return DV_EMALFORMED;

    p->lo = c->o.min_ttl;
    p->hi = c->o.max_ttl;
    p->cap = UINT32_MAX;
    if (rcode == DNS_RCODE_SERVFAIL) {
        p->kind = K_SERVFAIL;
        p->lo = 0;
        p->cap = c->o.servfail_ttl;
    } else if (rcode == DNS_RCODE_NOERROR && have_type) {
        p->kind = K_POSITIVE;
    } else if (have_soa) {
        /* RFC 2308 §5: the lesser of the SOA's own TTL and its MINIMUM. */
        p->kind = K_NEGATIVE;
        p->cap = clamp(soa_ttl < soa_min ? soa_ttl : soa_min, p->lo, p->hi);
    } else {
        p->kind = K_NEGATIVE;
        p->lo = 0;
        p->cap = c->o.neg_ttl_nosoa;
    }
    return 1;
}

/* Rewrites (when w) and returns the smallest planned TTL of msg's records, OPT
 * excluded; p->cap for a message without records. */
static uint32_t ttl_pass(uint8_t *w, const uint8_t *msg, size_t len, const struct plan *p)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    uint32_t life = p->cap;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return 0;
    while (dns_rr_next(&it, &rr) == 1) {
        if (rr.type == DNS_TYPE_OPT)
            continue;
        uint32_t t = plan_ttl(p, rr.ttl);
        if (w)
            put32(w + rr.ttl_off, t);
        if (t < life)
            life = t;
    }
    return life;
}

/* Drops the OPT options that belong to one upstream connection (cookie,
 * keepalive) or are dead weight in memory (padding), and any client subnet.
 * Only when the OPT is the last record: removing bytes before a later record
 * could leave a compression pointer aimed past the shift. */
static int strip_opts(uint8_t *msg, size_t *len)
{
    static const uint16_t codes[] = {DNS_OPT_PADDING, DNS_OPT_COOKIE, DNS_OPT_KEEPALIVE,
                                     DNS_OPT_ECS};
    struct dns_rr_iter it;
    struct dns_rr rr;
    bool opt_last = false;

    if (dns_rr_iter_init(&it, msg, *len) < 0)
        return DV_EMALFORMED;
    while (dns_rr_next(&it, &rr) == 1) {
        if (rr.type == DNS_TYPE_OPT)
            opt_last = rr.rdata_off + rr.rdlen == *len;
    }
    if (!opt_last)
        return 0;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        int rc = dns_edns_strip_opt(msg, len, codes[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- answers out ------------------------------------------------------------- */

static void set_all_ttls(uint8_t *msg, size_t len, uint32_t ttl)
{
    struct dns_rr_iter it;
    struct dns_rr rr;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return;
    while (dns_rr_next(&it, &rr) == 1) {
        if (rr.type != DNS_TYPE_OPT)
            put32(msg + rr.ttl_off, ttl);
    }
}

/* Copies e for the client: aged to now, or with every TTL at CACHE_STALE_TTL. */
static int copy_out(const struct entry *e, const struct dns_question *q, uint16_t id,
                    uint64_t now, bool stale, uint8_t *out, size_t cap, size_t *plen)
{
    if (cap < e->len)
        return DV_ESPACE;
    memcpy(out, e->msg, e->len);
    if (stale) {
        set_all_ttls(out, e->len, CACHE_STALE_TTL);
    } else {
        uint64_t elapsed = now > e->stored ? (now - e->stored) / 1000 : 0;
        if (elapsed)
            dns_msg_age(out, e->len, elapsed > UINT32_MAX ? UINT32_MAX : (uint32_t)elapsed);
    }
    dns_msg_restore(out, e->len, id, q);
    *plen = e->len;
    return 0;
}

static void hit(struct cache *c, struct entry *e)
{
    if (e->freq < FREQ_MAX)
        e->freq++;
    if (e->hits < UINT32_MAX)
        e->hits++;
    c->st.hits++;
}

/* ---- public ------------------------------------------------------------------- */

void cache_opts_default(struct cache_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->size = CACHE_SIZE_DEFAULT;
    o->min_ttl = 0;
    o->max_ttl = 86400;
    o->neg_ttl_nosoa = 0;
    o->servfail_ttl = 5;
    o->max_stale = 86400;
    o->prefetch_hits = 2;
}

unsigned cache_flags(const struct dns_query_info *qi)
{
    unsigned f = 0;

    if (qi->edns.present && qi->edns.do_bit)
        f |= CACHE_F_DO;
    if (qi->hdr.flags & DNS_FLAG_CD)
        f |= CACHE_F_CD;
    return f;
}

static bool opts_valid(const struct cache_opts *o)
{
    return o && o->size >= CACHE_SIZE_MIN && o->min_ttl <= o->max_ttl;
}

int cache_new(struct cache **pc, const struct cache_opts *opts)
{
    struct cache *c;

    *pc = NULL;
    if (!opts_valid(opts))
        return DV_EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return DV_ENOMEM;
    c->o = *opts;
    c->tab = calloc(BUCKETS_MIN, sizeof(*c->tab));
    if (!c->tab)
        goto fail_tab;
    c->ghost = calloc(BUCKETS_MIN, sizeof(*c->ghost));
    if (!c->ghost)
        goto fail_ghost;
    c->mask = BUCKETS_MIN - 1;
    c->bytes = alloc_cost(sizeof(*c)) + index_cost(BUCKETS_MIN);
    seed_init(c);
    *pc = c;
    return 0;

fail_ghost:
    free(c->tab);
fail_tab:
    free(c);
    return DV_ENOMEM;
}

static void free_all(struct cache *c)
{
    for (int i = 0; i < 2; i++) {
        struct entry *e = c->q[i].head, *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
        c->q[i].head = c->q[i].tail = NULL;
        c->q[i].bytes = 0;
    }
}

void cache_del(struct cache *c)
{
    if (!c)
        return;
    free_all(c);
    free(c->tab);
    free(c->ghost);
    for (size_t i = 0; i < c->n_views; i++)
        free(c->views[i]);
    free(c->views);
    free(c);
}

int cache_view(struct cache *c, const char *name)
{
    for (size_t i = 0; i < c->n_views; i++)
        if (strcmp(c->views[i], name) == 0)
            return (int)i;
    if (c->n_views > CACHE_VIEW_MAX || c->n_views >= INT_MAX)
        return DV_ESPACE;
    char **v = realloc(c->views, (c->n_views + 1) * sizeof(*v));
    if (!v)
        return DV_ENOMEM;
    c->views = v;
    if (!(v[c->n_views] = strdup(name)))
        return DV_ENOMEM;
    return (int)c->n_views++;
}

int cache_set_limits(struct cache *c, const struct cache_opts *opts)
{
    size_t limit;

    if (!opts_valid(opts))
        return DV_EINVAL;
    limit = max_buckets(opts->size);
    if (c->mask + 1 > limit) {
        int rc = rehash(c, limit);
        if (rc < 0)
            return rc;
    }
    c->o = *opts;
    while (c->bytes > c->o.size && evict_one(c))
        ;
    return 0;
}

int cache_lookup(struct cache *c, const struct dns_question *q, unsigned flags, uint16_t id,
                 uint64_t now, uint8_t *out, size_t cap, size_t *plen)
{
    struct key k;
    struct entry *e;
    int rc;

    *plen = 0;
    if ((rc = key_make(c, &k, q, flags)) < 0)
        return rc;
    touch(c, now);
    e = find(c, &k);
    if (e && dead(c, e, now)) {
        drop(c, e);
        c->st.expired++;
        e = NULL;
    }
    if (!e) {
        c->st.misses++;
        return CACHE_MISS;
    }
    if (now >= e->expire) {
        c->st.misses++; /* the caller still goes upstream */
        return CACHE_STALE;
    }
    if ((rc = copy_out(e, q, id, now, false, out, cap, plen)) < 0)
        return rc;
    hit(c, e);
    /* Refresh a popular entry in the last tenth of its life, once. */
    if (c->o.prefetch_hits && e->kind != K_SERVFAIL && !e->refreshing &&
        e->hits >= c->o.prefetch_hits && e->expire - now <= (uint64_t)e->life * 100) {
        e->refreshing = true;
        c->st.prefetches++;
        return CACHE_HIT_REFRESH;
    }
    return CACHE_HIT;
}

int cache_lookup_stale(struct cache *c, const struct dns_question *q, unsigned flags,
                       uint16_t id, uint64_t now, uint8_t *out, size_t cap, size_t *plen)
{
    struct key k;
    struct entry *e;
    bool stale;
    int rc;

    *plen = 0;
    if ((rc = key_make(c, &k, q, flags)) < 0)
        return rc;
    touch(c, now);
    e = find(c, &k);
    if (!e || dead(c, e, now))
        return CACHE_MISS;
    stale = now >= e->expire;
    if ((rc = copy_out(e, q, id, now, stale, out, cap, plen)) < 0)
        return rc;
    if (!stale) {
        hit(c, e);
        return CACHE_HIT;
    }
    if (e->freq < FREQ_MAX)
        e->freq++;
    c->st.stale_served++;
    return CACHE_STALE;
}

int cache_insert(struct cache *c, const struct dns_question *q, unsigned flags,
                 const uint8_t *msg, size_t len, uint64_t now)
{
    struct key k;
    struct entry *old, *e;
    struct plan p;
    uint32_t life;
    size_t cost, elen;
    int rc, which = Q_SMALL;
    uint8_t freq = 0;

    if ((rc = key_make(c, &k, q, flags)) < 0)
        return rc;
    touch(c, now);
    old = find(c, &k);
    if (old)
        old->refreshing = false;
    if (!msg || len < DNS_HDR_LEN || len > DNS_MSG_MAX)
        return DV_EMALFORMED;
    if ((rc = dns_response_check(msg, len, q)) < 0)
        return rc;
    if ((rc = classify(c, q, msg, len, &p)) <= 0)
        return rc;
    /* Keep serving what we have rather than a failure. */
    if (p.kind == K_SERVFAIL && old && old->kind != K_SERVFAIL && !dead(c, old, now))
        return 0;

    life = ttl_pass(NULL, msg, len, &p);
    if (life == 0)
        goto superseded;

    e = malloc(sizeof(*e) + len);
    if (!e)
        return DV_ENOMEM;
    elen = len;
    memcpy(e->msg, msg, len);
    if (strip_opts(e->msg, &elen) < 0 || dns_response_check(e->msg, elen, q) < 0) {
        free(e);
        return DV_EMALFORMED;
    }
    cost = alloc_cost(sizeof(*e) + len);
    if (elen < len) {
        struct entry *smaller = realloc(e, sizeof(*e) + elen);
        if (smaller) {
            e = smaller;
            cost = alloc_cost(sizeof(*e) + elen);
        }
    }
    if (cost > c->o.size / ENTRY_FRACTION) {
        free(e);
        goto superseded;
    }
    ttl_pass(e->msg, e->msg, elen, &p);
    dns_name_lower(e->msg + DNS_HDR_LEN, k.nlen);
    e->hash = k.hash;
    e->stored = now;
    e->life = life;
    e->expire = now + (uint64_t)life * 1000;
    e->hits = 0;
    e->cost = (uint32_t)cost;
    e->len = (uint16_t)elen;
    e->qtype = k.qtype;
    e->qclass = k.qclass;
    e->nlen = k.nlen;
    e->flags = k.flags;
    e->kind = (uint8_t)p.kind;
    e->refreshing = false;

    /* A new answer for a known key keeps the key's standing. */
    if (old) {
        which = old->queue;
        freq = old->freq;
        drop(c, old);
    } else if (ghost_take(c, k.hash)) {
        which = Q_MAIN;
    }
    e->freq = freq;

    size_t buckets = c->mask + 1, extra = 0;
    bool grow = c->n + 1 > buckets && buckets * 2 <= max_buckets(c->o.size);
    if (grow)
        extra = index_cost(buckets * 2) - index_cost(buckets);
    if (!make_room(c, cost + extra)) {
        free(e); /* only with a bound smaller than our fixed costs */
        return 0;
    }
    if (grow)
        (void)rehash(c, buckets * 2); /* on failure the chains just grow longer */
    link_entry(c, e, which);
    c->st.inserts++;
    return 1;

superseded:
    /* A valid answer we will not keep still makes the old one wrong. */
    if (old && p.kind != K_SERVFAIL)
        drop(c, old);
    return 0;
}

void cache_refresh_failed(struct cache *c, const struct dns_question *q, unsigned flags)
{
    struct key k;
    struct entry *e;

    if (key_make(c, &k, q, flags) < 0)
        return;
    if ((e = find(c, &k)))
        e->refreshing = false;
}

void cache_flush_all(struct cache *c)
{
    free_all(c);
    memset(c->tab, 0, (c->mask + 1) * sizeof(*c->tab));
    memset(c->ghost, 0, (c->mask + 1) * sizeof(*c->ghost));
    c->n = 0;
    c->bytes = alloc_cost(sizeof(*c)) + index_cost(c->mask + 1);
}

int cache_flush_name(struct cache *c, const uint8_t *name, size_t len)
{
    int removed = 0;

    if (!name || len == 0 || len > DNS_NAME_MAX)
        return DV_EINVAL;
    for (int i = 0; i < 2; i++) {
        struct entry *e = c->q[i].head, *next;
        for (; e; e = next) {
            next = e->next;
            if (dns_name_is_sub(e->msg + DNS_HDR_LEN, e->nlen, name, len)) {
                drop(c, e);
                removed++;
            }
        }
    }
    return removed;
}

void cache_stats(const struct cache *c, struct cache_stats *out)
{
    *out = c->st;
    out->entries = c->n;
    out->bytes = c->bytes;
    out->size = c->o.size;
}
