/* secure — the encrypted listeners and their certificate; see secure.h. */
#include "frontend/secure.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "frontend/doh_listen.h"
#include "frontend/frontend.h"
#include "frontend/metrics.h"
#include "frontend/relay.h"
#include "tls/tlssrv.h"

enum kind { KIND_DOT, KIND_DOH, KIND_DOQ };

static const char *const kind_names[] = {"tls", "https", "quic"};

/* One bound listener. Allocated alone: its address is the listener's
 * 'local' and must not move. */
struct node {
    struct node *next;
    enum kind kind;
    struct net_addr addr;
    struct fe_tcp *tcp;     /* KIND_DOT, KIND_DOH */
    struct fe_doq *doq;     /* KIND_DOQ */
    struct fe_doh_opts doh; /* KIND_DOH: its settings, updated on reload */
};

struct fe_secure {
    struct ev_loop *loop;
    struct query_engine *qe;
    struct tlssrv_ctx *tls;
    struct tlssrv_ctx *quic; /* the same certificate for QUIC */
    struct fe_relay *relay; /* the ODoH relay's targets, or NULL */
    struct node *nodes;
};

struct fe_secure *fe_secure_new(struct ev_loop *loop, struct query_engine *qe)
{
    struct fe_secure *s = calloc(1, sizeof(*s));

    if (s) {
        s->loop = loop;
        s->qe = qe;
    }
    return s;
}

static void node_close(struct node *n)
{
    char a[NET_ADDRSTRLEN];

    log_info("no longer listening on %s/%s", net_addr_str(&n->addr, a, sizeof(a)),
             kind_names[n->kind]);
    fe_tcp_close(n->tcp);
    fe_doq_close(n->doq);
    free(n);
}

static struct node *node_take(struct node **list, enum kind kind, const struct net_addr *a)
{
    for (struct node **p = list; *p; p = &(*p)->next) {
        if ((*p)->kind == kind && net_addr_eq(&(*p)->addr, a)) {
            struct node *n = *p;
            *p = n->next;
            n->next = NULL;
            return n;
        }
    }
    return NULL;
}

static void doh_settings(struct node *n, const struct config *cfg, struct fe_relay *relay)
{
    const struct cfg_secure *sc = &cfg->secure;

    snprintf(n->doh.path, sizeof(n->doh.path), "%s", sc->https_path ? sc->https_path : "/dns-query");
    snprintf(n->doh.relay_path, sizeof(n->doh.relay_path), "%s",
             sc->relay_path ? sc->relay_path : "/proxy");
    n->doh.relay = relay; /* connections take their own reference */
    n->doh.max_streams = 100;
}

static struct node *node_open(struct fe_secure *s, const struct config *cfg, enum kind kind,
                              const struct net_addr *a, struct tlssrv_ctx *tls,
                              struct tlssrv_ctx *quic, struct fe_relay *relay)
{
    struct fe_doq_opts qo = {.idle_timeout_ms = cfg->tcp_idle_ms, .max_conns = cfg->tcp_max_conns,
                             .max_conns_per_client = cfg->limits.tcp_max_conns_per_client,
                             .retry_above = cfg->tcp_max_conns / 2};
    struct fe_tcp_opts to = {.idle_timeout_ms = cfg->tcp_idle_ms, .max_conns = cfg->tcp_max_conns,
                             .max_conns_per_client = cfg->limits.tcp_max_conns_per_client};
    struct node *n = calloc(1, sizeof(*n));
    char as[NET_ADDRSTRLEN];

    if (!n)
        return NULL;
    n->kind = kind;
    n->addr = *a;
    net_addr_str(a, as, sizeof(as));
    doh_settings(n, cfg, relay);
    if (kind == KIND_DOQ)
        n->doq = fe_doq_new(s->loop, a, s->qe, &qo, &n->addr, quic);
    else
        n->tcp = fe_tcp_new_tls(s->loop, a, s->qe, &to, &n->addr, tls,
                                kind == KIND_DOH ? &fe_doh_proto : NULL, &n->doh);
    if (!n->tcp && !n->doq) {
        log_err("cannot listen on %s/%s: %s%s", as, kind_names[kind],
                strerror(errno),
                errno == EACCES ? " (a privileged port needs a restart as root)" : "");
        free(n);
        return NULL;
    }
    log_info("listening on %s/%s", as, kind_names[kind]);
    return n;
}

