/* doh — DNS over HTTPS (RFC 8484) over HTTP/2. The transport itself is
 * doh_ops (upstream.h); this header holds the pure helpers it is built from,
 * public so unit tests and the fuzz target can reach them. */
#ifndef DV_UPSTREAM_DOH_H
#define DV_UPSTREAM_DOH_H

#include <stddef.h>
#include <stdint.h>

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

/* For the fuzz target and tests: one client HTTP/2 session with three
 * requests in flight (streams 1, 3, 5; GET when len is odd, else POST)
 * receives in[0..len) as the server's bytes, then dies; checks that every
 * request completes exactly once and that answers carry the query's ID
 * (aborts otherwise). The number of requests answered (0-3), DV_ENOMEM, or
 * DV_EINVAL when built without nghttp2/TLS. No socket, no TLS. */
int doh_fuzz_response(const uint8_t *in, size_t len);

#endif
