/* daemon — the running service: the objects one configuration asks for
 * (upstreams, pools, policy, listeners, cache, metrics, control socket),
 * built at start and rebuilt on reload, where a complete new set is made
 * before anything running is touched. main.c owns the process around it:
 * options, privileges, signals. */
#include "daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"
#include "core/netmon.h"
#include "dns/dns.h"
#include "frontend/control.h"
#include "frontend/expo.h"
#include "frontend/frontend.h"
#include "frontend/metrics.h"
#include "frontend/status.h"
#include "frontend/secure.h"
#include "resolve/cache.h"
#include "resolve/obs.h"
#include "resolve/policy.h"
#include "resolve/qlog.h"
#include "resolve/portal.h"
#include "resolve/query.h"
#include "upstream/bootres.h"
#include "upstream/odoh.h"
#include "upstream/pool.h"
#include "tls/tls_time.h"
#include "upstream/upstream.h"

/* The objects built from one config: kept together so a reload can build a
 * complete new set before it touches the running one. */
struct runtime {
    struct config *cfg;
    struct upstream **ups; /* one per cfg->upstreams */
    struct pool **pools;   /* one per cfg->groups */
    struct policy *policy;
    struct bootres **boot; /* one per upstream with a bootstrap_upstream, else NULL */
    struct portal *portal; /* NULL without [portal] */
};

struct daemon {
    struct ev_loop *loop;
    const struct daemon_cli *cli;
    struct runtime rt;
    struct cache *cache;
    struct control *control;
    struct metrics *metrics;
    struct query_engine *qe;
    struct fe_udp **udp;
    struct fe_tcp **tcp;
    struct net_addr *laddr; /* the address each udp[i]/tcp[i] pair is bound to */
    size_t nlisten;
    struct qlog *qlog; /* NULL: the query log is off */
    struct netmon *netmon;  /* NULL without netlink */
    struct obs *obs;        /* per-listener, per-rule and top-k counters */
    struct status *status;  /* the status page's history */
    double start_time;      /* Unix seconds */
    struct fe_secure *secure; /* the DoT/DoH listeners */
};

static bool str_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void close_listener(struct daemon *d, size_t i)
{
    fe_udp_close(d->udp[i]);
    fe_tcp_close(d->tcp[i]);
    d->udp[i] = NULL;
    d->tcp[i] = NULL;
}

static void stop_listeners(struct daemon *d)
{
    for (size_t i = 0; i < d->nlisten; i++)
        close_listener(d, i);
    d->nlisten = 0;
}

/* Every counter as "name=value ...": the SIGUSR1 log line and the control
 * socket's answer are the same text. */
static void format_stats(const struct daemon *d, char *out, size_t cap)
{
    int n = query_stats_format(d->qe, out, cap);

    if (d->cache && n >= 0 && (size_t)n < cap) {
        struct cache_stats cs;
        cache_stats(d->cache, &cs);
        snprintf(out + n, cap - (size_t)n,
                 " cache_entries=%zu cache_bytes=%zu cache_size=%zu cache_lookup_hits=%llu "
                 "cache_lookup_misses=%llu cache_evictions=%llu cache_expired=%llu",
                 cs.entries, cs.bytes, cs.size, (unsigned long long)cs.hits,
                 (unsigned long long)cs.misses, (unsigned long long)cs.evictions,
                 (unsigned long long)cs.expired);
    }
}

void daemon_log_stats(const struct daemon *d)
{
    char line[1024];

    format_stats(d, line, sizeof(line));
    log_msg(DV_LOG_INFO, "stats: %s", line);
}

static void runtime_free(struct runtime *rt)
{
    if (!rt->cfg)
        return;
    portal_del(rt->portal);
    policy_unref(rt->policy);
    for (size_t i = 0; rt->boot && i < rt->cfg->n_upstreams; i++)
        bootres_del(rt->boot[i]);
    free(rt->boot);
    for (size_t i = 0; rt->pools && i < rt->cfg->n_groups; i++)
        pool_unref(rt->pools[i]);
    for (size_t i = 0; rt->ups && i < rt->cfg->n_upstreams; i++)
        upstream_unref(rt->ups[i]);
    free(rt->pools);
    free(rt->ups);
    config_free(rt->cfg);
    memset(rt, 0, sizeof(*rt));
}