int fe_secure_apply(struct fe_secure *s, const struct config *cfg)
{
    const struct cfg_secure *sc = &cfg->secure;
    struct tlssrv_ctx *tls = NULL, *quic = NULL;
    struct fe_relay *relay = NULL;
    struct node *old = s->nodes, *fresh = NULL, *kept = NULL;
    const struct { enum kind kind; const struct net_addr *v; size_t n; } lists[] = {
        {KIND_DOT, sc->tls, sc->n_tls},
        {KIND_DOH, sc->https, sc->n_https},
        {KIND_DOQ, sc->quic, sc->n_quic},
    };
    int rc;

    if (sc->n_tls || sc->n_https) {
        if ((rc = tlssrv_ctx_new(sc->cert, sc->key, &tls)))
            return rc;
    }
    if (sc->n_quic && (rc = tlssrv_ctx_new_quic(sc->cert, sc->key, &quic))) {
        tlssrv_ctx_unref(tls);
        return rc;
    }
    if ((rc = fe_relay_new(s->loop, cfg, &relay))) {
        tlssrv_ctx_unref(tls);
        tlssrv_ctx_unref(quic);
        return rc;
    }
    /* bind what is new first: a failure leaves the old set serving */
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        for (size_t i = 0; i < lists[l].n; i++) {
            struct node *n = node_take(&old, lists[l].kind, &lists[l].v[i]);
            if (n) {
                n->next = kept;
                kept = n;
                continue;
            }
            if (!(n = node_open(s, cfg, lists[l].kind, &lists[l].v[i], tls, quic, relay))) {
                rc = errno == ENOMEM ? DV_ENOMEM : DV_EIO;
                goto undo;
            }
            n->next = fresh;
            fresh = n;
        }
    }
    while (old) {
        struct node *n = old;
        old = n->next;
        node_close(n);
    }
    for (struct node *n = kept; n; n = n->next) {
        if (n->doq)
            fe_doq_set_tls(n->doq, quic);
        else
            fe_tcp_set_tls(n->tcp, tls);
        doh_settings(n, cfg, relay);
    }
    /* kept, then fresh, is the new set */
    s->nodes = fresh;
    while (kept) {
        struct node *n = kept;
        kept = n->next;
        n->next = s->nodes;
        s->nodes = n;
    }
    tlssrv_ctx_unref(s->tls);
    s->tls = tls;
    tlssrv_ctx_unref(s->quic);
    s->quic = quic;
    fe_relay_unref(s->relay);
    s->relay = relay;
    return 0;
undo:
    while (fresh) {
        struct node *n = fresh;
        fresh = n->next;
        fe_tcp_close(n->tcp);
        fe_doq_close(n->doq);
        free(n);
    }
    /* put the kept ones back in front of what was not looked at */
    while (kept) {
        struct node *n = kept;
        kept = n->next;
        n->next = old;
        old = n;
    }
    s->nodes = old;
    tlssrv_ctx_unref(tls);
    tlssrv_ctx_unref(quic);
    fe_relay_unref(relay);
    return rc;
}

size_t fe_secure_count(const struct fe_secure *s)
{
    size_t n = 0;

    for (const struct node *p = s->nodes; p; p = p->next)
        n++;
    return n;
}

/* The DoQ listeners' counters, one series per listener. */
static const struct {
    const char *name, *type, *help;
    size_t off;
} doq_series[] = {
#define DOQ_SERIES(n, t, f, h) {"dnsveil_doq_listener_" n, t, h, offsetof(struct fe_doq_stats, f)}
    DOQ_SERIES("connections_total", "counter", conns, "DoQ connections accepted."),
    DOQ_SERIES("connections_open", "gauge", open, "DoQ connections open now."),
    DOQ_SERIES("queries_total", "counter", queries, "Queries received over DoQ."),
    DOQ_SERIES("early_queries_total", "counter", early_queries,
               "Queries accepted as 0-RTT early data (RFC 9250 4.5)."),
    DOQ_SERIES("retry_sent_total", "counter", retries,
               "Retry packets sent to validate a client address under load."),
    DOQ_SERIES("bad_tokens_total", "counter", bad_tokens,
               "Initials dropped for a Retry token that did not verify."),
    DOQ_SERIES("new_tokens_sent_total", "counter", tokens_sent,
               "NEW_TOKEN tokens given to clients after the handshake."),
    DOQ_SERIES("new_tokens_accepted_total", "counter", tokens_accepted,
               "Returning clients whose NEW_TOKEN token proved their address."),
    DOQ_SERIES("refused_total", "counter", refused,
               "New connections refused at the listener or per-client cap."),
    DOQ_SERIES("idle_closed_total", "counter", idle_closed,
               "Connections closed by the idle timeout."),
    DOQ_SERIES("handshake_failures_total", "counter", handshake_failures,
               "Connections that ended before their handshake completed."),
#undef DOQ_SERIES
};

void fe_secure_metrics(const struct fe_secure *s, struct buf *b)
{
    bool any = false;

    for (const struct node *n = s ? s->nodes : NULL; n; n = n->next)
        any |= n->doq != NULL;
    if (!any)
        return;
    for (size_t i = 0; i < sizeof(doq_series) / sizeof(doq_series[0]); i++) {
        metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", doq_series[i].name, doq_series[i].help,
                       doq_series[i].name, doq_series[i].type);
        for (const struct node *n = s->nodes; n; n = n->next) {
            struct fe_doq_stats st;
            char a[NET_ADDRSTRLEN];
            if (!n->doq)
                continue;
            fe_doq_stats(n->doq, &st);
            metrics_printf(b, "%s{listener=\"%s\"} %llu\n", doq_series[i].name,
                           net_addr_str(&n->addr, a, sizeof(a)),
                           (unsigned long long)*(const uint64_t *)((const char *)&st +
                                                                    doq_series[i].off));
        }
    }
}

void fe_secure_del(struct fe_secure *s)
{
    if (!s)
        return;
    while (s->nodes) {
        struct node *n = s->nodes;
        s->nodes = n->next;
        node_close(n);
    }
    tlssrv_ctx_unref(s->tls);
    tlssrv_ctx_unref(s->quic);
    fe_relay_unref(s->relay);
    free(s);
}
