#include "resolve/obs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pwd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "resolve/policy.h"
#include "resolve/qlog.h"
#include "resolve/query.h"

struct obs {
    struct obs_listener l[OBS_MAX_LISTENERS];
    size_t nl;
    struct obs_listener other; /* past the table's end: counted together */
    const struct cfg_rule *rules;
    size_t nrules;
    uint64_t *matches;
    struct topk *names, *clients, *apps;
    uint64_t app_found, app_unknown;
    struct obs_recent *recent; /* ring of OBS_RECENT; NULL when off */
    size_t rhead, rn;
};

struct obs *obs_new(bool clients)
{
    struct obs *o = calloc(1, sizeof(*o));

    if (!o)
        return NULL;
    if (!(o->names = topk_new(OBS_TOPK))) {
        free(o);
        return NULL;
    }
    obs_set_clients(o, clients);
    return o;
}

void obs_del(struct obs *o)
{
    if (!o)
        return;
    topk_del(o->names);
    topk_del(o->clients);
    topk_del(o->apps);
    free(o->recent);
    free(o->matches);
    free(o);
}

void obs_set_rules(struct obs *o, const struct cfg_rule *rules, size_t n)
{
    free(o->matches);
    o->matches = calloc(n ? n : 1, sizeof(*o->matches));
    o->rules = o->matches ? rules : NULL;
    o->nrules = o->matches ? n : 0;
}

void obs_set_clients(struct obs *o, bool on)
{
    if (on && !o->clients)
        o->clients = topk_new(OBS_TOPK);
    if (!on) {
        topk_del(o->clients);
        o->clients = NULL;
    }
}

void obs_set_apps(struct obs *o, bool on)
{
    if (on && !o->apps)
        o->apps = topk_new(OBS_TOPK);
    if (!on) {
        topk_del(o->apps);
        o->apps = NULL;
    }
}

void obs_set_recent(struct obs *o, bool on)
{
    if (on && !o->recent)
        o->recent = calloc(OBS_RECENT, sizeof(*o->recent));
    if (!on) {
        free(o->recent);
        o->recent = NULL;
        o->rhead = o->rn = 0;
    }
}

/* The listener's slot; addresses beyond the table share one. */
static struct obs_listener *slot_of(struct obs *o, const struct net_addr *local, bool tcp)
{
    static const struct net_addr none;
    const struct net_addr *a = local ? local : &none;

    for (size_t i = 0; i < o->nl; i++)
        if (o->l[i].tcp == tcp && net_addr_eq(&o->l[i].addr, a))
            return &o->l[i];
    if (o->nl == OBS_MAX_LISTENERS)
        return &o->other;
    struct obs_listener *l = &o->l[o->nl++];
    l->addr = *a;
    l->tcp = tcp;
    return l;
}

static struct obs_listener *slot(struct obs *o, const struct query_client *c)
{
    return slot_of(o, c->local, c->tcp);
}

void obs_listener_touch(struct obs *o, const struct net_addr *local, bool tcp)
{
    if (o)
        slot_of(o, local, tcp);
}

/* The address without its port: one client, many source ports. */
static void host_str(const struct net_addr *a, char *ip, size_t cap)
{
    const struct sockaddr_storage *ss = &a->ss;
    const void *bin = ss->ss_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;

    if (!inet_ntop(ss->ss_family, bin, ip, (socklen_t)cap))
        snprintf(ip, cap, "?");
}

void obs_query(struct obs *o, const struct query_client *c, const char *name, size_t len)
{
    char ip[NET_ADDRSTRLEN];

    if (!o)
        return;
    slot(o, c)->queries++;
    topk_add(o->names, name, len);
    if (o->clients) {
        host_str(&c->peer, ip, sizeof(ip));
        topk_add(o->clients, ip, strlen(ip));
    }
}

void obs_reply(struct obs *o, const struct query_client *c, const uint8_t *msg, size_t len)
{
    if (!o || len < 4)
        return;
    struct obs_listener *l = slot(o, c);
    l->answers++;
    l->rcode[msg[3] & 15]++;
    if (msg[2] & 0x02)
        l->truncated++;
}

void obs_drop(struct obs *o, const struct query_client *c)
{
    if (o)
        slot(o, c)->dropped++;
}

void obs_rule(struct obs *o, const struct cfg_rule *r)
{
    if (!o || !r || !o->rules || r < o->rules || r >= o->rules + o->nrules)
        return;
    o->matches[r - o->rules]++;
}

void obs_bound(struct obs *o, const struct query_client *c, enum obs_bound why)
{
    if (!o)
        return;
    struct obs_listener *l = slot(o, c);
    switch (why) {
    case OBS_REFUSED_ACL: l->refused_acl++; break;
    case OBS_REFUSED_RATE: l->refused_rate++; break;
    case OBS_OVERLOADED: l->overloaded++; break;
    }
}