/* Upstream host names resolved through another upstream (bootres.c). */
static int start_bootres(struct daemon *d, struct runtime *rt)
{
    const struct config *cfg = rt->cfg;

    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const char *via = cfg->upstreams[i].bootstrap_via;
        if (!via)
            continue;
        if (!rt->boot && !(rt->boot = calloc(cfg->n_upstreams, sizeof(*rt->boot))))
            return DV_ENOMEM;
        for (size_t j = 0; j < cfg->n_upstreams; j++)
            if (cfg->upstreams[j].name && strcmp(cfg->upstreams[j].name, via) == 0 &&
                !(rt->boot[i] = bootres_new(d->loop, rt->ups[i], rt->ups[j])))
                return DV_ENOMEM;
    }
    return 0;
}

/* The captive-portal route of rt's config, if it has one. 0 or DV_ENOMEM. */
static int build_portal(struct daemon *d, struct runtime *rt)
{
    int rc;

    rt->portal = portal_new(d->loop, rt->cfg, &rc);
    if (rc)
        log_err("portal: %s", dv_strerror(rc));
    return rc;
}

/* Builds upstreams, pools and policy for cfg (taking ownership of it). An
 * upstream whose settings equal one in old is shared, with its live
 * connections. 0 or DV_E*, with the reason logged. */
static int runtime_build(struct daemon *d, struct runtime *rt, struct config *cfg,
                         const struct runtime *old)
{
    char err[512];

    memset(rt, 0, sizeof(*rt));
    rt->cfg = cfg;
    /* before any upstream loads its CA store (tls_time.h) */
    tls_time_set_mode(cfg->tls_time_strict ? TLS_TIME_STRICT : TLS_TIME_AUTO);
    rt->ups = calloc(cfg->n_upstreams + 1, sizeof(*rt->ups));
    rt->pools = calloc(cfg->n_groups + 1, sizeof(*rt->pools));
    if (!rt->ups || !rt->pools)
        goto fail;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        for (size_t j = 0; old && old->cfg && j < old->cfg->n_upstreams; j++) {
            if (config_upstream_same(&cfg->upstreams[i], &old->cfg->upstreams[j]) &&
                str_same(cfg->ca_file, old->cfg->ca_file)) {
                rt->ups[i] = old->ups[j];
                upstream_ref(rt->ups[i]);
                break;
            }
        }
        if (!rt->ups[i] &&
            !(rt->ups[i] = upstream_new(d->loop, &cfg->upstreams[i], cfg, err, sizeof(err)))) {
            log_err("%s", err);
            goto fail;
        }
    }
    for (size_t g = 0; g < cfg->n_groups; g++) {
        const struct cfg_group *cg = &cfg->groups[g];
        struct upstream **members = calloc(cg->n_members + 1, sizeof(*members));
        if (!members)
            goto fail;
        for (size_t k = 0; k < cg->n_members; k++)
            members[k] = rt->ups[cg->members[k]];
        rt->pools[g] = pool_new(cg->name, members, cg->weights, cg->n_members, cg->strategy,
                                cg->hedge_after_ms);
        free(members);
        if (!rt->pools[g])
            goto fail;
    }
    if (start_bootres(d, rt))
        goto fail;
    rt->policy = policy_new(cfg, rt->pools, err, sizeof(err));
    if (!rt->policy) {
        log_err("%s", err);
        goto fail;
    }
    if (build_portal(d, rt))
        goto fail;
    return 0;
fail:
    runtime_free(rt);
    if (old && old->cfg) /* the running configuration's mode stays */
        tls_time_set_mode(old->cfg->tls_time_strict ? TLS_TIME_STRICT : TLS_TIME_AUTO);
    return DV_EINVAL;
}

