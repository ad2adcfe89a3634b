/* config — the validated settings the daemon runs on, filled from the TOML
 * file (config_load) and/or the command line. Every setting has a default,
 * so an empty file or no file at all is a valid configuration. */
#ifndef DV_CONFIG_CONFIG_H
#define DV_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/net.h"

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
};

struct config {
    struct cfg_listener *listeners;
    size_t n_listeners;
    struct cfg_upstream *upstreams;
    size_t n_upstreams;

    unsigned timeout_ms;      /* per-query deadline before SERVFAIL */
    unsigned tcp_idle_ms;     /* idle client TCP connections close after this */
    unsigned tcp_max_conns;   /* client TCP connections per listener */
    char *user;               /* drop to this user after binding as root */
    char *ca_file;            /* default CA bundle for every TLS upstream (--tls-ca) */
    int log_level;            /* DV_LOG_* */
};

/* A config holding every default and no listener or upstream. NULL on ENOMEM. */
struct config *config_new(void);
void config_free(struct config *c);

/* Appends a listener / upstream. 0, DV_EINVAL (bad address) or DV_ENOMEM. */
int config_add_listener(struct config *c, const char *addr, bool udp, bool tcp);
int config_add_upstream(struct config *c, const char *name, const char *url);
/* Frees what an upstream entry owns and zeroes it. */
void config_upstream_clear(struct cfg_upstream *u);

#endif
