/* libFuzzer target for the cache's handling of upstream answers, which are
 * untrusted: the input is offered as an answer to the question it carries
 * (and to a fixed one), then looked up at several times. Whatever is served
 * must be a well-formed answer to the question asked, never longer than the
 * stored message, and the byte count must stay within the bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "dns/dns.h"
#include "resolve/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static struct cache *cache;
static uint8_t out[DNS_MSG_MAX];

static void exercise(const struct dns_question *q, const uint8_t *msg, size_t len)
{
    static const uint64_t times[] = {0, 999, 1000, 30000, 86400000, 86400000ull * 3};
    const uint64_t t0 = 1000000;
    size_t olen;

    for (unsigned flags = 0; flags < 4; flags++) {
        int rc = cache_insert(cache, q, flags, msg, len, t0);
        CHECK(rc == 0 || rc == 1 || rc < 0);
        for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
            olen = 0;
            rc = cache_lookup(cache, q, flags, 0x1234, t0 + times[i], out, sizeof(out), &olen);
            if (rc == CACHE_HIT || rc == CACHE_HIT_REFRESH) {
                CHECK(olen >= DNS_HDR_LEN && olen <= len);
                CHECK(dns_get16(out) == 0x1234);
                CHECK(dns_response_check(out, olen, q) == 0);
            } else if (rc == CACHE_STALE) {
                olen = 0;
                rc = cache_lookup_stale(cache, q, flags, 7, t0 + times[i], out, sizeof(out),
                                        &olen);
                if (rc == CACHE_STALE || rc == CACHE_HIT)
                    CHECK(olen >= DNS_HDR_LEN && dns_response_check(out, olen, q) == 0);
            }
        }
    }
    struct cache_stats st;
    cache_stats(cache, &st);
    CHECK(st.bytes <= st.size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_question q;

    if (!cache) {
        struct cache_opts o;
        cache_opts_default(&o);
        o.size = 256 * 1024;
        o.neg_ttl_nosoa = 5;
        o.min_ttl = 1;
        if (cache_new(&cache, &o))
            abort();
    }
    if (size > DNS_MSG_MAX)
        return 0;
    /* the question the message itself carries, when it parses as a query */
    struct dns_cur c;
    dns_cur_init(&c, data, size);
    struct dns_hdr h;
    dns_hdr_read(&c, &h);
    if (!c.err && h.qdcount == 1 && dns_question_read(&c, &q) == 0)
        exercise(&q, data, size);
    q.name_len = (uint16_t)dns_name_from_str("example.com", q.name);
    q.qtype = DNS_TYPE_A;
    q.qclass = DNS_CLASS_IN;
    exercise(&q, data, size);
    return 0;
}
