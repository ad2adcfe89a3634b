/* cache — the one answer cache shared by every listener and upstream.
 *
 * A pure data structure: no I/O, no event loop. Every call that needs the time
 * takes `now` in milliseconds from a monotonic clock, so tests move the clock.
 *
 * Key: the lower-cased question name, qtype, qclass and the client's DO and CD
 * bits. The value is the upstream's wire answer with the time it arrived. On
 * the way out the answer is copied into the caller's buffer with every TTL
 * aged (OPT untouched), the client's ID restored and the question name given
 * back in the client's case.
 *
 * TTL policy, applied once when an answer is stored:
 *   - each record's TTL is clamped into [min_ttl, max_ttl] in the stored copy,
 *     and the entry lives for the smallest clamped TTL. Returned TTLs are
 *     therefore the clamped TTL minus the time elapsed: clients never see a
 *     record outlive our entry (max_ttl), and never see TTL 0 for an answer we
 *     still consider fresh (min_ttl) — the choice unbound, dnsmasq and
 *     dnscrypt-proxy make;
 *   - NXDOMAIN and NODATA (NOERROR without a record of the asked type) live
 *     min(SOA TTL, SOA MINIMUM) of the SOA in the authority section
 *     (RFC 2308), clamped the same way, and no record's TTL exceeds that;
 *     without an SOA they live neg_ttl_nosoa (0: not cached);
 *   - SERVFAIL lives servfail_ttl (0: not cached) and never replaces an entry
 *     that is still fresh or servable stale;
 *   - truncated answers, answers that fail dns_response_check against the key,
 *     other rcodes (extended ones included), TTL-0 lifetimes and answers that
 *     would take more than 1/8 of the memory bound are not cached;
 *   - the OPT options tied to one upstream exchange (cookie, keepalive,
 *     padding, client subnet) are dropped from the stored copy.
 * Limits changed by cache_set_limits apply to answers stored afterwards.
 *
 * Eviction is S3-FIFO: new entries enter a small FIFO; those hit while there
 * move to the main FIFO, the rest leave (remembered in a ghost table so a
 * quick return goes straight to main). Main is a CLOCK: a hit only bumps a
 * 2-bit counter, the eviction scan gives counted entries another round. One
 * scan of cold names therefore cannot flush the popular ones. The memory
 * bound counts entries (header, answer, allocator overhead), the index and
 * the ghost table. */
#ifndef DV_RESOLVE_CACHE_H
#define DV_RESOLVE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns.h"

struct cache;

enum {
    CACHE_SIZE_MIN = 4096,           /* smaller bounds are rejected */
    CACHE_SIZE_DEFAULT = 8 << 20,
    CACHE_STALE_TTL = 30,            /* TTL of stale answers (RFC 8767 §4) */
};

/* Key bits beside the question: answers differ with them. */
enum {
    CACHE_F_DO = 1, /* client wants DNSSEC records */
    CACHE_F_CD = 2, /* client does its own validation */
    /* Bits 2-31: a view number from cache_view(). Different upstream groups
     * may answer the same question differently (a filtering resolver for
     * some clients), so the caller keys answers by the group that produced
     * them. */
    CACHE_F_VIEW_SHIFT = 2,
};
#define CACHE_F_VIEW_MASK (~(unsigned)(CACHE_F_DO | CACHE_F_CD))
#define CACHE_VIEW_MAX (CACHE_F_VIEW_MASK >> CACHE_F_VIEW_SHIFT)

struct cache_opts {
    size_t size;            /* hard memory bound, bytes (>= CACHE_SIZE_MIN) */
    uint32_t min_ttl;       /* seconds; default 0 */
    uint32_t max_ttl;       /* seconds; default 86400; must be >= min_ttl */
    uint32_t neg_ttl_nosoa; /* negative answer without SOA; default 0 = not cached */
    uint32_t servfail_ttl;  /* default 5; 0 = never cached */
    uint32_t max_stale;     /* seconds an expired answer stays servable; default 86400, 0 = off */
    uint32_t prefetch_hits; /* hits during an entry's life before it is prefetched; default 2, 0 = off */
};

enum cache_result {
    CACHE_MISS = 0,
    CACHE_HIT = 1,
    CACHE_HIT_REFRESH = 2, /* a hit; also start one background refresh */
    CACHE_STALE = 3,       /* expired but servable: ask upstream, and if it fails or
                              is slow, serve cache_lookup_stale() */
};

