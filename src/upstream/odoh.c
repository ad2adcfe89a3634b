/* odoh — Oblivious DNS over HTTPS (RFC 9230) to one target, through relays.
 *
 * The target's ObliviousDoHConfigs are fetched from
 * https://TARGET/.well-known/odohconfigs over a DoH upstream of our own (its
 * bootstrap addresses, never a plaintext lookup) and kept for their
 * Cache-Control max-age. Each query is sealed to the target key
 * (odoh_msg.c) and POSTed as application/oblivious-dns-message to a relay
 * with targethost/targetpath (RFC 9230 4.1), each relay a DoH upstream of
 * its own, or to the target itself when no relay is configured (then the
 * target sees who asks: plain DoH privacy, said once at start).
 *
 * Failures: a relay that cannot be reached (or answers 5xx) is backed off
 * and the same sealed query goes to the next relay; a 401 means the target's
 * key changed: the configs are fetched again and the query resealed once, so
 * a key rotation costs the client nothing; an answer that fails to open, or
 * any other status, fails the attempt (the query layer moves on) and marks
 * the configs for one refetch. Every case is counted (odoh.h).
 *
 * Requests live in the waiting list (no usable configs yet), the flight
 * list (an exchange on a DoH upstream), or the conn_scope's finished list,
 * which delivers outcomes from a clean stack like the other transports. */
#include "upstream/odoh.h"

#include <stddef.h>

#include "core/err.h"

#define STAT(f, h) {#f, h, offsetof(struct odoh_stats, f)}
const struct odoh_stat_desc odoh_stat_descs[] = {
    STAT(queries, "ODoH queries sent, retries included."),
    STAT(answers, "ODoH answers opened."),
    STAT(config_fetches, "ODoH target configs fetched."),
    STAT(config_failures, "ODoH target config fetches that failed."),
    STAT(key_rejected, "ODoH queries the target refused with 401 (stale key)."),
    STAT(open_failures, "ODoH answers that failed to decrypt or parse."),
    STAT(http_errors, "ODoH exchanges answered with another HTTP status."),
    STAT(relay_failures, "ODoH relays unreachable or failing."),
};
#undef STAT
const size_t odoh_stat_ndescs = sizeof(odoh_stat_descs) / sizeof(odoh_stat_descs[0]);

static struct odoh_stats stats;

void odoh_stats_get(struct odoh_stats *out)
{
    *out = stats;
}

#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"
#include "core/log.h"
#include "core/net.h"
#include "dns/dns.h"
#include "upstream/conn.h"
#include "upstream/doh.h"
#include "upstream/odoh_msg.h"
#include "upstream/upstream.h"

enum {
    ODOH_RELAYS_MAX = 32,
    ODOH_CFG_TTL_DEFAULT = 3600, /* s, when the target sends no max-age */
    ODOH_CFG_TTL_MIN = 10,
    ODOH_CFG_TTL_MAX = 86400,
    ODOH_FETCH_BACKOFF_MS = 2000, /* after a failed fetch, queries fail fast this long */
    ODOH_FETCH_TIMEOUT_S = 5,     /* a fetch without an answer by then has failed */
    ODOH_RELAY_BACKOFF_MS = 1000, /* doubling per failure ... */
    ODOH_RELAY_BACKOFF_MAX_MS = 30000,
    ODOH_WAIT_MAX = 16384,
};

static const char odoh_ctype[] = "application/oblivious-dns-message";
static const char configs_path[] = "/.well-known/odohconfigs";

struct odoh_relay {
    struct upstream *u;  /* a DoH upstream to the relay */
    char *path;          /* its path with targethost and targetpath */
    unsigned fails;
    uint64_t down_until; /* monotonic ms */
};

enum oreq_where { W_NONE, W_WAIT, W_FLIGHT, W_DONE };

struct odoh_up;

struct oreq {
    struct list_link link;
    enum oreq_where where;
    struct odoh_up *o;
    struct conn_done done;
    struct doh_http http;     /* the exchange in flight */
    struct upstream *via;     /* the DoH upstream it is on */
    struct odoh_relay *relay; /* NULL: straight to the target */
    uint32_t tried;           /* relays tried for this sealing, a bit each */
    struct odoh_query q;
    uint8_t *sealed;
    size_t sealed_len;
    unsigned gen;             /* the configs it was sealed with */
    bool resealed;            /* the one retry after a 401 is spent */
    uint8_t *ans;             /* the opened answer, delivered */
    size_t ans_len;
};

