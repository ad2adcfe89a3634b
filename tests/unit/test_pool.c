/* pool: the order each strategy gives, health backoff, EWMA. Upstreams are
 * real plain-transport objects (never contacted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/log.h"
#include "upstream/pool.h"

enum { N = 3 };
static struct upstream *ups[N];

static int setup(void **state)
{
    char err[128];
    const char *urls[N] = {"udp://127.0.0.1:1", "udp://127.0.0.1:2", "udp://127.0.0.1:3"};

    for (int i = 0; i < N; i++) {
        struct cfg_upstream cu = {.name = (char *)urls[i], .url = (char *)urls[i]};
        ups[i] = upstream_new(NULL, &cu, NULL, err, sizeof(err));
        assert_non_null(ups[i]);
    }
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < N; i++)
        upstream_unref(ups[i]);
    return 0;
}

static size_t index_of(const struct upstream *u)
{
    for (size_t i = 0; i < N; i++)
        if (ups[i] == u)
            return i;
    fail();
    return 0;
}

static void reset_health(void)
{
    for (int i = 0; i < N; i++)
        pool_health_free(ups[i]);
}

static void test_failover_order_and_backoff(void **state)
{
    struct pool *p = pool_new("g", ups, NULL, N, CFG_STRATEGY_FAILOVER, 0);
    struct upstream *order[N];

    reset_health();
    assert_int_equal(pool_fanout(p), 1); /* one upstream at a time */
    assert_true(pool_healthy(ups[0], 1000));
    pool_plan(p, 1000, order);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(order[i], ups[i]);
    /* two failures: still first; the third puts it in backoff, last */
    pool_report(ups[0], DV_ETIMEOUT, 0, 1000);
    pool_report(ups[0], DV_ETIMEOUT, 0, 1000);
    pool_plan(p, 1000, order);
    assert_ptr_equal(order[0], ups[0]);
    pool_report(ups[0], DV_ECONN, 0, 1000);
    assert_false(pool_healthy(ups[0], 1001));
    assert_int_equal(pool_fails(ups[0]), 3);
    pool_plan(p, 1001, order);
    assert_ptr_equal(order[0], ups[1]);
    assert_ptr_equal(order[1], ups[2]);
    assert_ptr_equal(order[2], ups[0]);
    /* after the backoff (1 s plus up to a quarter of jitter) it is back */
    pool_plan(p, 1000 + 1251, order);
    assert_ptr_equal(order[0], ups[0]);
    /* and a success clears the count */
    pool_report(ups[0], 0, 20, 3000);
    assert_int_equal(pool_fails(ups[0]), 0);
    pool_unref(p);
}

static void test_round_robin(void **state)
{
    struct pool *p = pool_new("g", ups, NULL, N, CFG_STRATEGY_ROUND_ROBIN, 0);
    struct upstream *order[N];
    unsigned first[N] = {0};

    reset_health();
    for (int q = 0; q < 3 * 100; q++) {
        pool_plan(p, 0, order);
        first[index_of(order[0])]++;
        /* a rotation: the others follow in configured order */
        size_t s = index_of(order[0]);
        for (size_t i = 0; i < N; i++)
            assert_ptr_equal(order[i], ups[(s + i) % N]);
    }
    for (size_t i = 0; i < N; i++)
        assert_int_equal(first[i], 100);
    pool_unref(p);
}

static void test_random_weighted(void **state)
{
    const unsigned w[N] = {6, 3, 1};
    struct pool *p = pool_new("g", ups, w, N, CFG_STRATEGY_RANDOM, 0);
    struct upstream *order[N];
    unsigned first[N] = {0};

    reset_health();
    for (int q = 0; q < 10000; q++) {
        pool_plan(p, 0, order);
        first[index_of(order[0])]++;
        /* a permutation */
        assert_true(order[0] != order[1] && order[1] != order[2] && order[0] != order[2]);
    }
    /* expected 6000/3000/1000; the bounds are > 8 standard deviations wide */
    assert_in_range(first[0], 5600, 6400);
    assert_in_range(first[1], 2650, 3350);
    assert_in_range(first[2], 780, 1220);
    pool_unref(p);
}

static void test_fastest(void **state)
{
    struct pool *p = pool_new("g", ups, NULL, N, CFG_STRATEGY_FASTEST, 0);
    struct upstream *order[N];
    unsigned first[N] = {0};

    reset_health();
    pool_report(ups[0], 0, 80, 0);
    pool_report(ups[1], 0, 10, 0);
    pool_report(ups[2], 0, 40, 0);
    for (int q = 0; q < 9000; q++) {
        pool_plan(p, 0, order);
        first[index_of(order[0])]++;
        /* behind the first choice, the rest by latency */
        if (order[0] == ups[1]) {
            assert_ptr_equal(order[1], ups[2]);
            assert_ptr_equal(order[2], ups[0]);
        }
    }
    /* two random picks, the faster first: the fastest wins 2/3 of the picks,
     * the middle one 1/3, the slowest only through exploration (1/16 random) */
    assert_true(first[1] > first[2] && first[2] > first[0]);
    assert_in_range(first[1], 5400, 6500);
    assert_in_range(first[0], 80, 400);
    /* an upstream never measured is tried as if fastest */
    pool_health_free(ups[0]);
    unsigned zero_first = 0;
    for (int q = 0; q < 900; q++) {
        pool_plan(p, 0, order);
        zero_first += order[0] == ups[0];
    }
    assert_true(zero_first > 500);
    /* failures push the latency up */
    double before = pool_rtt_ms(ups[1]);
    pool_report(ups[1], DV_ETIMEOUT, 0, 0);
    assert_true(pool_rtt_ms(ups[1]) > before);
    pool_unref(p);
}

static void test_parallel_keeps_order(void **state)
{
    struct pool *p = pool_new("g", ups, NULL, N, CFG_STRATEGY_PARALLEL, 150);
    struct upstream *order[N];

    reset_health();
    pool_plan(p, 0, order);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(order[i], ups[i]);
    assert_int_equal(pool_strategy(p), CFG_STRATEGY_PARALLEL);
    assert_int_equal(pool_hedge_ms(p), 150);
    assert_true(pool_fanout(p) >= N); /* every upstream at once */
    pool_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover_order_and_backoff),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_random_weighted),
        cmocka_unit_test(test_fastest),
        cmocka_unit_test(test_parallel_keeps_order),
    };

    log_init(DV_LOG_ERR, false);
    return cmocka_run_group_tests(tests, setup, teardown);
}
