/* libFuzzer target for src/upstream/frame: the input is a byte stream plus
 * the sizes of the pieces it arrives in; the incremental reader must yield
 * exactly the messages a one-shot reference parse finds, whatever the split. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct frame_rd f;
    size_t ref = 0; /* reference parser's position */
    size_t off, seed;

    if (size < 1)
        return 0;
    /* the first byte seeds the piece sizes */
    seed = data[0];
    data++;
    size--;
    frame_init(&f);
    off = 0;
    while (off < size) {
        size_t piece = 1 + (seed * 2654435761u >> 7) % 97;
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        if (piece > size - off)
            piece = size - off;
        size_t poff = 0;
        while (poff < piece) {
            const uint8_t *m;
            size_t mlen;
            long used = frame_read(&f, data + off + poff, piece - poff, &m, &mlen);
            if (used < 0)
                abort(); /* only ENOMEM, which must not happen here */
            if (used == 0 || (size_t)used > piece - poff)
                abort();
            poff += (size_t)used;
            if (!m)
                continue;
            /* the reference: the next frame of the whole input */
            if (size - ref < 2)
                abort();
            size_t want = (size_t)data[ref] << 8 | data[ref + 1];
            if (mlen != want || size - ref - 2 < want ||
                (want && memcmp(m, data + ref + 2, want) != 0))
                abort();
            ref += 2 + want;
            if (ref != off + poff)
                abort();
        }
        off += piece;
    }
    /* whatever is left over is exactly an unfinished frame */
    if ((ref != size) != frame_partial(&f))
        abort();
    frame_free(&f);
    return 0;
}
