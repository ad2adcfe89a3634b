/* doh — DNS over HTTPS (RFC 8484) over HTTP/2. The transport itself is
 * doh_ops (upstream.h); this header holds the pure helpers it is built from,
 * public so unit tests and the fuzz target can reach them, and the HTTP
 * exchange ODoH sends through a DoH upstream's connections. */
#ifndef DV_UPSTREAM_DOH_H
#define DV_UPSTREAM_DOH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/h2.h"
#include "upstream/upstream.h"

/* Base64url without padding (RFC 4648 5, as RFC 8484 4.1 asks for GET) of
 * in[0..len) into out, NUL-terminated. The number of characters written, or
 * DV_ESPACE when out (cap bytes) cannot hold them and the NUL. */
long doh_b64url(const uint8_t *in, size_t len, char *out, size_t cap);

/* The request path from a URL's path, which may be a URI template: NULL or
 * "" mean "/dns-query"; a "{?dns}" variable at the end is removed (the GET
 * method adds dns= itself). 0, DV_EINVAL (no leading '/', any other template
 * expression, a character not allowed in a request target) or DV_ESPACE. */
int doh_path(const char *url_path, char *out, size_t cap);

/* The :authority for host (a name, or an IP literal, v6 without brackets)
 * and port: "[v6]" bracketed, ":port" added unless it is 443. 0 or
 * DV_ESPACE. */
int doh_authority(const char *host, uint16_t port, char *out, size_t cap);

/* The verdict on a complete DoH response (h2.h): 0 when it carries an
 * answer (status 200, content-type application/dns-message, at least a DNS
 * header with the query's ID 0), DV_ESERVFAIL for a 5xx status, else
 * DV_EPROTO. */
int doh_answer_rc(const struct h2_req *r);

/* One HTTP exchange on a DoH upstream's connections (ODoH: the target's
 * configs, sealed queries to a relay). Owned by the caller like an xfer. */
struct doh_http {
    struct xfer x;      /* x.msg/x.len: the body, sent as is (len 0: GET);
                         * x.done: rc 0 with the response body for any
                         * complete response, whatever its status */
    const char *path;   /* :path, with its query string; copied */
    const char *ctype;  /* media type sent and expected; NULL: none */
    /* the response, valid in done with rc 0 */
    int status;
    bool ctype_ok;
    int64_t max_age;    /* cache-control max-age (s), -1 when absent */
};

/* Queues h on u, which must be a DoH upstream; cancel with
 * u->ops->cancel(u, &h->x). 0 or DV_E* as doh's send. */
int doh_send_http(struct upstream *u, struct doh_http *h);

#endif