struct odoh_up {
    struct ev_loop *loop;
    char *name;
    struct upstream *target;   /* configs, and queries when there is no relay */
    char *target_path;         /* the target's DoH path */
    struct odoh_relay *relays;
    size_t n_relays, rr;
    /* the target's configs */
    struct odoh_config cfg;
    bool have_cfg;
    unsigned gen;
    uint64_t cfg_expires;      /* monotonic ms */
    bool fetching;
    uint64_t fetch_retry_at;
    struct doh_http fetch;
    ev_timer fetch_timer;
    struct list waiting, flight;
    struct conn_scope scope;
    ev_timer kick;
};

/* ------------------------------------------------------------ requests */

static struct oreq *first(const struct list *l)
{
    return list_elem(l->head, struct oreq, link);
}

static void req_unseal(struct oreq *r)
{
    odoh_query_free(&r->q);
    free(r->sealed);
    r->sealed = NULL;
    r->sealed_len = 0;
}

static void req_free(struct oreq *r)
{
    req_unseal(r);
    free(r->ans);
    free(r);
}

static struct oreq *req_of(struct conn_done *f)
{
    return list_elem(f, struct oreq, done);
}

/* Takes r out of wherever it is; an exchange in flight is cancelled. */
static void req_detach(struct oreq *r)
{
    switch (r->where) {
    case W_WAIT:
        list_unlink(&r->o->waiting, &r->link);
        break;
    case W_FLIGHT:
        list_unlink(&r->o->flight, &r->link);
        r->via->ops->cancel(r->via, &r->http.x);
        break;
    case W_DONE:
        conn_scope_remove(&r->o->scope, &r->done);
        break;
    case W_NONE:
        break;
    }
    r->where = W_NONE;
}

static void req_finish(struct oreq *r, int rc)
{
    req_detach(r);
    r->where = W_DONE;
    conn_scope_complete(&r->o->scope, &r->done, rc, r->ans, r->ans_len);
}

static void req_wait(struct oreq *r)
{
    req_detach(r);
    r->where = W_WAIT;
    list_push(&r->o->waiting, &r->link);
}

/* ------------------------------------------------------------ relays */

static void relay_failed(struct odoh_up *o, struct odoh_relay *rl, const char *why)
{
    uint64_t wait = ODOH_RELAY_BACKOFF_MS;

    stats.relay_failures++;
    for (unsigned i = 0; i < rl->fails && wait < ODOH_RELAY_BACKOFF_MAX_MS; i++)
        wait *= 2;
    if (wait > ODOH_RELAY_BACKOFF_MAX_MS)
        wait = ODOH_RELAY_BACKOFF_MAX_MS;
    rl->fails++;
    rl->down_until = net_now_ms() + wait;
    log_info("upstream %s: relay %s failed (%s); not used for %.1fs", o->name, rl->u->url, why,
             (double)wait / 1000.0);
}

static void relay_ok(struct odoh_relay *rl)
{
    rl->fails = 0;
    rl->down_until = 0;
}

/* The next relay not yet tried for r: round robin over the healthy ones, or
 * the one back soonest when none is. NULL when every relay was tried. */
static struct odoh_relay *relay_pick(struct odoh_up *o, uint32_t tried)
{
    uint64_t now = net_now_ms();
    struct odoh_relay *soonest = NULL;

    for (size_t k = 0; k < o->n_relays; k++) {
        size_t i = (o->rr + k) % o->n_relays;
        struct odoh_relay *rl = &o->relays[i];
        if (tried & (1u << i))
            continue;
        if (rl->down_until <= now) {
            o->rr = i + 1;
            return rl;
        }
        if (!soonest || rl->down_until < soonest->down_until)
            soonest = rl;
    }
    return soonest;
}

/* ------------------------------------------------------------ queries */

static void http_done(struct xfer *hx, int rc, const uint8_t *body, size_t len);

static bool cfg_usable(const struct odoh_up *o)
{
    return o->have_cfg && net_now_ms() < o->cfg_expires;
}

