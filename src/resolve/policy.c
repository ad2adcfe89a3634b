#include "resolve/policy.h"

#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "resolve/appid.h"
#include "resolve/domainset.h"
#include "resolve/hosts.h"
#include "upstream/pool.h"

enum { SPECIAL_ZONES = 32 };

struct policy {
    const struct config *cfg;
    struct pool **pools;
    size_t npools;
    unsigned refs;
    struct cfg_rule localhost; /* answers 127.0.0.1 / ::1 */
    struct net_addr loopback[2];
    struct cfg_rule undelegated; /* NXDOMAIN */
    uint8_t special[SPECIAL_ZONES][DNS_NAME_MAX]; /* undelegated_zones in wire form */
    size_t special_len[SPECIAL_ZONES];
    struct appid *appid; /* only when a rule names the sending program */
};

/* Names that have no business leaving this host (RFC 6761, RFC 6762,
 * RFC 7686, RFC 6303): asking a public resolver about them only leaks what
 * the host is doing, and the answer cannot be useful. A rule can still send
 * any of them somewhere (a corporate resolver for 10.in-addr.arpa). */
static const char *const undelegated_zones[] = {
    "invalid", "local", "onion", "home.arpa",
    "10.in-addr.arpa", "168.192.in-addr.arpa", "254.169.in-addr.arpa",
    "16.172.in-addr.arpa", "17.172.in-addr.arpa", "18.172.in-addr.arpa",
    "19.172.in-addr.arpa", "20.172.in-addr.arpa", "21.172.in-addr.arpa",
    "22.172.in-addr.arpa", "23.172.in-addr.arpa", "24.172.in-addr.arpa",
    "25.172.in-addr.arpa", "26.172.in-addr.arpa", "27.172.in-addr.arpa",
    "28.172.in-addr.arpa", "29.172.in-addr.arpa", "30.172.in-addr.arpa",
    "31.172.in-addr.arpa", "127.in-addr.arpa", "0.in-addr.arpa",
    "d.f.ip6.arpa", "8.e.f.ip6.arpa", "9.e.f.ip6.arpa", "a.e.f.ip6.arpa", "b.e.f.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
};

_Static_assert(sizeof(undelegated_zones) / sizeof(undelegated_zones[0]) <= SPECIAL_ZONES,
               "room for every special zone");

/* The built-in answer for a special-use name, or NULL. */
/* The top-level label of a wire name (length byte first), or NULL for the
 * root. The name is lower-cased and valid: it came through dns_query_parse. */
static const uint8_t *top_label(const uint8_t *name, size_t len)
{
    const uint8_t *last = NULL;

    for (size_t off = 0; off < len && name[off]; off += 1u + name[off])
        last = name + off;
    return last;
}

static bool label_is(const uint8_t *label, const char *s)
{
    size_t n = strlen(s);

    return label[0] == n && memcmp(label + 1, s, n) == 0;
}

static const struct cfg_rule *special_name(const struct policy *p, const struct dns_question *q)
{
    static const uint8_t localhost[] = "\x09localhost";
    const uint8_t *tld = top_label(q->name, q->name_len);

    /* every special zone sits under one of these: most queries stop here,
     * before any suffix comparison, on the per-query path */
    if (!tld || !(label_is(tld, "arpa") || label_is(tld, "local") || label_is(tld, "localhost") ||
                  label_is(tld, "invalid") || label_is(tld, "onion")))
        return NULL;
    if (dns_name_is_sub(q->name, q->name_len, localhost, sizeof(localhost)))
        return &p->localhost;
    for (size_t i = 0; i < sizeof(undelegated_zones) / sizeof(undelegated_zones[0]); i++)
        if (dns_name_is_sub(q->name, q->name_len, p->special[i], p->special_len[i]))
            return &p->undelegated;
    return NULL;
}

