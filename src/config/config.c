/* The schema: turns a TOML tree into struct config, reporting every problem
 * with FILE:LINE:COL. Unknown keys are errors (with the nearest valid name),
 * because a misspelt security setting silently ignored is worse than a
 * daemon that refuses to start. */
#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#include "config/stamp.h"
#include "config/toml.h"
#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"
#include "resolve/domainset.h"
#include "resolve/hosts.h"

enum { CONFIG_MAX_FILE = 1 << 20 };

/* Local networks only: loopback, RFC 1918, RFC 6598 (carrier-grade NAT),
 * link-local, ULA. A router's LAN is answered; a listener that ends up
 * facing the Internet is not an open resolver. */
static const char *const default_allow[] = {
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
};

static int limits_default(struct cfg_limits *l)
{
    size_t n = sizeof(default_allow) / sizeof(default_allow[0]);

    memset(l, 0, sizeof(*l));
    l->udp_max_size = DNS_EDNS_DEFAULT;
    l->max_inflight = 4096;
    l->max_inflight_per_client = 1024;
    l->tcp_max_conns_per_client = 32;
    if (!(l->allow = calloc(n, sizeof(*l->allow))))
        return DV_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (config_parse_subnet(default_allow[i], &l->allow[i]))
            abort(); /* the table above is wrong */
    l->n_allow = n;
    return 0;
}

struct config *config_new(void)
{
    struct config *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->timeout_ms = 2500;
    c->tcp_idle_ms = 10000;
    c->tcp_max_conns = 256;
    if (limits_default(&c->limits)) {
        free(c);
        return NULL;
    }
    c->log_level = DV_LOG_INFO;
    c->status.page = true;
    c->status.privacy = 1;
    c->cache_enabled = true;
    cache_opts_default(&c->cache);
    c->stale_client_timeout_ms = 1800;
    c->answer_special_names = true;
    c->portal_open_s = 300;
    c->user = strdup("nobody");
    if (!c->user) {
        free(c->limits.allow);
        free(c);
        return NULL;
    }
    return c;
}

static void rule_clear(struct cfg_rule *r)
{
    for (size_t i = 0; i < r->n_domains; i++)
        free(r->domains[i]);
    free(r->domains);
    free(r->domain_lens);
    free(r->qtypes);
    free(r->clients);
    free(r->listeners);
    for (size_t i = 0; i < r->n_applications; i++)
        free(r->applications[i]);
    free(r->applications);
    free(r->users);
    free(r->domains_file);
    domainset_del(r->domainset);
    free(r->answer_cname);
    free(r->hosts_file);
    hosts_del(r->hosts);
    for (size_t i = 0; i < r->n_cgroups; i++)
        free(r->cgroups[i]);
    free(r->cgroups);
    free(r->answers);
}

void config_free(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_upstreams; i++)
        config_upstream_clear(&c->upstreams[i]);
    free(c->upstreams);
    for (size_t i = 0; i < c->n_groups; i++) {
        free(c->groups[i].name);
        free(c->groups[i].members);
        free(c->groups[i].weights);
    }
    free(c->groups);
    for (size_t i = 0; i < c->n_rules; i++)
        rule_clear(&c->rules[i]);
    free(c->rules);
    free(c->listeners);
    free(c->limits.allow);
    free(c->secure.tls);
    free(c->secure.https);
    free(c->secure.https_path);
    free(c->secure.quic);
    free(c->secure.cert);
    free(c->secure.key);
    for (size_t i = 0; i < c->secure.n_relay_targets; i++)
        free(c->secure.relay_targets[i]);
    free(c->secure.relay_targets);
    free(c->secure.relay_path);
    free(c->user);
    free(c->ca_file);
    free(c->control);
    free(c->qlog_file);
    free(c->status.username);
    free(c->status.password);
    free(c->file);
    for (size_t i = 0; i < c->n_portal_names; i++)
        free(c->portal_names[i]);
    free(c->portal_names);
    free(c->portal_resolv_conf);
    free(c);
}

int config_add_upstream_spec(struct config *c, const char *spec)
{
    const char *hash = strchr(spec, '#');
    char *url = hash ? strndup(spec, (size_t)(hash - spec)) : strdup(spec);
    int rc;

    if (!url)
        return DV_ENOMEM;
    rc = config_add_upstream(c, NULL, url);
    free(url);
    if (rc || !hash)
        return rc;
    struct cfg_upstream *u = &c->upstreams[c->n_upstreams - 1];
    for (const char *p = hash + 1; *p;) {
        size_t n = strcspn(p, ",");
        struct net_addr a;
        char *ip = strndup(p, n);
        char **v = ip ? realloc(u->bootstrap, (u->n_bootstrap + 1) * sizeof(*v)) : NULL;
        if (!v) {
            free(ip);
            return DV_ENOMEM;
        }
        u->bootstrap = v;
        v[u->n_bootstrap++] = ip;
        if (n == 0 || net_addr_parse(ip, 53, &a))
            return DV_EINVAL;
        p += n + (p[n] == ',');
    }
    return u->n_bootstrap ? 0 : DV_EINVAL;
}

void config_upstream_clear(struct cfg_upstream *u)
{
    free(u->name);
    free(u->url);
    free(u->tls_name);
    free(u->ca_file);
    for (size_t i = 0; i < u->n_pins; i++)
        free(u->pins[i]);
    free(u->pins);
    for (size_t i = 0; i < u->n_bootstrap; i++)
        free(u->bootstrap[i]);
    free(u->bootstrap);
    free(u->bootstrap_via);
    for (size_t i = 0; i < u->n_relays; i++)
        free(u->relays[i]);
    free(u->relays);
    memset(u, 0, sizeof(*u));
}

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool list_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return true;
}

bool config_upstream_same(const struct cfg_upstream *a, const struct cfg_upstream *b)
{
    return str_eq(a->name, b->name) && str_eq(a->url, b->url) &&
           str_eq(a->tls_name, b->tls_name) && str_eq(a->ca_file, b->ca_file) &&
           list_eq(a->pins, a->n_pins, b->pins, b->n_pins) &&
           list_eq(a->bootstrap, a->n_bootstrap, b->bootstrap, b->n_bootstrap) &&
           a->doh_get == b->doh_get && a->max_conns == b->max_conns &&
           a->idle_timeout_ms == b->idle_timeout_ms &&
           str_eq(a->bootstrap_via, b->bootstrap_via) &&
           list_eq(a->relays, a->n_relays, b->relays, b->n_relays) &&
           a->allow_same_operator == b->allow_same_operator;
}

int config_add_listener(struct config *c, const char *addr, bool udp, bool tcp)
{
    struct cfg_listener l = {.udp = udp, .tcp = tcp};
    struct cfg_listener *p;

    if (net_addr_parse(addr, 53, &l.addr))
        return DV_EINVAL;
    p = realloc(c->listeners, (c->n_listeners + 1) * sizeof(*p));
    if (!p)
        return DV_ENOMEM;
    c->listeners = p;
    c->listeners[c->n_listeners++] = l;
    return 0;
}

int config_add_upstream(struct config *c, const char *name, const char *url)
{
    struct cfg_upstream *p = realloc(c->upstreams, (c->n_upstreams + 1) * sizeof(*p));

    if (!p)
        return DV_ENOMEM;
    c->upstreams = p;
    p = &c->upstreams[c->n_upstreams];
    memset(p, 0, sizeof(*p));
    p->name = strdup(name ? name : url);
    p->url = strdup(url);
    p->max_conns = 2;
    p->idle_timeout_ms = 30000;
    if (!p->name || !p->url) {
        free(p->name);
        free(p->url);
        return DV_ENOMEM;
    }
    c->n_upstreams++;
    return 0;
}

static const char *const strategy_names[] = {
    [CFG_STRATEGY_FAILOVER] = "failover",   [CFG_STRATEGY_ROUND_ROBIN] = "round_robin",
    [CFG_STRATEGY_RANDOM] = "random",       [CFG_STRATEGY_FASTEST] = "fastest",
    [CFG_STRATEGY_PARALLEL] = "parallel",
};

const char *config_strategy_name(enum cfg_strategy s)
{
    return strategy_names[s];
}

bool config_upstream_plaintext(const struct cfg_upstream *u)
{
    return strncmp(u->url, "udp://", 6) == 0 || strncmp(u->url, "tcp://", 6) == 0;
}

/* Inserts an empty "default" group at index 0 (rules' group indexes shift
 * by one), or returns the one there. NULL on ENOMEM. */