/* Makes the listeners match cfg: keeps sockets bound to an address that is
 * still wanted, binds new ones, closes the rest. New sockets are bound before
 * anything is closed, so a failure leaves the old set serving. */
static int apply_listeners(struct daemon *d, const struct config *cfg)
{
    struct fe_tcp_opts to = {.idle_timeout_ms = cfg->tcp_idle_ms, .max_conns = cfg->tcp_max_conns,
                             .max_conns_per_client = cfg->limits.tcp_max_conns_per_client};
    size_t n = cfg->n_listeners;
    struct fe_udp **udp = calloc(n + 1, sizeof(*udp));
    struct fe_tcp **tcp = calloc(n + 1, sizeof(*tcp));
    struct net_addr *laddr = calloc(n + 1, sizeof(*laddr));
    bool *kept = calloc(d->nlisten + 1, sizeof(*kept));
    char a[NET_ADDRSTRLEN];
    int rc = DV_ENOMEM;

    if (!udp || !tcp || !laddr || !kept)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        laddr[i] = l->addr;
        net_addr_str(&l->addr, a, sizeof(a));
        for (size_t j = 0; j < d->nlisten; j++) {
            if (!kept[j] && net_addr_eq(&d->laddr[j], &l->addr) &&
                !!d->udp[j] == l->udp && !!d->tcp[j] == l->tcp) {
                kept[j] = true;
                udp[i] = d->udp[j];
                tcp[i] = d->tcp[j];
                goto next;
            }
        }
        if ((l->udp && !(udp[i] = fe_udp_new(d->loop, &l->addr, d->qe, &laddr[i]))) ||
            (l->tcp && !(tcp[i] = fe_tcp_new(d->loop, &l->addr, d->qe, &to, &laddr[i])))) {
            log_err("cannot listen on %s/%s: %s%s", a, l->udp && !udp[i] ? "udp" : "tcp",
                    strerror(errno),
                    errno == EACCES ? " (a privileged port needs a restart as root)" : "");
            /* undo what this call bound; kept sockets stay with the old set */
            for (size_t k = 0; k <= i; k++) {
                bool old = false;
                for (size_t j = 0; j < d->nlisten; j++)
                    old |= kept[j] && d->udp[j] == udp[k] && d->tcp[j] == tcp[k];
                if (!old) {
                    fe_udp_close(udp[k]);
                    fe_tcp_close(tcp[k]);
                }
            }
            rc = DV_EIO;
            goto out;
        }
        log_info("listening on %s", a);
    next:;
    }
    for (size_t j = 0; j < d->nlisten; j++) {
        if (!kept[j]) {
            net_addr_str(&d->laddr[j], a, sizeof(a));
            log_info("no longer listening on %s", a);
            close_listener(d, j);
        }
    }
    /* kept listeners move to their new slot: their address pointer follows */
    for (size_t i = 0; i < n; i++) {
        if (udp[i])
            fe_udp_set_local(udp[i], &laddr[i]);
        if (tcp[i])
            fe_tcp_set_local(tcp[i], &laddr[i]);
    }
    free(d->udp);
    free(d->tcp);
    free(d->laddr);
    d->udp = udp;
    d->tcp = tcp;
    d->laddr = laddr;
    d->nlisten = n;
    udp = NULL;
    tcp = NULL;
    laddr = NULL;
    rc = 0;
out:
    free(udp);
    free(tcp);
    free(laddr);
    free(kept);
    return rc;
}

/* The file (if any) with the command line on top. NULL when invalid; the
 * problems have been logged (or printed, for --check). */
struct config *daemon_load_config(const struct daemon_cli *cli, bool to_stderr)
{
    struct config *c = NULL;
    char errs[8192];

