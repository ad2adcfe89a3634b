/* Unit tests for the DoH helpers: base64url, URL paths and templates,
 * :authority, and the response path driven with hand-made server frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "upstream/doh.h"

/* ---- base64url ---------------------------------------------------------- */

static void test_b64url_vectors(void **state)
{
    /* RFC 4648 10, in the URL alphabet and without padding */
    static const struct { const char *in, *out; } rows[] = {
        {"", ""},         {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        long n = doh_b64url((const uint8_t *)rows[i].in, strlen(rows[i].in), out, sizeof(out));
        assert_int_equal(n, (long)strlen(rows[i].out));
        assert_string_equal(out, rows[i].out);
    }
}

static void test_b64url_alphabet(void **state)
{
    /* 62 and 63 are '-' and '_' here, never '+' and '/' */
    static const uint8_t in[] = {0xfb, 0xff, 0xbf};
    char out[8];

    (void)state;
    assert_int_equal(doh_b64url(in, sizeof(in), out, sizeof(out)), 4);
    assert_string_equal(out, "-_-_");
}

static void test_b64url_rfc8484_query(void **state)
{
    /* RFC 8484 4.1.1: www.example.com A, ID 0, RD set */
    static const uint8_t q[] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w', 'w', 7,
                                'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
                                0, 1, 0, 1};
    char out[64];

    (void)state;
    assert_true(doh_b64url(q, sizeof(q), out, sizeof(out)) > 0);
    assert_string_equal(out, "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB");
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Every length from 0 to 300 decodes back to its input. */
static void test_b64url_roundtrip(void **state)
{
    uint8_t in[300], back[300];
    char out[420];

    (void)state;
    srand(7);
    for (size_t len = 0; len <= sizeof(in); len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (uint8_t)rand();
        long n = doh_b64url(in, len, out, sizeof(out));
        assert_true(n >= 0);
        assert_int_equal((size_t)n, (len * 8 + 5) / 6);
        size_t bl = 0;
        uint32_t acc = 0;
        int bits = 0;
        for (long i = 0; i < n; i++) {
            int v = b64url_value(out[i]);
            assert_true(v >= 0);
            acc = acc << 6 | (uint32_t)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                back[bl++] = (uint8_t)(acc >> bits);
            }
        }
        assert_int_equal(bl, len);
        assert_memory_equal(back, in, len);
    }
}

static void test_b64url_space(void **state)
{
    static const uint8_t in[] = {1, 2, 3, 4};
    char out[8];

    (void)state;
    /* 6 characters and the NUL: 7 fit, 6 do not */
    assert_int_equal(doh_b64url(in, sizeof(in), out, 7), 6);
    assert_int_equal(doh_b64url(in, sizeof(in), out, 6), DV_ESPACE);
    assert_int_equal(doh_b64url(in, 0, out, 0), DV_ESPACE);
    assert_int_equal(doh_b64url(in, 0, out, 1), 0);
    assert_string_equal(out, "");
}

/* ---- paths and templates -------------------------------------------------- */

static void test_path_table(void **state)
{
    static const struct { const char *in; int rc; const char *out; } rows[] = {
        {NULL, 0, "/dns-query"},
        {"", 0, "/dns-query"},
        {"/dns-query", 0, "/dns-query"},
        {"/dns-query{?dns}", 0, "/dns-query"},
        {"/{?dns}", 0, "/"},
        {"/resolve?ct=1", 0, "/resolve?ct=1"},
        {"/a/b-c_d.e~f%20", 0, "/a/b-c_d.e~f%20"},
        {"{?dns}", DV_EINVAL, NULL},          /* nothing left */
        {"dns-query", DV_EINVAL, NULL},       /* not absolute */
        {"/q{?dns,ct}", DV_EINVAL, NULL},     /* other template forms */
        {"/q{?dns}/x", DV_EINVAL, NULL},      /* template not at the end */
        {"/{dns}", DV_EINVAL, NULL},
        {"/a b", DV_EINVAL, NULL},
        {"/a#frag", DV_EINVAL, NULL},
        {"/a\"b", DV_EINVAL, NULL},
        {"/a\x7f", DV_EINVAL, NULL},
        {"/a\r\nx: y", DV_EINVAL, NULL},      /* header injection */
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int rc = doh_path(rows[i].in, out, sizeof(out));
        if (rc != rows[i].rc)
            fail_msg("doh_path(\"%s\") = %d, want %d", rows[i].in ? rows[i].in : "(null)", rc,
                     rows[i].rc);
        if (rows[i].out)
            assert_string_equal(out, rows[i].out);
    }
}

static void test_path_space(void **state)
{
    char out[11];

    (void)state;
    assert_int_equal(doh_path("/dns-query", out, sizeof(out)), 0);
    assert_int_equal(doh_path("/dns-query{?dns}", out, sizeof(out)), 0);
    assert_int_equal(doh_path("/dns-query/", out, sizeof(out)), DV_ESPACE);
}

