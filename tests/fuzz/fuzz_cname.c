/* libFuzzer target for joining a CNAME rule's answer with the target's
 * answer (resolve/cname.c), whose bytes are an upstream's and untrusted: the
 * input is the target's answer. Whatever comes out must be a well-formed
 * answer to the client's question whose first record is the CNAME. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "dns/dns.h"
#include "resolve/cname.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static uint8_t out[DNS_MSG_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_query_info qi;
    uint8_t target[DNS_NAME_MAX];
    int tlen = dns_name_from_str("target.example.", target);

    memset(&qi, 0, sizeof(qi));
    qi.hdr.id = 0x4242;
    qi.hdr.flags = DNS_FLAG_RD;
    qi.q.name_len = (uint16_t)dns_name_from_str("alias.example.", qi.q.name);
    qi.q.qtype = DNS_TYPE_A;
    qi.q.qclass = DNS_CLASS_IN;
    for (int edns = 0; edns < 2; edns++) {
        qi.edns.present = edns;
        static const size_t caps[] = {64, 512, 4096, sizeof(out)};
        for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
            int n = cname_compose(&qi, target, (size_t)tlen, 60, data, size, out, caps[i]);
            CHECK(n > 0 || n == DV_EMALFORMED || n == DV_ESPACE);
            if (n <= 0)
                continue;
            CHECK((size_t)n <= caps[i]);
            CHECK(dns_response_check(out, (size_t)n, &qi.q) == 0);
            CHECK(dns_get16(out) == 0x4242 && dns_get16(out + 6) >= 1);
            struct dns_rr_iter it;
            struct dns_rr rr;
            CHECK(dns_rr_iter_init(&it, out, (size_t)n) == 0);
            CHECK(dns_rr_next(&it, &rr) == 1 && rr.type == DNS_TYPE_CNAME);
            int rc;
            while ((rc = dns_rr_next(&it, &rr)) == 1)
                ;
            CHECK(rc == 0);
        }
    }
    return 0;
}
