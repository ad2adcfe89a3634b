/* odoh — Oblivious DNS over HTTPS (RFC 9230). The transport is odoh_ops
 * (upstream.h); this header holds its process-wide counters, shown with the
 * others on the metrics endpoint. */
#ifndef DV_UPSTREAM_ODOH_H
#define DV_UPSTREAM_ODOH_H

#include <stddef.h>
#include <stdint.h>

struct odoh_stats {
    uint64_t queries;         /* sealed queries sent (retries included) */
    uint64_t answers;         /* answers opened */
    uint64_t config_fetches;  /* ObliviousDoHConfigs fetched and usable */
    uint64_t config_failures; /* fetches that failed or brought nothing usable */
    uint64_t key_rejected;    /* 401 from the target: our config was stale */
    uint64_t open_failures;   /* answers that failed to open (altered, wrong key) */
    uint64_t http_errors;     /* answers with a status other than 200 and 401 */
    uint64_t relay_failures;  /* a relay unreachable, or a 5xx of its own */
};

struct odoh_stat_desc {
    const char *name;
    const char *help;
    size_t offset; /* of its uint64_t in struct odoh_stats */
};
extern const struct odoh_stat_desc odoh_stat_descs[];
extern const size_t odoh_stat_ndescs;

void odoh_stats_get(struct odoh_stats *out);

static inline uint64_t odoh_stat_value(const struct odoh_stats *s, const struct odoh_stat_desc *d)
{
    return *(const uint64_t *)((const char *)s + d->offset);
}

#endif