/* An application's top-k key: "uid US comm US cgroup", the unit separator
 * replaced inside the parts so the key splits back the same; the cgroup
 * last, so a long path is what gets cut. */
enum { APP_SEP = 0x1f };

static size_t app_part(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; s && *s && n + 1 < cap; s++)
        out[n++] = *s == APP_SEP ? '?' : *s;
    out[n] = 0;
    return n;
}

void obs_app(struct obs *o, const struct policy_client *pc)
{
    char key[TOPK_KEY_MAX];

    if (!o)
        return;
    if (!pc->app_ok) {
        o->app_unknown++;
        return;
    }
    o->app_found++;
    if (!o->apps)
        return;
    int n = snprintf(key, sizeof(key), "%u%c", pc->uid, APP_SEP);
    size_t len = (size_t)n;
    len += app_part(key + len, sizeof(key) - len - 1, pc->comm);
    key[len++] = APP_SEP;
    len += app_part(key + len, sizeof(key) - len, pc->cgroup);
    topk_add(o->apps, key, len);
}

static void copy_str(char *out, size_t cap, const char *s)
{
    snprintf(out, cap, "%s", s ? s : "");
}

void obs_recent(struct obs *o, const struct qlog_entry *e)
{
    struct timespec ts;

    if (!o || !o->recent)
        return;
    struct obs_recent *r = &o->recent[o->rhead];
    o->rhead = (o->rhead + 1) % OBS_RECENT;
    if (o->rn < OBS_RECENT)
        o->rn++;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->time_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    host_str(e->client, r->client, sizeof(r->client));
    r->tcp = e->tcp;
    r->name_len = (uint8_t)(e->name_len < sizeof(r->name) ? e->name_len : sizeof(r->name));
    memcpy(r->name, e->name, r->name_len);
    r->qtype = e->qtype;
    r->rcode = e->rcode;
    r->latency_us = e->latency_us;
    r->app_known = e->app_known;
    r->uid = e->uid;
    copy_str(r->comm, sizeof(r->comm), e->app_known ? e->comm : NULL);
    copy_str(r->source, sizeof(r->source), e->source);
    copy_str(r->transport, sizeof(r->transport), e->transport);
    copy_str(r->upstream, sizeof(r->upstream), e->upstream);
}

size_t obs_listeners(const struct obs *o, const struct obs_listener **out)
{
    *out = o->l;
    return o->nl;
}

uint64_t obs_rule_matches(const struct obs *o, size_t i)
{
    return i < o->nrules ? o->matches[i] : 0;
}

size_t obs_top_names(const struct obs *o, struct topk_item *out, size_t n)
{
    return topk_list(o->names, out, n);
}

size_t obs_top_clients(const struct obs *o, struct topk_item *out, size_t n)
{
    return o->clients ? topk_list(o->clients, out, n) : 0;
}

size_t obs_top_apps(const struct obs *o, struct obs_app *out, size_t n)
{
    struct topk_item it[OBS_TOPK];

    if (!o->apps)
        return 0;
    n = topk_list(o->apps, it, n < OBS_TOPK ? n : OBS_TOPK);
    for (size_t i = 0; i < n; i++) {
        const char *k = it[i].key, *s1 = strchr(k, APP_SEP);
        const char *s2 = s1 ? strchr(s1 + 1, APP_SEP) : NULL;
        out[i].uid = (uint32_t)strtoul(k, NULL, 10);
        out[i].count = it[i].count;
        snprintf(out[i].comm, sizeof(out[i].comm), "%.*s", s1 && s2 ? (int)(s2 - s1 - 1) : 0,
                 s1 ? s1 + 1 : "");
        copy_str(out[i].cgroup, sizeof(out[i].cgroup), s2 ? s2 + 1 : NULL);
    }
    return n;
}

void obs_user_name(uint32_t uid, char *out, size_t cap)
{
    struct passwd pw, *res = NULL;
    char buf[1024];

    if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &res) || !res)
        res = NULL;
    snprintf(out, cap, "%s", res ? res->pw_name : "");
}

void obs_app_totals(const struct obs *o, uint64_t *found, uint64_t *unknown)
{
    *found = o->app_found;
    *unknown = o->app_unknown;
}

size_t obs_recent_list(const struct obs *o, struct obs_recent *out, size_t n)
{
    size_t m = o->recent ? (o->rn < n ? o->rn : n) : 0;

    for (size_t i = 0; i < m; i++)
        out[i] = o->recent[(o->rhead + OBS_RECENT - 1 - i) % OBS_RECENT];
    return m;
}

size_t obs_memory(const struct obs *o)
{
    return topk_memory(o->names) + topk_memory(o->clients) + topk_memory(o->apps) +
           (o->recent ? OBS_RECENT * sizeof(*o->recent) : 0);
}
