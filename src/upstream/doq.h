/* doq — DNS over QUIC (RFC 9250). The transport itself is doq_ops (see
 * upstream.h); this header exposes the one pure piece of it, the reader of a
 * response stream, so it can be unit-tested and fuzzed on its own.
 *
 * A DoQ response stream carries exactly one message: a 2-byte length, the
 * message, then the end of the stream. Anything else — a FIN before the
 * message is whole, bytes after it, a message too short for a DNS header or
 * one whose Message ID is not 0 — is a DOQ_PROTOCOL_ERROR (RFC 9250 4.2,
 * 4.2.1). */
#ifndef DV_UPSTREAM_DOQ_H
#define DV_UPSTREAM_DOQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream/frame.h"

/* DoQ application error codes (RFC 9250 8.4). */
enum {
    DOQ_NO_ERROR = 0x0,
    DOQ_INTERNAL_ERROR = 0x1,
    DOQ_PROTOCOL_ERROR = 0x2,
    DOQ_REQUEST_CANCELLED = 0x3,
    DOQ_EXCESSIVE_LOAD = 0x4,
};

/* Embedded in its owner: doq_rx_init / doq_rx_free. */
struct doq_rx {
    struct frame_rd fr;
    uint8_t *msg;  /* the complete message, owned, once doq_rx_feed said so */
    size_t len;
    bool fin;      /* the stream has ended */
};

void doq_rx_init(struct doq_rx *r);
void doq_rx_free(struct doq_rx *r);

/* Consumes the next len bytes of the stream; fin says the stream ends after
 * them. Returns 0 while the answer is incomplete, 1 once the message is whole
 * and the stream has ended (r->msg/r->len hold it), DV_EPROTO when the stream
 * breaks the rules above, DV_ENOMEM. After 1 or an error, further calls
 * return DV_EPROTO. */
int doq_rx_feed(struct doq_rx *r, const uint8_t *data, size_t len, bool fin);

/* Maps a DoQ error code the server reset a stream or closed the connection
 * with to the DV_E* code the query fails with. */
int doq_error_to_rc(uint64_t code);

#endif