static struct cfg_group *default_group(struct config *c)
{
    if (c->n_groups > 0 && strcmp(c->groups[0].name, "default") == 0)
        return &c->groups[0];
    struct cfg_group *g = realloc(c->groups, (c->n_groups + 1) * sizeof(*g));
    if (!g)
        return NULL;
    c->groups = g;
    memmove(g + 1, g, c->n_groups * sizeof(*g));
    for (size_t i = 0; i < c->n_rules; i++)
        c->rules[i].group++;
    c->n_groups++;
    memset(g, 0, sizeof(*g));
    g->name = strdup("default");
    return g->name ? g : NULL;
}

/* Makes upstreams[first .. first+n) the group's members, in order, leaving
 * out plain DNS ones unless plaintext_too. */
static int set_members(struct config *c, struct cfg_group *g, size_t first, size_t n,
                       bool plaintext_too)
{
    size_t *m = realloc(g->members, (n ? n : 1) * sizeof(*m));
    unsigned *w = m ? realloc(g->weights, (n ? n : 1) * sizeof(*w)) : NULL;

    if (m)
        g->members = m;
    if (w)
        g->weights = w;
    if (!m || !w)
        return DV_ENOMEM;
    g->n_members = 0;
    for (size_t i = first; i < first + n; i++) {
        if (!plaintext_too && config_upstream_plaintext(&c->upstreams[i]))
            continue;
        m[g->n_members] = i;
        w[g->n_members++] = 1;
    }
    return 0;
}

int config_set_default_group(struct config *c, size_t first, size_t n)
{
    struct cfg_group *g = default_group(c);

    if (!g || set_members(c, g, first, n, true))
        return DV_ENOMEM;
    g->strategy = CFG_STRATEGY_FAILOVER;
    g->allow_plaintext = true;
    return 0;
}

int config_finish(struct config *c)
{
    if (c->n_listeners == 0 && config_add_listener(c, "127.0.0.53:53", true, true))
        return DV_ENOMEM;
    if (c->n_groups > 0 && strcmp(c->groups[0].name, "default") == 0)
        return 0;
    /* no [groups.default]: every encrypted upstream, in order; a plain DNS
     * upstream serves only the rules that name its group */
    struct cfg_group *g = default_group(c);
    if (!g || set_members(c, g, 0, c->n_upstreams, false))
        return DV_ENOMEM;
    g->strategy = g->n_members > 1 ? CFG_STRATEGY_FASTEST : CFG_STRATEGY_FAILOVER;
    return 0;
}

/* ---- schema walking ------------------------------------------------------ */

struct ctx {
    const char *file;
    struct config *c;
    char *errs;
    size_t errlen, used;
    int nerr;
    bool oom;
};

static void cerr_at(struct ctx *x, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cerr_at(struct ctx *x, int line, int col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    x->nerr++;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (x->used + 1 >= x->errlen)
        return;
    int n = line > 0 ? snprintf(x->errs + x->used, x->errlen - x->used,
                                "%s:%d:%d: error: %s\n", x->file, line, col, msg)
                     : snprintf(x->errs + x->used, x->errlen - x->used, "%s: error: %s\n",
                                x->file, msg);
    if (n > 0)
        x->used += (size_t)n < x->errlen - x->used ? (size_t)n : x->errlen - x->used - 1;
}

#define cerr(x, n, ...) cerr_at(x, toml_node_line(n), toml_node_col(n), __VA_ARGS__)
#define cerr_key(x, n, ...) cerr_at(x, toml_node_key_line(n), toml_node_key_col(n), __VA_ARGS__)

static char *xstrdup(struct ctx *x, const char *s)
{
    char *d = strdup(s);
    if (!d)
        x->oom = true;
    return d;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

/* Every key of t must be in known; an unknown one is reported with the
 * closest known name when that is a plausible typo. */
static void check_keys(struct ctx *x, const struct toml_node *t, const char *section,
                       const char *const *known)
{
    for (size_t i = 0; i < toml_table_len(t); i++) {
        const struct toml_node *n = toml_table_at(t, i);
        const char *key = toml_node_key(n, NULL);
        const char *best = NULL;
        size_t bestd = 99;
        bool ok = false;

        for (const char *const *k = known; *k; k++) {
            if (strcmp(*k, key) == 0) {
                ok = true;
                break;
            }
            size_t d = edit_distance(key, *k);
            if (d < bestd) {
                bestd = d;
                best = *k;
            }
        }
        if (ok)
            continue;
        if (best && bestd <= 1 + strlen(key) / 3)
            cerr_key(x, n, "unknown key '%s' in %s (did you mean '%s'?)", key, section, best);
        else
            cerr_key(x, n, "unknown key '%s' in %s", key, section);
    }
}

static const struct toml_node *want_table(struct ctx *x, const struct toml_node *parent,
                                          const char *key, const char *what)
{
    const struct toml_node *n = toml_table_get(parent, key);

    if (n && toml_node_kind(n) != TOML_TABLE) {
        cerr(x, n, "%s must be a table, not %s", what, toml_kind_name(toml_node_kind(n)));
        return NULL;
    }
    return n;
}

static void get_uint(struct ctx *x, const struct toml_node *t, const char *key, int64_t min,
                     int64_t max, unsigned *out)
{
    const struct toml_node *n = toml_table_get(t, key);
    int64_t v;

    if (!n)
        return;
    if (toml_node_int(n, &v)) {
        cerr(x, n, "'%s' expects an integer, not %s", key, toml_kind_name(toml_node_kind(n)));
        return;
    }
    if (v < min || v > max) {
        cerr(x, n, "'%s' = %lld is out of range (%lld to %lld)", key, (long long)v,
             (long long)min, (long long)max);
        return;
    }
    *out = (unsigned)v;
}

static void get_u32(struct ctx *x, const struct toml_node *t, const char *key, int64_t max,
                    uint32_t *out)
{
    unsigned v = *out;
    get_uint(x, t, key, 0, max, &v);
    *out = v;
}

static void get_bool(struct ctx *x, const struct toml_node *t, const char *key, bool *out)
{
    const struct toml_node *n = toml_table_get(t, key);

    if (n && toml_node_bool(n, out))
        cerr(x, n, "'%s' expects true or false, not %s", key, toml_kind_name(toml_node_kind(n)));
}

static const char *get_cstr(struct ctx *x, const struct toml_node *t, const char *key)
{
    const struct toml_node *n = toml_table_get(t, key);
    const char *s;

    if (!n)
        return NULL;
    s = toml_node_cstr(n);
    if (!s)
        cerr(x, n, "'%s' expects a string, not %s", key, toml_kind_name(toml_node_kind(n)));
    return s;
}

static void set_str(struct ctx *x, const struct toml_node *t, const char *key, char **out)
{
    const char *s = get_cstr(x, t, key);

    if (s) {
        free(*out);
        *out = xstrdup(x, s);
    }
}

/* A string or an array of strings: calls fn for each element. */
static void each_string(struct ctx *x, const struct toml_node *t, const char *key,
                        void (*fn)(struct ctx *, const struct toml_node *, const char *, void *),
                        void *arg)
{
    const struct toml_node *n = toml_table_get(t, key);

    if (!n)
        return;
    if (toml_node_kind(n) == TOML_STRING) {
        fn(x, n, toml_node_cstr(n), arg);
        return;
    }
    if (toml_node_kind(n) != TOML_ARRAY) {
        cerr(x, n, "'%s' expects a string or an array of strings", key);
        return;
    }
    for (size_t i = 0; i < toml_array_len(n); i++) {
        const struct toml_node *e = toml_array_at(n, i);
        const char *s = toml_node_cstr(e);
        if (!s)
            cerr(x, e, "'%s' expects strings, not %s", key, toml_kind_name(toml_node_kind(e)));
        else
            fn(x, e, s, arg);
    }
}

struct strlist {
    char **v;
    size_t n;
};

static void push_str(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct strlist *l = arg;
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

    if (!v) {
        x->oom = true;
        return;
    }
    l->v = v;
    if ((v[l->n] = xstrdup(x, s)))
        l->n++;
}

/* "8MiB", "512KiB", "1GiB", "8MB" or a plain integer of bytes. */
static void get_size(struct ctx *x, const struct toml_node *t, const char *key, size_t *out)
{
    const struct toml_node *n = toml_table_get(t, key);
    int64_t v;

    if (!n)
        return;
    if (toml_node_int(n, &v) == 0) {
        if (v < CACHE_SIZE_MIN || v > ((int64_t)1 << 40))
            cerr(x, n, "'%s' = %lld is out of range (%d bytes to 1TiB)", key, (long long)v,
                 CACHE_SIZE_MIN);
        else
            *out = (size_t)v;
        return;
    }
    const char *s = toml_node_cstr(n);
    char *end;
    if (!s) {
        cerr(x, n, "'%s' expects a size such as \"8MiB\" or a number of bytes", key);
        return;
    }
    errno = 0;
    unsigned long long num = strtoull(s, &end, 10);
    static const struct { const char *unit; unsigned long long mul; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},
        {"K", 1000}, {"KB", 1000}, {"M", 1000000}, {"MB", 1000000}, {"G", 1000000000}, {"GB", 1000000000},
    };
    if (end == s || errno) {
        cerr(x, n, "'%s' expects a size such as \"8MiB\", not \"%s\"", key, s);
        return;
    }
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            unsigned long long bytes = num * units[i].mul;
            if (num > (1ull << 40) || bytes < CACHE_SIZE_MIN || bytes > (1ull << 40))
                cerr(x, n, "'%s' = \"%s\" is out of range (%d bytes to 1TiB)", key, s,
                     CACHE_SIZE_MIN);
            else
                *out = (size_t)bytes;
            return;
        }
    }
    cerr(x, n, "'%s': unknown unit in \"%s\" (expected B, KiB, MiB or GiB)", key, s);
}