    if (cli->config_file) {
        if (config_load(cli->config_file, &c, errs, sizeof(errs))) {
            if (to_stderr) {
                fputs(errs, stderr);
            } else {
                for (char *line = strtok(errs, "\n"); line; line = strtok(NULL, "\n"))
                    log_err("%s", line);
            }
            return NULL;
        }
    } else if (!(c = config_new())) {
        return NULL;
    }
    if (cli->n_listen) {
        c->n_listeners = 0;
        for (size_t i = 0; i < cli->n_listen; i++)
            if (config_add_listener(c, cli->listen[i], true, true))
                goto fail;
    }
    if (cli->n_upstreams) {
        /* -u replaces the file's default group with the given upstreams */
        size_t first = c->n_upstreams;
        for (size_t i = 0; i < cli->n_upstreams; i++) {
            int rc = config_add_upstream_spec(c, cli->upstreams[i]);
            if (rc == DV_EINVAL)
                log_err("-u %s: expected URL or URL#IP[,IP...]", cli->upstreams[i]);
            if (rc)
                goto fail;
        }
        if (config_set_default_group(c, first, cli->n_upstreams))
            goto fail;
    }
    if (cli->timeout_ms)
        c->timeout_ms = cli->timeout_ms;
    if (cli->user) {
        free(c->user);
        if (!(c->user = strdup(cli->user)))
            goto fail;
    }
    if (cli->tls_ca) {
        free(c->ca_file);
        if (!(c->ca_file = strdup(cli->tls_ca)))
            goto fail;
    }
    if (cli->verbose)
        c->log_level = DV_LOG_DEBUG;
    if (cli->control) {
        free(c->control);
        if (!(c->control = strdup(cli->control)))
            goto fail;
    }
    if (config_finish(c))
        goto fail;
    /* -u upstreams in order, as given */
    if (cli->n_upstreams && !cli->config_file)
        c->groups[0].strategy = CFG_STRATEGY_FAILOVER;
    return c;
fail:
    config_free(c);
    return NULL;
}

static struct query_opts query_opts_of(const struct config *c)
{
    struct query_opts o = {.timeout_ms = c->timeout_ms,
                           .stale_timeout_ms = c->stale_client_timeout_ms,
                           .limits = &c->limits};
    return o;
}

/* Points the query engine at rt and the cache its config asks for. The
 * cache keeps its answers across reloads; only its limits change. */
static int apply_cache(struct daemon *d, const struct config *cfg, const struct runtime *rt)
{
    struct query_opts qo = query_opts_of(cfg);
    int rc = 0;

    if (!cfg->cache_enabled) {
        query_engine_configure(d->qe, &qo, rt->policy, NULL);
        cache_del(d->cache);
        d->cache = NULL;
        return 0;
    }
    if (d->cache)
        rc = cache_set_limits(d->cache, &cfg->cache);
    else
        rc = cache_new(&d->cache, &cfg->cache);
    if (rc)
        log_err("cache: %s; %s", dv_strerror(rc),
                d->cache ? "keeping the previous limits" : "running without a cache");
    query_engine_configure(d->qe, &qo, rt->policy, d->cache);
    return rc;
}


static void counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    metrics_printf(b, "# HELP dnsveil_%s %s\n# TYPE dnsveil_%s counter\ndnsveil_%s %llu\n", name,
                   help, name, name, (unsigned long long)v);
}

static void gauge(struct buf *b, const char *name, const char *help, double v)
{
    metrics_printf(b, "# HELP dnsveil_%s %s\n# TYPE dnsveil_%s gauge\ndnsveil_%s %.17g\n", name,
                   help, name, name, v);
}

/* ODoH's own counters (upstream/odoh.h). */
static void metrics_odoh(struct buf *b)
{
    struct odoh_stats os;

    odoh_stats_get(&os);
    for (size_t i = 0; i < odoh_stat_ndescs; i++) {
        char name[64];
        snprintf(name, sizeof(name), "odoh_%s_total", odoh_stat_descs[i].name);
        counter(b, name, odoh_stat_descs[i].help, odoh_stat_value(&os, &odoh_stat_descs[i]));
    }
}

