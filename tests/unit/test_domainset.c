/* domainset: plain and hosts-format lines, comments, "*." wildcards, noise
 * a hosts file carries, case, trailing dots, and lines that are not names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "dns/dns.h"
#include "resolve/domainset.h"

static bool match(const struct domainset *s, const char *name)
{
    uint8_t wire[DNS_NAME_MAX];
    int n = dns_name_from_str(name, wire);

    assert_true(n > 0);
    dns_name_lower(wire, (size_t)n);
    return domainset_match(s, wire, (size_t)n);
}

static void test_formats(void **state)
{
    static const char text[] =
        "# a blocklist\n"
        "ads.example.com\n"
        "  Tracker.EXAMPLE.net.   # trailing comment\r\n"
        "*.wild.example\n"
        "0.0.0.0 hosts1.example hosts2.example\n"
        "127.0.0.1 localhost\n"
        "127.0.0.1 localhost.localdomain\n"
        "::1 ip6-localhost\n"
        "0.0.0.0 0.0.0.0\n"
        "||adblock.example^\n"
        "two words\n"
        "bad..name\n"
        "\n"
        "ads.example.com\n"; /* twice: one entry */
    struct domainset *s;
    struct domainset_info info;

    (void)state;
    assert_int_equal(domainset_parse(text, sizeof(text) - 1, &s, &info), 0);
    assert_int_equal(info.entries, 5);
    assert_int_equal(info.skipped, 3);
    assert_int_equal(info.first_bad, 10);
    assert_true(match(s, "ads.example.com."));
    assert_true(match(s, "x.y.ADS.example.com."));
    assert_false(match(s, "example.com."));
    assert_false(match(s, "bads.example.com."));
    assert_true(match(s, "tracker.example.net."));
    assert_false(match(s, "wild.example."));
    assert_true(match(s, "a.wild.example."));
    assert_true(match(s, "hosts2.example."));
    assert_false(match(s, "localhost."));
    assert_false(match(s, "localhost.localdomain."));
    assert_false(match(s, "adblock.example."));
    assert_false(match(s, "."));
    domainset_del(s);
}

static void test_load_errors(void **state)
{
    struct domainset *s;
    struct domainset_info info;

    (void)state;
    assert_int_equal(domainset_load("/nonexistent/list.txt", &s, &info), DV_EIO);
    assert_null(s);
    assert_int_equal(domainset_load("/tmp", &s, &info), DV_EIO);
    assert_null(s);
}

static void test_wildcard_and_plain(void **state)
{
    static const char text[] = "*.both.example\nboth.example\n";
    struct domainset *s;
    struct domainset_info info;

    (void)state;
    assert_int_equal(domainset_parse(text, sizeof(text) - 1, &s, &info), 0);
    assert_int_equal(info.entries, 1);
    assert_true(match(s, "both.example."));
    assert_true(match(s, "a.both.example."));
    domainset_del(s);
}

static void test_many(void **state)
{
    char line[64];
    size_t cap = 200000 * 32, len = 0;
    char *text = malloc(cap);
    struct domainset *s;
    struct domainset_info info;

    (void)state;
    for (int i = 0; i < 200000; i++)
        len += (size_t)snprintf(text + len, cap - len, "host%d.list%d.example\n", i, i % 97);
    assert_int_equal(domainset_parse(text, len, &s, &info), 0);
    assert_int_equal(info.entries, 200000);
    domainset_del(s);

    /* from a file, read in pieces: lines cut at every piece's end */
    char path[] = "/tmp/test_domainset-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    assert_int_equal(domainset_load(path, &s, &info), 0);
    unlink(path);
    assert_int_equal(info.entries, 200000);
    assert_int_equal(info.skipped, 0);
    for (int i = 0; i < 200000; i += 997) {
        snprintf(line, sizeof(line), "www.host%d.list%d.example.", i, i % 97);
        assert_true(match(s, line));
        snprintf(line, sizeof(line), "host%d.list%d.example.", i, (i + 1) % 97);
        assert_false(match(s, line));
    }
    domainset_del(s);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_wildcard_and_plain),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
