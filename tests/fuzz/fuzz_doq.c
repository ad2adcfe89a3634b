/* libFuzzer target for the DoQ response-stream reader (src/upstream/doq.h):
 * the input is a stream plus the sizes of the pieces it arrives in. Whatever
 * the split, the reader must reach the verdict a one-shot reference check
 * gives, report a message at most once, and never read past its input. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "upstream/doq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The rules of RFC 9250 4.2 on a whole stream: exactly one message of at
 * least a header, with ID 0, and nothing after it. */
static bool reference_ok(const uint8_t *s, size_t n)
{
    size_t len;

    if (n < 2)
        return false;
    len = (size_t)s[0] << 8 | s[1];
    return n == 2 + len && len >= 12 && s[2] == 0 && s[3] == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct doq_rx r;
    size_t seed, off = 0;
    int verdict = 0;

    if (size < 1)
        return 0;
    seed = data[0];
    data++;
    size--;
    doq_rx_init(&r);
    do {
        size_t piece = (seed * 2654435761u >> 7) % 131; /* empty pieces too */
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        if (piece > size - off)
            piece = size - off;
        /* copy, so an over-read of the piece is caught by ASan */
        uint8_t *buf = malloc(piece ? piece : 1);
        memcpy(buf, data + off, piece);
        off += piece;
        int rc = doq_rx_feed(&r, buf, piece, off == size);
        free(buf);
        if (rc == DV_ENOMEM)
            abort();
        if (rc == 1 && verdict == 1)
            abort(); /* reported twice */
        if (rc < 0) {
            verdict = rc;
            break;
        }
        if (rc == 1)
            verdict = 1;
    } while (off < size);
    if ((verdict == 1) != reference_ok(data, size))
        abort();
    if (verdict == 1 && (r.len != size - 2 || memcmp(r.msg, data + 2, r.len) != 0))
        abort();
    doq_rx_free(&r);
    return 0;
}
