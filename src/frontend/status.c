#include "frontend/status.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns/dns.h"
#include "frontend/metrics.h"
#include "resolve/cache.h"
#include "resolve/obs.h"
#include "resolve/qlog.h"
#include "resolve/query.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

struct status {
    struct ev_loop *loop;
    const struct query_engine *qe;
    ev_timer timer;
    uint64_t last_queries, last_hits;
    /* ring of samples; -1 = no queries in that interval (no ratio) */
    float qps[STATUS_HISTORY], ratio[STATUS_HISTORY];
    size_t head, n;
};

static void sample_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct status *s = w->data;
    struct query_stats qs;

    query_stats(s->qe, &qs);
    uint64_t dq = qs.queries - s->last_queries, dh = qs.cache_hits - s->last_hits;
    s->qps[s->head] = (float)dq / STATUS_SAMPLE_S;
    s->ratio[s->head] = dq ? (float)dh / (float)dq : -1.f;
    s->head = (s->head + 1) % STATUS_HISTORY;
    if (s->n < STATUS_HISTORY)
        s->n++;
    s->last_queries = qs.queries;
    s->last_hits = qs.cache_hits;
}

struct status *status_new(struct ev_loop *loop, const struct query_engine *qe)
{
    struct status *s = calloc(1, sizeof(*s));
    struct query_stats qs;

    if (!s)
        return NULL;
    s->loop = loop;
    s->qe = qe;
    query_stats(qe, &qs);
    s->last_queries = qs.queries;
    s->last_hits = qs.cache_hits;
    ev_timer_init(&s->timer, sample_cb, STATUS_SAMPLE_S, STATUS_SAMPLE_S);
    s->timer.data = s;
    ev_timer_start(loop, &s->timer);
    /* sampling alone must not keep the loop alive at shutdown */
    ev_unref(loop);
    return s;
}

void status_del(struct status *s)
{
    if (!s)
        return;
    ev_ref(s->loop);
    ev_timer_stop(s->loop, &s->timer);
    free(s);
}

void status_json_str(struct buf *b, const char *s, size_t len)
{
    metrics_printf(b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            metrics_printf(b, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '&')
            metrics_printf(b, "\\u%04x", c);
        else
            metrics_printf(b, "%c", c);
    }
    metrics_printf(b, "\"");
}

static void json_cstr(struct buf *b, const char *s)
{
    status_json_str(b, s, strlen(s));
}

static void series(struct buf *b, const char *key, const float *ring, const struct status *s)
{
    metrics_printf(b, "\"%s\":[", key);
    for (size_t i = 0; i < s->n; i++) {
        float v = ring[(s->head + STATUS_HISTORY - s->n + i) % STATUS_HISTORY];
        if (v < 0)
            metrics_printf(b, "%snull", i ? "," : "");
        else
            metrics_printf(b, "%s%.3f", i ? "," : "", (double)v);
    }
    metrics_printf(b, "]");
}

static void upstreams(const struct expo_view *v, struct buf *b)
{
    uint64_t now = net_now_ms();

    metrics_printf(b, "\"upstreams\":[");
    for (size_t i = 0; i < v->nups; i++) {
        const struct upstream *u = v->ups[i];
        const struct ustats *st = &u->stats;
        uint64_t answers = 0;
        for (size_t r = 0; r < 16; r++)
            answers += st->rcode[r];
        metrics_printf(b, "%s{\"name\":", i ? "," : "");
        json_cstr(b, u->name);
        metrics_printf(b,
                       ",\"transport\":\"%s\",\"state\":\"%s\",\"consecutive_failures\":%u,"
                       "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"rtt_ms\":%.2f,\"sent\":%llu,"
                       "\"answers\":%llu,\"failures\":%llu,\"connections\":%llu,"
                       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":{",
                       u->ops->name, pool_healthy(u, now) ? "up" : "backoff", pool_fails(u),
                       ustats_quantile(st, 0.5) * 1000, ustats_quantile(st, 0.99) * 1000,
                       pool_rtt_ms(u), (unsigned long long)st->sent, (unsigned long long)answers,
                       (unsigned long long)ustats_failures(st),
                       (unsigned long long)(st->conns_opened - st->conns_closed),
                       (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out);
        for (size_t k = 0; k < USTATS_F_N; k++)
            metrics_printf(b, "%s\"%s\":%llu", k ? "," : "", ustats_fail_names[k],
                           (unsigned long long)st->fail[k]);
        metrics_printf(b, "}}");
    }
    metrics_printf(b, "]");
}

static void top(struct buf *b, const char *key, const char *field, struct topk_item *it,
                size_t n)
{
    metrics_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        metrics_printf(b, "%s{\"%s\":", i ? "," : "", field);
        json_cstr(b, it[i].key);
        metrics_printf(b, ",\"count\":%llu}", (unsigned long long)it[i].count);
    }
    metrics_printf(b, "]");
}

/* The most active applications (privacy 0 and 1) and, always, how many
 * queries had their sender looked up, found or not. */
