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
 * Requests live in the wait list (no usable configs yet), the flight
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
};

static const char odoh_ctype[] = "application/oblivious-dns-message";
static const char configs_path[] = "/.well-known/odohconfigs";

struct odoh_relay {
    struct upstream *u;  /* a DoH upstream to the relay */
    char *path;          /* its path with targethost and targetpath */
    unsigned fails;
    uint64_t down_until; /* monotonic ms */
};

struct odoh_up;

struct odoh_req {
    struct conn_link link;
    enum conn_req_where where;
    struct odoh_up *up;
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
    struct list wait, flight;
    struct conn_scope scope;
    ev_timer kick;
};

/* ------------------------------------------------------------ requests */

static struct odoh_req *odoh_req_first(const struct list *l)
{
    return conn_elem(l->head, struct odoh_req, link);
}

static void odoh_req_unseal(struct odoh_req *r)
{
    odoh_query_free(&r->q);
    free(r->sealed);
    r->sealed = NULL;
    r->sealed_len = 0;
}

static void odoh_req_free(struct odoh_req *r)
{
    odoh_req_unseal(r);
    free(r->ans);
    free(r);
}

static struct odoh_req *odoh_req_of(struct conn_done *f)
{
    /* never NULL: conn_elem's NULL test, inlined by LTO into the
     * explicit_bzero of odoh_query_free, made GCC see a 0-byte object */
    return (struct odoh_req *)(void *)((char *)f - offsetof(struct odoh_req, done));
}

/* Takes r out of wherever it is; an exchange in flight is cancelled. */
static void odoh_req_detach(struct odoh_req *r)
{
    if (r->where == CONN_REQ_SENT)
        r->via->ops->cancel(r->via, &r->http.x);
    conn_req_detach(&r->up->scope, &r->link, &r->done);
    r->where = CONN_REQ_NONE;
}

static void odoh_req_finish(struct odoh_req *r, int rc)
{
    odoh_req_detach(r);
    r->where = CONN_REQ_DONE;
    conn_scope_complete(&r->up->scope, &r->done, rc, r->ans, r->ans_len);
}

static void odoh_req_wait(struct odoh_req *r)
{
    odoh_req_detach(r);
    r->where = CONN_REQ_WAIT;
    conn_list_push(&r->up->wait, &r->link);
}

/* ------------------------------------------------------------ relays */

static void odoh_relay_failed(struct odoh_up *up, struct odoh_relay *rl, const char *why)
{
    uint64_t wait = ODOH_RELAY_BACKOFF_MS;

    stats.relay_failures++;
    for (unsigned i = 0; i < rl->fails && wait < ODOH_RELAY_BACKOFF_MAX_MS; i++)
        wait *= 2;
    if (wait > ODOH_RELAY_BACKOFF_MAX_MS)
        wait = ODOH_RELAY_BACKOFF_MAX_MS;
    rl->fails++;
    rl->down_until = net_now_ms() + wait;
    log_info("upstream %s: relay %s failed (%s); not used for %.1fs", up->name, rl->u->url, why,
             (double)wait / 1000.0);
}

static void odoh_relay_ok(struct odoh_relay *rl)
{
    rl->fails = 0;
    rl->down_until = 0;
}

/* The next relay not yet tried for r: round robin over the healthy ones, or
 * the one back soonest when none is. NULL when every relay was tried. */
static struct odoh_relay *odoh_relay_pick(struct odoh_up *up, uint32_t tried)
{
    uint64_t now = net_now_ms();
    struct odoh_relay *soonest = NULL;

    for (size_t k = 0; k < up->n_relays; k++) {
        size_t i = (up->rr + k) % up->n_relays;
        struct odoh_relay *rl = &up->relays[i];
        if (tried & (1u << i))
            continue;
        if (rl->down_until <= now) {
            up->rr = i + 1;
            return rl;
        }
        if (!soonest || rl->down_until < soonest->down_until)
            soonest = rl;
    }
    return soonest;
}