/* The configs r was sealed with failed: fetch them again, once per set. */
static void cfg_stale(struct odoh_up *o, const struct oreq *r)
{
    if (r->gen == o->gen)
        o->cfg_expires = 0;
}

/* Sends r's sealed query on the next relay it has not tried (or to the
 * target). 0, or the DV_E* of the last refusal. */
static int req_send(struct oreq *r)
{
    struct odoh_up *o = r->o;
    int rc = DV_ECONN;

    r->http = (struct doh_http){.x = {.msg = r->sealed, .len = r->sealed_len,
                                      .done = http_done, .owner = r},
                                .ctype = odoh_ctype};
    if (!o->n_relays) {
        r->relay = NULL;
        r->via = o->target;
        r->http.path = o->target_path;
        rc = doh_send_http(r->via, &r->http);
    } else {
        struct odoh_relay *rl;
        while ((rl = relay_pick(o, r->tried))) {
            r->tried |= 1u << (rl - o->relays);
            r->relay = rl;
            r->via = rl->u;
            r->http.path = rl->path;
            if ((rc = doh_send_http(r->via, &r->http)) == 0)
                break;
            relay_failed(o, rl, dv_strerror(rc));
        }
    }
    if (rc == 0) {
        stats.queries++;
        r->where = W_FLIGHT;
        list_push(&o->flight, &r->link);
    }
    return rc;
}

/* Seals r's query to the current configs and sends it. */
static void req_start(struct oreq *r)
{
    struct odoh_up *o = r->o;
    struct xfer *x = r->done.x;
    uint8_t msg[DNS_MSG_MAX];
    size_t len = x->len;
    int rc;

    memcpy(msg, x->msg, len);
    dns_put16(msg, 0);
    /* the target must not learn the client's subnet either */
    if (dns_edns_strip_opt(msg, &len, DNS_OPT_ECS)) {
        req_finish(r, DV_EMALFORMED);
        return;
    }
    req_unseal(r);
    r->tried = 0;
    r->gen = o->gen;
    rc = odoh_query_seal(&o->cfg, msg, len, ODOH_PAD_BLOCK, NULL, &r->q, &r->sealed,
                         &r->sealed_len);
    if (rc == 0)
        rc = req_send(r);
    if (rc)
        req_finish(r, rc);
}

static void enter(struct odoh_up *o)
{
    conn_scope_enter(&o->scope);
}

static void leave(struct odoh_up *o)
{
    conn_scope_leave(&o->scope);
}

/* The answer to r arrived (rc 0, any status) or its exchange failed. */
static void http_done(struct xfer *hx, int rc, const uint8_t *body, size_t len)
{
    struct oreq *r = hx->owner;
    struct odoh_up *o = r->o;
    struct odoh_relay *rl = r->relay;
    int st = r->http.status;

    enter(o);
    list_unlink(&o->flight, &r->link);
    r->where = W_NONE;
    if (rc || st >= 500) {
        /* unreachable or failing: the next relay. A 502 or 504 says the
         * relay could not reach the target, which is no fault of the relay
         * (backing it off would empty the rotation while the target is
         * down); anything else counts against it. */
        char why[64];
        if (rc)
            snprintf(why, sizeof(why), "%s", dv_strerror(rc));
        else
            snprintf(why, sizeof(why), "HTTP status %d", st);
        if (!rc)
            stats.http_errors++;
        if (rl && st != 502 && st != 504)
            relay_failed(o, rl, why);
        else
            log_info("upstream %s: %s failed (%s)", o->name, rl ? "the target behind a relay"
                                                             : "the target", why);
        if (!rl || req_send(r))
            req_finish(r, rc ? rc : DV_ESERVFAIL);
    } else if (st == 401) {
        /* the target no longer has the key we sealed to: new configs, and
         * this query sealed again once */
        stats.key_rejected++;
        log_info("upstream %s: the target refused our key (401); fetching its configs again",
                 o->name);
        cfg_stale(o, r);
        if (rl)
            relay_ok(rl);
        if (r->resealed) {
            req_finish(r, DV_EPROTO);
        } else {
            r->resealed = true;
            req_wait(r);
        }
    } else if (st != 200 || !r->http.ctype_ok) {
        stats.http_errors++;
        log_warn("upstream %s: HTTP status %d%s from %s", o->name, st,
                 st == 200 ? " without content-type application/oblivious-dns-message" : "",
                 rl ? rl->u->url : "the target");
        cfg_stale(o, r);
        req_finish(r, DV_EPROTO);
    } else {
        if (rl)
            relay_ok(rl);
        rc = odoh_response_open(&r->q, body, len, &r->ans, &r->ans_len);
        if (rc == 0 && r->ans_len < DNS_HDR_LEN) {
            free(r->ans);
            r->ans = NULL;
            rc = DV_EMALFORMED;
        }
        if (rc) {
            stats.open_failures++;
            log_warn("upstream %s: an answer through %s failed to open (%s); fetching the "
                     "target's configs again", o->name, rl ? rl->u->url : "the target",
                     dv_strerror(rc));
            cfg_stale(o, r);
            req_finish(r, DV_EPROTO);
        } else {
            stats.answers++;
            req_finish(r, 0);
        }
    }
    leave(o);
}

