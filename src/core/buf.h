/* buf — a growable byte buffer with a read offset, for stream reassembly and
 * output queues. Embedded in its owner: buf_init/buf_free. */
#ifndef DV_CORE_BUF_H
#define DV_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t off; /* first unconsumed byte */
    size_t len; /* end of valid bytes */
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Makes room for n more bytes after len. 0 or DV_ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
/* 0 or DV_ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Drops n bytes from the front. */
void buf_consume(struct buf *b, size_t n);

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
/* NULL for a buffer that never held anything (NULL + 0 is undefined in C) */
static inline uint8_t *buf_head(const struct buf *b) { return b->data ? b->data + b->off : NULL; }

#endif
