/* doh_listen — DNS over HTTPS (RFC 8484) on the TCP listener: the HTTP/2
 * session of each connection (dohsrv.c) between tcp.c's TLS connection and
 * the query engine. */
#ifndef DV_FRONTEND_DOH_LISTEN_H
#define DV_FRONTEND_DOH_LISTEN_H

#include "frontend/stream.h"

struct fe_relay;

/* A listener's settings, the proto_arg of fe_tcp_new_tls; connections
 * copy them when they open. */
struct fe_doh_opts {
    char path[256];       /* the DoH path, e.g. "/dns-query" */
    unsigned max_streams; /* advertised and enforced per connection */
    char relay_path[256]; /* ODoH relay requests come here ("" = off) */
    struct fe_relay *relay; /* its targets; NULL = off */
};

extern const struct fe_stream_proto fe_doh_proto;

#endif