/* ------------------------------------------------------------ configs */

static void fetch_done(struct xfer *hx, int rc, const uint8_t *body, size_t len)
{
    struct odoh_up *o = hx->owner;
    struct odoh_config cfg;
    int64_t ttl;

    enter(o);
    o->fetching = false;
    ev_timer_stop(o->loop, &o->fetch_timer);
    if (rc == 0 && o->fetch.status != 200) {
        log_warn("upstream %s: HTTP status %d for %s", o->name, o->fetch.status, configs_path);
        rc = DV_EPROTO;
    } else if (rc == 0 && (rc = odoh_configs_parse(body, len, &cfg))) {
        log_warn("upstream %s: the target's configs are %s", o->name,
                 rc == DV_ENOTIMP ? "all of versions or suites we do not speak (we need "
                                    "0x0001 with X25519, HKDF-SHA256, AES-128-GCM)"
                                  : "malformed");
    } else if (rc) {
        log_warn("upstream %s: fetching %s failed: %s", o->name, configs_path, dv_strerror(rc));
    }
    if (rc) {
        stats.config_failures++;
        o->fetch_retry_at = net_now_ms() + ODOH_FETCH_BACKOFF_MS;
    } else {
        stats.config_fetches++;
        ttl = o->fetch.max_age < 0 ? ODOH_CFG_TTL_DEFAULT : o->fetch.max_age;
        if (ttl < ODOH_CFG_TTL_MIN)
            ttl = ODOH_CFG_TTL_MIN;
        if (ttl > ODOH_CFG_TTL_MAX)
            ttl = ODOH_CFG_TTL_MAX;
        if (!o->have_cfg || memcmp(cfg.key_id, o->cfg.key_id, ODOH_KEY_ID_LEN))
            log_info("upstream %s: target key %02x%02x%02x%02x..., kept for %llds", o->name,
                     cfg.key_id[0], cfg.key_id[1], cfg.key_id[2], cfg.key_id[3],
                     (long long)ttl);
        o->cfg = cfg;
        o->have_cfg = true;
        o->gen++;
        o->cfg_expires = net_now_ms() + (uint64_t)ttl * 1000;
    }
    leave(o);
}

/* A server that keeps its connection alive but never answers the fetch
 * must not hold every query back: the fetch fails like any other. */
static void fetch_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct odoh_up *o = w->data;

    enter(o);
    if (o->fetching) {
        o->target->ops->cancel(o->target, &o->fetch.x);
        fetch_done(&o->fetch.x, DV_ETIMEOUT, NULL, 0);
    }
    leave(o);
}

static int fetch_start(struct odoh_up *o)
{
    int rc;

    o->fetch = (struct doh_http){.x = {.done = fetch_done, .owner = o}, .path = configs_path};
    rc = doh_send_http(o->target, &o->fetch);
    if (rc) {
        stats.config_failures++;
        o->fetch_retry_at = net_now_ms() + ODOH_FETCH_BACKOFF_MS;
        return rc;
    }
    o->fetching = true;
    ev_timer_set(&o->fetch_timer, ODOH_FETCH_TIMEOUT_S, 0.);
    ev_timer_start(o->loop, &o->fetch_timer);
    return 0;
}

