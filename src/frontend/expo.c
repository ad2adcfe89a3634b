#include "frontend/expo.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef DV_HAVE_TLS
#include <ngtcp2/ngtcp2.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#endif
#ifdef DV_HAVE_NGHTTP2
#include <nghttp2/nghttp2.h>
#endif

#include "frontend/metrics.h"
#include "resolve/cache.h"
#include "resolve/obs.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

static const char *const rcode_names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                          "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                          "NXRRSET", "NOTAUTH", "NOTZONE"};

const char *expo_rcode_name(unsigned rcode)
{
    return rcode < sizeof(rcode_names) / sizeof(rcode_names[0]) ? rcode_names[rcode] : NULL;
}

static const char *const action_names[] = {"forward", "refuse", "nxdomain", "answer"};

/* A label value with \, " and newline escaped, as the format requires. */
static void label(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            metrics_printf(b, "\\%c", *s);
        else if (*s == '\n')
            metrics_printf(b, "\\n");
        else
            metrics_printf(b, "%c", *s);
    }
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
    metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{upstream="..",transport=".."[,extra]} */
static void up_series(struct buf *b, const char *name, const struct upstream *u,
                      const char *extra)
{
    metrics_printf(b, "%s{upstream=\"", name);
    label(b, u->name);
    metrics_printf(b, "\",transport=\"%s\"%s%s}", u->ops->name, extra ? "," : "",
                   extra ? extra : "");
}

static void up_counter(struct buf *b, const char *name, const char *help,
                       const struct expo_view *v, size_t off)
{
    head(b, name, "counter", help);
    for (size_t i = 0; i < v->nups; i++) {
        const struct ustats *s = &v->ups[i]->stats;
        up_series(b, name, v->ups[i], NULL);
        metrics_printf(b, " %llu\n", (unsigned long long)*(const uint64_t *)((const char *)s + off));
    }
}

static void codes(struct buf *b, const struct upstream *u, const char *name,
                  const struct ustats_code *t, uint64_t other, bool hex)
{
    char extra[48];

    for (size_t k = 0; k < USTATS_NCODES && t[k].n; k++) {
        if (hex)
            snprintf(extra, sizeof(extra), "code=\"0x%llx\"", (unsigned long long)t[k].code);
        else
            snprintf(extra, sizeof(extra), "code=\"%llu\"", (unsigned long long)t[k].code);
        up_series(b, name, u, extra);
        metrics_printf(b, " %llu\n", (unsigned long long)t[k].n);
    }
    if (other) {
        up_series(b, name, u, "code=\"other\"");
        metrics_printf(b, " %llu\n", (unsigned long long)other);
    }
}

/* DoQ connections moved to a new local address after a network change,
 * by whether the new path validated (failed ones were reconnected). */
static void render_migrations(const struct expo_view *v, struct buf *b)
{
    head(b, "dnsveil_upstream_migrations_total", "counter",
         "QUIC connection migrations after a local address change, by result (ok, failed).");
    for (size_t i = 0; i < v->nups; i++) {
        const struct ustats *s = &v->ups[i]->stats;
        up_series(b, "dnsveil_upstream_migrations_total", v->ups[i], "result=\"ok\"");
        metrics_printf(b, " %llu\n", (unsigned long long)s->migrations_ok);
        up_series(b, "dnsveil_upstream_migrations_total", v->ups[i], "result=\"failed\"");
        metrics_printf(b, " %llu\n", (unsigned long long)s->migrations_failed);
    }
}