/* ---- sections ----------------------------------------------------------- */

static void add_listen(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    int rc = config_add_listener(x->c, s, true, true);

    if (rc == DV_ENOMEM)
        x->oom = true;
    else if (rc)
        cerr(x, n, "listen address \"%s\": expected IP[:PORT] or [IPv6]:PORT", s);
}

static void add_allow(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_limits *l = arg;
    struct cfg_subnet sn;

    if (config_parse_subnet(s, &sn)) {
        cerr(x, n, "allow \"%s\": expected an address or ADDRESS/PREFIX", s);
        return;
    }
    struct cfg_subnet *v = realloc(l->allow, (l->n_allow + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    l->allow = v;
    v[l->n_allow++] = sn;
}

/* The client bounds of [server] (see struct cfg_limits). */
static void parse_server_limits(struct ctx *x, const struct toml_node *t)
{
    struct cfg_limits *l = &x->c->limits;
    const struct toml_node *n = toml_table_get(t, "allow");

    if (n) {
        /* the file's list replaces the default one */
        l->n_allow = 0;
        each_string(x, t, "allow", add_allow, l);
        if (l->n_allow == 0 && toml_node_kind(n) == TOML_ARRAY && toml_array_len(n) == 0)
            cerr(x, n, "'allow' is empty: no client could be answered "
                       "(\"0.0.0.0/0\" and \"::/0\" allow every client)");
    }
    get_uint(x, t, "udp_max_size", DNS_UDP_CLASSIC, 65535, &l->udp_max_size);
    get_uint(x, t, "rate_limit", 0, 1000000, &l->rate_limit);
    get_uint(x, t, "rate_limit_burst", 0, 1000000, &l->rate_limit_burst);
    get_uint(x, t, "max_inflight", 1, 1000000, &l->max_inflight);
    get_uint(x, t, "max_inflight_per_client", 1, 1000000, &l->max_inflight_per_client);
    get_uint(x, t, "tcp_max_connections_per_client", 0, 65535, &l->tcp_max_conns_per_client);
}

/* tls_time_check = "auto" | "strict" */
static void parse_tls_time_check(struct ctx *x, const struct toml_node *t)
{
    const char *s = get_cstr(x, t, "tls_time_check");

    if (!s)
        return;
    if (strcmp(s, "auto") == 0)
        x->c->tls_time_strict = false;
    else if (strcmp(s, "strict") == 0)
        x->c->tls_time_strict = true;
    else
        cerr(x, toml_table_get(t, "tls_time_check"),
             "'tls_time_check' = \"%s\": expected \"auto\" or \"strict\"", s);
}

/* listen_tls / listen_https: the address list of one encrypted listener
 * kind; arg says which and its default port. */
struct secure_list {
    struct net_addr **v;
    size_t *n;
    uint16_t port;
};

static void add_secure_listen(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct secure_list *l = arg;
    struct net_addr a;

    if (net_addr_parse(s, l->port, &a)) {
        cerr(x, n, "listen address \"%s\": expected IP[:PORT] or [IPv6]:PORT", s);
        return;
    }
    for (size_t i = 0; i < *l->n; i++)
        if (net_addr_eq(&(*l->v)[i], &a)) {
            cerr(x, n, "listen address \"%s\" is listed twice", s);
            return;
        }
    struct net_addr *v = realloc(*l->v, (*l->n + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    *l->v = v;
    v[(*l->n)++] = a;
}

/* An odoh_relay_targets entry: HOST[:PORT] (an IPv6 literal in brackets),
 * then optionally '#' and the IP addresses to reach a named host at. */
static void add_relay_target(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_secure *sc = arg;
    const char *hash = strchr(s, '#');
    size_t alen = hash ? (size_t)(hash - s) : strlen(s);
    bool bad = alen == 0 || alen > 255 || strcspn(s, "/?@ \t") < alen;

    for (const char *p = hash ? hash + 1 : NULL; p && *p && !bad;) {
        size_t l = strcspn(p, ",");
        char ip[64];
        struct net_addr a;
        if (l == 0 || l >= sizeof(ip)) {
            bad = true;
            break;
        }
        memcpy(ip, p, l);
        ip[l] = 0;
        bad = net_addr_parse(ip, 443, &a) != 0;
        p += l + (p[l] == ',');
    }
    if (bad) {
        cerr(x, n, "odoh_relay_targets entry \"%s\": expected HOST[:PORT] with optional "
                   "#IP[,IP...] (the targethost a client names)", s);
        return;
    }
    char **v = realloc(sc->relay_targets, (sc->n_relay_targets + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    sc->relay_targets = v;
    if ((v[sc->n_relay_targets] = xstrdup(x, s)))
        sc->n_relay_targets++;
}

static void check_path(struct ctx *x, const struct toml_node *t, const char *key, const char *p)
{
    if (p && (p[0] != '/' || strpbrk(p, "?# \t") || strlen(p) > 200))
        cerr(x, toml_table_get(t, key),
             "'%s' = \"%s\": expected an absolute path such as \"/dns-query\" "
             "(no query, fragment or spaces; at most 200 bytes)", key, p);
}

/* The encrypted listeners of [server] (see struct cfg_secure). */
static void parse_server_secure(struct ctx *x, const struct toml_node *t)
{
    struct cfg_secure *sc = &x->c->secure;
    struct secure_list tls = {&sc->tls, &sc->n_tls, 853};
    struct secure_list https = {&sc->https, &sc->n_https, 443};
    struct secure_list quic = {&sc->quic, &sc->n_quic, 853};
    const struct toml_node *first = toml_table_get(t, "listen_tls");

    each_string(x, t, "listen_tls", add_secure_listen, &tls);
    each_string(x, t, "listen_https", add_secure_listen, &https);
    each_string(x, t, "listen_quic", add_secure_listen, &quic);
    set_str(x, t, "https_path", &sc->https_path);
    set_str(x, t, "cert", &sc->cert);
    set_str(x, t, "key", &sc->key);
    if (sc->https_path && (sc->https_path[0] != '/' || strpbrk(sc->https_path, "?# \t") ||
                           strlen(sc->https_path) > 200))
        cerr(x, toml_table_get(t, "https_path"),
             "'https_path' = \"%s\": expected an absolute path such as \"/dns-query\" "
             "(no query, fragment or spaces; at most 200 bytes)", sc->https_path);
    each_string(x, t, "odoh_relay_targets", add_relay_target, sc);
    set_str(x, t, "odoh_relay_path", &sc->relay_path);
    check_path(x, t, "odoh_relay_path", sc->relay_path);
    if (sc->n_relay_targets && !sc->n_https)
        cerr(x, toml_table_get(t, "odoh_relay_targets"),
             "'odoh_relay_targets' needs a DoH listener ('listen_https') to relay on");
    if (sc->relay_path &&
        !strcmp(sc->relay_path, sc->https_path ? sc->https_path : "/dns-query"))
        cerr(x, toml_table_get(t, "odoh_relay_path"),
             "'odoh_relay_path' must differ from 'https_path'");
    if (!first)
        first = toml_table_get(t, "listen_https");
    if (!first)
        first = toml_table_get(t, "listen_quic");
    if ((sc->n_tls || sc->n_https || sc->n_quic) && (!sc->cert || !sc->key))
        cerr(x, first, "encrypted listeners need both 'cert' and 'key' (PEM files) in [server]");
    for (int i = 0; i < 2; i++) {
        const char *key = i ? "key" : "cert";
        const char *path = i ? sc->key : sc->cert;
        if (path && access(path, R_OK))
            cerr(x, toml_table_get(t, key), "'%s' = \"%s\": %s", key, path, strerror(errno));
    }
}

static void parse_server(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"listen", "user", "timeout_ms", "tcp_idle_timeout_ms",
                                       "tcp_max_connections", "tls_ca", "control",
                                       "answer_special_names", "allow", "udp_max_size",
                                       "rate_limit", "rate_limit_burst", "max_inflight",
                                       "max_inflight_per_client",
                                       "tcp_max_connections_per_client", "tls_time_check",
                                       "listen_tls", "listen_https", "listen_quic", "https_path",
                                       "cert", "key", "odoh_relay_targets", "odoh_relay_path",
                                       NULL};

    check_keys(x, t, "[server]", keys);
    each_string(x, t, "listen", add_listen, NULL);
    set_str(x, t, "user", &x->c->user);
    get_uint(x, t, "timeout_ms", 50, 600000, &x->c->timeout_ms);
    get_uint(x, t, "tcp_idle_timeout_ms", 100, 3600000, &x->c->tcp_idle_ms);
    get_uint(x, t, "tcp_max_connections", 1, 65535, &x->c->tcp_max_conns);
    set_str(x, t, "tls_ca", &x->c->ca_file);
    set_str(x, t, "control", &x->c->control);
    get_bool(x, t, "answer_special_names", &x->c->answer_special_names);
    parse_server_limits(x, t);
    parse_tls_time_check(x, t);
    parse_server_secure(x, t);
    if (x->c->control && !x->c->control[0]) {
        free(x->c->control);
        x->c->control = NULL;
    }
}

static void parse_log(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"level", "syslog", NULL};
    static const char *const levels[] = {"error", "warning", "info", "debug"};
    const char *lv;

    check_keys(x, t, "[log]", keys);
    get_bool(x, t, "syslog", &x->c->log_syslog);
    if (!(lv = get_cstr(x, t, "level")))
        return;
    for (int i = 0; i < 4; i++) {
        if (strcmp(lv, levels[i]) == 0) {
            x->c->log_level = i;
            return;
        }
    }
    cerr(x, toml_table_get(t, "level"),
         "'level' = \"%s\": expected \"error\", \"warning\", \"info\" or \"debug\"", lv);
}

static void parse_cache(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"enabled", "size", "min_ttl", "max_ttl",
                                       "negative_ttl_nosoa", "servfail_ttl", "max_stale",
                                       "stale_answer_client_timeout_ms", "prefetch_hits", NULL};
    struct cache_opts *o = &x->c->cache;

    check_keys(x, t, "[cache]", keys);
    get_bool(x, t, "enabled", &x->c->cache_enabled);
    get_size(x, t, "size", &o->size);
    get_u32(x, t, "min_ttl", 604800, &o->min_ttl);
    get_u32(x, t, "max_ttl", 604800, &o->max_ttl);
    get_u32(x, t, "negative_ttl_nosoa", 86400, &o->neg_ttl_nosoa);
    get_u32(x, t, "servfail_ttl", 300, &o->servfail_ttl);
    get_u32(x, t, "max_stale", 604800, &o->max_stale);
    get_uint(x, t, "stale_answer_client_timeout_ms", 0, 600000,
             &x->c->stale_client_timeout_ms);
    get_u32(x, t, "prefetch_hits", 1000000, &o->prefetch_hits);
    if (o->min_ttl > o->max_ttl)
        cerr(x, toml_table_get(t, "min_ttl") ? toml_table_get(t, "min_ttl") : t,
             "'min_ttl' (%u) is larger than 'max_ttl' (%u)", o->min_ttl, o->max_ttl);
}

/* The status page's keys in [metrics]. */
static void parse_status(struct ctx *x, const struct toml_node *t)
{
    struct cfg_status *st = &x->c->status;

    get_bool(x, t, "status_page", &st->page);
    get_uint(x, t, "privacy", 0, 2, &st->privacy);
    set_str(x, t, "username", &st->username);
    set_str(x, t, "password", &st->password);
    if (!st->username != !st->password)
        cerr(x, toml_table_get(t, st->username ? "username" : "password"),
             "'username' and 'password' go together");
    else if (st->username && strchr(st->username, ':'))
        cerr(x, toml_table_get(t, "username"), "'username' cannot contain ':'");
}

static void parse_metrics(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"listen", "status_page", "privacy", "username",
                                       "password", NULL};
    const char *s;

    check_keys(x, t, "[metrics]", keys);
    parse_status(x, t);
    if (!(s = get_cstr(x, t, "listen")) || !*s)
        return;
    if (net_addr_parse(s, 9153, &x->c->metrics_addr))
        cerr(x, toml_table_get(t, "listen"), "metrics address \"%s\": expected IP[:PORT]", s);
    else
        x->c->metrics_enabled = true;
}

/* bootstrap_upstream = "NAME": an upstream given by IP (or by static
 * bootstrap addresses) and encrypted, since it learns every upstream name */
static ssize_t find_upstream(const struct config *c, const char *name);

static void check_bootstrap_upstreams(struct ctx *x, const struct toml_node *ups)
{
    for (size_t i = 0; i < x->c->n_upstreams; i++) {
        const struct cfg_upstream *u = &x->c->upstreams[i];
        const struct toml_node *t = toml_table_get(ups, u->name ? u->name : "");
        const struct toml_node *n = t ? toml_table_get(t, "bootstrap_upstream") : NULL;
        ssize_t via = u->bootstrap_via ? find_upstream(x->c, u->bootstrap_via) : -1;

        if (!u->bootstrap_via || !n)
            continue;
        if (strncmp(u->url, "tls://", 6) && strncmp(u->url, "https://", 8) &&
            strncmp(u->url, "quic://", 7))
            cerr(x, n, "'bootstrap_upstream' is for tls://, https:// and quic:// upstreams");
        else if (via < 0)
            cerr(x, n, "no upstream named '%s'", u->bootstrap_via);
        else if ((size_t)via == i)
            cerr(x, n, "upstream '%s' cannot bootstrap itself", u->name);
        else if (x->c->upstreams[via].bootstrap_via)
            cerr(x, n, "upstream '%s' is itself bootstrapped through another: give it by IP "
                       "or with 'bootstrap' addresses", u->bootstrap_via);
        else if (strncmp(x->c->upstreams[via].url, "tls://", 6) &&
                 strncmp(x->c->upstreams[via].url, "https://", 8) &&
                 strncmp(x->c->upstreams[via].url, "quic://", 7))
            cerr(x, n, "upstream '%s' is not encrypted (tls://, https:// or quic://): it "
                       "would show every upstream name on the wire", u->bootstrap_via);
    }
}

/* [querylog]: one line per query, to a file or syslog */
static void parse_querylog(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"file", "syslog", "format", NULL};
    const char *fmt;

    check_keys(x, t, "[querylog]", keys);
    set_str(x, t, "file", &x->c->qlog_file);
    get_bool(x, t, "syslog", &x->c->qlog_syslog);
    if (x->c->qlog_file && !x->c->qlog_file[0]) {
        free(x->c->qlog_file);
        x->c->qlog_file = NULL;
    }
    if (x->c->qlog_file && x->c->qlog_file[0] != '/')
        cerr(x, toml_table_get(t, "file"), "'file' must be an absolute path");
    if (x->c->qlog_file && x->c->qlog_syslog)
        cerr(x, toml_table_get(t, "syslog"), "the query log goes to a 'file' or to 'syslog', "
                                             "not both");
    if ((fmt = get_cstr(x, t, "format"))) {
        if (strcmp(fmt, "text") == 0)
            x->c->qlog_text = true;
        else if (strcmp(fmt, "json") != 0)
            cerr(x, toml_table_get(t, "format"), "'format' = \"%s\": expected \"json\" or \"text\"",
                 fmt);
    }
}

/* ---- ODoH relays ---------------------------------------------------------- */

/* The host of "scheme://HOST[:PORT]..." (a "[v6]" without brackets), lower
 * case and without a trailing dot, into out. false when there is none or it
 * does not fit. */
static bool url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://"), *end;
    size_t n;

    if (!p)
        return false;
    p += 3;
    if (*p == '[') {
        end = strchr(++p, ']');
        if (!end)
            return false;
    } else {
        end = p + strcspn(p, ":/#?");
    }
    n = (size_t)(end - p);
    if (n > 1 && p[n - 1] == '.')
        n--; /* "example.net." is example.net */
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)p[i]);
    out[n] = 0;
    return true;
}