/* ---- the status page and the detailed metrics ---- */

static struct expo_view expo_view_of(const struct daemon *d)
{
    return (struct expo_view){
        .ups = d->rt.ups,
        .nups = d->rt.cfg->n_upstreams,
        .cache = d->cache,
        .obs = d->obs,
        .cfg = d->rt.cfg,
        .start_time = d->start_time,
    };
}

static void status_render(void *arg, struct buf *b)
{
    struct daemon *d = arg;
    struct expo_view v = expo_view_of(d);

    status_json(d->status, &v, d->rt.cfg->status.privacy, b);
}

/* What the page and the counters see of cfg: rules, privacy, auth. Runs at
 * start and on every reload, after the runtime for cfg is in place. */
static void apply_status(struct daemon *d, const struct config *cfg)
{
    obs_set_rules(d->obs, cfg->rules, cfg->n_rules);
    obs_set_clients(d->obs, cfg->status.privacy == 0);
    obs_set_apps(d->obs, cfg->status.privacy < 2);
    obs_set_recent(d->obs, cfg->qlog_file || cfg->qlog_syslog);
    for (size_t i = 0; i < d->nlisten; i++) {
        if (d->udp[i])
            obs_listener_touch(d->obs, &d->laddr[i], false);
        if (d->tcp[i])
            obs_listener_touch(d->obs, &d->laddr[i], true);
    }
    if (!d->metrics)
        return;
    metrics_set_page(d->metrics, cfg->status.page ? status_render : NULL, status_page_html,
                     status_page_html_len);
    if (metrics_set_auth(d->metrics, cfg->status.username, cfg->status.password))
        log_err("metrics: out of memory setting basic auth");
}

static int status_start(struct daemon *d)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    d->start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    if (!(d->obs = obs_new(false)) || !(d->status = status_new(d->loop, d->qe)))
        return DV_ENOMEM;
    query_engine_set_obs(d->qe, d->obs);
    return 0;
}

static void metrics_render(void *arg, struct buf *b)
{
    struct daemon *d = arg;
    struct query_stats qs;
    uint64_t now = net_now_ms();

    query_stats(d->qe, &qs);
    for (size_t i = 0; i < query_stat_ndescs; i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s_total", query_stat_descs[i].name);
        counter(b, name, query_stat_descs[i].help, query_stat_value(&qs, &query_stat_descs[i]));
    }
    gauge(b, "inflight", "Questions waiting for an upstream.", (double)query_pending(d->qe));
    if (d->cache) {
        struct cache_stats cs;
        cache_stats(d->cache, &cs);
        gauge(b, "cache_entries", "Answers in the cache.", (double)cs.entries);
        gauge(b, "cache_bytes", "Bytes counted against the cache bound.", (double)cs.bytes);
        gauge(b, "cache_size_bytes", "The cache bound.", (double)cs.size);
        counter(b, "cache_evictions_total", "Entries evicted to stay in the bound.",
                cs.evictions);
    }
    metrics_odoh(b);
    metrics_printf(b, "# HELP dnsveil_upstream_up 1 unless the upstream is backing off.\n"
                      "# TYPE dnsveil_upstream_up gauge\n");
    for (size_t i = 0; i < d->rt.cfg->n_upstreams; i++)
        metrics_printf(b, "dnsveil_upstream_up{upstream=\"%s\"} %d\n", d->rt.ups[i]->name,
                       pool_healthy(d->rt.ups[i], now));
    metrics_printf(b, "# HELP dnsveil_upstream_rtt_ms Smoothed upstream latency.\n"
                      "# TYPE dnsveil_upstream_rtt_ms gauge\n");
    for (size_t i = 0; i < d->rt.cfg->n_upstreams; i++)
        metrics_printf(b, "dnsveil_upstream_rtt_ms{upstream=\"%s\"} %.1f\n",
                       d->rt.ups[i]->name, pool_rtt_ms(d->rt.ups[i]));
    fe_secure_metrics(d->secure, b);
    struct expo_view v = expo_view_of(d);
    expo_render(&v, b);
}