static void apps(struct buf *b, const struct obs *o, unsigned privacy)
{
    struct obs_app a[STATUS_TOP];
    char user[64];
    uint64_t found, unknown;
    size_t n = obs_top_apps(o, a, STATUS_TOP);

    obs_app_totals(o, &found, &unknown);
    metrics_printf(b, ",\"apps\":{\"found\":%llu,\"unknown\":%llu}",
                   (unsigned long long)found, (unsigned long long)unknown);
    if (privacy >= 2 || !(found || unknown))
        return;
    metrics_printf(b, ",\"top_apps\":[");
    for (size_t i = 0; i < n; i++) {
        obs_user_name(a[i].uid, user, sizeof(user));
        metrics_printf(b, "%s{\"uid\":%u,\"user\":", i ? "," : "", a[i].uid);
        json_cstr(b, user);
        metrics_printf(b, ",\"comm\":");
        json_cstr(b, a[i].comm);
        metrics_printf(b, ",\"cgroup\":");
        json_cstr(b, a[i].cgroup);
        metrics_printf(b, ",\"count\":%llu}", (unsigned long long)a[i].count);
    }
    metrics_printf(b, "]");
}

/* The last queries of the query log, the newest first: without the client
 * at privacy 1 (the caller shows none at 2). */
static void recent(struct buf *b, const struct obs *o, unsigned privacy)
{
    struct obs_recent r[OBS_RECENT];
    char name[DNS_NAME_MAX * 4 + 1], tb[16], rb[16], user[64];
    size_t n = obs_recent_list(o, r, OBS_RECENT);
    uint64_t user_uid = UINT64_MAX;

    metrics_printf(b, ",\"recent\":[");
    for (size_t i = 0; i < n; i++) {
        size_t len = dns_name_to_str(r[i].name, r[i].name_len, name, sizeof(name));
        metrics_printf(b, "%s{\"time_ms\":%llu,\"name\":", i ? "," : "",
                       (unsigned long long)r[i].time_ms);
        status_json_str(b, name, len);
        metrics_printf(b, ",\"type\":\"%s\",\"rcode\":\"%s\",\"transport\":\"%s\","
                          "\"latency_ms\":%.2f,\"source\":",
                       qlog_type_name(r[i].qtype, tb, sizeof(tb)),
                       qlog_rcode_name(r[i].rcode, rb, sizeof(rb)), r[i].tcp ? "tcp" : "udp",
                       (double)r[i].latency_us / 1000);
        json_cstr(b, r[i].source);
        metrics_printf(b, ",\"upstream\":");
        json_cstr(b, r[i].upstream);
        if (privacy == 0) {
            metrics_printf(b, ",\"client\":");
            json_cstr(b, r[i].client);
        }
        if (r[i].app_known) {
            if (r[i].uid != user_uid) /* a password database read per user, not per row */
                obs_user_name(user_uid = r[i].uid, user, sizeof(user));
            metrics_printf(b, ",\"uid\":%u,\"user\":", r[i].uid);
            json_cstr(b, user);
            metrics_printf(b, ",\"comm\":");
            json_cstr(b, r[i].comm);
        }
        metrics_printf(b, "}");
    }
    metrics_printf(b, "]");
}

void status_json(const struct status *s, const struct expo_view *v, unsigned privacy,
                 struct buf *b)
{
    struct query_stats qs;
    struct timespec ts;
    struct topk_item it[STATUS_TOP];

    query_stats(s->qe, &qs);
    clock_gettime(CLOCK_REALTIME, &ts);
    metrics_printf(b, "{\"version\":\"%s\",\"privacy\":%u,\"uptime_s\":%.0f,", DV_VERSION,
                   privacy, (double)ts.tv_sec - v->start_time);
    metrics_printf(b,
                   "\"totals\":{\"queries\":%llu,\"answered\":%llu,\"cache_hits\":%llu,"
                   "\"servfail\":%llu,\"local\":%llu,\"upstream_sent\":%llu,"
                   "\"upstream_failed\":%llu,\"inflight\":%zu},",
                   (unsigned long long)qs.queries, (unsigned long long)qs.answered,
                   (unsigned long long)qs.cache_hits, (unsigned long long)qs.servfail,
                   (unsigned long long)qs.local, (unsigned long long)qs.upstream_sent,
                   (unsigned long long)qs.upstream_failed, query_pending(s->qe));
    if (v->cache) {
        struct cache_stats cs;
        cache_stats(v->cache, &cs);
        metrics_printf(b, "\"cache\":{\"entries\":%zu,\"bytes\":%zu,\"size\":%zu},", cs.entries,
                       cs.bytes, cs.size);
    } else {
        metrics_printf(b, "\"cache\":null,");
    }
    metrics_printf(b, "\"history\":{\"interval_s\":%d,", STATUS_SAMPLE_S);
    series(b, "qps", s->qps, s);
    metrics_printf(b, ",");
    series(b, "cache_hit_ratio", s->ratio, s);
    metrics_printf(b, "},");
    upstreams(v, b);
    if (privacy < 2 && v->obs)
        top(b, "top_names", "name", it, obs_top_names(v->obs, it, STATUS_TOP));
    if (privacy < 1 && v->obs)
        top(b, "top_clients", "client", it, obs_top_clients(v->obs, it, STATUS_TOP));
    if (v->obs)
        apps(b, v->obs, privacy);
    if (privacy < 2 && v->obs && (v->cfg->qlog_file || v->cfg->qlog_syslog))
        recent(b, v->obs, privacy);
    metrics_printf(b, "}\n");
}