/* The registrable domain of host, approximated without the Public Suffix
 * List: the last two labels, or three under a two-letter country code whose
 * second level is a short generic label (example.co.uk, example.com.au). An
 * IP literal stands for itself. */
static const char *registrable(const char *host)
{
    struct net_addr a;
    size_t n = strlen(host);
    const char *dots[3] = {NULL};
    int nd = 0;

    if (net_addr_parse(host, 53, &a) == 0)
        return host;
    for (size_t i = n; i-- > 0 && nd < 3;)
        if (host[i] == '.')
            dots[nd++] = host + i;
    if (nd < 2)
        return host;
    /* dots[0] before the TLD, dots[1] before the second level */
    if ((size_t)(host + n - dots[0]) == 3 && dots[0] - dots[1] - 1 <= 3)
        return nd >= 3 ? dots[2] + 1 : host;
    return dots[1] + 1;
}

/* A relay as "https://HOST[:PORT]/PATH[#IP,...]" from an ODoH relay stamp.
 * 0, or DV_EINVAL with the reason in why. */
static int relay_from_stamp(const char *s, char *out, size_t cap, char *why, size_t whylen)
{
    struct stamp st;
    char ip[64];
    const char *port = "";
    int n;

    if (stamp_decode(s, &st, why, whylen))
        return DV_EINVAL;
    if (st.proto != STAMP_ODOH_RELAY) {
        snprintf(why, whylen, "the stamp is not an ODoH relay stamp");
        return DV_EINVAL;
    }
    if (!st.host[0] || st.path[0] != '/') {
        snprintf(why, whylen, "the relay stamp has no host name or path");
        return DV_EINVAL;
    }
    /* the stamp's address is IP[:PORT]: the IP bootstraps the host name */
    snprintf(ip, sizeof(ip), "%s", st.addr);
    if (ip[0] == '[') {
        char *e = strchr(ip, ']');
        if (e && e[1] == ':')
            port = st.addr + (e - ip) + 1;
        if (e)
            *e = 0;
        memmove(ip, ip + 1, strlen(ip));
    } else if (strchr(ip, ':') && strchr(ip, ':') == strrchr(ip, ':')) {
        port = st.addr + (strchr(ip, ':') - ip);
        *strchr(ip, ':') = 0;
    }
    if (strchr(st.host, ':'))
        port = "";
    n = snprintf(out, cap, "https://%s%s%s%s%s", st.host, port, st.path, ip[0] ? "#" : "", ip);
    if (n < 0 || (size_t)n >= cap) {
        snprintf(why, whylen, "the relay stamp's URL is too long");
        return DV_EINVAL;
    }
    return 0;
}