/* ------------------------------------------------------------ queries */

static void odoh_req_http_done(struct xfer *hx, int rc, const uint8_t *body, size_t len);

static bool odoh_cfg_usable(const struct odoh_up *up)
{
    return up->have_cfg && net_now_ms() < up->cfg_expires;
}

/* The configs r was sealed with failed: fetch them again, once per set. */
static void odoh_cfg_stale(struct odoh_up *up, const struct odoh_req *r)
{
    if (r->gen == up->gen)
        up->cfg_expires = 0;
}

/* Sends r's sealed query on the next relay it has not tried (or to the
 * target). 0, or the DV_E* of the last refusal. */
static int odoh_req_send(struct odoh_req *r)
{
    struct odoh_up *up = r->up;
    int rc = DV_ECONN;

    r->http = (struct doh_http){.x = {.msg = r->sealed, .len = r->sealed_len,
                                      .done = odoh_req_http_done, .owner = r},
                                .ctype = odoh_ctype};
    if (!up->n_relays) {
        r->relay = NULL;
        r->via = up->target;
        r->http.path = up->target_path;
        rc = doh_send_http(r->via, &r->http);
    } else {
        struct odoh_relay *rl;
        while ((rl = odoh_relay_pick(up, r->tried))) {
            r->tried |= 1u << (rl - up->relays);
            r->relay = rl;
            r->via = rl->u;
            r->http.path = rl->path;
            if ((rc = doh_send_http(r->via, &r->http)) == 0)
                break;
            odoh_relay_failed(up, rl, dv_strerror(rc));
        }
    }
    if (rc == 0) {
        stats.queries++;
        r->where = CONN_REQ_SENT;
        conn_list_push(&up->flight, &r->link);
    }
    return rc;
}

/* Seals r's query to the current configs and sends it. */
static void odoh_req_start(struct odoh_req *r)
{
    struct odoh_up *up = r->up;
    struct xfer *x = r->done.x;
    uint8_t msg[DNS_MSG_MAX];
    size_t len = x->len;
    int rc;

    memcpy(msg, x->msg, len);
    dns_put16(msg, 0);
    /* the target must not learn the client's subnet either */
    if (dns_edns_strip_opt(msg, &len, DNS_OPT_ECS)) {
        odoh_req_finish(r, DV_EMALFORMED);
        return;
    }
    odoh_req_unseal(r);
    r->tried = 0;
    r->gen = up->gen;
    rc = odoh_query_seal(&up->cfg, msg, len, ODOH_PAD_BLOCK, NULL, &r->q, &r->sealed,
                         &r->sealed_len);
    if (rc == 0)
        rc = odoh_req_send(r);
    if (rc)
        odoh_req_finish(r, rc);
}

