/* libFuzzer target for the DoH response path: a client HTTP/2 session (h2.c)
 * with requests in flight takes the input as the server's bytes (headers,
 * status, content-type, body limit, RST_STREAM, GOAWAY, refused streams),
 * then the connection dies; every request must end exactly once
 * (doh_harness.h aborts otherwise).
 *
 * An odd first byte puts a valid server preface (an empty SETTINGS frame)
 * in front of the rest, so the fuzzer spends its time past the preface. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "doh_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    uint8_t *buf;

    if (size == 0 || !(data[0] & 1)) {
        doh_harness_response(data, size);
        return 0;
    }
    buf = malloc(sizeof(settings) + size - 1);
    if (!buf)
        return 0;
    memcpy(buf, settings, sizeof(settings));
    memcpy(buf + sizeof(settings), data + 1, size - 1);
    doh_harness_response(buf, sizeof(settings) + size - 1);
    free(buf);
    return 0;
}