/* Serves the metrics on the configured address, replacing the current
 * endpoint only once the new one is bound. */
static void apply_metrics(struct daemon *d, const struct config *cfg, const struct config *old)
{
    char a[NET_ADDRSTRLEN];

    if (old && old->metrics_enabled == cfg->metrics_enabled &&
        (!cfg->metrics_enabled || net_addr_eq(&old->metrics_addr, &cfg->metrics_addr)))
        return;
    if (!cfg->metrics_enabled) {
        metrics_del(d->metrics);
        d->metrics = NULL;
        return;
    }
    net_addr_str(&cfg->metrics_addr, a, sizeof(a));
    struct metrics *m = metrics_new(d->loop, &cfg->metrics_addr, metrics_render, d);
    if (!m) {
        log_err("cannot serve metrics on %s: %s", a, strerror(errno));
        return;
    }
    metrics_del(d->metrics);
    d->metrics = m;
    log_info("metrics on http://%s/metrics", a);
}

/* ---- the query log ------------------------------------------------------- */

static bool qlog_same(const struct config *a, const struct config *b)
{
    return str_same(a->qlog_file, b->qlog_file) && a->qlog_syslog == b->qlog_syslog &&
           a->qlog_text == b->qlog_text;
}

/* Starts, stops or replaces the query log as cfg asks. A file that cannot
 * be opened leaves the running log as it was. */
static int apply_qlog(struct daemon *d, const struct config *cfg, const struct config *old)
{
    struct qlog_opts o = {.file = cfg->qlog_file, .text = cfg->qlog_text};
    struct qlog *l = NULL;

    if (old && qlog_same(cfg, old))
        return 0;
    if (cfg->qlog_file || cfg->qlog_syslog) {
        if (!(l = qlog_new(d->loop, &o))) {
            log_err("query log %s: %s", cfg->qlog_file ? cfg->qlog_file : "syslog",
                    strerror(errno));
            return DV_EIO;
        }
        log_info("query log: %s (%s)", cfg->qlog_file ? cfg->qlog_file : "syslog",
                 cfg->qlog_text ? "text" : "json");
    }
    query_engine_set_qlog(d->qe, l);
    qlog_del(d->qlog);
    d->qlog = l;
    return 0;
}

void daemon_reload(struct daemon *d)
{
    struct config *cfg;
    struct runtime rt;

    /* for logrotate, even when the new configuration turns out bad */
    if (d->qlog)
        qlog_reopen(d->qlog);

    log_info("SIGHUP: reloading %s", d->cli->config_file ? d->cli->config_file : "(no file)");
    if (!(cfg = daemon_load_config(d->cli, false))) {
        log_err("reload failed; still running the previous configuration");
        return;
    }
    if (strcmp(cfg->user, d->rt.cfg->user))
        log_warn("'user' changed; it takes effect at the next start");
    if (!str_same(cfg->control, d->rt.cfg->control))
        log_warn("'control' changed; it takes effect at the next start");
    if (runtime_build(d, &rt, cfg, &d->rt)) {
        log_err("reload failed; still running the previous configuration");
        return;
    }
    /* first: a certificate or key that does not load changes nothing */
    if (fe_secure_apply(d->secure, rt.cfg)) {
        runtime_free(&rt);
        log_err("reload failed; still running the previous configuration");
        return;
    }
    if (apply_listeners(d, rt.cfg)) {
        runtime_free(&rt);
        log_err("reload failed; still running the previous configuration");
        return;
    }
    apply_cache(d, rt.cfg, &rt);
    portal_inherit(rt.portal, d->rt.portal);
    query_engine_set_portal(d->qe, rt.portal);
    apply_metrics(d, rt.cfg, d->rt.cfg);
    apply_qlog(d, rt.cfg, d->rt.cfg);
    log_init(rt.cfg->log_level, rt.cfg->log_syslog || d->rt.cfg->log_syslog);
    runtime_free(&d->rt);
    d->rt = rt;
    apply_status(d, d->rt.cfg);
    log_info("reloaded: %zu listeners, %zu upstreams, %zu groups, %zu rules",
             rt.cfg->n_listeners, rt.cfg->n_upstreams, rt.cfg->n_groups, rt.cfg->n_rules);
}

