/* dohsrv — the server side of DNS over HTTPS (RFC 8484) on nghttp2, pure:
 * the client's bytes go in (dohsrv_recv), the bytes to send come out
 * (dohsrv_send). No socket, no TLS, no timer: the listener moves the bytes;
 * tests and the fuzz target drive it with bytes alone.
 *
 * A request is a DNS query when it is POST with content-type
 * application/dns-message and a body, or GET with ?dns= (base64url, no
 * padding), on the configured path. Anything else is answered here with an
 * HTTP error: 400 (a malformed or missing message, a :path over 1024
 * bytes), 404 (another path), 405 (another method), 413 (a body over 65535
 * bytes, said by content-length or sent), 415 (another content type). A
 * query is handed out through the query event and answered with
 * dohsrv_answer: 200, application/dns-message, cache-control max-age from
 * the answer's smallest TTL. The stream limit is advertised in SETTINGS and
 * nghttp2 refuses streams beyond it.
 *
 * With a relay path, a POST there of application/oblivious-dns-message
 * with targethost and targetpath (RFC 9230 §4.1, percent-decoded here) is
 * handed out through the relay event and answered with dohsrv_reply; the
 * same errors apply (400 for a missing or bad target). */
#ifndef DV_FRONTEND_DOHSRV_H
#define DV_FRONTEND_DOHSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    DOHSRV_BODY_MAX = 65535, /* no DNS message can be longer */
    DOHSRV_PATH_MAX = 1024,  /* a longer :path gets 400 */
};

struct dohsrv;

struct dohsrv_opts {
    const char *path;     /* e.g. "/dns-query"; copied */
    unsigned max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    const char *relay_path; /* ODoH relay requests; NULL = none; copied */
};

struct dohsrv_events {
    /* A DNS query (len >= 12, QR clear) arrived on stream sid. Answer it
     * with dohsrv_answer, now or later; msg is only valid during the call.
     * May not call back into the session but dohsrv_answer. */
    void (*query)(void *arg, int32_t sid, const uint8_t *msg, size_t len);
    /* An ODoH message body for https://host path (both decoded, path
     * starting with '/'); answer with dohsrv_reply. May be NULL with no
     * relay path. */
    void (*relay)(void *arg, int32_t sid, const char *host, const char *path,
                  const uint8_t *body, size_t len);
};

/* A server session with the SETTINGS queued for dohsrv_send. 0 or
 * DV_ENOMEM. */
int dohsrv_new(const struct dohsrv_opts *o, const struct dohsrv_events *ev, void *arg,
               struct dohsrv **ps);
void dohsrv_del(struct dohsrv *s);

/* The client's next len bytes. 0, or DV_EPROTO: not HTTP/2 or broken beyond
 * repair (close the connection after sending what dohsrv_send still has). */
int dohsrv_recv(struct dohsrv *s, const uint8_t *in, size_t len);
/* True when the bytes given to a failed dohsrv_recv start like an HTTP/1
 * request (the listener may answer 505 in plain HTTP/1.1). */
bool dohsrv_was_http1(const struct dohsrv *s);
/* The next bytes to send in *pout (valid until the next call on s): their
 * count, 0 when there are none, or DV_EPROTO. */
long dohsrv_send(struct dohsrv *s, const uint8_t **pout);
/* Answers the query of stream sid with the DNS message msg (copied). A
 * stream the client has closed meanwhile is skipped. 0 or DV_ENOMEM. */
int dohsrv_answer(struct dohsrv *s, int32_t sid, const uint8_t *msg, size_t len);
/* Answers the request of stream sid with status, and when body is not
 * NULL that body (copied) as content-type ctype. No cache-control. A
 * stream the client has closed is skipped. 0 or DV_ENOMEM. */
int dohsrv_reply(struct dohsrv *s, int32_t sid, int status, const char *ctype,
                 const uint8_t *body, size_t len);
/* Queues a GOAWAY: open streams may finish, no new ones start. */
void dohsrv_terminate(struct dohsrv *s);
/* Both sides are done: nothing more to read or send. */
bool dohsrv_finished(const struct dohsrv *s);
/* Queries handed out and not answered yet (on streams still open). */
size_t dohsrv_waiting(const struct dohsrv *s);

#endif
