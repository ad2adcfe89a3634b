/* cname: the target's query, and the reply joined from the CNAME and the
 * target's answer: names expanded out of the target's compression, TTLs and
 * rcode kept, glue and OPT left out, EDNS as the client asked, malformed
 * answers and a short buffer refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "dns/dns.h"
#include "resolve/cname.h"

static struct dns_query_info query(const char *name, uint16_t type, bool edns)
{
    struct dns_query_info qi;

    memset(&qi, 0, sizeof(qi));
    qi.hdr.id = 0x1234;
    qi.hdr.flags = DNS_FLAG_RD | DNS_FLAG_CD;
    qi.q.name_len = (uint16_t)dns_name_from_str(name, qi.q.name);
    qi.q.qtype = type;
    qi.q.qclass = DNS_CLASS_IN;
    qi.edns.present = edns;
    qi.edns.do_bit = edns;
    return qi;
}

/* www.example. A: CNAME to web.example. (compressed), web A 192.0.2.1,
 * an SOA in authority with compressed names, and glue in additional. */
static size_t target_answer(uint8_t *m, int rcode)
{
    static const uint8_t msg[] = {
        0, 7, 0x81, 0x80, 0, 1, 0, 2, 0, 1, 0, 1,
        3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1,
        /* www CNAME web.example. (name at 12, "example" at 16) */
        0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 50, 0, 6, 3, 'w', 'e', 'b', 0xc0, 16,
        /* web A 192.0.2.1 (name at 41) */
        0xc0, 41, 0, 1, 0, 1, 0, 0, 0, 40, 0, 4, 192, 0, 2, 1,
        /* example SOA ns.example. host.example. + 20 bytes */
        0xc0, 16, 0, 6, 0, 1, 0, 0, 0, 30, 0, 32, 2, 'n', 's', 0xc0, 16,
        4, 'h', 'o', 's', 't', 0xc0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
        0, 0, 0, 5,
        /* glue: ns A 192.0.2.53 */
        0xc0, 75, 0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 192, 0, 2, 53,
    };
    memcpy(m, msg, sizeof(msg));
    m[3] = (uint8_t)(0x80 | rcode);
    return sizeof(msg);
}

static void test_target_query(void **state)
{
    struct dns_query_info qi = query("Alias.Example.", DNS_TYPE_AAAA, true), got;
    uint8_t target[DNS_NAME_MAX], out[512];
    int tlen = dns_name_from_str("www.example.", target);
    int n = cname_target_query(&qi, target, (size_t)tlen, out, sizeof(out));

    assert_true(n > 0);
    assert_int_equal(dns_query_parse(out, (size_t)n, &got), 0);
    assert_int_equal(got.q.qtype, DNS_TYPE_AAAA);
    assert_memory_equal(got.q.name, target, (size_t)tlen);
    assert_true(got.hdr.flags & DNS_FLAG_RD);
    assert_true(got.hdr.flags & DNS_FLAG_CD);
    assert_true(got.edns.present && got.edns.do_bit);
    assert_int_equal(cname_target_query(&qi, target, (size_t)tlen, out, 20), DV_ESPACE);
}