/* ---- network changes ---------------------------------------------------- */

/* The network changed (or the machine slept): every upstream checks its
 * connections and warms a new one, before the next query needs it. */
static void netchange_cb(void *arg, unsigned why)
{
    struct daemon *d = arg;
    char reasons[64];

    log_info("network changed (%s): checking %zu upstreams",
             netmon_why_str(why, reasons, sizeof(reasons)), d->rt.cfg->n_upstreams);
    for (size_t i = 0; i < d->rt.cfg->n_upstreams; i++)
        upstream_netchange(d->rt.ups[i]);
}

static void start_netmon(struct daemon *d)
{
    d->netmon = netmon_new(d->loop, netchange_cb, d);
    if (!d->netmon)
        log_warn("cannot watch the network (netlink: %s); after a network change, "
                 "run dnsveil --control SOCK netchange", strerror(errno));
}

/* "netchange": a hotplug or dispatcher script says the network changed. */
static bool control_netchange(struct daemon *d, const char *cmd, char *out, size_t cap)
{
    if (strcmp(cmd, "netchange") != 0)
        return false;
    if (d->netmon)
        netmon_trigger(d->netmon, NETMON_MANUAL);
    else
        netchange_cb(d, NETMON_MANUAL);
    snprintf(out, cap, "ok checking %zu upstreams", d->rt.cfg->n_upstreams);
    log_info("control: netchange");
    return true;
}

/* "portal [SECONDS|off]": every name through the network's resolver for a
 * while, so the user can log in to a captive portal. */
static bool control_portal(struct daemon *d, const char *cmd, char *out, size_t cap)
{
    struct portal *p = d->rt.portal;
    const char *arg = cmd + 6;
    unsigned long secs;
    char *end;

    if (strcmp(cmd, "portal") != 0 && strncmp(cmd, "portal ", 7) != 0)
        return false;
    if (!p) {
        snprintf(out, cap, "error: portal mode is not configured ([portal] resolv_conf)");
        return true;
    }
    if (!*arg) {
        secs = portal_default_seconds(p);
    } else if (strcmp(arg + 1, "off") == 0) {
        secs = 0;
    } else {
        errno = 0;
        secs = strtoul(arg + 1, &end, 10);
        if (errno || *end || end == arg + 1 || secs > 3600) {
            snprintf(out, cap, "error: portal [SECONDS (0-3600)|off]");
            return true;
        }
    }
    secs = portal_open(p, (unsigned)secs, net_now_ms());
    if (secs)
        snprintf(out, cap, "ok portal open for %lu s", secs);
    else
        snprintf(out, cap, "ok portal closed");
    return true;
}

static void control_cb(void *arg, const char *cmd, char *out, size_t cap)
{
    struct daemon *d = arg;
    struct cache_stats cs = {0};
    int n;

    if (strcmp(cmd, "flush") == 0 || strncmp(cmd, "flush ", 6) == 0) {
        uint8_t name[DNS_NAME_MAX];
        int len;
        if (!d->cache) {
            snprintf(out, cap, "error: the cache is disabled");
            return;
        }
        if (cmd[5] == 0) {
            cache_stats(d->cache, &cs);
            cache_flush_all(d->cache);
            snprintf(out, cap, "ok flushed %zu entries", cs.entries);
        } else if ((len = dns_name_from_str(cmd + 6, name)) < 0) {
            snprintf(out, cap, "error: '%s' is not a domain name", cmd + 6);
        } else {
            n = cache_flush_name(d->cache, name, (size_t)len);
            snprintf(out, cap, "ok flushed %d entries", n < 0 ? 0 : n);
        }
        log_info("control: %s: %s", cmd, out);
        return;
    }
    if (strcmp(cmd, "stats") == 0) {
        n = snprintf(out, cap, "ok ");
        format_stats(d, out + n, cap - (size_t)n);
        return;
    }
    if (control_netchange(d, cmd, out, cap) || control_portal(d, cmd, out, cap))
        return;
    snprintf(out, cap,
             "error: unknown command '%.64s' (flush [NAME], stats, netchange, portal [SECONDS])",
             cmd);
}