struct policy *policy_new(const struct config *cfg, struct pool **pools, char *err,
                          size_t errlen)
{
    struct policy *p;

    p = calloc(1, sizeof(*p));
    if (!p || !(p->pools = calloc(cfg->n_groups ? cfg->n_groups : 1, sizeof(*p->pools)))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->npools = cfg->n_groups;
    net_addr_parse("127.0.0.1", 1, &p->loopback[0]);
    net_addr_parse("::1", 1, &p->loopback[1]);
    p->localhost.action = CFG_ACTION_ANSWER;
    p->localhost.answers = p->loopback;
    p->localhost.n_answers = 2;
    p->localhost.answer_ttl = 0;
    p->undelegated.action = CFG_ACTION_NXDOMAIN;
    for (size_t i = 0; i < sizeof(undelegated_zones) / sizeof(undelegated_zones[0]); i++)
        p->special_len[i] = (size_t)dns_name_from_str(undelegated_zones[i], p->special[i]);
    for (size_t i = 0; i < p->npools; i++) {
        p->pools[i] = pools[i];
        pool_ref(pools[i]);
    }
    p->refs = 1;
    for (size_t i = 0; i < cfg->n_rules && !p->appid; i++) {
        const struct cfg_rule *r = &cfg->rules[i];
        if ((r->n_users || r->n_cgroups || r->n_applications) && !(p->appid = appid_new())) {
            policy_unref(p);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
    }
    return p;
}

void policy_ref(struct policy *p)
{
    p->refs++;
}

void policy_unref(struct policy *p)
{
    if (!p || --p->refs > 0)
        return;
    for (size_t i = 0; i < p->npools; i++)
        pool_unref(p->pools[i]);
    free(p->pools);
    appid_del(p->appid);
    free(p);
}

static bool subnet_match(const struct cfg_subnet *s, const struct net_addr *a)
{
    const uint8_t *net, *ip;
    size_t bytes;

    if (s->addr.ss.ss_family != a->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET) {
        net = (const uint8_t *)&((const struct sockaddr_in *)&s->addr.ss)->sin_addr;
        ip = (const uint8_t *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
    } else {
        net = (const uint8_t *)&((const struct sockaddr_in6 *)&s->addr.ss)->sin6_addr;
        ip = (const uint8_t *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    }
    bytes = s->prefix / 8;
    if (memcmp(net, ip, bytes))
        return false;
    if (s->prefix % 8) {
        uint8_t mask = (uint8_t)(0xff << (8 - s->prefix % 8));
        return (net[bytes] & mask) == (ip[bytes] & mask);
    }
    return true;
}

/* ---- the sending program (users, cgroups, applications) ------------------ */

/* One pattern's components ("a/b*") against a window of the path's
 * components; a pattern starting with '/' is anchored at the root. */
static bool cgroup_glob(const char *pat, const char *path)
{
    char pbuf[512], cbuf[4096];
    char *pcomp[32], *ccomp[128], *save;
    size_t np = 0, nc = 0;
    bool anchored = pat[0] == '/';

    if (strlen(pat) >= sizeof(pbuf) || strlen(path) >= sizeof(cbuf))
        return false;
    strcpy(pbuf, pat);
    strcpy(cbuf, path);
    for (char *t = strtok_r(pbuf, "/", &save); t && np < 32; t = strtok_r(NULL, "/", &save))
        pcomp[np++] = t;
    for (char *t = strtok_r(cbuf, "/", &save); t && nc < 128; t = strtok_r(NULL, "/", &save))
        ccomp[nc++] = t;
    if (np == 0 || np > nc)
        return false;
    for (size_t start = 0; start + np <= nc; start++) {
        size_t k = 0;
        while (k < np && fnmatch(pcomp[k], ccomp[start + k], 0) == 0)
            k++;
        if (k == np)
            return true;
        if (anchored)
            break;
    }
    return false;
}

/* The socket lookup, once per query, and only for a rule that needs it. */
static bool find_sender(const struct policy *p, struct policy_client *pc)
{
    struct appid_info info;
    const struct net_addr *server = pc->dst ? pc->dst : pc->local;

    if (!pc->app_tried) {
        pc->app_tried = true;
        pc->cgroup_tried = pc->proc_tried = false;
        pc->cgroup = pc->comm = pc->exe = NULL;
        if (!pc->now_ms)
            pc->now_ms = net_now_ms();
        if (server && pc->peer && appid_lookup(p->appid, pc->tcp, pc->peer, server, &info) == 0) {
            pc->app_ok = true;
            pc->uid = info.uid;
            pc->cgroup_id = info.cgroup_id;
            pc->inode = info.inode;
        }
    }
    return pc->app_ok;
}

static bool sender_match(const struct policy *p, const struct cfg_rule *r,
                         struct policy_client *pc)
{
    bool ok;

    if (!find_sender(p, pc))
        return false;
    if (r->n_users) {
        ok = false;
        for (size_t i = 0; i < r->n_users && !ok; i++)
            ok = r->users[i] == pc->uid;
        if (!ok)
            return false;
    }
    if (r->n_cgroups) {
        if (!pc->cgroup_tried) {
            pc->cgroup_tried = true;
            pc->cgroup = appid_cgroup_path(p->appid, pc->cgroup_id, pc->now_ms);
        }
        ok = false;
        for (size_t i = 0; i < r->n_cgroups && pc->cgroup && !ok; i++)
            ok = cgroup_glob(r->cgroups[i], pc->cgroup);
        if (!ok)
            return false;
    }
    if (r->n_applications) {
        if (!pc->proc_tried) {
            struct appid_info info = {.uid = pc->uid, .cgroup_id = pc->cgroup_id,
                                      .inode = pc->inode};
            pc->proc_tried = true;
            if (appid_process(p->appid, &info, pc->now_ms, &pc->comm, &pc->exe))
                pc->comm = pc->exe = NULL;
        }
        ok = false;
        for (size_t i = 0; i < r->n_applications && !ok; i++) {
            const char *a = r->applications[i];
            if (a[0] == '/')
                ok = pc->exe && strcmp(a, pc->exe) == 0;
            else
                /* the kernel keeps 15 bytes of a name */
                ok = (pc->comm && strncmp(a, pc->comm, 15) == 0 && strlen(pc->comm) ==
                      (strlen(a) < 15 ? strlen(a) : 15)) ||
                     (pc->exe && strrchr(pc->exe, '/') && strcmp(strrchr(pc->exe, '/') + 1, a) == 0);
        }
        if (!ok)
            return false;
    }
    return true;
}

static bool rule_match(const struct policy *p, const struct cfg_rule *r,
                       const struct dns_question *q, struct policy_client *pc)
{
    const struct net_addr *client = pc->peer, *local = pc->local;
    bool ok;

    if (r->n_domains || r->domainset) {
        ok = false;
        for (size_t i = 0; i < r->n_domains && !ok; i++)
            ok = dns_name_is_sub(q->name, q->name_len, r->domains[i], r->domain_lens[i]);
        if (!ok && r->domainset)
            ok = domainset_match(r->domainset, q->name, q->name_len);
        if (!ok)
            return false;
    }
    if (r->n_qtypes) {
        ok = false;
        for (size_t i = 0; i < r->n_qtypes && !ok; i++)
            ok = r->qtypes[i] == q->qtype;
        if (!ok)
            return false;
    }
    if (r->n_clients) {
        ok = false;
        for (size_t i = 0; i < r->n_clients && !ok; i++)
            ok = subnet_match(&r->clients[i], client);
        if (!ok)
            return false;
    }
    if (r->n_listeners) {
        ok = false;
        for (size_t i = 0; i < r->n_listeners && !ok; i++)
            ok = local && net_addr_eq(&r->listeners[i], local);
        if (!ok)
            return false;
    }
    /* a hosts rule speaks only for the names its file lists */
    if (r->action == CFG_ACTION_HOSTS && !(r->hosts && hosts_knows(r->hosts, q->name, q->name_len)))
        return false;
    /* last: the cheap keys above rule most queries out before a lookup */
    if (r->n_users || r->n_cgroups || r->n_applications)
        return sender_match(p, r, pc);
    return true;
}

void policy_decide(const struct policy *p, const struct dns_question *q,
                   struct policy_client *pc, struct policy_decision *out)
{
    for (size_t i = 0; i < p->cfg->n_rules; i++) {
        const struct cfg_rule *r = &p->cfg->rules[i];
        if (rule_match(p, r, q, pc)) {
            out->action = r->action;
            out->rule = r;
            out->pool = r->action == CFG_ACTION_GROUP ? p->pools[r->group] : NULL;
            out->group = r->action == CFG_ACTION_GROUP ? (unsigned)r->group : 0;
            return;
        }
    }
    const struct cfg_rule *special = p->cfg->answer_special_names ? special_name(p, q) : NULL;
    if (special) {
        out->action = special->action;
        out->rule = special;
        out->pool = NULL;
        out->group = 0;
        return;
    }
    out->action = CFG_ACTION_GROUP;
    out->rule = NULL;
    out->pool = p->pools[0];
    out->group = 0;
}

/* A fixed CNAME alone: the answer to a query for the CNAME itself (for
 * other types resolve/query.c chases the target and adds its records). */
static int cname_answer(const struct cfg_rule *r, const struct dns_query_info *qi, uint8_t *out,
                        size_t cap)
{
    struct dns_cur c;
    struct dns_hdr h = {
        .id = qi->hdr.id,
        .flags = DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA | (qi->hdr.flags & DNS_FLAG_RD),
        .qdcount = 1,
        .ancount = 1,
        .arcount = qi->edns.present ? 1 : 0,
    };

    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, qi->q.name, qi->q.name_len);
    dns_cur_put_u16(&c, qi->q.qtype);
    dns_cur_put_u16(&c, qi->q.qclass);
    dns_cur_put_u16(&c, 0xc000 | DNS_HDR_LEN);
    dns_cur_put_u16(&c, DNS_TYPE_CNAME);
    dns_cur_put_u16(&c, DNS_CLASS_IN);
    dns_cur_put_u32(&c, r->answer_ttl);
    dns_cur_put_u16(&c, (uint16_t)r->answer_cname_len);
    dns_cur_put(&c, r->answer_cname, r->answer_cname_len);
    if (qi->edns.present)
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, 0);
    return c.err ? DV_ESPACE : (int)c.pos;
}

int policy_local_answer(const struct cfg_rule *r, const struct dns_query_info *qi,
                        uint8_t *out, size_t cap)
{
    struct dns_cur c;
    struct dns_hdr h = {
        .id = qi->hdr.id,
        .flags = DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA | (qi->hdr.flags & DNS_FLAG_RD),
        .qdcount = 1,
        .arcount = qi->edns.present ? 1 : 0,
    };
    int family = qi->q.qtype == DNS_TYPE_A ? AF_INET : qi->q.qtype == DNS_TYPE_AAAA ? AF_INET6 : 0;

    if (r->action == CFG_ACTION_REFUSE)
        return dns_reply_error(qi, true, DNS_RCODE_REFUSED, out, cap);
    if (r->action == CFG_ACTION_NXDOMAIN)
        return dns_reply_error(qi, true, DNS_RCODE_NXDOMAIN, out, cap);
    if (r->action == CFG_ACTION_HOSTS)
        return hosts_answer(r->hosts, qi, r->answer_ttl, out, cap);
    if (r->answer_cname)
        return cname_answer(r, qi, out, cap);
    for (size_t i = 0; i < r->n_answers; i++)
        h.ancount += r->answers[i].ss.ss_family == family;
    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, qi->q.name, qi->q.name_len);
    dns_cur_put_u16(&c, qi->q.qtype);
    dns_cur_put_u16(&c, qi->q.qclass);
    for (size_t i = 0; i < r->n_answers; i++) {
        const struct net_addr *a = &r->answers[i];
        if (a->ss.ss_family != family)
            continue;
        dns_cur_put_u16(&c, 0xc000 | DNS_HDR_LEN); /* the question's name */
        dns_cur_put_u16(&c, qi->q.qtype);
        dns_cur_put_u16(&c, DNS_CLASS_IN);
        dns_cur_put_u32(&c, r->answer_ttl);
        if (family == AF_INET) {
            dns_cur_put_u16(&c, 4);
            dns_cur_put(&c, &((const struct sockaddr_in *)&a->ss)->sin_addr, 4);
        } else {
            dns_cur_put_u16(&c, 16);
            dns_cur_put(&c, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16);
        }
    }
    if (qi->edns.present)
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, 0);
    return c.err ? DV_ESPACE : (int)c.pos;
}

size_t policy_ngroups(const struct policy *p)
{
    return p->cfg->n_groups;
}

const char *policy_group_name(const struct policy *p, size_t i)
{
    return p->cfg->groups[i].name;
}
