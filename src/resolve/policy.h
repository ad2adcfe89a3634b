/* policy — turns the configured rules into a decision per query: forward to
 * a group's pool, or answer locally (REFUSED, NXDOMAIN, a fixed address).
 * The first matching rule wins; the "default" group catches the rest.
 * A policy is immutable once built; a reload builds a new one. */
#ifndef DV_RESOLVE_POLICY_H
#define DV_RESOLVE_POLICY_H

#include <stddef.h>

#include "config/config.h"
#include "dns/dns.h"

struct pool;
struct policy;

struct policy_decision {
    enum cfg_action action;
    struct pool *pool;           /* CFG_ACTION_GROUP */
    unsigned group;              /* its index in cfg->groups */
    const struct cfg_rule *rule; /* NULL when no rule matched */
};

/* Builds a policy over cfg's rules (cfg must outlive the policy) with one
 * pool per group (pools[i] for cfg->groups[i]; references are taken).
 * NULL with a reason in err when a rule cannot be honoured. */
struct policy *policy_new(const struct config *cfg, struct pool **pools, char *err,
                          size_t errlen);
/* The number of groups and the name of group i (i < policy_ngroups). */
size_t policy_ngroups(const struct policy *p);
const char *policy_group_name(const struct policy *p, size_t i);
void policy_ref(struct policy *p);
void policy_unref(struct policy *p);

/* q must be lower-cased. local is the listener address the query came in on. */
void policy_decide(const struct policy *p, const struct dns_question *q,
                   const struct net_addr *client, const struct net_addr *local,
                   struct policy_decision *out);

/* Builds the local answer for a rule's action (REFUSED, NXDOMAIN or the
 * fixed A/AAAA records; NODATA for other types) for a parsed query. Returns
 * the length or DV_ESPACE. */
int policy_local_answer(const struct cfg_rule *r, const struct dns_query_info *qi,
                        uint8_t *out, size_t cap);

#endif
