/* Unit tests for src/upstream/frame: the 2-byte length framing that DoT (and
 * DoQ streams) read incrementally, fed in every possible split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "upstream/frame.h"

enum { MAX_MSGS = 8 };

/* What a reader produced: copies of each message, in order. */
struct got {
    size_t n;
    size_t len[MAX_MSGS];
    uint8_t *msg[MAX_MSGS];
};

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->msg[i]);
    memset(g, 0, sizeof(*g));
}

/* Feeds one piece the way the transport does: call until all is consumed,
 * taking each message out as it completes. */
static void feed(struct frame_rd *f, const uint8_t *in, size_t len, struct got *g)
{
    size_t off = 0;

    while (off < len) {
        const uint8_t *m;
        size_t mlen;
        long used = frame_read(f, in + off, len - off, &m, &mlen);
        assert_true(used > 0);
        assert_true((size_t)used <= len - off);
        off += (size_t)used;
        if (m) {
            assert_true(g->n < MAX_MSGS);
            g->msg[g->n] = malloc(mlen ? mlen : 1);
            assert_non_null(g->msg[g->n]);
            memcpy(g->msg[g->n], m, mlen);
            g->len[g->n++] = mlen;
        }
    }
}

/* A stream of three answers with distinct contents and lengths 12, 300 and
 * 1500 (the last spans what one TLS read might deliver in pieces). */
static const size_t three_lens[3] = {12, 300, 1500};

static size_t make_stream(uint8_t *out, const size_t *lens, size_t n)
{
    size_t p = 0;

    for (size_t i = 0; i < n; i++) {
        frame_put_len(out + p, lens[i]);
        p += 2;
        for (size_t j = 0; j < lens[i]; j++)
            out[p + j] = (uint8_t)(i * 7 + j * 13 + 1);
        p += lens[i];
    }
    return p;
}

static void check_three(const struct got *g, const uint8_t *stream)
{
    size_t p = 0;

    assert_int_equal(g->n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(g->len[i], three_lens[i]);
        assert_memory_equal(g->msg[i], stream + p + 2, three_lens[i]);
        p += 2 + three_lens[i];
    }
}

static void test_every_split_point(void **state)
{
    (void)state;
    static uint8_t s[2 * 3 + 12 + 300 + 1500];
    size_t total = make_stream(s, three_lens, 3);

    for (size_t cut = 0; cut <= total; cut++) {
        struct frame_rd f;
        struct got g = {0};
        frame_init(&f);
        feed(&f, s, cut, &g);
        feed(&f, s + cut, total - cut, &g);
        check_three(&g, s);
        assert_false(frame_partial(&f));
        got_free(&g);
        frame_free(&f);
    }
}

/* Two cuts, so every pair of pieces boundaries (a length prefix split from
 * its body, a prefix split in half, a piece ending exactly on a frame) is
 * covered, on a small stream to keep it quick. */
static void test_every_pair_of_splits(void **state)
{
    (void)state;
    static const size_t lens[3] = {12, 13, 40};
    uint8_t s[2 * 3 + 12 + 13 + 40];
    size_t total = make_stream(s, lens, 3);

    for (size_t a = 0; a <= total; a++) {
        for (size_t b = a; b <= total; b++) {
            struct frame_rd f;
            struct got g = {0};
            frame_init(&f);
            feed(&f, s, a, &g);
            feed(&f, s + a, b - a, &g);
            feed(&f, s + b, total - b, &g);
            assert_int_equal(g.n, 3);
            size_t p = 0;
            for (size_t i = 0; i < 3; i++) {
                assert_int_equal(g.len[i], lens[i]);
                assert_memory_equal(g.msg[i], s + p + 2, lens[i]);
                p += 2 + lens[i];
            }
            got_free(&g);
            frame_free(&f);
        }
    }
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    static uint8_t s[2 * 3 + 12 + 300 + 1500];
    size_t total = make_stream(s, three_lens, 3);
    struct frame_rd f;
    struct got g = {0};

    frame_init(&f);
    for (size_t i = 0; i < total; i++) {
        feed(&f, s + i, 1, &g);
        /* partial exactly while inside a frame */
        bool boundary = i + 1 == 2 + 12 || i + 1 == 2 + 12 + 2 + 300 || i + 1 == total;
        assert_int_equal(frame_partial(&f), !boundary);
    }
    check_three(&g, s);
    got_free(&g);
    frame_free(&f);
}

/* A whole frame in the input is handed out in place, one per call. */
static void test_whole_frame_in_place(void **state)
{
    (void)state;
    static uint8_t s[2 * 3 + 12 + 300 + 1500];
    size_t total = make_stream(s, three_lens, 3);
    struct frame_rd f;
    const uint8_t *m;
    size_t mlen;

    frame_init(&f);
    assert_int_equal(frame_read(&f, s, total, &m, &mlen), 2 + 12);
    assert_ptr_equal(m, s + 2);
    assert_int_equal(mlen, 12);
    assert_int_equal(frame_read(&f, s + 14, total - 14, &m, &mlen), 2 + 300);
    assert_ptr_equal(m, s + 16);
    frame_free(&f);
}

static void test_zero_length(void **state)
{
    (void)state;
    const uint8_t s[] = {0, 0, 0, 3, 'a', 'b', 'c'};

    for (size_t cut = 0; cut <= sizeof(s); cut++) {
        struct frame_rd f;
        struct got g = {0};
        frame_init(&f);
        feed(&f, s, cut, &g);
        feed(&f, s + cut, sizeof(s) - cut, &g);
        assert_int_equal(g.n, 2);
        assert_int_equal(g.len[0], 0);
        assert_int_equal(g.len[1], 3);
        assert_memory_equal(g.msg[1], "abc", 3);
        assert_false(frame_partial(&f));
        got_free(&g);
        frame_free(&f);
    }
}

/* 0xFFFF announced, fewer bytes delivered: nothing is reported, everything
 * is consumed, and the reader knows the stream was cut inside a message;
 * the rest, when it comes, completes the full 65535 bytes. */
static void test_max_length_short_body(void **state)
{
    (void)state;
    size_t total = 2 + 65535;
    uint8_t *s = malloc(total);
    struct frame_rd f;
    struct got g = {0};

    assert_non_null(s);
    frame_put_len(s, 65535);
    assert_int_equal(s[0], 0xff);
    assert_int_equal(s[1], 0xff);
    for (size_t i = 2; i < total; i++)
        s[i] = (uint8_t)(i * 31);
    frame_init(&f);
    feed(&f, s, 2 + 1000, &g);
    assert_int_equal(g.n, 0);
    assert_true(frame_partial(&f));
    feed(&f, s + 2 + 1000, 64534, &g); /* one byte short */
    assert_int_equal(g.n, 0);
    assert_true(frame_partial(&f));
    feed(&f, s + total - 1, 1, &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.len[0], 65535);
    assert_memory_equal(g.msg[0], s + 2, 65535);
    assert_false(frame_partial(&f));
    got_free(&g);
    frame_free(&f);
    free(s);
}

static void test_empty_input(void **state)
{
    (void)state;
    struct frame_rd f;
    const uint8_t *m = (const uint8_t *)"x";
    size_t mlen = 7;

    frame_init(&f);
    assert_int_equal(frame_read(&f, NULL, 0, &m, &mlen), 0);
    assert_null(m);
    assert_int_equal(mlen, 0);
    assert_false(frame_partial(&f));
    frame_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_every_pair_of_splits),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_whole_frame_in_place),
        cmocka_unit_test(test_zero_length),
        cmocka_unit_test(test_max_length_short_body),
        cmocka_unit_test(test_empty_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
