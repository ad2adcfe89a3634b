#include "upstream/upstream.h"
#include "upstream/happy.h"
#include "upstream/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

struct scheme {
    const char *prefix;
    const struct transport_ops *ops;
    enum upstream_proto proto;
    uint16_t port;
};

static const struct scheme schemes[] = {
    {"udp://", &plain_ops, UPSTREAM_UDP, 53},
    /* pooled, pipelined connections shared with DoT, in plaintext */
    {"tcp://", &tcp_ops, UPSTREAM_TCP, 53},
#ifdef DV_HAVE_TLS
    {"tls://", &dot_ops, UPSTREAM_TLS, 853},
    {"quic://", &doq_ops, UPSTREAM_QUIC, 853},
#endif
#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)
    {"https://", &doh_ops, UPSTREAM_HTTPS, 443},
    /* sealed queries through relays, on DoH upstreams of its own */
    {"odoh://", &odoh_ops, UPSTREAM_ODOH, 443},
#endif
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char **dup_list(char *const *v, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(*out));

    for (size_t i = 0; out && i < n; i++) {
        if (!(out[i] = strdup(v[i]))) {
            while (i--)
                free(out[i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static int copy_cfg(struct cfg_upstream *dst, const struct cfg_upstream *src,
                    const struct config *global)
{
    const char *ca = src->ca_file ? src->ca_file : global ? global->ca_file : NULL;

    memset(dst, 0, sizeof(*dst));
    dst->name = strdup(src->name ? src->name : src->url);
    dst->url = strdup(src->url);
    dst->tls_name = dup_or_null(src->tls_name);
    dst->ca_file = dup_or_null(ca);
    dst->pins = dup_list(src->pins, src->n_pins);
    dst->n_pins = src->n_pins;
    dst->bootstrap = dup_list(src->bootstrap, src->n_bootstrap);
    dst->n_bootstrap = src->n_bootstrap;
    dst->doh_get = src->doh_get;
    dst->max_conns = src->max_conns ? src->max_conns : 2;
    dst->idle_timeout_ms = src->idle_timeout_ms ? src->idle_timeout_ms : 30000;
    dst->bootstrap_via = dup_or_null(src->bootstrap_via);
    dst->relays = dup_list(src->relays, src->n_relays);
    dst->n_relays = src->n_relays;
    dst->allow_same_operator = src->allow_same_operator;
    if ((src->bootstrap_via && !dst->bootstrap_via) || !dst->relays ||
        !dst->name || !dst->url || !dst->pins || !dst->bootstrap ||
        (src->tls_name && !dst->tls_name) || (ca && !dst->ca_file)) {
        config_upstream_clear(dst);
        return DV_ENOMEM;
    }
    return 0;
}

/* Every address to race for u (u->addr alone for an IP literal): all the
 * bootstrap addresses in Happy Eyeballs order. */
static int set_addrs(struct upstream *u, uint16_t port, char *err, size_t errlen)
{
    struct net_addr all[HAPPY_MAX_ADDRS];
    size_t n = 0;
    bool literal = net_addr_parse(u->host, port, &all[0]) == 0;

    if (literal || u->cfg.n_bootstrap <= 1) {
        all[0] = u->addr;
        n = 1;
    } else {
        for (size_t i = 0; i < u->cfg.n_bootstrap && n < HAPPY_MAX_ADDRS; i++) {
            if (net_addr_parse(u->cfg.bootstrap[i], port, &all[n])) {
                snprintf(err, errlen, "upstream '%s': bad bootstrap address '%s'", u->url,
                         u->cfg.bootstrap[i]);
                return DV_EINVAL;
            }
            n++;
        }
    }
    if (!(u->addrs = calloc(n, sizeof(*u->addrs))))
        return DV_ENOMEM;
    u->n_addrs = n > 1 ? happy_order(all, n, u->addrs) : 1;
    if (n == 1)
        u->addrs[0] = all[0];
    return 0;
}

/* Splits "host[:port][/path]" (host may be "[v6]") and finds the address:
 * the host itself when it is an IP literal, else the first bootstrap
 * address, so a name never goes to the system resolver in plaintext. */
static int parse_authority(struct upstream *u, const char *rest, uint16_t port,
                           char *err, size_t errlen)
{
    const char *slash = strchr(rest, '/');
    size_t alen = slash ? (size_t)(slash - rest) : strlen(rest);
    char auth[300], hostbuf[300];
    const char *portstr = NULL;

    if (alen == 0 || alen >= sizeof(auth)) {
        snprintf(err, errlen, "upstream '%s': missing or overlong host", u->url);
        return DV_EINVAL;
    }
    memcpy(auth, rest, alen);
    auth[alen] = 0;
    if (auth[0] == '[') {
        char *end = strchr(auth, ']');
        if (!end || (end[1] && end[1] != ':')) {
            snprintf(err, errlen, "upstream '%s': bad IPv6 literal", u->url);
            return DV_EINVAL;
        }
        *end = 0;
        snprintf(hostbuf, sizeof(hostbuf), "%s", auth + 1);
        portstr = end[1] ? end + 2 : NULL;
    } else {
        char *colon = strrchr(auth, ':');
        if (colon && strchr(auth, ':') != colon) {
            snprintf(err, errlen, "upstream '%s': write an IPv6 address as [ADDR]:PORT",
                     u->url);
            return DV_EINVAL;
        }
        if (colon) {
            *colon = 0;
            portstr = colon + 1;
        }
        snprintf(hostbuf, sizeof(hostbuf), "%s", auth);
    }
    if (portstr) {
        char *end;
        long v = strtol(portstr, &end, 10);
        if (!*portstr || *end || v < 1 || v > 65535) {
            snprintf(err, errlen, "upstream '%s': bad port '%s'", u->url, portstr);
            return DV_EINVAL;
        }
        port = (uint16_t)v;
    }
    u->host = strdup(hostbuf);
    u->path = slash ? strdup(slash) : NULL;
    if (!u->host || (slash && !u->path))
        return DV_ENOMEM;

    u->port = port;
    if (net_addr_parse(hostbuf, port, &u->addr) == 0)
        return set_addrs(u, port, err, errlen);
    if (u->cfg.n_bootstrap == 0 && u->cfg.bootstrap_via) {
        /* no address until the bootstrap upstream answers (bootres.c) */
        memset(&u->addr, 0, sizeof(u->addr));
        u->addr.ss.ss_family = AF_UNSPEC;
        return 0;
    }
    if (u->cfg.n_bootstrap == 0) {
        snprintf(err, errlen,
                 "upstream '%s': host '%s' is a name; give its IP addresses in 'bootstrap' "
                 "(on the command line: URL#IP)",
                 u->url, hostbuf);
        return DV_EINVAL;
    }
    if (net_addr_parse(u->cfg.bootstrap[0], port, &u->addr)) {
        snprintf(err, errlen, "upstream '%s': bad bootstrap address '%s'", u->url,
                 u->cfg.bootstrap[0]);
        return DV_EINVAL;
    }
    return set_addrs(u, port, err, errlen);
}

static void upstream_free(struct upstream *u)
{
    config_upstream_clear(&u->cfg);
    pool_health_free(u);
    free(u->host);
    free(u->path);
    free(u->addrs);
    free(u->name);
    free(u->url);
    free(u);
}

struct upstream *upstream_new(struct ev_loop *loop, const struct cfg_upstream *cfg,
                              const struct config *global, char *err, size_t errlen)
{
    const struct scheme *sc = NULL;
    struct upstream *u;
    int rc;

    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strncmp(cfg->url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0) {
            sc = &schemes[i];
            break;
        }
    }
    if (!sc) {
        snprintf(err, errlen, "upstream '%s': unsupported URL scheme", cfg->url);
        return NULL;
    }
    u = calloc(1, sizeof(*u));
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (copy_cfg(&u->cfg, cfg, global) ||
        !(u->name = strdup(u->cfg.name)) || !(u->url = strdup(u->cfg.url))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (parse_authority(u, cfg->url + strlen(sc->prefix), sc->port, err, errlen))
        goto fail;
    u->ops = sc->ops;
    u->proto = sc->proto;
    u->loop = loop;
    u->refs = 1;
    rc = u->ops->open(u);
    if (rc) {
        snprintf(err, errlen, "upstream '%s': %s", cfg->url, dv_strerror(rc));
        goto fail;
    }
    return u;
fail:
    upstream_free(u);
    return NULL;
}

int upstream_set_addrs(struct upstream *u, const struct net_addr *addrs, size_t n)
{
    struct net_addr *v = calloc(n ? n : 1, sizeof(*v));

    if (!v)
        return DV_ENOMEM;
    u->n_addrs = happy_order(addrs, n, v);
    free(u->addrs);
    u->addrs = v;
    if (u->n_addrs)
        u->addr = v[0];
    return 0;
}

void upstream_ref(struct upstream *u)
{
    u->refs++;
}

void upstream_unref(struct upstream *u)
{
    if (!u || --u->refs > 0)
        return;
    u->ops->close(u);
    upstream_free(u);
}

void upstream_netchange(struct upstream *u)
{
    /* failures on the old network say nothing about the new one */
    pool_forget(u);
    if (u->priv && u->ops->netchange)
        u->ops->netchange(u);
}
