/* The schema: turns a TOML tree into struct config, reporting every problem
 * with FILE:LINE:COL. Unknown keys are errors (with the nearest valid name),
 * because a misspelt security setting silently ignored is worse than a
 * daemon that refuses to start. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "config/stamp.h"
#include "config/toml.h"
#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"

enum { CONFIG_MAX_FILE = 1 << 20 };

struct config *config_new(void)
{
    struct config *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->timeout_ms = 2500;
    c->tcp_idle_ms = 10000;
    c->tcp_max_conns = 256;
    c->log_level = DV_LOG_INFO;
    c->status.page = true;
    c->status.privacy = 1;
    c->cache_enabled = true;
    cache_opts_default(&c->cache);
    c->stale_client_timeout_ms = 1800;
    c->answer_special_names = true;
    c->user = strdup("nobody");
    if (!c->user) {
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
    free(c->user);
    free(c->ca_file);
    free(c->control);
    free(c->status.username);
    free(c->status.password);
    free(c->file);
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
           a->idle_timeout_ms == b->idle_timeout_ms;
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

int config_finish(struct config *c)
{
    if (c->n_listeners == 0 && config_add_listener(c, "127.0.0.53:53", true, true))
        return DV_ENOMEM;
    if (c->n_groups > 0 && strcmp(c->groups[0].name, "default") == 0)
        return 0;
    /* no [groups.default]: every upstream, in order */
    struct cfg_group *g = realloc(c->groups, (c->n_groups + 1) * sizeof(*g));
    if (!g)
        return DV_ENOMEM;
    c->groups = g;
    memmove(g + 1, g, c->n_groups * sizeof(*g));
    for (size_t i = 0; i < c->n_rules; i++)
        c->rules[i].group++;
    c->n_groups++;
    memset(g, 0, sizeof(*g));
    g->name = strdup("default");
    g->members = calloc(c->n_upstreams ? c->n_upstreams : 1, sizeof(*g->members));
    g->weights = calloc(c->n_upstreams ? c->n_upstreams : 1, sizeof(*g->weights));
    if (!g->name || !g->members || !g->weights)
        return DV_ENOMEM;
    for (size_t i = 0; i < c->n_upstreams; i++) {
        g->members[i] = i;
        g->weights[i] = 1;
    }
    g->n_members = c->n_upstreams;
    g->strategy = c->n_upstreams > 1 ? CFG_STRATEGY_FASTEST : CFG_STRATEGY_FAILOVER;
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

static void parse_server(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"listen", "user", "timeout_ms", "tcp_idle_timeout_ms",
                                       "tcp_max_connections", "tls_ca", "control",
                                       "answer_special_names", NULL};

    check_keys(x, t, "[server]", keys);
    each_string(x, t, "listen", add_listen, NULL);
    set_str(x, t, "user", &x->c->user);
    get_uint(x, t, "timeout_ms", 50, 600000, &x->c->timeout_ms);
    get_uint(x, t, "tcp_idle_timeout_ms", 100, 3600000, &x->c->tcp_idle_ms);
    get_uint(x, t, "tcp_max_connections", 1, 65535, &x->c->tcp_max_conns);
    set_str(x, t, "tls_ca", &x->c->ca_file);
    set_str(x, t, "control", &x->c->control);
    get_bool(x, t, "answer_special_names", &x->c->answer_special_names);
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

static const char *const url_schemes[] = {"udp://", "tcp://", "tls://", "https://",
                                          "quic://", "odoh://", "sdns://", NULL};

static void parse_upstream(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"url", "bootstrap", "tls_name", "tls_ca", "pins",
                                       "method", "connections", "idle_timeout_ms", NULL};
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

static void parse_group(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"upstreams", "strategy", "weights", "hedge_after_ms",
                                       NULL};
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

static void add_client(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    struct cfg_subnet sn;

    if (hl >= sizeof(host))
        goto bad;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (strchr(host, ':') && host[0] != '[') {
        char br[INET6_ADDRSTRLEN + 3];
        snprintf(br, sizeof(br), "[%s]", host);
        if (net_addr_parse(br, 1, &sn.addr))
            goto bad;
    } else if (net_addr_parse(host, 1, &sn.addr)) {
        goto bad;
    }
    unsigned max = sn.addr.ss.ss_family == AF_INET ? 32 : 128;
    sn.prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || p < 0 || p > (long)max)
            goto bad;
        sn.prefix = (unsigned)p;
    }
    struct cfg_subnet *v = realloc(r->clients, (r->n_clients + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    r->clients = v;
    v[r->n_clients++] = sn;
    return;
bad:
    cerr(x, n, "client \"%s\": expected an address or ADDRESS/PREFIX", s);
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

static void add_answer(struct ctx *x, const struct toml_node *n, const char *s, void *arg)
{
    struct cfg_rule *r = arg;
    struct net_addr a;
    char br[INET6_ADDRSTRLEN + 3];

    snprintf(br, sizeof(br), strchr(s, ':') ? "[%s]" : "%s", s);
    if (net_addr_parse(br, 1, &a)) {
        cerr(x, n, "answer \"%s\" is not an IP address", s);
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

static void parse_rule(struct ctx *x, const struct toml_node *t)
{
    static const char *const keys[] = {"domains", "qtypes", "clients", "listeners",
                                       "applications", "group", "action", "answer",
                                       "answer_ttl", NULL};
    struct strlist apps = {0};
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
    each_string(x, t, "applications", push_str, &apps);
    r->applications = apps.v;
    r->n_applications = apps.n;
    if (apps.n)
        /* needs the socket-diag process lookup: refuse rather than ignore */
        cerr(x, toml_table_get(t, "applications"),
             "'applications' matching is not available in this build");
    each_string(x, t, "answer", add_answer, r);
    get_u32(x, t, "answer_ttl", 604800, &r->answer_ttl);
    group = get_cstr(x, t, "group");
    action = get_cstr(x, t, "action");

    if (!action)
        action = group ? "forward" : toml_table_get(t, "answer") ? "answer" : NULL;
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
        if (r->n_answers == 0)
            cerr(x, toml_table_get(t, "action") ? toml_table_get(t, "action") : t,
                 "action \"answer\" needs 'answer' addresses");
    } else {
        cerr(x, toml_table_get(t, "action"),
             "'action' = \"%s\": expected \"forward\", \"refuse\", \"nxdomain\" or \"answer\"",
             action);
    }
}

static void parse_root(struct ctx *x, const struct toml_node *root)
{
    static const char *const keys[] = {"server", "log", "cache", "metrics",
                                       "upstreams", "groups", "rules", NULL};
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
    if ((t = want_table(x, root, "upstreams", "[upstreams]")))
        for (size_t i = 0; i < toml_table_len(t); i++)
            parse_upstream(x, toml_table_at(t, i));
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