/* The answer to r arrived (rc 0, any status) or its exchange failed. */
static void odoh_req_http_done(struct xfer *hx, int rc, const uint8_t *body, size_t len)
{
    struct odoh_req *r = hx->owner;
    struct odoh_up *up = r->up;
    struct odoh_relay *rl = r->relay;
    int st = r->http.status;

    conn_scope_enter(&up->scope);
    conn_list_unlink(&r->link);
    r->where = CONN_REQ_NONE;
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
            odoh_relay_failed(up, rl, why);
        else
            log_info("upstream %s: %s failed (%s)", up->name, rl ? "the target behind a relay"
                                                             : "the target", why);
        if (!rl || odoh_req_send(r))
            odoh_req_finish(r, rc ? rc : DV_ESERVFAIL);
    } else if (st == 401) {
        /* the target no longer has the key we sealed to: new configs, and
         * this query sealed again once */
        stats.key_rejected++;
        log_info("upstream %s: the target refused our key (401); fetching its configs again",
                 up->name);
        odoh_cfg_stale(up, r);
        if (rl)
            odoh_relay_ok(rl);
        if (r->resealed) {
            odoh_req_finish(r, DV_EPROTO);
        } else {
            r->resealed = true;
            odoh_req_wait(r);
        }
    } else if (st != 200 || !r->http.ctype_ok) {
        stats.http_errors++;
        log_warn("upstream %s: HTTP status %d%s from %s", up->name, st,
                 st == 200 ? " without content-type application/oblivious-dns-message" : "",
                 rl ? rl->u->url : "the target");
        odoh_cfg_stale(up, r);
        odoh_req_finish(r, DV_EPROTO);
    } else {
        if (rl)
            odoh_relay_ok(rl);
        rc = odoh_response_open(&r->q, body, len, &r->ans, &r->ans_len);
        if (rc == 0 && r->ans_len < DNS_HDR_LEN) {
            free(r->ans);
            r->ans = NULL;
            rc = DV_EMALFORMED;
        }
        if (rc) {
            stats.open_failures++;
            log_warn("upstream %s: an answer through %s failed to open (%s); fetching the "
                     "target's configs again", up->name, rl ? rl->u->url : "the target",
                     dv_strerror(rc));
            odoh_cfg_stale(up, r);
            odoh_req_finish(r, DV_EPROTO);
        } else {
            stats.answers++;
            odoh_req_finish(r, 0);
        }
    }
    conn_scope_leave(&up->scope);
}

/* ------------------------------------------------------------ configs */

static void odoh_fetch_done(struct xfer *hx, int rc, const uint8_t *body, size_t len)
{
    struct odoh_up *up = hx->owner;
    struct odoh_config cfg;
    int64_t ttl;

    conn_scope_enter(&up->scope);
    up->fetching = false;
    ev_timer_stop(up->loop, &up->fetch_timer);
    if (rc == 0 && up->fetch.status != 200) {
        log_warn("upstream %s: HTTP status %d for %s", up->name, up->fetch.status, configs_path);
        rc = DV_EPROTO;
    } else if (rc == 0 && (rc = odoh_configs_parse(body, len, &cfg))) {
        log_warn("upstream %s: the target's configs are %s", up->name,
                 rc == DV_ENOTIMP ? "all of versions or suites we do not speak (we need "
                                    "0x0001 with X25519, HKDF-SHA256, AES-128-GCM)"
                                  : "malformed");
    } else if (rc) {
        log_warn("upstream %s: fetching %s failed: %s", up->name, configs_path, dv_strerror(rc));
    }
    if (rc) {
        stats.config_failures++;
        up->fetch_retry_at = net_now_ms() + ODOH_FETCH_BACKOFF_MS;
    } else {
        stats.config_fetches++;
        ttl = up->fetch.max_age < 0 ? ODOH_CFG_TTL_DEFAULT : up->fetch.max_age;
        if (ttl < ODOH_CFG_TTL_MIN)
            ttl = ODOH_CFG_TTL_MIN;
        if (ttl > ODOH_CFG_TTL_MAX)
            ttl = ODOH_CFG_TTL_MAX;
        if (!up->have_cfg || memcmp(cfg.key_id, up->cfg.key_id, ODOH_KEY_ID_LEN))
            log_info("upstream %s: target key %02x%02x%02x%02x..., kept for %llds", up->name,
                     cfg.key_id[0], cfg.key_id[1], cfg.key_id[2], cfg.key_id[3],
                     (long long)ttl);
        up->cfg = cfg;
        up->have_cfg = true;
        up->gen++;
        up->cfg_expires = net_now_ms() + (uint64_t)ttl * 1000;
    }
    conn_scope_leave(&up->scope);
}

/* A server that keeps its connection alive but never answers the fetch
 * must not hold every query back: the fetch fails like any other. */
static void odoh_fetch_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct odoh_up *up = w->data;

    conn_scope_enter(&up->scope);
    if (up->fetching) {
        up->target->ops->cancel(up->target, &up->fetch.x);
        odoh_fetch_done(&up->fetch.x, DV_ETIMEOUT, NULL, 0);
    }
    conn_scope_leave(&up->scope);
}

