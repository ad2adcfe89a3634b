/* h2 — the client side of HTTP/2 exchanges for DoH and ODoH, on nghttp2,
 * pure: the server's bytes go in (h2_recv), the bytes to send come out
 * (h2_send), and every request submitted ends in exactly one event — a
 * response, a failure, or "never reached the server" — unless the caller
 * cancels it first. No socket, no TLS, no timer: doh.c moves the bytes and
 * keeps time; tests and the fuzz target drive it with bytes alone.
 *
 * Events are called from inside h2_recv, h2_send and h2_abort. An event
 * handler may not call back into the session (the caller's transport queues
 * the outcome and acts on it once the call returns, see conn_scope). */
#ifndef DV_TLS_H2_H
#define DV_TLS_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/list.h"

enum {
    H2_BODY_MAX = 65535, /* neither a DNS nor an ODoH message can be longer */
};

/* One request, embedded in the caller's. The request fields must stay valid
 * and unchanged while r is in a session. */
struct h2_req {
    const char *path;      /* :path, with any query string */
    const char *ctype;     /* media type: content-type of the body, accept, and
                            * what the answer must carry; NULL: none asked */
    const uint8_t *body;   /* POST body; NULL: GET */
    size_t len;

    /* the response once the done event ran with rc 0 (any status) */
    int status;
    bool ctype_ok;         /* its content-type is ctype (parameters ignored) */
    int64_t max_age;       /* cache-control max-age (s), -1 when absent */
    struct buf resp;       /* the body; the caller frees it (buf_free) */

    /* the session's */
    struct list_link link;
    int32_t sid;
    size_t off;
};

struct h2_events {
    /* r's response is complete (rc 0) or its stream failed: DV_EPROTO (reset
     * by the server, a body over H2_BODY_MAX), DV_ENOMEM, or the rc given to
     * h2_abort. r has left the session. */
    void (*done)(void *arg, struct h2_req *r, int rc);
    /* r never reached the server (refused, or not sent before GOAWAY or the
     * end of the session): safe to send again elsewhere. r has left. */
    void (*refused)(void *arg, struct h2_req *r);
};

struct h2;

/* A client session (preface and SETTINGS queued for h2_send) whose requests
 * carry authority; name is for log lines. Both strings are copied.
 * 0 or DV_ENOMEM. */
int h2_new(const struct h2_events *ev, void *arg, const char *authority, const char *name,
           struct h2 **ps);
/* Frees s. Requests still in it are forgotten without an event: call
 * h2_abort first to have them reported. */
void h2_del(struct h2 *s);

/* Starts r (its response fields are reset). 0, DV_EPROTO (no new stream on
 * this session: it is draining; try another) or DV_ENOMEM. */
int h2_submit(struct h2 *s, struct h2_req *r);
/* Takes r out with RST_STREAM; no event will name it, and it may be freed at
 * once. */
void h2_cancel(struct h2 *s, struct h2_req *r);

/* The server's next len bytes. 0, or DV_EPROTO: the connection is broken
 * (h2_abort it). */
int h2_recv(struct h2 *s, const uint8_t *in, size_t len);
/* The next bytes to send in *pout (valid until the next call on s): their
 * count, 0 when there are none, or DV_EPROTO (h2_abort it). */
long h2_send(struct h2 *s, const uint8_t **pout);
/* The connection is gone: every request in s ends, as refused when the
 * server never saw it, else done with rc. */
void h2_abort(struct h2 *s, int rc);

/* The path is gone, not the requests: every request in s ends as refused
 * (to be sent again on another connection) and s takes no new ones. */
void h2_release(struct h2 *s);

/* Queues a GOAWAY: no new streams; the ones open may finish. */
void h2_terminate(struct h2 *s);
/* Queues a PING. 0 or DV_ENOMEM. */
int h2_ping(struct h2 *s);

/* Requests in s (cancelled ones left it). */
size_t h2_live(const struct h2 *s);
/* True while another request may start now: not draining, and fewer streams
 * open than the server allows (at most cap). */
bool h2_has_room(const struct h2 *s, uint32_t cap);
/* GOAWAY seen, or stream IDs nearly used up: no new requests. */
bool h2_draining(const struct h2 *s);
/* Both sides are done (GOAWAY exchanged, every stream closed). */
bool h2_finished(const struct h2 *s);
/* Bytes are waiting for h2_send. */
bool h2_want_write(const struct h2 *s);

#endif
