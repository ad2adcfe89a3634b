/* config — the validated settings the daemon runs on, filled from the TOML
 * file (config_load) and/or the command line. Every setting has a default,
 * so an empty file, or no file at all, is a valid configuration. The
 * settings are plain data: the daemon builds its objects from them, and a
 * reload compares the old and new settings to keep what did not change. */
#ifndef DV_CONFIG_CONFIG_H
#define DV_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"
#include "resolve/cache.h"

struct cfg_listener {
    struct net_addr addr;
    bool udp, tcp;
};

struct cfg_upstream {
    char *name;
    char *url;
    char *tls_name;    /* name checked against the certificate; NULL = URL host */
    char *ca_file;     /* PEM bundle to trust instead of the system store */
    char **pins;       /* base64 SHA-256 of the SubjectPublicKeyInfo; any may match */
    size_t n_pins;
    char **bootstrap;  /* IP addresses for a URL whose host is a name */
    size_t n_bootstrap;
    bool doh_get;      /* DoH: GET ?dns= instead of POST */
    unsigned max_conns;       /* DoT/DoH connections kept to this upstream */
    unsigned idle_timeout_ms; /* an unused connection closes after this */
};

/* Names are part of the configuration contract (DESIGN.md). */
enum cfg_strategy {
    CFG_STRATEGY_FAILOVER,
    CFG_STRATEGY_ROUND_ROBIN,
    CFG_STRATEGY_RANDOM,
    CFG_STRATEGY_FASTEST,
    CFG_STRATEGY_PARALLEL,
};

struct cfg_group {
    char *name;
    size_t *members;   /* indexes into config.upstreams */
    unsigned *weights; /* one per member, default 1 */
    size_t n_members;
    enum cfg_strategy strategy;
    unsigned hedge_after_ms; /* 0 = no hedging */
};

enum cfg_action {
    CFG_ACTION_GROUP,    /* forward to a group */
    CFG_ACTION_REFUSE,   /* REFUSED */
    CFG_ACTION_NXDOMAIN, /* NXDOMAIN */
    CFG_ACTION_ANSWER,   /* a fixed A/AAAA answer */
};

struct cfg_subnet {
    struct net_addr addr; /* port unused */
    unsigned prefix;
};

struct cfg_rule {
    uint8_t **domains;      /* wire names, lower-case; match name or below */
    size_t *domain_lens;
    size_t n_domains;
    uint16_t *qtypes;
    size_t n_qtypes;
    struct cfg_subnet *clients;
    size_t n_clients;
    struct net_addr *listeners; /* local addresses queries arrived on */
    size_t n_listeners;
    char **applications;    /* process names */
    size_t n_applications;
    enum cfg_action action;
    size_t group;           /* index into config.groups, for CFG_ACTION_GROUP */
    struct net_addr *answers; /* CFG_ACTION_ANSWER: addresses, port unused */
    size_t n_answers;
    uint32_t answer_ttl;
    int line;               /* where the rule starts, for logs */
};

/* [metrics]: the status page and who may see what on it. */
struct cfg_status {
    bool page;      /* serve the HTML page at / and /status.json */
    unsigned privacy; /* 0 everything, 1 no client addresses, 2 aggregates only */
    char *username; /* basic auth for every path; NULL = none */
    char *password;
};

struct config {
    char *file; /* the file it came from, or NULL */

    struct cfg_listener *listeners;
    size_t n_listeners;
    struct cfg_upstream *upstreams;
    size_t n_upstreams;
    struct cfg_group *groups; /* groups[0] is "default" */
    size_t n_groups;
    struct cfg_rule *rules;
    size_t n_rules;

    unsigned timeout_ms;      /* per-query deadline before SERVFAIL */
    unsigned tcp_idle_ms;     /* idle client TCP connections close after this */
    unsigned tcp_max_conns;   /* client TCP connections per listener */
    char *user;               /* drop to this user after binding as root */
    char *ca_file;            /* default CA bundle for every TLS upstream (--tls-ca) */
    char *control;            /* control socket path; NULL = none */
    bool answer_special_names; /* localhost, .local, private reverse zones... locally */
    int log_level;            /* DV_LOG_* */
    bool log_syslog;

    bool cache_enabled;
    struct cache_opts cache;
    unsigned stale_client_timeout_ms; /* serve stale after this long (RFC 8767) */

    bool metrics_enabled;
    struct net_addr metrics_addr;
    struct cfg_status status;
};

/* A config holding every default and no listener or upstream. NULL on ENOMEM. */
struct config *config_new(void);
void config_free(struct config *c);

/* Reads and validates path. On success *pc owns a new config and 0 is
 * returned. On failure *pc is NULL, DV_EINVAL (or DV_EIO, DV_ENOMEM) is
 * returned, and errs holds one "FILE:LINE:COL: error: ..." line per problem
 * (NUL-terminated, truncated to errlen). */
int config_load(const char *path, struct config **pc, char *errs, size_t errlen);

/* Fills what neither the file nor the command line gave: the default
 * listener, the "default" group (all upstreams, in order). 0 or DV_ENOMEM. */
int config_finish(struct config *c);

/* Appends a listener / upstream. 0, DV_EINVAL (bad address) or DV_ENOMEM. */
int config_add_listener(struct config *c, const char *addr, bool udp, bool tcp);
int config_add_upstream(struct config *c, const char *name, const char *url);
/* Appends an upstream from the command line's form URL[#IP[,IP...]]: the
 * addresses after '#' bootstrap a URL whose host is a name (-u
 * tls://dns.google#8.8.8.8). 0, DV_EINVAL (a bad address) or DV_ENOMEM. */
int config_add_upstream_spec(struct config *c, const char *spec);
/* Frees what an upstream entry owns and zeroes it. */
void config_upstream_clear(struct cfg_upstream *u);
/* True when two upstream entries would produce the same upstream. */
bool config_upstream_same(const struct cfg_upstream *a, const struct cfg_upstream *b);

const char *config_strategy_name(enum cfg_strategy s);

#endif
