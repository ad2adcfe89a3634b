/* libFuzzer target for hosts files (hosts_file): parse arbitrary text, then
 * answer A, AAAA and PTR for the input's first bytes as a name; every answer
 * must pass the checks an upstream answer must pass. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "resolve/hosts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t types[] = {DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_PTR, DNS_TYPE_MX};
    struct dns_query_info qi;
    struct hosts *h;
    struct hosts_info info;
    uint8_t out[DNS_MSG_MAX];

    if (hosts_parse((const char *)data, size, &h, &info))
        return 0;
    memset(&qi, 0, sizeof(qi));
    size_t off = 0;
    while (off < size && off < 200 && data[off] && off + 1 + data[off] <= size &&
           off + 1 + data[off] < 250)
        off += 1u + data[off];
    memcpy(qi.q.name, data, off);
    qi.q.name[off] = 0;
    qi.q.name_len = off + 1;
    qi.q.qclass = DNS_CLASS_IN;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        qi.q.qtype = types[i];
        if (!hosts_knows(h, qi.q.name, qi.q.name_len))
            continue;
        int n = hosts_answer(h, &qi, 60, out, sizeof(out));
        if (n > 0 && dns_response_check(out, (size_t)n, &qi.q) != 0)
            abort();
    }
    hosts_del(h);
    return 0;
}
