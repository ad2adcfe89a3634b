/* netmon: sleep detection from CLOCK_BOOTTIME against CLOCK_MONOTONIC, and
 * the debouncing of bursts of network events. Time is a parameter: the
 * clocks are numbers here, so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/netmon.h"

enum { T = NETMON_SLEEP_MS };

static void test_clock_first_look_is_no_sleep(void **state)
{
    struct netmon_clock c = {0};

    /* the machine slept before we started: that gap is the baseline */
    assert_false(netmon_clock_slept(&c, 1000, 1000 + 3600 * 1000, T));
    assert_false(netmon_clock_slept(&c, 3000, 3000 + 3600 * 1000, T));
}

static void test_clock_steady(void **state)
{
    struct netmon_clock c = {0};
    uint64_t mono = 50000, boot = 70000;

    for (int i = 0; i < 100; i++, mono += 2000, boot += 2000)
        assert_false(netmon_clock_slept(&c, mono, boot, T));
}

static void test_clock_drift_below_threshold(void **state)
{
    struct netmon_clock c = {0};

    assert_false(netmon_clock_slept(&c, 0, 0, T));
    /* a short suspend, or scheduling noise, adds up only to the threshold */
    assert_false(netmon_clock_slept(&c, 2000, 2000 + T, T));
    assert_false(netmon_clock_slept(&c, 4000, 4000 + T + 1, T));
}

static void test_clock_sleep_seen_once(void **state)
{
    struct netmon_clock c = {0};

    assert_false(netmon_clock_slept(&c, 10000, 10000, T));
    /* 2 s of monotonic time, but 10 min of boot time: slept */
    assert_true(netmon_clock_slept(&c, 12000, 12000 + 600000, T));
    /* the new gap is the baseline from now on */
    assert_false(netmon_clock_slept(&c, 14000, 14000 + 600000, T));
    assert_true(netmon_clock_slept(&c, 16000, 16000 + 600000 + T + 1, T));
}

static void test_clock_exactly_threshold_is_not_sleep(void **state)
{
    struct netmon_clock c = {0};

    assert_false(netmon_clock_slept(&c, 0, 0, T));
    assert_false(netmon_clock_slept(&c, 1, 1 + T, T));
}

static void test_debounce_quiet_period(void **state)
{
    struct netmon_debounce d = {0};

    assert_int_equal(netmon_debounce_note(&d, NETMON_ADDR, 1000), 1000 + NETMON_QUIET_MS);
    /* another event in the burst pushes the end out */
    assert_int_equal(netmon_debounce_note(&d, NETMON_ROUTE, 1030), 1030 + NETMON_QUIET_MS);
    assert_int_equal(netmon_debounce_take(&d), NETMON_ADDR | NETMON_ROUTE);
    /* a new burst starts from scratch */
    assert_int_equal(netmon_debounce_note(&d, NETMON_LINK, 5000), 5000 + NETMON_QUIET_MS);
    assert_int_equal(netmon_debounce_take(&d), NETMON_LINK);
}

static void test_debounce_capped(void **state)
{
    struct netmon_debounce d = {0};
    uint64_t at = 0;

    /* a link flapping for good still gets reported NETMON_MAX_MS after it began */
    for (uint64_t t = 0; t <= 2000; t += NETMON_QUIET_MS / 2)
        at = netmon_debounce_note(&d, NETMON_LINK, 10000 + t);
    assert_int_equal(at, 10000 + NETMON_MAX_MS);
}

static void test_why_str(void **state)
{
    char buf[64];

    assert_string_equal(netmon_why_str(NETMON_ADDR | NETMON_SLEEP, buf, sizeof(buf)),
                        "address,sleep");
    assert_string_equal(netmon_why_str(0, buf, sizeof(buf)), "");
    /* cut short, still terminated */
    netmon_why_str(NETMON_LINK | NETMON_ADDR | NETMON_ROUTE, buf, 8);
    assert_true(strlen(buf) < 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_first_look_is_no_sleep),
        cmocka_unit_test(test_clock_steady),
        cmocka_unit_test(test_clock_drift_below_threshold),
        cmocka_unit_test(test_clock_sleep_seen_once),
        cmocka_unit_test(test_clock_exactly_threshold_is_not_sleep),
        cmocka_unit_test(test_debounce_quiet_period),
        cmocka_unit_test(test_debounce_capped),
        cmocka_unit_test(test_why_str),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