/* Why relay (the normalized form) cannot be used, or NULL: an https:// URL
 * with a host and a path, its host an IP literal or given addresses after
 * '#', each an IP address. */
static const char *relay_invalid(const char *relay)
{
    const char *hash = strchr(relay, '#'), *path;
    char host[256];
    struct net_addr a;

    if (strncmp(relay, "https://", 8) != 0)
        return "a relay is an https:// URL or an ODoH relay stamp (sdns://)";
    if (!url_host(relay, host, sizeof(host)))
        return "the relay URL has no host";
    path = strchr(relay + 8, '/');
    if (!path || (hash && path > hash))
        return "the relay URL needs its path (e.g. https://relay.example/proxy)";
    if (!hash) {
        if (net_addr_parse(host, 443, &a))
            return "the relay's host is a name: give its IP addresses after '#' "
                   "(https://relay.example/proxy#192.0.2.1)";
        return NULL;
    }
    for (const char *p = hash + 1;;) {
        char ip[64];
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof(ip))
            return "a relay's addresses after '#' must be IP addresses";
        memcpy(ip, p, n);
        ip[n] = 0;
        if (net_addr_parse(ip, 443, &a))
            return "a relay's addresses after '#' must be IP addresses";
        if (!p[n])
            return NULL;
        p += n + 1;
    }
}

struct relay_arg {
    struct cfg_upstream *u;
    struct strlist list;
    char target_host[256];
};

static void add_relay(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct relay_arg *ra = arg;
    char norm[700], why[200], host[256];
    const char *bad;

    if (strncmp(s, "sdns://", 7) == 0) {
        if (relay_from_stamp(s, norm, sizeof(norm), why, sizeof(why))) {
            cerr(x, n, "upstream '%s': relay: %s", ra->u->name, why);
            return;
        }
        s = norm;
    }
    if ((bad = relay_invalid(s))) {
        cerr(x, n, "upstream '%s': relay \"%s\": %s", ra->u->name, s, bad);
        return;
    }
    url_host(s, host, sizeof(host));
    if (!ra->u->allow_same_operator &&
        (strcmp(host, ra->target_host) == 0 ||
         strcmp(registrable(host), registrable(ra->target_host)) == 0)) {
        cerr(x, n,
             "upstream '%s': relay \"%s\" and target '%s' are under one operator (%s): it would "
             "see both who asks and what; pick another relay, or set allow_same_operator = true "
             "if you run both",
             ra->u->name, s, ra->target_host, registrable(host));
        return;
    }
    push_str(x, n, s, &ra->list);
}

/* relays and allow_same_operator: ODoH targets only. */
static void parse_odoh(struct ctx *x, const struct toml_node *t, struct cfg_upstream *u)
{
    struct relay_arg ra = {.u = u};
    const struct toml_node *n = toml_table_get(t, "relays");

    get_bool(x, t, "allow_same_operator", &u->allow_same_operator);
    if (strncmp(u->url, "odoh://", 7) != 0) {
        if (n)
            cerr(x, n, "upstream '%s': 'relays' is for odoh:// upstreams", u->name);
        if (toml_table_get(t, "allow_same_operator"))
            cerr(x, toml_table_get(t, "allow_same_operator"),
                 "upstream '%s': 'allow_same_operator' is for odoh:// upstreams", u->name);
        return;
    }
    if (!url_host(u->url, ra.target_host, sizeof(ra.target_host))) {
        cerr(x, toml_table_get(t, "url"), "upstream '%s': the ODoH target URL has no host",
             u->name);
        return;
    }
    each_string(x, t, "relays", add_relay, &ra);
    u->relays = ra.list.v;
    u->n_relays = ra.list.n;
    if (u->n_relays > 32) /* odoh.c tracks which relays a query tried in a bit mask */
        cerr(x, n, "upstream '%s': at most 32 relays, not %zu", u->name, u->n_relays);
}

/* ---- [portal] ------------------------------------------------------------ */

static void add_portal_name(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    uint8_t wire[DNS_NAME_MAX];
    struct strlist l = {x->c->portal_names, x->c->n_portal_names};

    if (dns_name_from_str(s, wire) < 0 || !*s || strcmp(s, ".") == 0) {
        cerr(x, n, "portal name \"%s\" is not a domain name", s);
        return;
    }
    push_str(x, n, s, &l);
    x->c->portal_names = l.v;
    x->c->n_portal_names = l.n;
}

static void parse_portal(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"resolv_conf", "names", "open_seconds", NULL};
    const struct toml_node *n;
    const char *s;

    check_keys(x, t, "[portal]", keys);
    if ((s = get_cstr(x, t, "resolv_conf")) && *s) {
        if (s[0] != '/')
            cerr(x, toml_table_get(t, "resolv_conf"),
                 "'resolv_conf' must be an absolute path (\"%s\")", s);
        else
            set_str(x, t, "resolv_conf", &x->c->portal_resolv_conf);
    }
    if ((n = toml_table_get(t, "names"))) {
        x->c->portal_names_set = true;
        if (toml_node_kind(n) != TOML_ARRAY)
            cerr(x, n, "'names' expects an array of domain names");
        else
            each_string(x, t, "names", add_portal_name, NULL);
    }
    get_uint(x, t, "open_seconds", 1, 3600, &x->c->portal_open_s);
}

static const char *const url_schemes[] = {"udp://", "tcp://", "tls://", "https://",
                                          "quic://", "odoh://", "sdns://", NULL};

