/* libFuzzer target for DNS stamps (sdns://...), which come from public
 * resolver lists: decode arbitrary text, and when it decodes, the URL built
 * from it must be a C string that starts with a scheme we know. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/stamp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[4096], url[600], err[200];
    struct stamp st;

    if (size > sizeof(text) - 8)
        return 0;
    /* half the inputs as raw payloads behind the prefix, half as text */
    if (size && data[0] & 1) {
        memcpy(text, "sdns://", 7);
        memcpy(text + 7, data + 1, size - 1);
        text[7 + size - 1] = 0;
    } else {
        memcpy(text, data, size);
        text[size] = 0;
    }
    if (stamp_decode(text, &st, err, sizeof(err)) != 0)
        return 0;
    if (st.addr[sizeof(st.addr) - 1] || st.host[sizeof(st.host) - 1] ||
        st.path[sizeof(st.path) - 1])
        abort();
    if (stamp_to_url(&st, url, sizeof(url), err, sizeof(err)) == 0 &&
        strncmp(url, "udp://", 6) && strncmp(url, "tls://", 6) && strncmp(url, "https://", 8) &&
        strncmp(url, "quic://", 7) && strncmp(url, "odoh://", 7))
        abort();
    return 0;
}
