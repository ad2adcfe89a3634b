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

/* Where a query came from. The caller sets peer, local, dst, tcp, and
 * now_ms (0: read the clock when needed), app_tried and app_ok (false);
 * policy_decide fills the rest, and only when a rule names users, cgroups
 * or applications (resolve/appid.c); they are valid when app_ok. */
struct policy_client {
    const struct net_addr *peer;
    const struct net_addr *local;  /* the listener's address */
    const struct net_addr *dst;    /* the address it was sent to, when the
                                      listener is a wildcard; else NULL */
    bool tcp;
    uint64_t now_ms;
    bool app_tried;        /* a socket lookup ran */
    bool app_ok;           /* ... and found the sender */
    uint32_t uid;
    uint64_t cgroup_id;
    uint64_t inode;
    const char *cgroup;    /* valid until the next query */
    bool cgroup_tried, proc_tried;
    const char *comm, *exe;
};

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

/* q must be lower-cased. A rule that names the sending program and whose
 * lookup fails does not match: the next rule decides. */
void policy_decide(const struct policy *p, const struct dns_question *q,
                   struct policy_client *pc, struct policy_decision *out);

/* Builds the local answer for a rule's action (REFUSED, NXDOMAIN or the
 * fixed A/AAAA records; NODATA for other types; a rule's CNAME alone, which
 * resolve/query.c uses only for the CNAME type: it chases the others) for a
 * parsed query. Returns the length or DV_ESPACE. */
int policy_local_answer(const struct cfg_rule *r, const struct dns_query_info *qi,
                        uint8_t *out, size_t cap);

#endif
