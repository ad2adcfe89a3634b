/* expo — the detailed metrics in the Prometheus text format (counters end
 * in _total, durations in seconds, sizes in bytes, histograms with le
 * buckets): per upstream, per listener and transport, per rule, the cache
 * and the process. The daemon's own global counters are rendered before
 * these; names are listed in README.md. */
#ifndef DV_FRONTEND_EXPO_H
#define DV_FRONTEND_EXPO_H

#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"

struct upstream;
struct cache;
struct obs;

/* What one rendering reads; everything borrowed. */
struct expo_view {
    struct upstream *const *ups;
    size_t nups;
    const struct cache *cache; /* NULL: no cache */
    const struct obs *obs;     /* NULL: no per-listener counters */
    const struct config *cfg;
    double start_time;         /* the process start, Unix seconds */
};

void expo_render(const struct expo_view *v, struct buf *b);

/* The rcode's mnemonic ("NOERROR"), or NULL past the common ones. */
const char *expo_rcode_name(unsigned rcode);
/* Open descriptors and resident bytes of this process; -1 when unknown. */
long expo_open_fds(void);
long long expo_rss_bytes(void);
/* Library versions for build_info, never NULL. */
const char *expo_wolfssl_version(void);
const char *expo_ngtcp2_version(void);
const char *expo_nghttp2_version(void);

#endif