static int odoh_fetch_start(struct odoh_up *up)
{
    int rc;

    up->fetch = (struct doh_http){.x = {.done = odoh_fetch_done, .owner = up}, .path = configs_path};
    rc = doh_send_http(up->target, &up->fetch);
    if (rc) {
        stats.config_failures++;
        up->fetch_retry_at = net_now_ms() + ODOH_FETCH_BACKOFF_MS;
        return rc;
    }
    up->fetching = true;
    ev_timer_set(&up->fetch_timer, ODOH_FETCH_TIMEOUT_S, 0.);
    ev_timer_start(up->loop, &up->fetch_timer);
    return 0;
}

/* At the outermost level before each delivery: waiting queries are sealed
 * and sent once configs are usable; otherwise a fetch starts, unless one
 * just failed, in which case they fail now and the query moves on. */
static void odoh_up_settle(void *arg)
{
    struct odoh_up *up = arg;

    if (!up->wait.head)
        return;
    if (odoh_cfg_usable(up)) {
        while (up->wait.head) {
            struct odoh_req *r = odoh_req_first(&up->wait);
            conn_list_unlink(&r->link);
            r->where = CONN_REQ_NONE;
            odoh_req_start(r);
        }
        return;
    }
    if (up->fetching)
        return;
    if (net_now_ms() >= up->fetch_retry_at && odoh_fetch_start(up) == 0)
        return;
    while (up->wait.head)
        odoh_req_finish(odoh_req_first(&up->wait), DV_ECONN);
}

static void odoh_req_release(struct conn_done *f)
{
    odoh_req_free(odoh_req_of(f));
}

static void odoh_up_destroy(void *arg)
{
    struct odoh_up *up = arg;

    while (up->wait.head) {
        struct odoh_req *r = odoh_req_first(&up->wait);
        odoh_req_detach(r);
        odoh_req_free(r);
    }
    while (up->flight.head) {
        struct odoh_req *r = odoh_req_first(&up->flight);
        odoh_req_detach(r);
        odoh_req_free(r);
    }
    for (struct conn_done *f; (f = conn_scope_pop(&up->scope));)
        odoh_req_free(odoh_req_of(f));
    ev_timer_stop(up->loop, &up->kick);
    ev_timer_stop(up->loop, &up->fetch_timer);
    if (up->fetching)
        up->target->ops->cancel(up->target, &up->fetch.x);
    for (size_t i = 0; i < up->n_relays; i++) {
        upstream_unref(up->relays[i].u);
        free(up->relays[i].path);
    }
    free(up->relays);
    upstream_unref(up->target);
    explicit_bzero(&up->cfg, sizeof(up->cfg));
    free(up->target_path);
    free(up->name);
    free(up);
}

static void odoh_up_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct odoh_up *up = w->data;

    conn_scope_enter(&up->scope);
    conn_scope_leave(&up->scope);
}

/* ------------------------------------------------------------ setup */

