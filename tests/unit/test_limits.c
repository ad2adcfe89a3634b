/* limits: the allow list, the token bucket (time moved by hand) and the
 * in-flight caps, global and per client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "resolve/limits.h"

static struct net_addr addr(const char *s)
{
    struct net_addr a;

    assert_int_equal(net_addr_parse(s, 53, &a), 0);
    return a;
}

static void test_default_allow_list(void **state)
{
    struct config *c = config_new();
    struct limits *l = limits_new();
    static const char *const yes[] = {"127.0.0.1", "10.1.2.3", "172.31.255.1", "192.168.1.9",
                                      "100.64.0.1", "169.254.3.4", "[::1]", "[fd00::5]",
                                      "[fe80::1]"};
    static const char *const no[] = {"8.8.8.8", "172.32.0.1", "100.128.0.1", "192.169.0.1",
                                     "[2001:db8::1]", "[::2]", "11.0.0.1"};

    assert_non_null(c);
    assert_non_null(l);
    limits_configure(l, &c->limits);
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        struct net_addr a = addr(yes[i]);
        assert_true(limits_allowed(l, &a));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        struct net_addr a = addr(no[i]);
        assert_false(limits_allowed(l, &a));
    }
    limits_del(l);
    config_free(c);
}

static void test_token_bucket(void **state)
{
    struct cfg_limits cfg = {.rate_limit = 10, .rate_limit_burst = 5, .max_inflight = 1,
                             .max_inflight_per_client = 1};
    struct limits *l = limits_new();
    struct net_addr a = addr("192.168.1.2"), b = addr("192.168.1.3");
    uint64_t now = 1000;

    limits_configure(l, &cfg);
    for (int i = 0; i < 5; i++)
        assert_true(limits_rate_take(l, &a, now));
    assert_false(limits_rate_take(l, &a, now));
    assert_true(limits_rate_take(l, &b, now)); /* a bucket of its own */
    assert_false(limits_rate_take(l, &a, now + 50));
    assert_true(limits_rate_take(l, &a, now + 100)); /* one token per 100 ms */
    assert_false(limits_rate_take(l, &a, now + 100));
    /* a long pause refills to the burst, not beyond */
    now += 100000;
    for (int i = 0; i < 5; i++)
        assert_true(limits_rate_take(l, &a, now));
    assert_false(limits_rate_take(l, &a, now));
    /* off: never limited */
    cfg.rate_limit = 0;
    for (int i = 0; i < 100; i++)
        assert_true(limits_rate_take(l, &a, now));
    limits_del(l);
}

static void test_ipv6_counted_by_64(void **state)
{
    struct cfg_limits cfg = {.rate_limit = 1, .rate_limit_burst = 1, .max_inflight = 10,
                             .max_inflight_per_client = 1};
    struct limits *l = limits_new();
    struct net_addr a = addr("[fd00:1:2:3::1]"), b = addr("[fd00:1:2:3::ffff]"),
                    c = addr("[fd00:1:2:4::1]");

    limits_configure(l, &cfg);
    assert_true(limits_rate_take(l, &a, 0));
    assert_false(limits_rate_take(l, &b, 0));
    assert_true(limits_rate_take(l, &c, 0));
    limits_del(l);
}

static void test_inflight_caps(void **state)
{
    struct cfg_limits cfg = {.max_inflight = 5, .max_inflight_per_client = 3};
    struct limits *l = limits_new();
    struct net_addr a = addr("10.0.0.1"), b = addr("10.0.0.2"), c = addr("10.0.0.3");
    int ta[3], tb[2];

    limits_configure(l, &cfg);
    for (int i = 0; i < 3; i++)
        assert_true((ta[i] = limits_inflight_take(l, &a, 0)) >= 0);
    assert_int_equal(limits_inflight_take(l, &a, 0), -1); /* per client */
    for (int i = 0; i < 2; i++)
        assert_true((tb[i] = limits_inflight_take(l, &b, 0)) >= 0);
    assert_int_equal(limits_inflight(l), 5);
    assert_int_equal(limits_inflight_take(l, &c, 0), -1); /* global */
    limits_inflight_put(l, ta[0]);
    assert_int_equal(limits_inflight(l), 4);
    int tc = limits_inflight_take(l, &c, 0);
    assert_true(tc >= 0);
    assert_int_equal(limits_inflight_take(l, &a, 0), -1);
    limits_inflight_put(l, tc);
    assert_true((ta[0] = limits_inflight_take(l, &a, 0)) >= 0);
    for (int i = 0; i < 3; i++)
        limits_inflight_put(l, ta[i]);
    for (int i = 0; i < 2; i++)
        limits_inflight_put(l, tb[i]);
    limits_inflight_put(l, -1); /* no ticket: nothing */
    assert_int_equal(limits_inflight(l), 0);
    limits_del(l);
}

/* Many more clients than the table holds: the counts stay exact, because
 * the ticket names the entry that was counted. */
static void test_crowded_table_keeps_counts(void **state)
{
    struct cfg_limits cfg = {.max_inflight = 100000, .max_inflight_per_client = 2};
    struct limits *l = limits_new();
    int *t = calloc(20000, sizeof(*t));
    size_t n = 0;

    assert_non_null(t);
    limits_configure(l, &cfg);
    for (unsigned i = 0; i < 20000; i++) {
        struct net_addr a;
        char s[32];
        snprintf(s, sizeof(s), "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        a = addr(s);
        int k = limits_inflight_take(l, &a, 0);
        if (k >= 0)
            t[n++] = k;
    }
    assert_true(n > 4096); /* shared entries still admit two each */
    assert_int_equal(limits_inflight(l), n);
    for (size_t i = 0; i < n; i++)
        limits_inflight_put(l, t[i]);
    assert_int_equal(limits_inflight(l), 0);
    free(t);
    limits_del(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_allow_list),
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_ipv6_counted_by_64),
        cmocka_unit_test(test_inflight_caps),
        cmocka_unit_test(test_crowded_table_keeps_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
