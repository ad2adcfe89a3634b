/* obs — what the clients asked, for the metrics and the status page:
 * counters per listener and transport (queries, answers by rcode,
 * truncated, dropped), matches per rule, and the most asked names and most
 * active clients in fixed memory (core/topk.h); the refusals of the
 * client bounds per listener; the most active applications when rules
 * look senders up; the last queries of the query log.
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

struct policy_client;
struct qlog_entry;
struct query_client;

enum { OBS_MAX_LISTENERS = 64, OBS_TOPK = 64, OBS_RECENT = 50 };

/* Why a client bound stopped a query (resolve/limits.c). */
enum obs_bound { OBS_REFUSED_ACL, OBS_REFUSED_RATE, OBS_OVERLOADED };

struct obs_listener {
    struct net_addr addr;
    bool tcp;
    uint64_t queries, answers, truncated, dropped;
    uint64_t rcode[16];
    uint64_t refused_acl, refused_rate, overloaded;
};

/* One application of the top table: what the socket lookup found. */
struct obs_app {
    uint32_t uid;
    char comm[16];     /* "" when no rule needed it */
    char cgroup[240];  /* "" likewise; long paths are cut */
    uint64_t count;    /* an upper bound, as topk's */
};

/* One query of the recent ring, copied from its query log entry. */
struct obs_recent {
    uint64_t time_ms; /* Unix milliseconds */
    char client[NET_ADDRSTRLEN]; /* without the port */
    bool tcp, app_known;
    uint8_t name_len;
    uint8_t name[255]; /* wire form */
    uint16_t qtype;
    int rcode;
    uint32_t uid;
    uint64_t latency_us;
    char source[10], transport[8], comm[16], upstream[48];
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

/* Whether to keep the most active applications (privacy 0 and 1); forgets
 * them when turned off (the aggregate counts stay). */
void obs_set_apps(struct obs *o, bool on);
/* Whether to keep the last OBS_RECENT queries (the query log is on);
 * forgets them when turned off. */
void obs_set_recent(struct obs *o, bool on);

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
/* A client bound stopped a query from c. */
void obs_bound(struct obs *o, const struct query_client *c, enum obs_bound why);
/* A rule looked the sender of a query up (pc->app_tried). */
void obs_app(struct obs *o, const struct policy_client *pc);
/* A query log line was written for e. */
void obs_recent(struct obs *o, const struct qlog_entry *e);

size_t obs_listeners(const struct obs *o, const struct obs_listener **out);
/* Matches of rule i of the table set last. */
uint64_t obs_rule_matches(const struct obs *o, size_t i);
size_t obs_top_names(const struct obs *o, struct topk_item *out, size_t n);
size_t obs_top_clients(const struct obs *o, struct topk_item *out, size_t n);
/* The most active applications, the highest count first; how many. */
size_t obs_top_apps(const struct obs *o, struct obs_app *out, size_t n);
/* uid's user name from the password database; "" when it has none. */
void obs_user_name(uint32_t uid, char *out, size_t cap);
/* Queries whose sender was looked up: found or not. */
void obs_app_totals(const struct obs *o, uint64_t *found, uint64_t *unknown);
/* Up to n recent queries, the newest first; how many. */
size_t obs_recent_list(const struct obs *o, struct obs_recent *out, size_t n);
/* Bytes held by the top-k tables and the recent ring. */
size_t obs_memory(const struct obs *o);

#endif