/* At the outermost level before each delivery: waiting queries are sealed
 * and sent once configs are usable; otherwise a fetch starts, unless one
 * just failed, in which case they fail now and the query moves on. */
static void settle(void *arg)
{
    struct odoh_up *o = arg;

    if (!o->waiting.head)
        return;
    if (cfg_usable(o)) {
        while (o->waiting.head) {
            struct oreq *r = first(&o->waiting);
            list_unlink(&o->waiting, &r->link);
            r->where = W_NONE;
            req_start(r);
        }
        return;
    }
    if (o->fetching)
        return;
    if (net_now_ms() >= o->fetch_retry_at && fetch_start(o) == 0)
        return;
    while (o->waiting.head)
        req_finish(first(&o->waiting), DV_ECONN);
}

static void release(struct conn_done *f)
{
    req_free(req_of(f));
}

static void up_free(struct odoh_up *o)
{
    while (o->waiting.head) {
        struct oreq *r = first(&o->waiting);
        req_detach(r);
        req_free(r);
    }
    while (o->flight.head) {
        struct oreq *r = first(&o->flight);
        req_detach(r);
        req_free(r);
    }
    for (struct conn_done *f; (f = conn_scope_pop(&o->scope));)
        req_free(req_of(f));
    ev_timer_stop(o->loop, &o->kick);
    ev_timer_stop(o->loop, &o->fetch_timer);
    if (o->fetching)
        o->target->ops->cancel(o->target, &o->fetch.x);
    for (size_t i = 0; i < o->n_relays; i++) {
        upstream_unref(o->relays[i].u);
        free(o->relays[i].path);
    }
    free(o->relays);
    upstream_unref(o->target);
    explicit_bzero(&o->cfg, sizeof(o->cfg));
    free(o->target_path);
    free(o->name);
    free(o);
}

static void destroy(void *arg)
{
    up_free(arg);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct odoh_up *o = w->data;

    enter(o);
    leave(o);
}

/* ------------------------------------------------------------ setup */

/* Percent-encodes s for a query parameter: all but RFC 3986 unreserved. */
static int query_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || strchr("-._~", ch);
        if (n + (plain ? 1 : 3) >= cap)
            return DV_ESPACE;
        if (plain) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = 0;
    return 0;
}

/* A DoH upstream for url (bootstrap addresses after '#' or in boot[]),
 * with u's CA and connection settings; name is for log lines. */
static struct upstream *inner_new(const struct upstream *u, const char *name, const char *spec,
                                  char *const *boot, size_t n_boot, bool target)
{
    struct cfg_upstream c = {0};
    char *url = strdup(spec), *hash, *ips[16], err[300];
    size_t n_ips = 0;
    struct upstream *in = NULL;

    if (!url)
        return NULL;
    if ((hash = strchr(url, '#'))) {
        *hash = 0;
        for (char *p = hash + 1, *save = NULL, *tok; (tok = strtok_r(p, ",", &save)) && n_ips < 16;
             p = NULL)
            ips[n_ips++] = tok;
    }
    c.name = (char *)name;
    c.url = url;
    c.ca_file = u->cfg.ca_file;
    c.bootstrap = n_ips ? ips : (char **)boot;
    c.n_bootstrap = n_ips ? n_ips : n_boot;
    c.max_conns = u->cfg.max_conns;
    c.idle_timeout_ms = u->cfg.idle_timeout_ms;
    if (target) {
        /* the operator's pins and name are the target's */
        c.tls_name = u->cfg.tls_name;
        c.pins = u->cfg.pins;
        c.n_pins = u->cfg.n_pins;
    }
    in = upstream_new(u->loop, &c, NULL, err, sizeof(err));
    if (!in)
        log_err("upstream %s: %s", u->name, err);
    free(url);
    return in;
}