/* Percent-encodes s for a query parameter: all but RFC 3986 unreserved. */
static int odoh_escape(const char *s, char *out, size_t cap)
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
static struct upstream *odoh_inner_new(const struct upstream *u, const char *name, const char *spec,
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
    struct odoh_up *up;
    char path[2048], auth[300], ehost[600], epath[2048], url[2300], name[300];

    if (doh_path(u->path, path, sizeof(path)) ||
        doh_authority(u->host, net_addr_port(&u->addr), auth, sizeof(auth)) ||
        odoh_escape(auth, ehost, sizeof(ehost)) || odoh_escape(path, epath, sizeof(epath))) {
        log_err("upstream %s: the ODoH target path '%s' is not a request path", u->name,
                u->path ? u->path : "");
        return DV_EINVAL;
    }
    if (u->cfg.n_relays > ODOH_RELAYS_MAX) {
        log_err("upstream %s: at most %d relays", u->name, ODOH_RELAYS_MAX);
        return DV_EINVAL;
    }
    if (!(up = calloc(1, sizeof(*up))))
        return DV_ENOMEM;
    up->loop = u->loop;
    conn_scope_init(&up->scope, odoh_up_settle, odoh_req_release, odoh_up_destroy, up);
    ev_timer_init(&up->kick, odoh_up_kick_cb, 0., 0.);
    up->kick.data = up;
    ev_timer_init(&up->fetch_timer, odoh_fetch_timer_cb, 0., 0.);
    up->fetch_timer.data = up;
    up->name = strdup(u->name);
    up->target_path = strdup(path);
    up->relays = calloc(u->cfg.n_relays + 1, sizeof(*up->relays));
    snprintf(url, sizeof(url), "https://%s", u->url + strlen("odoh://"));
    snprintf(name, sizeof(name), "%s (target)", u->name);
    if (!up->name || !up->target_path || !up->relays ||
        !(up->target = odoh_inner_new(u, name, url, u->cfg.bootstrap, u->cfg.n_bootstrap, true)))
        goto fail;
    for (size_t i = 0; i < u->cfg.n_relays; i++) {
        struct odoh_relay *rl = &up->relays[i];
        const char *spec = u->cfg.relays[i], *p = strchr(spec + 8, '/');
        size_t plen = strcspn(p, "#");
        snprintf(name, sizeof(name), "%s (relay %zu)", u->name, i + 1);
        if (!(rl->u = odoh_inner_new(u, name, spec, NULL, 0, false)))
            goto fail;
        up->n_relays++;
        /* the relay's own path may carry a query already */
        if (asprintf(&rl->path, "%.*s%ctargethost=%s&targetpath=%s", (int)plen, p,
                     memchr(p, '?', plen) ? '&' : '?', ehost, epath) < 0) {
            rl->path = NULL;
            goto fail;
        }
    }
    if (up->n_relays)
        log_info("upstream %s: ODoH to %s through %zu relay%s", u->name, auth, up->n_relays,
                 up->n_relays == 1 ? "" : "s");
    else
        log_warn("upstream %s: ODoH without a relay: the target sees this host's address with "
                 "every query (plain DoH privacy); add 'relays'", u->name);
    u->priv = up;
    return 0;
fail:
    if (up->target) {
        odoh_up_destroy(up);
        return DV_EINVAL;
    }
    free(up->relays);
    free(up->target_path);
    free(up->name);
    free(up);
    return DV_EINVAL;
}

static int odoh_send(struct upstream *u, struct xfer *x)
{
    struct odoh_up *up = u->priv;
    struct odoh_req *r;
    int rc;

    if ((rc = conn_send_check(x, up->wait.n, up->name)))
        return rc;
    if (!odoh_cfg_usable(up) && !up->fetching && net_now_ms() < up->fetch_retry_at)
        return DV_ECONN; /* the target's configs cannot be had just now */
    if (!(r = calloc(1, sizeof(*r))))
        return DV_ENOMEM;
    r->up = up;
    r->done.x = x;
    r->where = CONN_REQ_WAIT;
    conn_list_push(&up->wait, &r->link);
    x->tpriv = r;
    if (!up->scope.depth)
        ev_timer_start(up->loop, &up->kick); /* sealed and sent on the next turn */
    return 0;
}

static void odoh_cancel(struct upstream *u, struct xfer *x)
{
    struct odoh_req *r = x->tpriv;

    if (!r)
        return;
    x->tpriv = NULL;
    odoh_req_detach(r);
    odoh_req_free(r);
}

static void odoh_close(struct upstream *u)
{
    struct odoh_up *up = u->priv;

    u->priv = NULL;
    if (up)
        conn_scope_close(&up->scope); /* now, or once the stack unwinds */
}

const struct transport_ops odoh_ops = {
    .name = "odoh",
    .open = odoh_open,
    .send = odoh_send,
    .cancel = odoh_cancel,
    .close = odoh_close,
};

#endif
