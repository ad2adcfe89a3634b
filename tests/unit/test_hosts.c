/* hosts: names to addresses, addresses to their first name (PTR), NODATA
 * for other types, case, aliases, IPv6 reverse names, and lines that are
 * not ADDRESS NAME. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"
#include "resolve/hosts.h"

static const char text[] =
    "# comment\n"
    "192.0.2.10  nas.home.example nas   # alias without a dot\n"
    "192.0.2.11  NAS.home.example.\n"
    "2001:db8::10 nas.home.example\n"
    "192.0.2.10  other.example\n"
    "not-an-address foo.example\n"
    "192.0.2.12\n";

static struct dns_query_info query(const char *name, uint16_t type)
{
    struct dns_query_info qi;

    memset(&qi, 0, sizeof(qi));
    qi.hdr.id = 0x1234;
    qi.hdr.flags = DNS_FLAG_RD;
    qi.q.name_len = (uint16_t)dns_name_from_str(name, qi.q.name);
    qi.q.qtype = type;
    qi.q.qclass = DNS_CLASS_IN;
    return qi;
}

/* The answer's record count and, for the first record, its RDATA. */
static int answers(const struct hosts *h, const char *name, uint16_t type, uint8_t *rdata,
                   size_t *rdlen)
{
    struct dns_query_info qi = query(name, type);
    uint8_t out[1024], lower[DNS_NAME_MAX];
    struct dns_rr_iter it;
    struct dns_rr rr;
    int n, count = 0;

    memcpy(lower, qi.q.name, qi.q.name_len);
    dns_name_lower(lower, qi.q.name_len);
    if (!hosts_knows(h, lower, qi.q.name_len))
        return -1;
    n = hosts_answer(h, &qi, 60, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal(dns_response_check(out, (size_t)n, &qi.q), 0);
    assert_int_equal(dns_rr_iter_init(&it, out, (size_t)n), 0);
    while (dns_rr_next(&it, &rr) == 1) {
        if (count++ == 0 && rdata) {
            memcpy(rdata, out + rr.rdata_off, rr.rdlen);
            *rdlen = rr.rdlen;
        }
        assert_int_equal(rr.type, type);
        assert_int_equal(rr.ttl, 60);
    }
    return count;
}

static void test_hosts(void **state)
{
    struct hosts *h;
    struct hosts_info info;
    uint8_t rd[256], want[DNS_NAME_MAX];
    size_t rdlen = 0;

    (void)state;
    assert_int_equal(hosts_parse(text, sizeof(text) - 1, &h, &info), 0);
    assert_int_equal(info.names, 3);
    assert_int_equal(info.skipped, 2);
    assert_int_equal(info.first_bad, 6);

    assert_int_equal(answers(h, "nas.home.example.", DNS_TYPE_A, rd, &rdlen), 2);
    assert_int_equal(rdlen, 4);
    assert_memory_equal(rd, "\xc0\x00\x02\x0a", 4);
    assert_int_equal(answers(h, "NAS.Home.Example.", DNS_TYPE_AAAA, rd, &rdlen), 1);
    assert_int_equal(rdlen, 16);
    assert_int_equal(answers(h, "nas.", DNS_TYPE_A, NULL, NULL), 1);
    assert_int_equal(answers(h, "nas.home.example.", DNS_TYPE_MX, NULL, NULL), 0);
    assert_int_equal(answers(h, "other.example.", DNS_TYPE_AAAA, NULL, NULL), 0);
    assert_int_equal(answers(h, "www.nas.home.example.", DNS_TYPE_A, NULL, NULL), -1);
    assert_int_equal(answers(h, "foo.example.", DNS_TYPE_A, NULL, NULL), -1);

    /* the first line naming an address gives its PTR */
    assert_int_equal(answers(h, "10.2.0.192.in-addr.arpa.", DNS_TYPE_PTR, rd, &rdlen), 1);
    int wl = dns_name_from_str("nas.home.example.", want);
    assert_int_equal(rdlen, wl);
    assert_memory_equal(rd, want, rdlen);
    assert_int_equal(
        answers(h, "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                DNS_TYPE_PTR, NULL, NULL), 1);
    assert_int_equal(answers(h, "12.2.0.192.in-addr.arpa.", DNS_TYPE_PTR, NULL, NULL), -1);
    hosts_del(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