static int odoh_open(struct upstream *u)
{
    struct odoh_up *o;
    char path[2048], auth[300], ehost[600], epath[2048], url[2300], name[300];

    if (doh_path(u->path, path, sizeof(path)) ||
        doh_authority(u->host, net_addr_port(&u->addr), auth, sizeof(auth)) ||
        query_escape(auth, ehost, sizeof(ehost)) || query_escape(path, epath, sizeof(epath))) {
        log_err("upstream %s: the ODoH target path '%s' is not a request path", u->name,
                u->path ? u->path : "");
        return DV_EINVAL;
    }
    if (u->cfg.n_relays > ODOH_RELAYS_MAX) {
        log_err("upstream %s: at most %d relays", u->name, ODOH_RELAYS_MAX);
        return DV_EINVAL;
    }
    if (!(o = calloc(1, sizeof(*o))))
        return DV_ENOMEM;
    o->loop = u->loop;
    conn_scope_init(&o->scope, settle, release, destroy, o);
    ev_timer_init(&o->kick, kick_cb, 0., 0.);
    o->kick.data = o;
    ev_timer_init(&o->fetch_timer, fetch_timer_cb, 0., 0.);
    o->fetch_timer.data = o;
    o->name = strdup(u->name);
    o->target_path = strdup(path);
    o->relays = calloc(u->cfg.n_relays + 1, sizeof(*o->relays));
    snprintf(url, sizeof(url), "https://%s", u->url + strlen("odoh://"));
    snprintf(name, sizeof(name), "%s (target)", u->name);
    if (!o->name || !o->target_path || !o->relays ||
        !(o->target = inner_new(u, name, url, u->cfg.bootstrap, u->cfg.n_bootstrap, true)))
        goto fail;
    for (size_t i = 0; i < u->cfg.n_relays; i++) {
        struct odoh_relay *rl = &o->relays[i];
        const char *spec = u->cfg.relays[i], *p = strchr(spec + 8, '/');
        size_t plen = strcspn(p, "#");
        snprintf(name, sizeof(name), "%s (relay %zu)", u->name, i + 1);
        if (!(rl->u = inner_new(u, name, spec, NULL, 0, false)))
            goto fail;
        o->n_relays++;
        /* the relay's own path may carry a query already */
        if (asprintf(&rl->path, "%.*s%ctargethost=%s&targetpath=%s", (int)plen, p,
                     memchr(p, '?', plen) ? '&' : '?', ehost, epath) < 0) {
            rl->path = NULL;
            goto fail;
        }
    }
    if (o->n_relays)
        log_info("upstream %s: ODoH to %s through %zu relay%s", u->name, auth, o->n_relays,
                 o->n_relays == 1 ? "" : "s");
    else
        log_warn("upstream %s: ODoH without a relay: the target sees this host's address with "
                 "every query (plain DoH privacy); add 'relays'", u->name);
    u->priv = o;
    return 0;
fail:
    if (o->target) {
        up_free(o);
        return DV_EINVAL;
    }
    free(o->relays);
    free(o->target_path);
    free(o->name);
    free(o);
    return DV_EINVAL;
}

static int odoh_send(struct upstream *u, struct xfer *x)
{
    struct odoh_up *o = u->priv;
    struct oreq *r;

    if (x->len < DNS_HDR_LEN || x->len > DNS_MSG_MAX)
        return DV_EINVAL;
    if (!cfg_usable(o) && !o->fetching && net_now_ms() < o->fetch_retry_at)
        return DV_ECONN; /* the target's configs cannot be had just now */
    if (o->waiting.n >= ODOH_WAIT_MAX)
        return DV_ECONN;
    if (!(r = calloc(1, sizeof(*r))))
        return DV_ENOMEM;
    r->o = o;
    r->done.x = x;
    r->where = W_WAIT;
    list_push(&o->waiting, &r->link);
    x->tpriv = r;
    if (!o->scope.depth)
        ev_timer_start(o->loop, &o->kick); /* sealed and sent on the next turn */
    return 0;
}

static void odoh_cancel(struct upstream *u, struct xfer *x)
{
    struct oreq *r = x->tpriv;

    if (!r)
        return;
    x->tpriv = NULL;
    req_detach(r);
    req_free(r);
}

static void odoh_close(struct upstream *u)
{
    struct odoh_up *o = u->priv;

    u->priv = NULL;
    if (o)
        conn_scope_close(&o->scope); /* now, or once the stack unwinds */
}

const struct transport_ops odoh_ops = {
    .name = "odoh",
    .open = odoh_open,
    .send = odoh_send,
    .cancel = odoh_cancel,
    .close = odoh_close,
};

#endif