struct daemon *daemon_new(struct ev_loop *loop, const struct daemon_cli *cli, struct config *cfg)
{
    struct daemon *d = calloc(1, sizeof(*d));

    if (!d) {
        config_free(cfg);
        return NULL;
    }
    d->loop = loop;
    d->cli = cli;
    if (runtime_build(d, &d->rt, cfg, NULL))
        goto fail;
    struct query_opts qo = query_opts_of(d->rt.cfg);
    d->qe = query_engine_new(loop, &qo, d->rt.policy, NULL);
    if (!d->qe || status_start(d))
        goto fail;
    query_engine_set_portal(d->qe, d->rt.portal);
    apply_cache(d, d->rt.cfg, &d->rt);
    if (apply_listeners(d, d->rt.cfg))
        goto fail;
    if (!(d->secure = fe_secure_new(loop, d->qe)) || fe_secure_apply(d->secure, d->rt.cfg))
        goto fail;
    apply_metrics(d, d->rt.cfg, NULL);
    if (d->rt.cfg->metrics_enabled && !d->metrics)
        goto fail;
    if (apply_qlog(d, d->rt.cfg, NULL))
        goto fail;
    apply_status(d, d->rt.cfg);
    if (d->rt.cfg->control &&
        !(d->control = control_new(loop, d->rt.cfg->control, control_cb, d))) {
        log_err("cannot create control socket %s: %s", d->rt.cfg->control, strerror(errno));
        goto fail;
    }
    start_netmon(d);
    return d;
fail:
    daemon_free(d);
    return NULL;
}

const struct config *daemon_config(const struct daemon *d)
{
    return d->rt.cfg;
}

bool daemon_has_cache(const struct daemon *d)
{
    return d->cache != NULL;
}

void daemon_stop_listening(struct daemon *d)
{
    stop_listeners(d);
    fe_secure_del(d->secure);
    d->secure = NULL;
}

size_t daemon_pending(const struct daemon *d)
{
    return query_pending(d->qe);
}

void daemon_free(struct daemon *d)
{
    if (!d)
        return;
    netmon_del(d->netmon);
    metrics_del(d->metrics);
    control_del(d->control);
    stop_listeners(d);
    fe_secure_del(d->secure);
    if (d->qe)
        query_engine_set_obs(d->qe, NULL);
    query_engine_del(d->qe);
    qlog_del(d->qlog); /* after the engine: its last answers are logged */
    status_del(d->status);
    obs_del(d->obs);
    cache_del(d->cache);
    runtime_free(&d->rt);
    free(d->udp);
    free(d->tcp);
    free(d->laddr);
    free(d);
}

/* ---- the service manager's STATUS= line ---- */

void daemon_status(const struct daemon *d, char *out, size_t cap)
{
    struct query_stats qs;
    uint64_t now = net_now_ms();
    size_t up = 0;

    for (size_t i = 0; i < d->rt.cfg->n_upstreams; i++)
        up += pool_healthy(d->rt.ups[i], now);
    query_stats(d->qe, &qs);
    snprintf(out, cap,
             "upstreams up %zu/%zu, queries %llu (cache hits %llu), SERVFAIL %llu, "
             "listeners %zu",
             up, d->rt.cfg->n_upstreams, (unsigned long long)qs.queries,
             (unsigned long long)qs.cache_hits, (unsigned long long)qs.servfail, d->nlisten);
}
