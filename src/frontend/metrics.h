/* metrics — a minimal HTTP/1.0 endpoint that serves the counters in the
 * Prometheus text format on GET /metrics. Non-blocking like every other
 * socket of the loop; a handful of short-lived connections at a time. */
#ifndef DV_FRONTEND_METRICS_H
#define DV_FRONTEND_METRICS_H

#include <ev.h>

#include "core/buf.h"
#include "core/net.h"

struct metrics;

/* Appends the exposition text to out. */
typedef void (*metrics_render_fn)(void *arg, struct buf *out);

/* Binds a and serves it. NULL with errno. */
struct metrics *metrics_new(struct ev_loop *loop, const struct net_addr *a,
                            metrics_render_fn fn, void *arg);
void metrics_del(struct metrics *m);

/* printf into a buf (a helper for renderers). 0 or DV_ENOMEM. */
int metrics_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