static void render_upstreams(const struct expo_view *v, struct buf *b)
{
    uint64_t now = net_now_ms();
    char extra[64];

    up_counter(b, "dnsveil_upstream_queries_total", "Queries sent to the upstream.", v,
               offsetof(struct ustats, sent));

    head(b, "dnsveil_upstream_answers_total", "counter", "Answers from the upstream by rcode.");
    for (size_t i = 0; i < v->nups; i++) {
        const struct ustats *s = &v->ups[i]->stats;
        for (unsigned r = 0; r < 16; r++) {
            const char *n = expo_rcode_name(r);
            if (r > 5 && !s->rcode[r])
                continue; /* the common ones always, others once seen */
            if (n)
                snprintf(extra, sizeof(extra), "rcode=\"%s\"", n);
            else
                snprintf(extra, sizeof(extra), "rcode=\"%u\"", r);
            up_series(b, "dnsveil_upstream_answers_total", v->ups[i], extra);
            metrics_printf(b, " %llu\n", (unsigned long long)s->rcode[r]);
        }
    }

    head(b, "dnsveil_upstream_failures_total", "counter",
         "Attempts without an answer, by kind (timeout, connection, tls, protocol, "
         "http_status, server_error, other).");
    for (size_t i = 0; i < v->nups; i++)
        for (size_t k = 0; k < USTATS_F_N; k++) {
            snprintf(extra, sizeof(extra), "kind=\"%s\"", ustats_fail_names[k]);
            up_series(b, "dnsveil_upstream_failures_total", v->ups[i], extra);
            metrics_printf(b, " %llu\n", (unsigned long long)v->ups[i]->stats.fail[k]);
        }

    head(b, "dnsveil_upstream_http_errors_total", "counter",
         "DoH responses with a status other than 200, by status.");
    for (size_t i = 0; i < v->nups; i++)
        codes(b, v->ups[i], "dnsveil_upstream_http_errors_total", v->ups[i]->stats.http,
              v->ups[i]->stats.http_other, false);
    head(b, "dnsveil_upstream_doq_errors_total", "counter",
         "DoQ application error codes from the server (stream resets and closes).");
    for (size_t i = 0; i < v->nups; i++)
        codes(b, v->ups[i], "dnsveil_upstream_doq_errors_total", v->ups[i]->stats.doq,
              v->ups[i]->stats.doq_other, true);

    head(b, "dnsveil_upstream_latency_seconds", "histogram",
         "Time from sending a query to its answer.");
    for (size_t i = 0; i < v->nups; i++) {
        const struct ustats *s = &v->ups[i]->stats;
        uint64_t cum = 0;
        for (size_t k = 0; k <= USTATS_NBUCKETS; k++) {
            cum += s->lat[k];
            if (k < USTATS_NBUCKETS)
                snprintf(extra, sizeof(extra), "le=\"%g\"", ustats_bounds[k]);
            else
                snprintf(extra, sizeof(extra), "le=\"+Inf\"");
            up_series(b, "dnsveil_upstream_latency_seconds_bucket", v->ups[i], extra);
            metrics_printf(b, " %llu\n", (unsigned long long)cum);
        }
        up_series(b, "dnsveil_upstream_latency_seconds_sum", v->ups[i], NULL);
        metrics_printf(b, " %.9g\n", s->lat_sum);
        up_series(b, "dnsveil_upstream_latency_seconds_count", v->ups[i], NULL);
        metrics_printf(b, " %llu\n", (unsigned long long)s->lat_count);
    }

    head(b, "dnsveil_upstream_healthy", "gauge",
         "1 while the upstream is in use, 0 while it backs off after failures.");
    for (size_t i = 0; i < v->nups; i++) {
        up_series(b, "dnsveil_upstream_healthy", v->ups[i], NULL);
        metrics_printf(b, " %d\n", pool_healthy(v->ups[i], now));
    }
    head(b, "dnsveil_upstream_consecutive_failures", "gauge",
         "Failed attempts since the last answer.");
    for (size_t i = 0; i < v->nups; i++) {
        up_series(b, "dnsveil_upstream_consecutive_failures", v->ups[i], NULL);
        metrics_printf(b, " %u\n", pool_fails(v->ups[i]));
    }
    head(b, "dnsveil_upstream_rtt_seconds", "gauge",
         "Smoothed latency (EWMA; failures push it up) the strategies choose by.");
    for (size_t i = 0; i < v->nups; i++) {
        up_series(b, "dnsveil_upstream_rtt_seconds", v->ups[i], NULL);
        metrics_printf(b, " %.6f\n", pool_rtt_ms(v->ups[i]) / 1000.0);
    }
    head(b, "dnsveil_upstream_connections", "gauge", "Open connections (DoT, DoH, DoQ).");
    for (size_t i = 0; i < v->nups; i++) {
        const struct ustats *s = &v->ups[i]->stats;
        up_series(b, "dnsveil_upstream_connections", v->ups[i], NULL);
        metrics_printf(b, " %llu\n", (unsigned long long)(s->conns_opened - s->conns_closed));
    }
    up_counter(b, "dnsveil_upstream_connections_opened_total", "Connections started.", v,
               offsetof(struct ustats, conns_opened));

    head(b, "dnsveil_upstream_handshakes_total", "counter",
         "Completed TLS/QUIC handshakes by kind (full, resumed); 0-RTT offers by outcome "
         "(early_accepted, early_rejected).");
    for (size_t i = 0; i < v->nups; i++)
        for (size_t k = 0; k < USTATS_HS_N; k++) {
            snprintf(extra, sizeof(extra), "kind=\"%s\"", ustats_hs_names[k]);
            up_series(b, "dnsveil_upstream_handshakes_total", v->ups[i], extra);
            metrics_printf(b, " %llu\n", (unsigned long long)v->ups[i]->stats.hs[k]);
        }
    up_counter(b, "dnsveil_upstream_sent_bytes_total",
               "Bytes sent: UDP/TCP payload, TLS plaintext for DoT/DoH, QUIC datagrams for DoQ.",
               v, offsetof(struct ustats, bytes_out));
    up_counter(b, "dnsveil_upstream_received_bytes_total",
               "Bytes received, counted as dnsveil_upstream_sent_bytes_total.", v,
               offsetof(struct ustats, bytes_in));
    render_migrations(v, b);
}

