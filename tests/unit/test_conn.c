/* conn: the connection policy — pool size, backoff doubling with jitter in
 * its upper half, the fail-fast window, and recovery. Time is a parameter,
 * so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upstream/conn.h"

enum {
    MIN_MS = 250,   /* first delay, before jitter */
    MAX_MS = 30000, /* cap */
    SAMPLES = 200,
};

static struct conn_policy policy(unsigned max_conns, unsigned idle_ms)
{
    struct cfg_upstream cfg;
    struct conn_policy p;

    memset(&cfg, 0, sizeof(cfg));
    cfg.max_conns = max_conns;
    cfg.idle_timeout_ms = idle_ms;
    conn_policy_init(&p, &cfg);
    return p;
}

/* The nominal delay after the k-th consecutive failure. */
static uint64_t nominal(unsigned k)
{
    uint64_t d = MIN_MS;

    while (--k && d < MAX_MS)
        d *= 2;
    return d < MAX_MS ? d : MAX_MS;
}

static void test_init(void **state)
{
    struct conn_policy p = policy(4, 12000);

    assert_int_equal(p.max_conns, 4);
    assert_int_equal(p.idle_ms, 12000);
    assert_int_equal(p.fails, 0);
    assert_false(conn_policy_backoff(&p, 0));
    /* a zero from the settings still allows one connection */
    p = policy(0, 0);
    assert_int_equal(p.max_conns, 1);
    assert_true(conn_policy_may_open(&p, 0, 0));
    assert_false(conn_policy_may_open(&p, 1, 0));
}

static void test_may_open_max_conns(void **state)
{
    struct conn_policy p = policy(2, 30000);

    assert_true(conn_policy_may_open(&p, 0, 1000));
    assert_true(conn_policy_may_open(&p, 1, 1000));
    assert_false(conn_policy_may_open(&p, 2, 1000));
    assert_false(conn_policy_may_open(&p, 3, 1000));
}

/* Each level k: every sample in [nominal/2, nominal), and the samples spread
 * over that range rather than sitting on one value. */
static void test_backoff_doubles_with_jitter(void **state)
{
    for (unsigned k = 1; k <= 10; k++) {
        uint64_t lo = UINT64_MAX, hi = 0, d = nominal(k);

        for (int s = 0; s < SAMPLES; s++) {
            struct conn_policy p = policy(2, 30000);
            uint64_t got = 0;

            for (unsigned i = 0; i < k; i++)
                got = conn_policy_failed(&p, 5000);
            assert_int_equal(p.fails, k);
            assert_true(got >= d / 2);
            assert_true(got < d);
            assert_int_equal(p.retry_at, 5000 + got);
            lo = got < lo ? got : lo;
            hi = got > hi ? got : hi;
        }
        assert_true(hi - lo >= d / 8);
    }
}

static void test_backoff_capped(void **state)
{
    struct conn_policy p = policy(2, 30000);
    uint64_t got = 0;

    for (int i = 0; i < 100; i++) /* no overflow however long it fails */
        got = conn_policy_failed(&p, 0);
    assert_true(got >= MAX_MS / 2);
    assert_true(got < MAX_MS);
}

/* While the backoff runs new connections wait and queries fail fast; the
 * window ends exactly at retry_at. */
static void test_fail_fast_window(void **state)
{
    struct conn_policy p = policy(2, 30000);
    uint64_t now = 100000;
    uint64_t d = conn_policy_failed(&p, now);

    assert_true(conn_policy_backoff(&p, now));
    assert_true(conn_policy_backoff(&p, now + d - 1));
    assert_false(conn_policy_may_open(&p, 0, now + d - 1));
    assert_false(conn_policy_backoff(&p, now + d));
    assert_true(conn_policy_may_open(&p, 0, now + d));
    assert_false(conn_policy_may_open(&p, 2, now + d));

    /* a second failure, counted from when it happens, waits longer */
    uint64_t d2 = conn_policy_failed(&p, now + d);
    assert_true(d2 >= nominal(2) / 2);
    assert_true(conn_policy_backoff(&p, now + d + d2 - 1));
    assert_false(conn_policy_backoff(&p, now + d + d2));
}

static void test_ok_resets(void **state)
{
    struct conn_policy p = policy(2, 30000);

    for (int i = 0; i < 6; i++)
        conn_policy_failed(&p, 0);
    assert_true(conn_policy_backoff(&p, 1));
    conn_policy_ok(&p);
    assert_int_equal(p.fails, 0);
    assert_false(conn_policy_backoff(&p, 1));
    assert_true(conn_policy_may_open(&p, 0, 1));
    /* the next failure starts from the bottom again */
    uint64_t d = conn_policy_failed(&p, 1);
    assert_true(d >= MIN_MS / 2);
    assert_true(d < MIN_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_may_open_max_conns),
        cmocka_unit_test(test_backoff_doubles_with_jitter),
        cmocka_unit_test(test_backoff_capped),
        cmocka_unit_test(test_fail_fast_window),
        cmocka_unit_test(test_ok_resets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
