/* frame — the 2-byte length prefix that carries DNS messages over byte
 * streams (RFC 1035 4.2.2, RFC 7766; DoT RFC 7858, DoQ RFC 9250).
 *
 * The reader is an explicit state machine: the stream may arrive split at
 * any byte, so frame_read consumes what it is given, remembers where it
 * stopped, and reports a message only once all of it is there. */
#ifndef DV_UPSTREAM_FRAME_H
#define DV_UPSTREAM_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum frame_state {
    FRAME_LEN_HI, /* expecting the first length byte */
    FRAME_LEN_LO, /* expecting the second length byte */
    FRAME_BODY,   /* collecting want bytes of body */
};

/* Embedded in its owner: frame_init / frame_free. */
struct frame_rd {
    enum frame_state state;
    size_t want;   /* body length announced by the prefix */
    size_t have;   /* body bytes collected so far */
    uint8_t *body; /* reassembly buffer, grown on demand up to 65535 */
    size_t cap;
};

void frame_init(struct frame_rd *f);
void frame_free(struct frame_rd *f);

/* Consumes bytes from in[0..len) and stops right after the first message
 * that completes. Returns the number of bytes consumed (<= len), or
 * DV_ENOMEM (the stream is then out of step: drop it). When a message
 * completed, *pmsg and *pmsglen point at it (possibly inside in, when it
 * arrived whole) and stay valid until the next call on f or until in is
 * reused; otherwise *pmsg is NULL.
 * A zero-length frame is reported as a message of length 0: judging it is
 * the caller's business. */
long frame_read(struct frame_rd *f, const uint8_t *in, size_t len, const uint8_t **pmsg,
                size_t *pmsglen);

/* True when a message has started but not finished: a stream that ends now
 * was cut short. */
bool frame_partial(const struct frame_rd *f);

/* Writes the prefix for a message of len bytes (len <= 65535) to out[0..2). */
void frame_put_len(uint8_t *out, size_t len);

#endif