static void listener_series(struct buf *b, const char *name, const struct obs_listener *l,
                            const char *extra)
{
    char a[NET_ADDRSTRLEN];

    net_addr_str(&l->addr, a, sizeof(a));
    metrics_printf(b, "%s{listener=\"%s\",transport=\"%s\"%s%s}", name, a, l->tcp ? "tcp" : "udp",
                   extra ? "," : "", extra ? extra : "");
}

static void render_listeners(const struct expo_view *v, struct buf *b)
{
    const struct obs_listener *l;
    size_t n = obs_listeners(v->obs, &l);
    char extra[48];
    static const struct {
        const char *name, *help;
        size_t off;
    } plain[] = {
        {"dnsveil_listener_queries_total", "Client queries by listener and transport.",
         offsetof(struct obs_listener, queries)},
        {"dnsveil_listener_truncated_total", "Answers sent truncated (TC) to fit.",
         offsetof(struct obs_listener, truncated)},
        {"dnsveil_listener_dropped_total",
         "Messages dropped as not DNS queries (also oversized datagrams, empty TCP frames).",
         offsetof(struct obs_listener, dropped)},
        {"dnsveil_listener_overloaded_total",
         "Queries answered SERVFAIL at once: too many in flight (global or per client).",
         offsetof(struct obs_listener, overloaded)},
    };

    for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]); k++) {
        head(b, plain[k].name, "counter", plain[k].help);
        for (size_t i = 0; i < n; i++) {
            listener_series(b, plain[k].name, &l[i], NULL);
            metrics_printf(b, " %llu\n",
                           (unsigned long long)*(const uint64_t *)((const char *)&l[i] +
                                                                   plain[k].off));
        }
    }
    head(b, "dnsveil_listener_answers_total", "counter", "Replies to clients by rcode.");
    for (size_t i = 0; i < n; i++)
        for (unsigned r = 0; r < 16; r++) {
            const char *rn = expo_rcode_name(r);
            if (r > 5 && !l[i].rcode[r])
                continue;
            if (rn)
                snprintf(extra, sizeof(extra), "rcode=\"%s\"", rn);
            else
                snprintf(extra, sizeof(extra), "rcode=\"%u\"", r);
            listener_series(b, "dnsveil_listener_answers_total", &l[i], extra);
            metrics_printf(b, " %llu\n", (unsigned long long)l[i].rcode[r]);
        }

    head(b, "dnsveil_listener_refused_total", "counter",
         "Queries stopped by a client bound: reason acl (outside allow; REFUSED) or "
         "ratelimit (over the rate; dropped on UDP, REFUSED on TCP).");
    for (size_t i = 0; i < n; i++) {
        listener_series(b, "dnsveil_listener_refused_total", &l[i], "reason=\"acl\"");
        metrics_printf(b, " %llu\n", (unsigned long long)l[i].refused_acl);
        listener_series(b, "dnsveil_listener_refused_total", &l[i], "reason=\"ratelimit\"");
        metrics_printf(b, " %llu\n", (unsigned long long)l[i].refused_rate);
    }

    head(b, "dnsveil_rule_matches_total", "counter",
         "Queries each rule decided (rule = its place in the file, from 1; restarts on reload).");
    for (size_t i = 0; i < v->cfg->n_rules; i++) {
        const struct cfg_rule *r = &v->cfg->rules[i];
        metrics_printf(b, "dnsveil_rule_matches_total{rule=\"%zu\",line=\"%d\",action=\"%s\"} %llu\n",
                       i + 1, r->line,
                       (size_t)r->action < sizeof(action_names) / sizeof(action_names[0])
                           ? action_names[r->action]
                           : "other",
                       (unsigned long long)obs_rule_matches(v->obs, i));
    }
}