struct cache_stats {
    size_t entries;
    size_t bytes; /* everything counted against the bound */
    size_t size;  /* the bound */
    uint64_t hits, misses, inserts;
    uint64_t evictions;    /* removed to make room */
    uint64_t expired;      /* removed because they were past any use */
    uint64_t stale_served; /* answers copied by cache_lookup_stale */
    uint64_t prefetches;   /* CACHE_HIT_REFRESH results */
};

/* The defaults listed in struct cache_opts. */
void cache_opts_default(struct cache_opts *o);

/* The CACHE_F_* bits of a parsed client query. */
unsigned cache_flags(const struct dns_query_info *qi);

/* Creates an empty cache with its own random hash seed.
 * 0, DV_EINVAL (opts out of range) or DV_ENOMEM. */
int cache_new(struct cache **pc, const struct cache_opts *opts);
void cache_del(struct cache *c);

/* Applies new limits to a live cache (config reload); a smaller size evicts
 * at once. 0, DV_EINVAL (nothing changed) or DV_ENOMEM (nothing changed). */
int cache_set_limits(struct cache *c, const struct cache_opts *opts);

/* Looks up the client's question q (case as received) with its CACHE_F_*
 * flags. On CACHE_HIT and CACHE_HIT_REFRESH the answer, aged to now, with the
 * client's id and question case, is copied into out and its length stored in
 * *plen; otherwise *plen is 0. CACHE_HIT_REFRESH is returned once per stored
 * answer: on a hit in the last tenth of its lifetime that brings its hits
 * (this one included) to at least prefetch_hits. The caller then refreshes it
 * in the background and stores the result with cache_insert (or calls
 * cache_refresh_failed). CACHE_MISS and CACHE_STALE count as misses.
 * Returns a cache_result, DV_ESPACE (cap too small; a stored answer is never
 * longer than DNS_MSG_MAX) or DV_EINVAL (bad question). */
int cache_lookup(struct cache *c, const struct dns_question *q, unsigned flags, uint16_t id,
                 uint64_t now, uint8_t *out, size_t cap, size_t *plen);

/* Copies an answer that cache_lookup called CACHE_STALE, with every TTL set to
 * CACHE_STALE_TTL, the client's id and question case; returns CACHE_STALE
 * and counts it as served. If a fresh answer was stored meanwhile it is
 * copied as by cache_lookup and CACHE_HIT returned; if the answer is gone,
 * CACHE_MISS. DV_ESPACE or DV_EINVAL as for cache_lookup. */
int cache_lookup_stale(struct cache *c, const struct dns_question *q, unsigned flags,
                       uint16_t id, uint64_t now, uint8_t *out, size_t cap, size_t *plen);

/* Offers an upstream answer msg[0..len) for question q with flags, arrived at
 * now. msg is only read during the call. Whatever the outcome, a refresh
 * started by CACHE_HIT_REFRESH for this key counts as finished.
 * Returns 1 (stored), 0 (not cacheable by the policy above; a superseded
 * NOERROR/NXDOMAIN entry for the key is dropped), DV_EMALFORMED,
 * DV_EMISMATCH (see dns_response_check), DV_EINVAL (bad question) or
 * DV_ENOMEM. */
int cache_insert(struct cache *c, const struct dns_question *q, unsigned flags,
                 const uint8_t *msg, size_t len, uint64_t now);

/* A background refresh ended without an answer: the entry may be refreshed
 * again by a later hit. */
void cache_refresh_failed(struct cache *c, const struct dns_question *q, unsigned flags);

/* The view number of the upstream group called name: the same number for
 * the same name for the life of the cache, whatever the group's place in a
 * later configuration, and a number no other name gets. Returns it (0 to
 * CACHE_VIEW_MAX), DV_ENOMEM or DV_ESPACE (every number taken). */
int cache_view(struct cache *c, const char *name);

/* Removes every entry. Counters other than entries and bytes are kept. */
void cache_flush_all(struct cache *c);
/* Removes every entry whose question name is name (uncompressed wire form,
 * any case) or below it. Returns the number removed, or DV_EINVAL. */
int cache_flush_name(struct cache *c, const uint8_t *name, size_t len);

void cache_stats(const struct cache *c, struct cache_stats *out);

#endif
