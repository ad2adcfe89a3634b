/* doh_listen — the DoH stream protocol; see doh_listen.h. Each query gets a
 * small sink context (the stream it came on), so answers go back on their
 * own stream in whatever order they complete. */
#include "frontend/doh_listen.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "frontend/dohsrv.h"
#include "frontend/relay.h"
#include "resolve/query.h"

struct doh_conn {
    struct dohsrv *srv;
    struct tcp_conn *c;
    struct fe_relay *relay; /* referenced; NULL = not a relay */
    bool in_recv;           /* inside dohsrv_recv: nghttp2 may not be re-entered */
};

/* One relayed request's way back. */
struct doh_r {
    struct doh_conn *dc;
    int32_t sid;
};

/* One query's way back: held while the engine holds it. */
struct doh_q {
    struct doh_conn *dc;
    int32_t sid;
    unsigned refs;
};

static void pump(struct doh_conn *dc)
{
    const uint8_t *p;
    long n;

    if (dc->in_recv)
        return; /* doh_input pumps once nghttp2 returns */
    while ((n = dohsrv_send(dc->srv, &p)) > 0) {
        if (fe_conn_write(dc->c, p, (size_t)n)) {
            fe_conn_finish(dc->c);
            break;
        }
    }
    if (n < 0)
        fe_conn_finish(dc->c);
    fe_conn_flush(dc->c);
}

static void q_unref(struct doh_q *q)
{
    if (--q->refs == 0)
        free(q);
}

static void sink_send(void *ctx, const struct query_client *qc, const uint8_t *msg, size_t len)
{
    struct doh_q *q = ctx;
    struct doh_conn *dc = q->dc;

    if (fe_conn_closed(dc->c))
        return;
    if (dohsrv_answer(dc->srv, q->sid, msg, len)) {
        fe_conn_finish(dc->c);
        return;
    }
    fe_conn_touch(dc->c);
    pump(dc);
}

static void sink_hold(void *ctx)
{
    struct doh_q *q = ctx;

    q->refs++;
    fe_conn_hold(q->dc->c);
}

static void sink_release(void *ctx)
{
    struct doh_q *q = ctx;
    struct tcp_conn *c = q->dc->c;

    q_unref(q);
    fe_conn_release(c); /* may free the connection and dc */
}

static const struct query_sink_ops doh_sink = {
    .send = sink_send,
    .hold = sink_hold,
    .release = sink_release,
};

static void on_query(void *arg, int32_t sid, const uint8_t *msg, size_t len)
{
    struct doh_conn *dc = arg;
    struct query_client qc = {.ops = &doh_sink};
    struct doh_q *q = calloc(1, sizeof(*q));

    if (!q) {
        fe_conn_finish(dc->c);
        return;
    }
    q->dc = dc;
    q->sid = sid;
    q->refs = 1;
    qc.ctx = q;
    fe_conn_client(dc->c, &qc);
    fe_conn_touch(dc->c);
    query_submit(fe_conn_qe(dc->c), msg, len, &qc);
    q_unref(q);
}

static void relay_done(void *arg, int status, const char *ctype, const uint8_t *body, size_t len)
{
    struct doh_r *r = arg;
    struct doh_conn *dc = r->dc;
    struct tcp_conn *c = dc->c;

    if (!fe_conn_closed(c)) {
        if (dohsrv_reply(dc->srv, r->sid, status, ctype, body, len))
            fe_conn_finish(c);
        else
            pump(dc);
    }
    free(r);
    fe_conn_release(c); /* may free the connection and dc */
}

static void on_relay(void *arg, int32_t sid, const char *host, const char *path,
                     const uint8_t *body, size_t len)
{
    struct doh_conn *dc = arg;
    struct doh_r *r = calloc(1, sizeof(*r));

    if (!r) {
        fe_conn_finish(dc->c);
        return;
    }
    r->dc = dc;
    r->sid = sid;
    fe_conn_hold(dc->c);
    fe_conn_touch(dc->c);
    if (fe_relay_forward(dc->relay, host, path, body, len, relay_done, r)) {
        free(r);
        fe_conn_release(dc->c);
        fe_conn_finish(dc->c);
    }
}

static const struct dohsrv_events doh_events = {.query = on_query, .relay = on_relay};

static void *doh_open(void *arg, struct tcp_conn *c)
{
    const struct fe_doh_opts *o = arg;
    struct dohsrv_opts so = {.path = o->path, .max_streams = o->max_streams,
                             .relay_path = o->relay && o->relay_path[0] ? o->relay_path : NULL};
    struct doh_conn *dc = calloc(1, sizeof(*dc));

    if (!dc)
        return NULL;
    dc->c = c;
    if (dohsrv_new(&so, &doh_events, dc, &dc->srv)) {
        free(dc);
        return NULL;
    }
    if (so.relay_path) {
        dc->relay = o->relay;
        fe_relay_ref(dc->relay);
    }
    /* our SETTINGS go with the first answer to the client's preface, so a
     * client speaking HTTP/1.1 gets nothing but a 505 */
    return dc;
}

static void doh_input(void *st, struct tcp_conn *c)
{
    static const char http1[] = "HTTP/1.1 505 HTTP Version Not Supported\r\n"
                                "Content-Length: 0\r\nConnection: close\r\n\r\n";
    struct doh_conn *dc = st;
    struct buf *in = fe_conn_in(c);
    dc->in_recv = true;
    int rc = dohsrv_recv(dc->srv, buf_head(in), buf_used(in));
    dc->in_recv = false;

    buf_consume(in, buf_used(in));
    if (rc) {
        log_debug("doh listener: %s from a client; closing",
                  dohsrv_was_http1(dc->srv) ? "HTTP/1" : "a protocol error");
        if (dohsrv_was_http1(dc->srv))
            (void)fe_conn_write(c, http1, sizeof(http1) - 1);
        else
            pump(dc); /* the GOAWAY nghttp2 queued */
        fe_conn_finish(c);
        fe_conn_flush(c);
        return;
    }
    pump(dc);
}

static void doh_free(void *st)
{
    struct doh_conn *dc = st;

    dohsrv_del(dc->srv);
    fe_relay_unref(dc->relay);
    free(dc);
}

const struct fe_stream_proto fe_doh_proto = {
    .alpn = "h2",
    .open = doh_open,
    .input = doh_input,
    .free = doh_free,
};
