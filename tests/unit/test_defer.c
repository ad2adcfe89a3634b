/* defer: work runs once per arming, before the loop sleeps; work armed by
 * deferred work (its own or another's) runs in the same pass; a cancelled
 * one never runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <ev.h>

#include "core/defer.h"

struct probe {
    struct ev_loop *loop;
    struct defer d;
    struct defer *chain; /* armed from fn, once */
    int runs;
};

static void fn(void *arg)
{
    struct probe *p = arg;

    p->runs++;
    if (p->chain) {
        defer_arm(p->loop, p->chain);
        p->chain = NULL;
    }
}

static void test_once_per_arming(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe a = {.loop = loop};

    defer_init(&a.d, fn, &a);
    defer_arm(loop, &a.d);
    defer_arm(loop, &a.d);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(a.runs, 1);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(a.runs, 1);
    ev_loop_destroy(loop);
}

static void test_chained_in_same_pass(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe a = {.loop = loop}, b = {.loop = loop};

    defer_init(&a.d, fn, &a);
    defer_init(&b.d, fn, &b);
    a.chain = &b.d;
    defer_arm(loop, &a.d);
    /* one pass, and it must not block: b is armed while a runs */
    ev_run(loop, EVRUN_ONCE);
    assert_int_equal(a.runs, 1);
    assert_int_equal(b.runs, 1);
    ev_loop_destroy(loop);
}

static void test_cancel(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe a = {.loop = loop}, b = {.loop = loop};

    defer_init(&a.d, fn, &a);
    defer_init(&b.d, fn, &b);
    defer_arm(loop, &a.d);
    defer_arm(loop, &b.d);
    defer_cancel(&a.d);
    defer_cancel(&a.d);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(a.runs, 0);
    assert_int_equal(b.runs, 1);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_per_arming),
        cmocka_unit_test(test_chained_in_same_pass),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
