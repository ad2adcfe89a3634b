/* qlog: the line formats — every field present when known, absent when
 * not, and names that need escaping kept valid JSON / one text record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"
#include "resolve/qlog.h"

static void test_json(void **state)
{
    struct net_addr client;
    uint8_t name[DNS_NAME_MAX];
    char out[2048];
    /* a label with a quote, a backslash and a space in it */
    static const uint8_t odd[] = "\x05" "a\"b\\ " "\x04test";

    (void)state;
    net_addr_parse("127.0.0.1:5353", 53, &client);
    int n = dns_name_from_str("www.example.", name);
    struct qlog_entry e = {
        .client = &client, .tcp = false, .name = name, .name_len = (size_t)n,
        .qtype = DNS_TYPE_AAAA, .app_known = true, .uid = 1000,
        .cgroup = "/user.slice/app-\"x\".scope", .comm = "firefox", .rule = 7,
        .group = "default", .upstream = "quad9", .transport = "doh", .rcode = 3,
        .latency_us = 12345, .source = "upstream",
    };
    qlog_format(&e, false, 1764531000123ull, out, sizeof(out));
    assert_string_equal(out,
        "{\"time\":\"2025-11-30T19:30:00.123Z\",\"client\":\"127.0.0.1:5353\",\"proto\":\"udp\","
        "\"uid\":1000,\"cgroup\":\"/user.slice/app-\\\"x\\\".scope\",\"comm\":\"firefox\","
        "\"name\":\"www.example.\",\"type\":\"AAAA\",\"rule\":7,\"group\":\"default\","
        "\"upstream\":\"quad9\",\"transport\":\"doh\",\"rcode\":\"NXDOMAIN\","
        "\"latency_ms\":12.345,\"source\":\"upstream\"}");

    struct qlog_entry m = {.client = &client, .tcp = true, .name = odd, .name_len = sizeof(odd),
                           .qtype = 999, .rcode = 0, .source = "local"};
    qlog_format(&m, false, 0, out, sizeof(out));
    /* names arrive escaped as \DDD (dns_name_to_str); JSON doubles the '\' */
    assert_non_null(strstr(out, "\"name\":\"a\\\\034b\\\\092\\\\032.test.\""));
    assert_non_null(strstr(out, "\"type\":\"TYPE999\""));
    assert_null(strstr(out, "uid"));
    assert_null(strstr(out, "upstream"));
    qlog_format(&m, true, 0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00.000Z 127.0.0.1:5353 tcp name=a\\034b\\092\\032.test. "
                             "type=TYPE999 rcode=NOERROR latency_ms=0.000 source=local");
    /* truncation keeps a terminated string */
    assert_int_equal(qlog_format(&e, true, 0, out, 20), 19);
    assert_int_equal(strlen(out), 19);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
