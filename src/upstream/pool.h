/* pool — a group of upstreams and the choice of which one gets the next
 * attempt of a query. Health is tracked per upstream: consecutive failures
 * put it in a backoff during which it is tried only after healthy ones.
 * Balancing strategies plug in here later; today's order is `failover`. */
#ifndef DV_UPSTREAM_POOL_H
#define DV_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "upstream/upstream.h"

struct pool;

/* Takes a reference on each upstream. NULL on allocation failure. */
struct pool *pool_new(const char *name, struct upstream **ups, size_t n);
void pool_ref(struct pool *p);
void pool_unref(struct pool *p);
size_t pool_size(const struct pool *p);
const char *pool_name(const struct pool *p);

/* Fills order[0..pool_size) with the upstreams to try for one query, in
 * order: healthy ones first (configured order), then those in backoff. */
void pool_plan(struct pool *p, uint64_t now, struct upstream **order);

/* Reports the outcome of one attempt: rc 0 (answered after rtt_ms) or DV_E*. */
void pool_report(struct upstream *u, int rc, uint64_t rtt_ms, uint64_t now);

#endif