static void test_authority(void **state)
{
    static const struct { const char *host; uint16_t port; const char *out; } rows[] = {
        {"doh.test", 443, "doh.test"},
        {"doh.test", 8443, "doh.test:8443"},
        {"127.0.0.1", 443, "127.0.0.1"},
        {"127.0.0.1", 5443, "127.0.0.1:5443"},
        {"::1", 443, "[::1]"},
        {"2001:db8::1", 853, "[2001:db8::1]:853"},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(doh_authority(rows[i].host, rows[i].port, out, sizeof(out)), 0);
        assert_string_equal(out, rows[i].out);
    }
    assert_int_equal(doh_authority("doh.test", 8443, out, 13), DV_ESPACE);
    assert_int_equal(doh_authority("doh.test", 8443, out, 14), 0);
}

/* ---- the response path ---------------------------------------------------- */

#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)
#include "../fuzz/doh_harness.h"

#define FRAME(len, type, flags, sid) \
    0, 0, (len), (type), (flags), 0, 0, 0, (sid)

/* Server byte streams that end every request one way or another; the
 * harness aborts when a request ends twice or never. */
static void test_response_path(void **state)
{
    static const uint8_t settings[] = {FRAME(0, 4, 0, 0)};
    static const uint8_t goaway_all[] = {FRAME(0, 4, 0, 0), FRAME(8, 7, 0, 0),
                                         0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t goaway_one[] = {FRAME(0, 4, 0, 0), FRAME(8, 7, 0, 0),
                                         0, 0, 0, 1, 0, 0, 0, 0};
    static const uint8_t rst[] = {FRAME(0, 4, 0, 0), FRAME(4, 3, 0, 1), 0, 0, 0, 2,
                                  FRAME(4, 3, 0, 3), 0, 0, 0, 7 /* REFUSED_STREAM */};
    /* :status 404 (HPACK static index 13), END_STREAM|END_HEADERS */
    static const uint8_t status404[] = {FRAME(0, 4, 0, 0), FRAME(1, 1, 5, 1), 0x8d};
    /* :status 200 without content-type, then 12 bytes of body */
    static const uint8_t no_ctype[] = {FRAME(0, 4, 0, 0), FRAME(1, 1, 4, 3), 0x88,
                                       FRAME(12, 0, 1, 3), 0, 0, 0x81, 0x80, 0, 0,
                                       0, 0, 0, 0, 0, 0};
    static const uint8_t garbage[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    const struct { const uint8_t *p; size_t len; } rows[] = {
        {settings, 0},           {settings, sizeof(settings)},
        {goaway_all, sizeof(goaway_all)}, {goaway_one, sizeof(goaway_one)},
        {rst, sizeof(rst)},      {status404, sizeof(status404)},
        {no_ctype, sizeof(no_ctype)}, {garbage, sizeof(garbage) - 1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(doh_harness_response(rows[i].p, rows[i].len), 0);
}

#define CTYPE 'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n', '/', 'd', 'n', 's', \
              '-', 'm', 'e', 's', 's', 'a', 'g', 'e'
/* :status 200 (static 8), content-type (literal, static name 31) */
#define OK_HEADERS(sid) FRAME(26, 1, 4, sid), 0x88, 0x5f, 23, CTYPE
#define BODY12(sid, b) FRAME(12, 0, 1, sid), 0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, (b)

static void test_response_answered(void **state)
{
    /* two good answers, split across DATA frames for one of them */
    static const uint8_t two[] = {FRAME(0, 4, 0, 0), OK_HEADERS(1), OK_HEADERS(5),
                                  BODY12(5, 0), FRAME(5, 0, 0, 1), 0, 0, 0x81, 0x80, 0,
                                  FRAME(7, 0, 1, 1), 1, 0, 0, 0, 0, 0, 1};
    /* a 200 with the wrong content-type and one with a short body */
    static const uint8_t bad[] = {FRAME(0, 4, 0, 0), FRAME(14, 1, 4, 1), 0x88, 0x5f, 10,
                                  't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n',
                                  BODY12(1, 0), OK_HEADERS(3), FRAME(2, 0, 1, 3), 0, 0};
    /* GOAWAY naming stream 1 as the last: 3 and 5 are retried (and lost
     * with the connection), 1 is still answered */
    static const uint8_t goaway[] = {FRAME(0, 4, 0, 0), FRAME(8, 7, 0, 0), 0, 0, 0, 1,
                                     0, 0, 0, 0, OK_HEADERS(1), BODY12(1, 0)};

    /* a good answer on 1; on 3 one with ID 0x4242 where ID 0 was asked */
    static const uint8_t other_id[] = {FRAME(0, 4, 0, 0), OK_HEADERS(1), BODY12(1, 0),
                                       OK_HEADERS(3), FRAME(12, 0, 1, 3), 0x42, 0x42, 0x81,
                                       0x80, 0, 1, 0, 0, 0, 0, 0, 0};

    (void)state;
    assert_int_equal(doh_harness_response(other_id, sizeof(other_id)), 1);
    assert_int_equal(doh_harness_response(two, sizeof(two)), 2);
    assert_int_equal(doh_harness_response(bad, sizeof(bad)), 0);
    assert_int_equal(doh_harness_response(goaway, sizeof(goaway)), 1);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_b64url_alphabet),
        cmocka_unit_test(test_b64url_rfc8484_query),
        cmocka_unit_test(test_b64url_roundtrip),
        cmocka_unit_test(test_b64url_space),
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_path_space),
        cmocka_unit_test(test_authority),
#if defined(DV_HAVE_TLS) && defined(DV_HAVE_NGHTTP2)
        cmocka_unit_test(test_response_path),
        cmocka_unit_test(test_response_answered),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