static void parse_upstream(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"url", "bootstrap", "tls_name", "tls_ca", "pins",
                                       "method", "connections", "idle_timeout_ms",
                                       "bootstrap_upstream", "relays", "allow_same_operator",
                                       NULL};
    const char *name = toml_node_key(t, NULL);
    char section[300];
    struct strlist pins = {0}, boot = {0};
    const char *url, *method;
    bool known = false;

    snprintf(section, sizeof(section), "[upstreams.%s]", name);
    if (toml_node_kind(t) != TOML_TABLE) {
        cerr(x, t, "upstream '%s' must be a table with a 'url'", name);
        return;
    }
    check_keys(x, t, section, keys);
    url = get_cstr(x, t, "url");
    if (!url) {
        if (!toml_table_get(t, "url"))
            cerr_key(x, t, "upstream '%s' has no 'url'", name);
        return;
    }
    for (const char *const *s = url_schemes; *s; s++)
        known |= strncmp(url, *s, strlen(*s)) == 0;
    if (!known) {
        cerr(x, toml_table_get(t, "url"),
             "upstream '%s': URL \"%s\" must start with udp://, tcp://, tls://, https://, "
             "quic://, odoh:// or sdns://", name, url);
        return;
    }
    struct stamp st;
    char stamp_url[600];
    bool is_stamp = strncmp(url, "sdns://", 7) == 0;
    if (is_stamp) {
        char why[200];
        if (stamp_decode(url, &st, why, sizeof(why)) ||
            stamp_to_url(&st, stamp_url, sizeof(stamp_url), why, sizeof(why))) {
            cerr(x, toml_table_get(t, "url"), "upstream '%s': %s", name, why);
            return;
        }
        if (st.n_hashes)
            log_warn("%s: upstream '%s': the stamp's certificate hashes are not checked; "
                     "the certificate is verified against its name (use 'pins' to pin)",
                     x->file, name);
        url = stamp_url;
    }
    if (config_add_upstream(x->c, name, url)) {
        x->oom = true;
        return;
    }
    struct cfg_upstream *u = &x->c->upstreams[x->c->n_upstreams - 1];
    get_uint(x, t, "connections", 1, 64, &u->max_conns);
    get_uint(x, t, "idle_timeout_ms", 1000, 3600000, &u->idle_timeout_ms);
    set_str(x, t, "tls_name", &u->tls_name);
    set_str(x, t, "tls_ca", &u->ca_file);
    set_str(x, t, "bootstrap_upstream", &u->bootstrap_via);
    each_string(x, t, "pins", push_str, &pins);
    each_string(x, t, "bootstrap", push_str, &boot);
    u->pins = pins.v;
    u->n_pins = pins.n;
    /* a stamp's address is the server's own: it bootstraps the host name */
    if (is_stamp && st.addr[0] && st.proto != STAMP_PLAIN)
        push_str(x, t, st.addr, &boot);
    u->bootstrap = boot.v;
    u->n_bootstrap = boot.n;
    for (size_t i = 0; i < boot.n; i++) {
        struct net_addr a;
        if (net_addr_parse(boot.v[i], 53, &a))
            cerr(x, toml_table_get(t, "bootstrap"),
                 "upstream '%s': bootstrap \"%s\" is not an IP address", name, boot.v[i]);
    }
    if ((method = get_cstr(x, t, "method"))) {
        if (strcasecmp(method, "get") == 0)
            u->doh_get = true;
        else if (strcasecmp(method, "post") != 0)
            cerr(x, toml_table_get(t, "method"), "'method' = \"%s\": expected \"post\" or \"get\"",
                 method);
    }
    parse_odoh(x, t, u);
}

