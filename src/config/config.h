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

struct domainset;
struct hosts;

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
    char *bootstrap_via; /* bootstrap_upstream: resolve the host through it */
    /* ODoH (odoh:// targets) */
    char **relays;            /* "https://HOST[:PORT]/PATH[#IP,...]"; none: straight to the target */
    size_t n_relays;
    bool allow_same_operator; /* a relay may share the target's registrable domain */
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
    bool allow_plaintext;    /* "default" may name udp:// and tcp:// upstreams */
};

enum cfg_action {
    CFG_ACTION_GROUP,    /* forward to a group */
    CFG_ACTION_REFUSE,   /* REFUSED */
    CFG_ACTION_NXDOMAIN, /* NXDOMAIN */
    CFG_ACTION_ANSWER,   /* a fixed A/AAAA answer, or a CNAME */
    CFG_ACTION_HOSTS,    /* A/AAAA/PTR from a hosts file */
};

struct cfg_subnet {
    struct net_addr addr; /* port unused */
    unsigned prefix;
};

/* What one client, and all of them together, may cost: every client is
 * untrusted ([server] keys; defaults in config_new). */
struct cfg_limits {
    struct cfg_subnet *allow; /* clients answered; every other one gets REFUSED */
    size_t n_allow;
    unsigned udp_max_size;    /* UDP answers above it are truncated (TC) */
    unsigned rate_limit;      /* queries per second per client; 0 = off */
    unsigned rate_limit_burst; /* bucket size; 0 = rate_limit */
    unsigned max_inflight;    /* queries waiting for an upstream, all clients */
    unsigned max_inflight_per_client;
    unsigned tcp_max_conns_per_client;
};

/* [server] encrypted listeners for clients (frontend/): DNS over TLS and
 * DNS over HTTPS, with one certificate chain and key. */
struct cfg_secure {
    struct net_addr *tls;     /* listen_tls: DoT (RFC 7858), default port 853 */
    size_t n_tls;
    struct net_addr *https;   /* listen_https: DoH (RFC 8484), default port 443 */
    size_t n_https;
    char *https_path;         /* the DoH path; NULL = "/dns-query" */
    struct net_addr *quic;    /* listen_quic: DoQ (RFC 9250), default port 853 */
    size_t n_quic;
    char *cert, *key;         /* PEM files, read at start and at every reload */
    /* ODoH relay (RFC 9230 Oblivious Proxy) on the DoH listeners: off
     * unless targets are listed */
    char **relay_targets;     /* "HOST[:PORT][#IP,...]": targethost values allowed */
    size_t n_relay_targets;
    char *relay_path;         /* where relay requests come; NULL = "/proxy" */
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
    /* the local program that sent the query (Linux, resolve/appid.c) */
    uint32_t *users;        /* uids of the client socket's owner */
    size_t n_users;
    char **cgroups;         /* globs on the cgroup v2 path's components */
    size_t n_cgroups;
    char **applications;    /* comm, or an executable path when it has a '/' */
    size_t n_applications;
    char *domains_file;     /* a list of names (resolve/domainset.h), as given */
    struct domainset *domainset; /* loaded from it; matched like domains */
    uint8_t *answer_cname;  /* CFG_ACTION_ANSWER with a name: a CNAME to it */
    size_t answer_cname_len;
    char *hosts_file;       /* CFG_ACTION_HOSTS: the file, as read */
    struct hosts *hosts;    /* loaded from it; the rule matches its names */
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
    struct cfg_limits limits;
    struct cfg_secure secure;
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

    /* [querylog] (resolve/qlog.c): off unless file or syslog is set */
    char *qlog_file;
    bool qlog_syslog;
    bool qlog_text;           /* format = "text"; default JSON lines */

    /* [portal]: captive portals (resolve/portal.h) */
    char *portal_resolv_conf; /* the network's resolvers; NULL = portal mode off */
    char **portal_names;      /* portal-detection names, when the file lists them */
    size_t n_portal_names;
    bool portal_names_set;    /* else portal_default_names */
    unsigned portal_open_s;   /* `portal` without SECONDS opens for this long */

    /* [server] tls_time_check: "strict" checks certificate validity dates
     * even while the clock is earlier than the build ("auto", the default,
     * does not; see tls/tls_time.h) */
    bool tls_time_strict;
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
 * listener, the "default" group (every encrypted upstream, in order: plain
 * DNS leaves only where a rule or an explicit opt-in says so). 0 or
 * DV_ENOMEM. */
int config_finish(struct config *c);

/* Makes upstreams[first .. first+n) the whole "default" group, in order
 * (failover), creating the group if the file had none: the command line's
 * -u, which names plain DNS upstreams as deliberately as allow_plaintext.
 * 0 or DV_ENOMEM. */
int config_set_default_group(struct config *c, size_t first, size_t n);

/* True for an upstream that speaks plain DNS (udp://, tcp://, or a plain
 * DNS stamp, which config_load turns into udp://). */
bool config_upstream_plaintext(const struct cfg_upstream *u);

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

/* "10.0.0.0/8", "fe80::/10" or a bare address (a /32 or /128) into out.
 * 0 or DV_EINVAL. */
int config_parse_subnet(const char *s, struct cfg_subnet *out);

#endif