static void test_compose(void **state)
{
    struct dns_query_info qi = query("alias.test.", DNS_TYPE_A, false);
    uint8_t target[DNS_NAME_MAX], ans[512], out[1024], name[DNS_NAME_MAX];
    int tlen = dns_name_from_str("www.example.", target);
    size_t alen = target_answer(ans, DNS_RCODE_NXDOMAIN);
    int n = cname_compose(&qi, target, (size_t)tlen, 77, ans, alen, out, sizeof(out));
    struct dns_rr_iter it;
    struct dns_rr rr;
    struct dns_cur c;

    assert_true(n > 0);
    assert_int_equal(dns_response_check(out, (size_t)n, &qi.q), 0);
    assert_int_equal(dns_get16(out), 0x1234);
    assert_int_equal(DNS_RCODE(dns_get16(out + 2)), DNS_RCODE_NXDOMAIN);
    assert_int_equal(dns_get16(out + 6), 3);  /* CNAME + the target's two */
    assert_int_equal(dns_get16(out + 8), 1);  /* its SOA */
    assert_int_equal(dns_get16(out + 10), 0); /* no glue, no EDNS */
    assert_int_equal(dns_rr_iter_init(&it, out, (size_t)n), 0);
    static const struct { uint16_t type; uint32_t ttl; const char *owner, *rdname; } want[] = {
        {DNS_TYPE_CNAME, 77, "alias.test.", "www.example."},
        {DNS_TYPE_CNAME, 50, "www.example.", "web.example."},
        {DNS_TYPE_A, 40, "web.example.", NULL},
        {DNS_TYPE_SOA, 30, "example.", "ns.example."},
    };
    for (size_t i = 0; i < 4; i++) {
        uint8_t w[DNS_NAME_MAX];
        assert_int_equal(dns_rr_next(&it, &rr), 1);
        assert_int_equal(rr.type, want[i].type);
        assert_int_equal(rr.ttl, want[i].ttl);
        dns_cur_init(&c, out, (size_t)n);
        dns_cur_seek(&c, rr.off);
        size_t l = dns_name_read(&c, name);
        assert_memory_equal(name, w, (size_t)dns_name_from_str(want[i].owner, w));
        assert_int_equal(l, (size_t)dns_name_from_str(want[i].owner, w));
        if (want[i].rdname) {
            dns_cur_seek(&c, rr.rdata_off);
            l = dns_name_read(&c, name);
            assert_int_equal(l, (size_t)dns_name_from_str(want[i].rdname, w));
            assert_memory_equal(name, w, l);
        }
        if (rr.type == DNS_TYPE_SOA) {
            /* two expanded names and the 20 fixed bytes */
            assert_int_equal(rr.rdlen, 12 + 14 + 20);
            assert_int_equal(out[rr.rdata_off + rr.rdlen - 1], 5);
        }
    }
    assert_int_equal(dns_rr_next(&it, &rr), 0);
    /* with EDNS: an OPT of ours */
    qi = query("alias.test.", DNS_TYPE_A, true);
    n = cname_compose(&qi, target, (size_t)tlen, 77, ans, alen, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal(dns_get16(out + 10), 1);
    assert_int_equal(dns_msg_find_opt(out, (size_t)n, NULL), 1);
    /* too small */
    assert_int_equal(cname_compose(&qi, target, (size_t)tlen, 77, ans, alen, out, 60),
                     DV_ESPACE);
}

static void test_malformed(void **state)
{
    struct dns_query_info qi = query("alias.test.", DNS_TYPE_A, false);
    uint8_t target[DNS_NAME_MAX], ans[512], out[1024];
    int tlen = dns_name_from_str("www.example.", target);
    size_t alen = target_answer(ans, 0);

    assert_int_equal(cname_compose(&qi, target, (size_t)tlen, 1, ans, 5, out, sizeof(out)),
                     DV_EMALFORMED);
    /* cut inside the records */
    assert_int_equal(cname_compose(&qi, target, (size_t)tlen, 1, ans, 50, out, sizeof(out)),
                     DV_EMALFORMED);
    /* the CNAME's RDATA longer than its name: bytes the type does not have */
    ans[40] = 7;
    assert_true(cname_compose(&qi, target, (size_t)tlen, 1, ans, alen, out, sizeof(out)) < 0);
    target_answer(ans, 0);
    /* a forward compression pointer in the RDATA */
    ans[45] = 0xc0, ans[46] = 60;
    assert_int_equal(cname_compose(&qi, target, (size_t)tlen, 1, ans, alen, out, sizeof(out)),
                     DV_EMALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_query),
        cmocka_unit_test(test_compose),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
