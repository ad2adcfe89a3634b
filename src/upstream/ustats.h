/* ustats — what happened between us and one upstream, for the metrics and
 * the status page: queries sent, answers by rcode, failures by kind, a
 * latency histogram, handshakes by kind, connections and bytes.
 *
 * Embedded in struct upstream (u->stats). The query layer records attempts
 * and outcomes; each transport records only what it alone sees (handshakes,
 * connections, bytes, HTTP statuses, DoQ error codes). Plain counters, no
 * allocation: safe to call from any callback. */
#ifndef DV_UPSTREAM_USTATS_H
#define DV_UPSTREAM_USTATS_H

#include <stdbool.h>
#include <stdint.h>

enum ustats_fail {
    USTATS_F_TIMEOUT,    /* no answer before the deadline */
    USTATS_F_CONN,       /* refused, reset, lost, or backing off */
    USTATS_F_TLS,        /* handshake or certificate verification */
    USTATS_F_PROTO,      /* the peer broke DNS or its transport's rules */
    USTATS_F_HTTP,       /* DoH answered with a status other than 200 */
    USTATS_F_SERVER,     /* the server gave up (DoQ internal error, excessive load) */
    USTATS_F_OTHER,
    USTATS_F_N
};

enum ustats_hs {
    USTATS_HS_FULL,
    USTATS_HS_RESUMED,
    USTATS_HS_EARLY_ACCEPTED, /* 0-RTT data the server took */
    USTATS_HS_EARLY_REJECTED, /* 0-RTT offered, sent again after the handshake */
    USTATS_HS_N
};

/* Upper bounds of the latency buckets, seconds; one more bucket is +Inf. */
enum { USTATS_NBUCKETS = 14, USTATS_NCODES = 8 };
extern const double ustats_bounds[USTATS_NBUCKETS];
extern const char *const ustats_fail_names[USTATS_F_N];
extern const char *const ustats_hs_names[USTATS_HS_N];

/* One counted status or error code; slots fill in order, the rest go to
 * codes_other so a server cannot grow the table. */
struct ustats_code {
    uint64_t code, n;
};

struct ustats {
    uint64_t sent;
    uint64_t rcode[16];
    uint64_t fail[USTATS_F_N];
    uint64_t lat[USTATS_NBUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t lat_count;
    double lat_sum;                    /* seconds */
    uint64_t hs[USTATS_HS_N];
    uint64_t conns_opened, conns_closed;
    uint64_t bytes_in, bytes_out;      /* DNS transport payload: TLS, HTTP/2, QUIC bytes */
    struct ustats_code http[USTATS_NCODES], doq[USTATS_NCODES];
    uint64_t http_other, doq_other;
    uint64_t migrations_ok, migrations_failed; /* DoQ connections moved to a new path */
};

/* Where a transport points its counters once close() ran: its remaining
 * connections may outlive the upstream that held the real ones. */
extern struct ustats ustats_sink;

/* Each takes s NULL as nothing to count. */
void ustats_sent(struct ustats *s);
/* An answer with rcode after us microseconds. */
void ustats_answer(struct ustats *s, unsigned rcode, uint64_t us);
/* A failed attempt, by its DV_E* code. */
void ustats_fail(struct ustats *s, int rc);
void ustats_handshake(struct ustats *s, enum ustats_hs kind);
void ustats_conn_opened(struct ustats *s);
void ustats_conn_closed(struct ustats *s);
void ustats_bytes(struct ustats *s, uint64_t in, uint64_t out);
void ustats_http_status(struct ustats *s, unsigned status);
void ustats_doq_error(struct ustats *s, uint64_t code);
/* A QUIC connection migration that ended: its new path validated, or not. */
void ustats_migration(struct ustats *s, bool ok);

/* A monotonic clock in microseconds, for latencies below a millisecond. */
uint64_t ustats_now_us(void);

/* Latency at quantile q (0..1), in seconds, interpolated inside the bucket
 * it falls in; 0 with no samples. Past the last bound: that bound. */
double ustats_quantile(const struct ustats *s, double q);
/* Every failure kind added up. */
uint64_t ustats_failures(const struct ustats *s);

#endif
