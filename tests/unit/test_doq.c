/* Unit tests for the DoQ response-stream reader (src/upstream/doq.h): one
 * length-prefixed message with Message ID 0, then the end of the stream,
 * however the bytes are split; every way of breaking that rule is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ev.h>

#include "config/config.h"
#include "core/err.h"
#include "upstream/doq.h"
#include "upstream/upstream.h"

/* A minimal answer: header (ID 0, QR), no records, 14 bytes with payload. */
static const uint8_t answer[] = {0x00, 0x00, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd};

static size_t framed(uint8_t *out, const uint8_t *msg, size_t len)
{
    out[0] = (uint8_t)(len >> 8);
    out[1] = (uint8_t)len;
    memcpy(out + 2, msg, len);
    return 2 + len;
}

/* Every split of the stream into two pieces, FIN on the second. */
static void test_every_split(void **state)
{
    uint8_t s[64];
    size_t n = framed(s, answer, sizeof(answer));

    for (size_t cut = 0; cut <= n; cut++) {
        struct doq_rx r;
        int rc1, rc2;
        doq_rx_init(&r);
        rc1 = doq_rx_feed(&r, s, cut, cut == n);
        rc2 = cut == n ? 0 : doq_rx_feed(&r, s + cut, n - cut, true);
        assert_int_equal(rc1 + rc2, 1);
        assert_int_equal(r.len, sizeof(answer));
        assert_memory_equal(r.msg, answer, sizeof(answer));
        doq_rx_free(&r);
    }
}

static void test_byte_by_byte_then_fin(void **state)
{
    uint8_t s[64];
    size_t n = framed(s, answer, sizeof(answer));
    struct doq_rx r;

    doq_rx_init(&r);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(doq_rx_feed(&r, s + i, 1, false), i + 1 == n ? 1 : 0);
    /* the FIN alone, later, is fine; anything after it is not */
    assert_int_equal(doq_rx_feed(&r, NULL, 0, true), 0);
    assert_int_equal(doq_rx_feed(&r, s, 1, false), DV_EPROTO);
    doq_rx_free(&r);
}

struct bad_case {
    const char *what;
    const uint8_t *bytes;
    size_t len;
    bool fin;
};

static void test_malformed_streams(void **state)
{
    static const uint8_t nonzero_id[] = {0, 12, 0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t too_short[] = {0, 11, 0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zero_len[] = {0, 0};
    static const uint8_t fin_in_prefix[] = {0};
    static const uint8_t fin_in_body[] = {0, 14, 0, 0, 0x81};
    static const uint8_t trailing[] = {0, 12, 0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xff};
    static const uint8_t two_msgs[] = {0, 12, 0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 12, 0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0};
    const struct bad_case cases[] = {
        {"non-zero Message ID", nonzero_id, sizeof(nonzero_id), true},
        {"shorter than a header", too_short, sizeof(too_short), true},
        {"zero-length message", zero_len, sizeof(zero_len), true},
        {"FIN inside the prefix", fin_in_prefix, sizeof(fin_in_prefix), true},
        {"FIN inside the body", fin_in_body, sizeof(fin_in_body), true},
        {"bytes after the message", trailing, sizeof(trailing), true},
        {"two messages on one stream", two_msgs, sizeof(two_msgs), true},
        {"empty stream", NULL, 0, true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct doq_rx r;
        int rc;
        doq_rx_init(&r);
        rc = doq_rx_feed(&r, cases[i].bytes, cases[i].len, cases[i].fin);
        if (rc != DV_EPROTO)
            fail_msg("%s: got %d, want DV_EPROTO", cases[i].what, rc);
        doq_rx_free(&r);
    }
}

/* Bytes that arrive after the message completed, in a later chunk. */
static void test_late_trailing_bytes(void **state)
{
    uint8_t s[64];
    size_t n = framed(s, answer, sizeof(answer));
    struct doq_rx r;

    doq_rx_init(&r);
    assert_int_equal(doq_rx_feed(&r, s, n, false), 1);
    assert_int_equal(doq_rx_feed(&r, s, 2, true), DV_EPROTO);
    doq_rx_free(&r);
}

static void test_largest_message(void **state)
{
    static uint8_t s[2 + 65535];
    struct doq_rx r;

    memset(s, 0x5a, sizeof(s));
    s[0] = s[1] = 0xff;
    s[2] = s[3] = 0; /* ID 0 */
    doq_rx_init(&r);
    assert_int_equal(doq_rx_feed(&r, s, 30000, false), 0);
    assert_int_equal(doq_rx_feed(&r, s + 30000, sizeof(s) - 30000, true), 1);
    assert_int_equal(r.len, 65535);
    assert_memory_equal(r.msg, s + 2, 65535);
    doq_rx_free(&r);
}

static void test_error_codes(void **state)
{
    assert_int_equal(doq_error_to_rc(DOQ_NO_ERROR), DV_ECONN);
    assert_int_equal(doq_error_to_rc(DOQ_INTERNAL_ERROR), DV_ESERVFAIL);
    assert_int_equal(doq_error_to_rc(DOQ_PROTOCOL_ERROR), DV_EPROTO);
    assert_int_equal(doq_error_to_rc(DOQ_REQUEST_CANCELLED), DV_ECONN);
    assert_int_equal(doq_error_to_rc(DOQ_EXCESSIVE_LOAD), DV_ESERVFAIL);
    assert_int_equal(doq_error_to_rc(0x1234), DV_EPROTO);
}

static void never_done(struct xfer *x, int rc, const uint8_t *ans, size_t len)
{
    fail_msg("a query that was never sent completed (%d)", rc);
}

/* Like DoT's wait list, the queue of queries waiting for a stream is
 * bounded: past the limit send fails at once, so the caller tries another
 * upstream or answers SERVFAIL instead of holding the query. */
static void test_send_queue_is_bounded(void **state)
{
    enum { LIMIT = 16384 };
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cfg_upstream cu = {.name = "quic://127.0.0.1:9", .url = "quic://127.0.0.1:9"};
    static const uint8_t q[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                1, 'a', 0, 0, 1, 0, 1};
    struct xfer *xs = calloc(LIMIT + 1, sizeof(*xs));
    char err[256];
    size_t sent = 0;

    assert_non_null(loop);
    assert_non_null(xs);
    struct upstream *u = upstream_new(loop, &cu, NULL, err, sizeof(err));
    assert_non_null(u);
    /* the loop never runs: no connection, every query stays queued */
    for (size_t i = 0; i <= LIMIT; i++) {
        xs[i] = (struct xfer){.msg = q, .len = sizeof(q), .done = never_done};
        int rc = u->ops->send(u, &xs[i]);
        if (rc == 0)
            sent++;
        else
            assert_int_equal(rc, DV_ECONN);
    }
    assert_int_equal(sent, LIMIT);
    for (size_t i = 0; i < sent; i++)
        u->ops->cancel(u, &xs[i]);
    upstream_unref(u);
    free(xs);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_byte_by_byte_then_fin),
        cmocka_unit_test(test_malformed_streams),
        cmocka_unit_test(test_late_trailing_bytes),
        cmocka_unit_test(test_largest_message),
        cmocka_unit_test(test_error_codes),
        cmocka_unit_test(test_send_queue_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
