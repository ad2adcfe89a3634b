/* happy: the RFC 8305 section 4 order — IPv6 first, families alternating,
 * each family in the order given, the surplus of one family at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "upstream/happy.h"

static void order(const char *const *in, size_t n, const char *const *want, size_t nwant)
{
    struct net_addr a[HAPPY_MAX_ADDRS + 4], out[HAPPY_MAX_ADDRS];
    char s[NET_ADDRSTRLEN];

    for (size_t i = 0; i < n; i++)
        assert_int_equal(net_addr_parse(in[i], 853, &a[i]), 0);
    assert_int_equal(happy_order(a, n, out), nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(net_addr_str(&out[i], s, sizeof(s)), want[i]);
}

static void test_order(void **state)
{
    (void)state;
    static const char *const mixed[] = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "[2001:db8::1]",
                                        "[2001:db8::2]"};
    static const char *const mixed_want[] = {"[2001:db8::1]:853", "192.0.2.1:853",
                                             "[2001:db8::2]:853", "192.0.2.2:853",
                                             "192.0.2.3:853"};
    order(mixed, 5, mixed_want, 5);

    static const char *const v4[] = {"192.0.2.1", "192.0.2.2"};
    static const char *const v4_want[] = {"192.0.2.1:853", "192.0.2.2:853"};
    order(v4, 2, v4_want, 2);

    static const char *const v6[] = {"[2001:db8::9]", "[2001:db8::8]", "192.0.2.7"};
    static const char *const v6_want[] = {"[2001:db8::9]:853", "192.0.2.7:853",
                                          "[2001:db8::8]:853"};
    order(v6, 3, v6_want, 3);

    const char *many[HAPPY_MAX_ADDRS + 4];
    const char *many_want[HAPPY_MAX_ADDRS];
    char bufs[HAPPY_MAX_ADDRS + 4][32], wbufs[HAPPY_MAX_ADDRS][32];
    for (int i = 0; i < HAPPY_MAX_ADDRS + 4; i++) {
        snprintf(bufs[i], sizeof(bufs[i]), "192.0.2.%d", i + 1);
        many[i] = bufs[i];
    }
    for (int i = 0; i < HAPPY_MAX_ADDRS; i++) {
        snprintf(wbufs[i], sizeof(wbufs[i]), "192.0.2.%d:853", i + 1);
        many_want[i] = wbufs[i];
    }
    order(many, HAPPY_MAX_ADDRS + 4, many_want, HAPPY_MAX_ADDRS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
