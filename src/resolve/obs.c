#include "resolve/obs.h"

#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "resolve/query.h"

struct obs {
    struct obs_listener l[OBS_MAX_LISTENERS];
    size_t nl;
    struct obs_listener other; /* past the table's end: counted together */
    const struct cfg_rule *rules;
    size_t nrules;
    uint64_t *matches;
    struct topk *names, *clients;
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

void obs_query(struct obs *o, const struct query_client *c, const char *name, size_t len)
{
    char ip[NET_ADDRSTRLEN];

    if (!o)
        return;
    slot(o, c)->queries++;
    topk_add(o->names, name, len);
    if (o->clients) {
        /* the address without its port: one client, many source ports */
        const struct sockaddr_storage *ss = &c->peer.ss;
        const void *bin = ss->ss_family == AF_INET6
                              ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
        if (!inet_ntop(ss->ss_family, bin, ip, sizeof(ip)))
            strcpy(ip, "?");
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

size_t obs_memory(const struct obs *o)
{
    return topk_memory(o->names) + topk_memory(o->clients);
}
