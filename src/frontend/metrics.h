/* metrics — a minimal HTTP/1.0 endpoint that serves the counters in the
 * Prometheus text format on GET /metrics. Non-blocking like every other
 * socket of the loop; a handful of short-lived connections at a time. */
#ifndef DV_FRONTEND_METRICS_H
#define DV_FRONTEND_METRICS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/net.h"

struct metrics;

/* Appends the exposition text to out. */
typedef void (*metrics_render_fn)(void *arg, struct buf *out);

/* Binds a and serves it. NULL with errno. */
struct metrics *metrics_new(struct ev_loop *loop, const struct net_addr *a,
                            metrics_render_fn fn, void *arg);
void metrics_del(struct metrics *m);

/* The status page: json renders /status.json, page[0..len) is served at /
 * (borrowed, static). json NULL: no page, / serves the counters as before. */
void metrics_set_page(struct metrics *m, metrics_render_fn json, const unsigned char *page,
                      size_t len);
/* Basic auth for every path (RFC 7617); NULL user: none. 0 or DV_ENOMEM. */
int metrics_set_auth(struct metrics *m, const char *user, const char *password);

/* One request's head, as the server reads it: the path of a GET (without
 * the query string) and the Authorization header's value, both pointing
 * into the request and not NUL-terminated. */
struct metrics_req {
    bool get;
    const char *path;
    size_t path_len;
    const char *auth; /* NULL when absent */
    size_t auth_len;
};

/* Parses a complete request head req[0..len). 0, or DV_EMALFORMED when it
 * has no request line. Never reads past len. */
int metrics_parse_request(const char *req, size_t len, struct metrics_req *out);

/* printf into a buf (a helper for renderers). 0 or DV_ENOMEM. */
int metrics_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
