/* pool — a group of upstreams and the choice of which one gets the next
 * attempt of a query, by the group's strategy (names in DESIGN.md).
 * Health is tracked per upstream: consecutive failures put it in a backoff
 * during which it is tried only after the healthy ones; latency is an EWMA
 * that failures push up. */
#ifndef DV_UPSTREAM_POOL_H
#define DV_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "upstream/upstream.h"

struct pool;

/* Takes a reference on each upstream. weights may be NULL (all 1).
 * NULL on allocation failure. */
struct pool *pool_new(const char *name, struct upstream **ups, const unsigned *weights,
                      size_t n, enum cfg_strategy strategy, unsigned hedge_after_ms);
void pool_ref(struct pool *p);
void pool_unref(struct pool *p);
size_t pool_size(const struct pool *p);
const char *pool_name(const struct pool *p);
enum cfg_strategy pool_strategy(const struct pool *p);
unsigned pool_hedge_ms(const struct pool *p);
/* How many attempts of one query the strategy starts at once: 1, or
 * SIZE_MAX for parallel (every upstream). */
size_t pool_fanout(const struct pool *p);

/* Fills order[0..pool_size) with the upstreams to try for one query, first
 * choice first: healthy ones in the strategy's order, then those in backoff.
 *   failover, parallel   configured order
 *   round_robin          configured order rotated by one per query
 *   random               a weighted random order
 *   fastest              the better EWMA of two random picks first (one query
 *                        in 16 a random pick, to keep measuring the others),
 *                        the rest by EWMA; unmeasured upstreams count as fastest */
void pool_plan(struct pool *p, uint64_t now, struct upstream **order);

/* Reports the outcome of one attempt: rc 0 (answered after rtt_ms) or DV_E*. */
void pool_report(struct upstream *u, int rc, uint64_t rtt_ms, uint64_t now);

/* ---- an upstream's health (u->health is pool.c's; these read it) ---------- */

/* False while u backs off after consecutive failures. */
bool pool_healthy(const struct upstream *u, uint64_t now);
/* Failed attempts since the last answer. */
unsigned pool_fails(const struct upstream *u);
/* The latency EWMA the strategies choose by (ms; failures push it up); 0
 * while unmeasured. */
double pool_rtt_ms(const struct upstream *u);
/* Forgets u's failures and backoff (not its latency): failures on an old
 * network say nothing about a new one. */
void pool_forget(struct upstream *u);
/* Frees u's health as u goes (upstream.c); u reads as healthy and
 * unmeasured again. */
void pool_health_free(struct upstream *u);

#endif