/* The most active applications (privacy 0 and 1, while a rule looks
 * senders up); past OBS_TOPK of them the counts are upper bounds. */
static void render_apps(const struct expo_view *v, struct buf *b)
{
    struct obs_app a[OBS_TOPK];
    char user[64];
    size_t n = obs_top_apps(v->obs, a, OBS_TOPK);

    if (!n)
        return;
    head(b, "dnsveil_app_queries_total", "counter",
         "Queries by the sending application (user, comm and cgroup when a rule looked "
         "them up; only the most active are kept).");
    for (size_t i = 0; i < n; i++) {
        obs_user_name(a[i].uid, user, sizeof(user));
        metrics_printf(b, "dnsveil_app_queries_total{uid=\"%u\",user=\"", a[i].uid);
        label(b, user);
        metrics_printf(b, "\",comm=\"");
        label(b, a[i].comm);
        metrics_printf(b, "\",cgroup=\"");
        label(b, a[i].cgroup);
        metrics_printf(b, "\"} %llu\n", (unsigned long long)a[i].count);
    }
}

static void render_cache(const struct expo_view *v, struct buf *b)
{
    struct cache_stats cs;
    static const struct {
        const char *name, *help;
        size_t off;
    } c[] = {
        {"dnsveil_cache_lookup_hits_total", "Cache lookups that found a fresh answer.",
         offsetof(struct cache_stats, hits)},
        {"dnsveil_cache_misses_total", "Cache lookups that found nothing usable.",
         offsetof(struct cache_stats, misses)},
        {"dnsveil_cache_stale_served_total", "Expired answers served (RFC 8767).",
         offsetof(struct cache_stats, stale_served)},
        {"dnsveil_cache_prefetches_total", "Hits that started a background refresh.",
         offsetof(struct cache_stats, prefetches)},
        {"dnsveil_cache_inserts_total", "Answers stored.", offsetof(struct cache_stats, inserts)},
        {"dnsveil_cache_expired_total", "Entries removed past any use.",
         offsetof(struct cache_stats, expired)},
    };

    cache_stats(v->cache, &cs);
    for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
        head(b, c[k].name, "counter", c[k].help);
        metrics_printf(b, "%s %llu\n", c[k].name,
                       (unsigned long long)*(const uint64_t *)((const char *)&cs + c[k].off));
    }
}

long expo_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;

    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

long long expo_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long size, rss = -1;

    if (!f)
        return -1;
    if (fscanf(f, "%lld %lld", &size, &rss) != 2)
        rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

const char *expo_wolfssl_version(void)
{
#ifdef DV_HAVE_TLS
    return LIBWOLFSSL_VERSION_STRING;
#else
    return "none";
#endif
}

const char *expo_ngtcp2_version(void)
{
#ifdef DV_HAVE_TLS
    const ngtcp2_info *i = ngtcp2_version(0);
    return i ? i->version_str : "unknown";
#else
    return "none";
#endif
}

const char *expo_nghttp2_version(void)
{
#ifdef DV_HAVE_NGHTTP2
    const nghttp2_info *i = nghttp2_version(0);
    return i ? i->version_str : "unknown";
#else
    return "none";
#endif
}

static void render_process(const struct expo_view *v, struct buf *b)
{
    long long rss = expo_rss_bytes();
    long fds = expo_open_fds();

    if (rss >= 0) {
        head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        metrics_printf(b, "process_resident_memory_bytes %lld\n", rss);
    }
    if (fds >= 0) {
        head(b, "process_open_fds", "gauge", "Open file descriptors.");
        metrics_printf(b, "process_open_fds %ld\n", fds);
    }
    head(b, "process_start_time_seconds", "gauge", "Start of the process, Unix seconds.");
    metrics_printf(b, "process_start_time_seconds %.3f\n", v->start_time);
    head(b, "dnsveil_build_info", "gauge", "Version of dnsveil and of its libraries.");
    metrics_printf(b,
                   "dnsveil_build_info{version=\"%s\",wolfssl=\"%s\",ngtcp2=\"%s\",nghttp2=\"%s\"} 1\n",
                   DV_VERSION, expo_wolfssl_version(), expo_ngtcp2_version(),
                   expo_nghttp2_version());
}

void expo_render(const struct expo_view *v, struct buf *b)
{
    render_upstreams(v, b);
    if (v->obs) {
        render_listeners(v, b);
        render_apps(v, b);
    }
    if (v->cache)
        render_cache(v, b);
    render_process(v, b);
}