static ssize_t find_upstream(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->n_upstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t find_group(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->n_groups; i++)
        if (strcmp(c->groups[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void add_member(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_group *g = arg;
    ssize_t i = find_upstream(x->c, s);

    if (i < 0) {
        cerr(x, n, "group '%s': no upstream named '%s'", g->name, s);
        return;
    }
    size_t *m = realloc(g->members, (g->n_members + 1) * sizeof(*m));
    unsigned *w = realloc(g->weights, (g->n_members + 1) * sizeof(*w));
    if (m)
        g->members = m;
    if (w)
        g->weights = w;
    if (!m || !w) {
        x->oom = true;
        return;
    }
    g->members[g->n_members] = (size_t)i;
    g->weights[g->n_members++] = 1;
}

/* The default group serves every query no rule sends elsewhere, so a plain
 * DNS member there would send ordinary names out unencrypted: allowed only
 * with allow_plaintext = true. Other groups serve only the rules that name
 * them (split domains), where plain DNS is the point. */
static void check_plaintext(struct ctx *x, const struct toml_node *t, struct cfg_group *g)
{
    const struct toml_node *ups = toml_table_get(t, "upstreams");

    get_bool(x, t, "allow_plaintext", &g->allow_plaintext);
    if (strcmp(g->name, "default") != 0 || g->allow_plaintext)
        return;
    for (size_t i = 0; i < g->n_members; i++) {
        const struct cfg_upstream *u = &x->c->upstreams[g->members[i]];
        if (!config_upstream_plaintext(u))
            continue;
        const struct toml_node *n = ups;
        for (size_t k = 0; toml_node_kind(ups) == TOML_ARRAY && k < toml_array_len(ups); k++) {
            const char *s = toml_node_cstr(toml_array_at(ups, k));
            if (s && strcmp(s, u->name) == 0)
                n = toml_array_at(ups, k);
        }
        cerr(x, n, "group 'default': upstream '%s' is plain DNS (%s) and would carry every "
             "ordinary query unencrypted; send split domains to it with a rule, or set "
             "'allow_plaintext = true' in [groups.default]", u->name, u->url);
    }
}

static void parse_group(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"upstreams", "strategy", "weights", "hedge_after_ms",
                                       "allow_plaintext", NULL};
    const char *name = toml_node_key(t, NULL), *strat;
    char section[300];

    snprintf(section, sizeof(section), "[groups.%s]", name);
    if (toml_node_kind(t) != TOML_TABLE) {
        cerr(x, t, "group '%s' must be a table", name);
        return;
    }
    check_keys(x, t, section, keys);
    struct cfg_group *g = realloc(x->c->groups, (x->c->n_groups + 1) * sizeof(*g));
    if (!g) {
        x->oom = true;
        return;
    }
    x->c->groups = g;
    g = &g[x->c->n_groups];
    memset(g, 0, sizeof(*g));
    if (!(g->name = xstrdup(x, name)))
        return;
    x->c->n_groups++;
    g->strategy = CFG_STRATEGY_FASTEST;
    if (!toml_table_get(t, "upstreams"))
        cerr_key(x, t, "group '%s' has no 'upstreams'", name);
    each_string(x, t, "upstreams", add_member, g);
    if ((strat = get_cstr(x, t, "strategy"))) {
        bool ok = false;
        for (int i = 0; i <= CFG_STRATEGY_PARALLEL; i++) {
            if (strcmp(strat, strategy_names[i]) == 0) {
                g->strategy = (enum cfg_strategy)i;
                ok = true;
            }
        }
        if (!ok)
            cerr(x, toml_table_get(t, "strategy"),
                 "'strategy' = \"%s\": expected \"failover\", \"round_robin\", \"random\", "
                 "\"fastest\" or \"parallel\"", strat);
    }
    get_uint(x, t, "hedge_after_ms", 0, 600000, &g->hedge_after_ms);
    check_plaintext(x, t, g);
    const struct toml_node *w = toml_table_get(t, "weights");
    if (w && toml_node_kind(w) != TOML_TABLE) {
        cerr(x, w, "'weights' expects a table such as { name = 2 }");
    } else {
        for (size_t i = 0; i < toml_table_len(w); i++) {
            const struct toml_node *e = toml_table_at(w, i);
            const char *un = toml_node_key(e, NULL);
            int64_t v;
            size_t k = 0;
            while (k < g->n_members && strcmp(x->c->upstreams[g->members[k]].name, un))
                k++;
            if (k == g->n_members)
                cerr_key(x, e, "weights: '%s' is not a member of group '%s'", un, name);
            else if (toml_node_int(e, &v) || v < 1 || v > 1000)
                cerr(x, e, "weights: '%s' expects an integer from 1 to 1000", un);
            else
                g->weights[k] = (unsigned)v;
        }
    }
}

static const struct {
    const char *name;
    uint16_t type;
} qtype_names[] = {
    {"A", DNS_TYPE_A},       {"NS", DNS_TYPE_NS},       {"CNAME", DNS_TYPE_CNAME},
    {"SOA", DNS_TYPE_SOA},   {"PTR", DNS_TYPE_PTR},     {"MX", DNS_TYPE_MX},
    {"TXT", DNS_TYPE_TXT},   {"AAAA", DNS_TYPE_AAAA},   {"SRV", DNS_TYPE_SRV},
    {"HTTPS", DNS_TYPE_HTTPS}, {"SVCB", 64},           {"ANY", DNS_TYPE_ANY},
    {"DS", 43},              {"DNSKEY", 48},            {"CAA", 257},
};

static void add_domain(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    uint8_t wire[DNS_NAME_MAX];
    int len = dns_name_from_str(s, wire);

    if (len < 0) {
        cerr(x, n, "domain \"%s\" is not a valid name", s);
        return;
    }
    dns_name_lower(wire, (size_t)len);
    uint8_t **d = realloc(r->domains, (r->n_domains + 1) * sizeof(*d));
    size_t *l = realloc(r->domain_lens, (r->n_domains + 1) * sizeof(*l));
    if (d)
        r->domains = d;
    if (l)
        r->domain_lens = l;
    uint8_t *copy = malloc((size_t)len);
    if (!d || !l || !copy) {
        free(copy);
        x->oom = true;
        return;
    }
    memcpy(copy, wire, (size_t)len);
    r->domains[r->n_domains] = copy;
    r->domain_lens[r->n_domains++] = (size_t)len;
}

static void add_qtype(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    long type = -1;

    for (size_t i = 0; i < sizeof(qtype_names) / sizeof(qtype_names[0]); i++)
        if (strcasecmp(s, qtype_names[i].name) == 0)
            type = qtype_names[i].type;
    if (type < 0 && strncasecmp(s, "TYPE", 4) == 0) {
        char *end;
        type = strtol(s + 4, &end, 10);
        if (*end || end == s + 4 || type < 1 || type > 65535)
            type = -1;
    }
    if (type < 0) {
        cerr(x, n, "query type \"%s\" is not known (use a name such as \"AAAA\" or \"TYPE65\")",
             s);
        return;
    }
    uint16_t *q = realloc(r->qtypes, (r->n_qtypes + 1) * sizeof(*q));
    if (!q) {
        x->oom = true;
        return;
    }
    r->qtypes = q;
    q[r->n_qtypes++] = (uint16_t)type;
}

int config_parse_subnet(const char *s, struct cfg_subnet *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    struct cfg_subnet sn;

    if (hl >= sizeof(host))
        return DV_EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (strchr(host, ':') && host[0] != '[') {
        char br[INET6_ADDRSTRLEN + 3];
        snprintf(br, sizeof(br), "[%s]", host);
        if (net_addr_parse(br, 1, &sn.addr))
            return DV_EINVAL;
    } else if (net_addr_parse(host, 1, &sn.addr)) {
        return DV_EINVAL;
    }
    unsigned max = sn.addr.ss.ss_family == AF_INET ? 32 : 128;
    sn.prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || p < 0 || p > (long)max)
            return DV_EINVAL;
        sn.prefix = (unsigned)p;
    }
    *out = sn;
    return 0;
}

static void add_client(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    struct cfg_subnet sn;

    if (config_parse_subnet(s, &sn)) {
        cerr(x, n, "client \"%s\": expected an address or ADDRESS/PREFIX", s);
        return;
    }
    struct cfg_subnet *v = realloc(r->clients, (r->n_clients + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    r->clients = v;
    v[r->n_clients++] = sn;
}

static void add_rule_listener(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    struct net_addr a;

    if (net_addr_parse(s, 53, &a)) {
        cerr(x, n, "listener \"%s\": expected IP[:PORT]", s);
        return;
    }
    struct net_addr *v = realloc(r->listeners, (r->n_listeners + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    r->listeners = v;
    v[r->n_listeners++] = a;
}

/* ---- local answers: a CNAME, a hosts file (resolve/hosts.c) ------------- */

/* answer = ["target.example."]: a CNAME, which stands alone (RFC 1034 3.6.2) */
static void add_answer_cname(struct ctx *x, const struct toml_node *n, const char *s,
                             struct cfg_rule *r)
{
    uint8_t wire[DNS_NAME_MAX];
    int len = strchr(s, '.') ? dns_name_from_str(s, wire) : -1;

    if (len <= 1) {
        cerr(x, n, "answer \"%s\" is neither an IP address nor a domain name", s);
        return;
    }
    if (r->answer_cname || r->n_answers) {
        cerr(x, n, "answer \"%s\": a CNAME must be the only answer", s);
        return;
    }
    if (!(r->answer_cname = malloc((size_t)len))) {
        x->oom = true;
        return;
    }
    memcpy(r->answer_cname, wire, (size_t)len);
    r->answer_cname_len = (size_t)len;
}

/* A rule's file: a relative path is taken from the configuration file's
 * directory. */
static void rule_file_path(const struct ctx *x, const char *path, char *full, size_t cap)
{
    const char *slash = strrchr(x->file, '/');

    if (path[0] != '/' && slash)
        snprintf(full, cap, "%.*s/%s", (int)(slash - x->file), x->file, path);
    else
        snprintf(full, cap, "%s", path);
}

static void parse_rule_hosts_file(struct ctx *x, const struct toml_node *t, struct cfg_rule *r)
{
    const char *path = get_cstr(x, t, "hosts_file");
    const struct toml_node *n = toml_table_get(t, "hosts_file");
    struct hosts_info info;
    char full[4096];
    int rc;

    if (!path)
        return;
    rule_file_path(x, path, full, sizeof(full));
    r->hosts_file = xstrdup(x, full);
    rc = hosts_load(full, &r->hosts, &info);
    if (rc == DV_ENOMEM)
        x->oom = true;
    else if (rc)
        cerr(x, n, "hosts_file \"%s\": %s", full, strerror(errno));
    else if (info.skipped)
        log_warn("%s: %zu lines are not ADDRESS NAME... and were skipped (the first: line %d)",
                 full, info.skipped, info.first_bad);
}

static void add_answer(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    struct net_addr a;
    char br[INET6_ADDRSTRLEN + 3];

    snprintf(br, sizeof(br), strchr(s, ':') ? "[%s]" : "%s", s);
    if (net_addr_parse(br, 1, &a)) {
        add_answer_cname(x, n, s, r);
        return;
    }
    if (r->answer_cname) {
        cerr(x, n, "answer \"%s\": a CNAME must be the only answer", s);
        return;
    }
    struct net_addr *v = realloc(r->answers, (r->n_answers + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    r->answers = v;
    v[r->n_answers++] = a;
}

/* ---- rule keys naming the program that sent a query (resolve/appid.c) ---- */

static void add_user(struct ctx *x, const struct toml_node *n, uint32_t **v, size_t *nv)
{
    int64_t id;
    const char *name = toml_node_cstr(n);
    uint32_t uid;

    if (toml_node_int(n, &id) == 0) {
        if (id < 0 || id > 0xfffffffe) {
            cerr(x, n, "user id %lld is out of range", (long long)id);
            return;
        }
        uid = (uint32_t)id;
    } else if (name) {
        struct passwd *pw = getpwnam(name);
        if (!pw) {
            cerr(x, n, "no user named '%s'", name);
            return;
        }
        uid = (uint32_t)pw->pw_uid;
    } else {
        cerr(x, n, "'users' expects user names or ids, not %s",
             toml_kind_name(toml_node_kind(n)));
        return;
    }
    uint32_t *nvv = realloc(*v, (*nv + 1) * sizeof(*nvv));
    if (!nvv) {
        x->oom = true;
        return;
    }
    *v = nvv;
    nvv[(*nv)++] = uid;
}

static void check_glob(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    if (!*s || strstr(s, "//"))
        cerr(x, n, "cgroup pattern \"%s\": expected path components such as "
                   "\"app-firefox-*.scope\" or \"user.slice/user-1000.slice\"", s);
    else
        push_str(x, n, s, arg);
}

static void check_app(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    if (!*s || (strchr(s, '/') && s[0] != '/'))
        cerr(x, n, "application \"%s\": expected a process name or an absolute path", s);
    else
        push_str(x, n, s, arg);
}

static void parse_rule_app(struct ctx *x, const struct toml_node *t, struct cfg_rule *r)
{
    const struct toml_node *n = toml_table_get(t, "users");
    struct strlist apps = {0}, cgs = {0};

    if (n && toml_node_kind(n) == TOML_ARRAY) {
        for (size_t i = 0; i < toml_array_len(n); i++)
            add_user(x, toml_array_at(n, i), &r->users, &r->n_users);
        if (!toml_array_len(n))
            cerr(x, n, "'users' is empty: the rule could never match");
    } else if (n) {
        add_user(x, n, &r->users, &r->n_users);
    }
    each_string(x, t, "cgroups", check_glob, &cgs);
    r->cgroups = cgs.v;
    r->n_cgroups = cgs.n;
    each_string(x, t, "applications", check_app, &apps);
    r->applications = apps.v;
    r->n_applications = apps.n;
    /* an empty list would silently make the rule match every program */
    static const char *const lists[] = {"cgroups", "applications"};
    for (size_t i = 0; i < 2; i++) {
        const struct toml_node *l = toml_table_get(t, lists[i]);
        if (l && toml_node_kind(l) == TOML_ARRAY && toml_array_len(l) == 0)
            cerr(x, l, "'%s' is empty: the rule could never match", lists[i]);
    }
}

/* ---- domains_file: a rule's names from a list (resolve/domainset.c) ------ */

static void parse_rule_domains_file(struct ctx *x, const struct toml_node *t, struct cfg_rule *r)
{
    const char *path = get_cstr(x, t, "domains_file");
    const struct toml_node *n = toml_table_get(t, "domains_file");
    struct domainset_info info;
    char full[4096];
    int rc;

    if (!path)
        return;
    rule_file_path(x, path, full, sizeof(full));
    r->domains_file = xstrdup(x, full);
    rc = domainset_load(full, &r->domainset, &info);
    if (rc == DV_ENOMEM) {
        x->oom = true;
    } else if (rc) {
        cerr(x, n, "domains_file \"%s\": %s", full, strerror(errno));
    } else {
        if (info.skipped)
            log_warn("%s: %zu lines are not names and were skipped (the first: line %d)", full,
                     info.skipped, info.first_bad);
        log_debug("%s: %zu names, %zu KiB", full, info.entries, info.bytes / 1024);
    }
}

static void parse_rule(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"domains", "qtypes", "clients", "listeners",
                                       "applications", "group", "action", "answer",
                                       "answer_ttl", "users", "cgroups", "domains_file", "hosts_file", NULL};
    const char *group, *action;

    if (toml_node_kind(t) != TOML_TABLE) {
        cerr(x, t, "each [[rules]] entry must be a table");
        return;
    }
    check_keys(x, t, "[[rules]]", keys);
    struct cfg_rule *r = realloc(x->c->rules, (x->c->n_rules + 1) * sizeof(*r));
    if (!r) {
        x->oom = true;
        return;
    }
    x->c->rules = r;
    r = &r[x->c->n_rules++];
    memset(r, 0, sizeof(*r));
    r->line = toml_node_line(t);
    r->answer_ttl = 300;
    each_string(x, t, "domains", add_domain, r);
    each_string(x, t, "qtypes", add_qtype, r);
    each_string(x, t, "clients", add_client, r);
    each_string(x, t, "listeners", add_rule_listener, r);
    parse_rule_app(x, t, r);
    parse_rule_domains_file(x, t, r);
    parse_rule_hosts_file(x, t, r);
    each_string(x, t, "answer", add_answer, r);
    get_u32(x, t, "answer_ttl", 604800, &r->answer_ttl);
    group = get_cstr(x, t, "group");
    action = get_cstr(x, t, "action");

    if (!action)
        action = group ? "forward" : toml_table_get(t, "answer") ? "answer"
                 : toml_table_get(t, "hosts_file") ? "hosts" : NULL;
    if (!action) {
        if (!toml_table_get(t, "action") && !toml_table_get(t, "group"))
            cerr(x, t, "rule needs a 'group' to forward to or an 'action'");
        return;
    }
    if (strcmp(action, "forward") == 0) {
        ssize_t g = group ? find_group(x->c, group) : -1;
        r->action = CFG_ACTION_GROUP;
        if (!group)
            cerr(x, toml_table_get(t, "action"), "action \"forward\" needs a 'group'");
        else if (g < 0 && strcmp(group, "default") != 0)
            cerr(x, toml_table_get(t, "group"), "no group named '%s'", group);
        /* "default" may be the implicit group config_finish adds at index 0 */
        r->group = g < 0 ? (size_t)-1 : (size_t)g;
    } else if (strcmp(action, "refuse") == 0) {
        r->action = CFG_ACTION_REFUSE;
    } else if (strcmp(action, "nxdomain") == 0) {
        r->action = CFG_ACTION_NXDOMAIN;
    } else if (strcmp(action, "answer") == 0) {
        r->action = CFG_ACTION_ANSWER;
        if (r->n_answers == 0 && !r->answer_cname)
            cerr(x, toml_table_get(t, "action") ? toml_table_get(t, "action") : t,
                 "action \"answer\" needs 'answer' addresses");
    } else if (strcmp(action, "hosts") == 0) {
        r->action = CFG_ACTION_HOSTS;
        if (!toml_table_get(t, "hosts_file"))
            cerr(x, toml_table_get(t, "action") ? toml_table_get(t, "action") : t,
                 "action \"hosts\" needs a 'hosts_file'");
    } else {
        cerr(x, toml_table_get(t, "action"),
             "'action' = \"%s\": expected \"forward\", \"refuse\", \"nxdomain\", \"answer\" "
             "or \"hosts\"",
             action);
    }
}

static void parse_root(struct ctx *x, const struct toml_node *root)
{
    static const char *const keys[] = {"server", "log", "cache", "metrics",
                                       "upstreams", "groups", "rules", "querylog", "portal", NULL};
    const struct toml_node *t;

    check_keys(x, root, "the top level", keys);
    if ((t = want_table(x, root, "server", "[server]")))
        parse_server(x, t);
    if ((t = want_table(x, root, "log", "[log]")))
        parse_log(x, t);
    if ((t = want_table(x, root, "cache", "[cache]")))
        parse_cache(x, t);
    if ((t = want_table(x, root, "metrics", "[metrics]")))
        parse_metrics(x, t);
    if ((t = want_table(x, root, "querylog", "[querylog]")))
        parse_querylog(x, t);
    if ((t = want_table(x, root, "portal", "[portal]")))
        parse_portal(x, t);
    if ((t = want_table(x, root, "upstreams", "[upstreams]"))) {
        for (size_t i = 0; i < toml_table_len(t); i++)
            parse_upstream(x, toml_table_at(t, i));
        check_bootstrap_upstreams(x, t);
    }
    if ((t = want_table(x, root, "groups", "[groups]"))) {
        /* "default" first, so groups[0] is always the catch-all */
        const struct toml_node *d = toml_table_get(t, "default");
        if (d)
            parse_group(x, d);
        for (size_t i = 0; i < toml_table_len(t); i++)
            if (toml_table_at(t, i) != d)
                parse_group(x, toml_table_at(t, i));
    }
    t = toml_table_get(root, "rules");
    if (t && toml_node_kind(t) != TOML_ARRAY)
        cerr(x, t, "'rules' must be an array of tables ([[rules]])");
    else
        for (size_t i = 0; i < toml_array_len(t); i++)
            parse_rule(x, toml_array_at(t, i));
}

int config_load(const char *path, struct config **pc, char *errs, size_t errlen)
{
    struct ctx x = {.file = path, .errs = errs, .errlen = errlen};
    struct toml_doc *doc = NULL;
    struct toml_error terr;
    char *data = NULL;
    size_t len = 0;
    FILE *f;
    int rc = DV_EINVAL;

    *pc = NULL;
    if (errlen)
        errs[0] = 0;
    f = fopen(path, "rb");
    if (!f) {
        cerr_at(&x, 0, 0, "cannot open: %s", strerror(errno));
        return DV_EIO;
    }
    data = malloc(CONFIG_MAX_FILE + 1);
    if (data)
        len = fread(data, 1, CONFIG_MAX_FILE + 1, f);
    fclose(f);
    if (!data)
        return DV_ENOMEM;
    if (len > CONFIG_MAX_FILE) {
        cerr_at(&x, 0, 0, "file is larger than %d bytes", CONFIG_MAX_FILE);
        goto out;
    }
    if (toml_doc_parse(data, len, path, &doc, &terr)) {
        toml_error_format(&terr, errs, errlen);
        if (errlen && strlen(errs) + 1 < errlen)
            strcat(errs, "\n");
        goto out;
    }
    if (!(x.c = config_new())) {
        rc = DV_ENOMEM;
        goto out;
    }
    parse_root(&x, toml_doc_root(doc));
    if (x.oom) {
        rc = DV_ENOMEM;
    } else if (x.nerr == 0) {
        /* rules naming an implicit "default" hold (size_t)-1: config_finish
         * shifts every group index by one when it inserts that group at 0 */
        rc = config_finish(x.c);
        if (rc == 0 && !(x.c->file = strdup(path)))
            rc = DV_ENOMEM;
    }
    if (rc == 0) {
        *pc = x.c;
        x.c = NULL;
    }
out:
    config_free(x.c);
    toml_doc_free(doc);
    free(data);
    return rc;
}
