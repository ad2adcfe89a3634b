/* relay — the ODoH relay's targets and forwarded requests; see relay.h. */
#include "frontend/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "upstream/doh.h"
#include "upstream/upstream.h"

#define CT_ODOH "application/oblivious-dns-message"

struct target {
    char *auth;         /* "host[:port]" as listed, without the addresses */
    struct upstream *u; /* a DoH upstream to https://auth/ */
};

struct fe_relay {
    struct ev_loop *loop;
    unsigned refs;
    double timeout;     /* seconds a target has to answer */
    struct target *t;
    size_t n;
};

struct rreq {
    struct doh_http http;
    ev_timer timer;
    struct fe_relay *r;
    struct upstream *u;
    fe_relay_done_fn done;
    void *arg;
};

/* host[:port] without a default ":443", for comparison */
static size_t auth_len(const char *a)
{
    size_t n = strlen(a);

    if (n > 4 && !strcmp(a + n - 4, ":443"))
        n -= 4;
    return n;
}

static bool auth_same(const char *a, const char *b)
{
    size_t la = auth_len(a), lb = auth_len(b);

    return la == lb && !strncasecmp(a, b, la);
}

int fe_relay_new(struct ev_loop *loop, const struct config *cfg, struct fe_relay **pr)
{
    const struct cfg_secure *sc = &cfg->secure;
    struct fe_relay *r;

    *pr = NULL;
    if (!sc->n_relay_targets)
        return 0;
    if (!(r = calloc(1, sizeof(*r))) || !(r->t = calloc(sc->n_relay_targets, sizeof(*r->t)))) {
        free(r);
        return DV_ENOMEM;
    }
    r->loop = loop;
    r->refs = 1;
    r->timeout = cfg->timeout_ms / 1000.0;
    for (size_t i = 0; i < sc->n_relay_targets; i++) {
        const char *spec = sc->relay_targets[i];
        size_t alen = strcspn(spec, "#");
        char url[300], name[300], err[300], *ips[16], *list = NULL;
        size_t n_ips = 0;
        struct cfg_upstream c = {0};

        snprintf(url, sizeof(url), "https://%.*s/", (int)alen, spec);
        snprintf(name, sizeof(name), "odoh relay target %.*s", (int)alen, spec);
        if (spec[alen] == '#' && (list = strdup(spec + alen + 1))) {
            for (char *p = list, *save = NULL, *tok; (tok = strtok_r(p, ",", &save)) && n_ips < 16;
                 p = NULL)
                ips[n_ips++] = tok;
        }
        c.name = name;
        c.url = url;
        c.bootstrap = ips;
        c.n_bootstrap = n_ips;
        r->t[i].auth = strndup(spec, alen);
        r->t[i].u = r->t[i].auth ? upstream_new(loop, &c, cfg, err, sizeof(err)) : NULL;
        free(list);
        r->n++;
        if (!r->t[i].u) {
            log_err("odoh_relay_targets: %.*s: %s", (int)alen, spec,
                    r->t[i].auth ? err : "out of memory");
            fe_relay_unref(r);
            return DV_EINVAL;
        }
    }
    log_info("ODoH relay on for %zu target%s", r->n, r->n == 1 ? "" : "s");
    *pr = r;
    return 0;
}

void fe_relay_ref(struct fe_relay *r)
{
    r->refs++;
}

void fe_relay_unref(struct fe_relay *r)
{
    if (!r || --r->refs > 0)
        return;
    for (size_t i = 0; i < r->n; i++) {
        if (r->t[i].u)
            upstream_unref(r->t[i].u);
        free(r->t[i].auth);
    }
    free(r->t);
    free(r);
}

static void req_end(struct rreq *q, int status, const char *ctype, const uint8_t *body,
                    size_t len)
{
    struct fe_relay *r = q->r;

    ev_timer_stop(r->loop, &q->timer);
    q->done(q->arg, status, ctype, body, len);
    upstream_unref(q->u);
    free(q);
    fe_relay_unref(r);
}

static void http_done(struct xfer *x, int rc, const uint8_t *body, size_t len)
{
    struct rreq *q = x->owner;

    if (rc) {
        log_debug("odoh relay: target %s: %s", q->u->name, dv_strerror(rc));
        req_end(q, 502, NULL, NULL, 0);
        return;
    }
    req_end(q, q->http.status, q->http.ctype_ok ? CT_ODOH : NULL, len ? body : NULL, len);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rreq *q = w->data;

    q->u->ops->cancel(q->u, &q->http.x);
    log_debug("odoh relay: target %s did not answer in time", q->u->name);
    req_end(q, 504, NULL, NULL, 0);
}

int fe_relay_forward(struct fe_relay *r, const char *host, const char *path, const uint8_t *body,
                     size_t len, fe_relay_done_fn done, void *arg)
{
    struct target *t = NULL;
    struct rreq *q;
    int rc;

    for (size_t i = 0; i < r->n && !t; i++)
        if (auth_same(r->t[i].auth, host))
            t = &r->t[i];
    if (!t) {
        log_debug("odoh relay: target %s is not in odoh_relay_targets", host);
        done(arg, 403, NULL, NULL, 0);
        return 0;
    }
    if (!(q = calloc(1, sizeof(*q))))
        return DV_ENOMEM;
    q->r = r;
    q->u = t->u;
    q->done = done;
    q->arg = arg;
    q->http = (struct doh_http){.x = {.msg = body, .len = len, .done = http_done, .owner = q},
                                .path = path, .ctype = CT_ODOH};
    ev_timer_init(&q->timer, timer_cb, r->timeout, 0.);
    q->timer.data = q;
    fe_relay_ref(r);
    upstream_ref(q->u);
    if ((rc = doh_send_http(q->u, &q->http))) {
        log_debug("odoh relay: target %s: %s", q->u->name, dv_strerror(rc));
        req_end(q, 502, NULL, NULL, 0);
        return 0;
    }
    ev_timer_start(r->loop, &q->timer);
    return 0;
}
