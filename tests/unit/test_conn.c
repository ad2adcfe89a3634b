/* conn: the connection policy — pool size, backoff doubling with jitter in
 * its upper half, the fail-fast window, and recovery. Time is a parameter,
 * so nothing sleeps. Then the plumbing the transports share: the send
 * prologue's bounds and the request lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "dns/dns.h"
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


/* The one length guard: a DNS header at least, and room to grow by
 * CONN_QUERY_ROOM within one message; then the wait list's cap. */
static void test_send_check(void **state)
{
    static uint8_t msg[DNS_MSG_MAX];
    struct xfer x = {.msg = msg};

    x.len = DNS_HDR_LEN - 1;
    assert_int_equal(conn_send_check(&x, 0, "t"), DV_EINVAL);
    x.len = DNS_HDR_LEN;
    assert_int_equal(conn_send_check(&x, 0, "t"), 0);
    x.len = DNS_MSG_MAX - CONN_QUERY_ROOM;
    assert_int_equal(conn_send_check(&x, 0, "t"), 0);
    x.len++;
    assert_int_equal(conn_send_check(&x, 0, "t"), DV_EINVAL);
    x.len = DNS_MSG_MAX;
    assert_int_equal(conn_send_check(&x, 0, "t"), DV_EINVAL);
    x.len = 100;
    assert_int_equal(conn_send_check(&x, CONN_WAIT_MAX - 1, "t"), 0);
    assert_int_equal(conn_send_check(&x, CONN_WAIT_MAX, "t"), DV_ECONN);
}

struct item {
    int v;
    struct conn_link link;
};

/* The list's values front to back, as digits. */
static unsigned values(const struct list *l)
{
    unsigned out = 0;

    for (struct list_link *e = l->head; e; e = e->next) {
        struct item *it = conn_elem(e, struct item, link);
        assert_ptr_equal(it->link.on, l);
        out = out * 10 + (unsigned)it->v;
    }
    return out;
}

static void test_request_lists(void **state)
{
    struct item it[6];
    struct list a = {0}, b = {0};

    memset(it, 0, sizeof(it));
    for (int i = 0; i < 6; i++)
        it[i].v = i + 1;
    assert_null(conn_elem(conn_list_pop(&a), struct item, link));
    conn_list_unlink(&it[0].link); /* on no list: nothing */
    conn_list_push(&a, &it[1].link);
    conn_list_push(&a, &it[2].link);
    conn_list_push_front(&a, &it[0].link);
    assert_int_equal(values(&a), 123);
    assert_int_equal(a.n, 3);
    conn_list_unlink(&it[1].link);
    assert_null(it[1].link.on);
    assert_int_equal(values(&a), 13);
    conn_list_push(&b, &it[3].link);
    conn_list_push(&b, &it[4].link);
    conn_list_splice_front(&a, &b); /* b's move in front, knowing their list */
    assert_int_equal(values(&a), 4513);
    assert_int_equal(a.n, 4);
    assert_null(b.head);
    assert_int_equal(b.n, 0);
    conn_list_splice_front(&a, &b); /* an empty one: nothing */
    assert_int_equal(values(&a), 4513);
    assert_ptr_equal(conn_elem(conn_list_pop(&a), struct item, link), &it[3]);
    assert_null(it[3].link.on);
    conn_list_unlink(&it[2].link); /* the tail */
    assert_int_equal(values(&a), 51);
    assert_ptr_equal(conn_elem(a.tail, struct item, link), &it[0]);
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
        cmocka_unit_test(test_send_check),
        cmocka_unit_test(test_request_lists),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
