/* obs — what the clients asked, for the metrics and the status page:
 * counters per listener and transport (queries, answers by rcode,
 * truncated, dropped), matches per rule, and the most asked names and most
 * active clients in fixed memory (core/topk.h).
 *
 * The query engine calls obs_query/obs_reply/obs_drop/obs_rule for every
 * client message; the daemon owns the object and reads it when rendering. */
#ifndef DV_RESOLVE_OBS_H
#define DV_RESOLVE_OBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/net.h"
#include "core/topk.h"

struct query_client;

enum { OBS_MAX_LISTENERS = 64, OBS_TOPK = 64 };

struct obs_listener {
    struct net_addr addr;
    bool tcp;
    uint64_t queries, answers, truncated, dropped;
    uint64_t rcode[16];
};

struct obs;

/* clients: keep the most active client addresses too (privacy level 0).
 * NULL on allocation failure. */
struct obs *obs_new(bool clients);
void obs_del(struct obs *o);
/* The rule table queries are now matched against (cfg->rules, borrowed),
 * at start and on every reload; match counts restart from zero. */
void obs_set_rules(struct obs *o, const struct cfg_rule *rules, size_t n);
/* Whether to keep client addresses (privacy 0); forgets them when turned off. */
void obs_set_clients(struct obs *o, bool on);

/* Shows a listener's counters before its first query. */
void obs_listener_touch(struct obs *o, const struct net_addr *local, bool tcp);

/* A parsed question from c; name in presentation form. */
void obs_query(struct obs *o, const struct query_client *c, const char *name, size_t len);
/* A reply about to go to c. */
void obs_reply(struct obs *o, const struct query_client *c, const uint8_t *msg, size_t len);
/* A message from c dropped as not a DNS query. */
void obs_drop(struct obs *o, const struct query_client *c);
/* A rule (NULL: none) decided a query. */
void obs_rule(struct obs *o, const struct cfg_rule *r);

size_t obs_listeners(const struct obs *o, const struct obs_listener **out);
/* Matches of rule i of the table set last. */
uint64_t obs_rule_matches(const struct obs *o, size_t i);
size_t obs_top_names(const struct obs *o, struct topk_item *out, size_t n);
size_t obs_top_clients(const struct obs *o, struct topk_item *out, size_t n);
/* Bytes held by the top-k tables. */
size_t obs_memory(const struct obs *o);

#endif
