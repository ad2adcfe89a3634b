/* limits — admission of client queries: the allow list, a per-client token
 * bucket, and the global and per-client caps on queries waiting for an
 * upstream. Clients are keyed by address (an IPv6 client by its /64, which
 * one host can fill at will). Their state lives in a fixed table, so an
 * attacker with many addresses cannot grow it; when the table is crowded,
 * clients that hash alike share an entry, which can only make a limit
 * stricter for them, never looser. Time is a parameter. */
#ifndef DV_RESOLVE_LIMITS_H
#define DV_RESOLVE_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/net.h"

struct limits;

/* NULL on ENOMEM. */
struct limits *limits_new(void);
void limits_del(struct limits *l);
/* New bounds; counts in flight are kept. cfg is borrowed (its allow list
 * too) and must stay valid until the next call or limits_del. */
void limits_configure(struct limits *l, const struct cfg_limits *cfg);

/* True when the allow list covers a. */
bool limits_allowed(const struct limits *l, const struct net_addr *a);
/* Takes a token from a's bucket: false when it is empty (rate limiting on). */
bool limits_rate_take(struct limits *l, const struct net_addr *a, uint64_t now_ms);
/* Counts one more query of a waiting for an upstream. A ticket (>= 0) for
 * limits_inflight_put, or -1, counting nothing, when that would pass the
 * global or the per-client cap. */
int limits_inflight_take(struct limits *l, const struct net_addr *a, uint64_t now_ms);
/* The query counted under ticket ended. */
void limits_inflight_put(struct limits *l, int ticket);
/* Queries waiting for an upstream, all clients. */
unsigned limits_inflight(const struct limits *l);

#endif
