/* Unit tests for src/dns: cursor, names, queries, responses, EDNS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "dns/dns.h"

/* ---- byte-literal helpers ---------------------------------------------- */

#define U16(v) (uint8_t)(((v) >> 8) & 0xff), (uint8_t)((v) & 0xff)
#define U32(v) U16(((v) >> 16) & 0xffff), U16((v) & 0xffff)
#define HDR(id, fl, qd, an, ns, ar) U16(id), U16(fl), U16(qd), U16(an), U16(ns), U16(ar)
/* example.com, 13 bytes; a question with it sits at 12..29. */
#define N_EXAMPLE 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0
#define Q_EX_A N_EXAMPLE, U16(DNS_TYPE_A), U16(DNS_CLASS_IN)
#define OPT_RR(size, ttl, rdlen) 0, U16(DNS_TYPE_OPT), U16(size), U32(ttl), U16(rdlen)
#define RR_A(ttl) 0xc0, 12, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(ttl), U16(4), 192, 0, 2, 1

struct row {
    const char *name;
    const uint8_t *msg;
    size_t len;
    int want;
};

#define BYTES(...) (const uint8_t[]){ __VA_ARGS__ }
#define ROW(n, w, ...) { n, BYTES(__VA_ARGS__), sizeof(BYTES(__VA_ARGS__)), w }

/* ---- cursor ------------------------------------------------------------ */

static void test_cursor_read_sticky(void **state)
{
    (void)state;
    const uint8_t buf[] = { 1, 2, 3, 4, 5 };
    struct dns_cur c;

    dns_cur_init(&c, buf, sizeof(buf));
    assert_int_equal(dns_cur_left(&c), 5);
    assert_int_equal(dns_cur_u16(&c), 0x0102);
    assert_int_equal(dns_cur_u16(&c), 0x0304);
    assert_int_equal(c.err, 0);
    assert_int_equal(dns_cur_u16(&c), 0); /* 1 byte left: fails */
    assert_int_equal(c.err, DV_EMALFORMED);
    assert_int_equal(c.pos, 4);
    /* The byte that is still there now reads as zero: the error sticks. */
    assert_int_equal(dns_cur_u8(&c), 0);
    assert_int_equal(dns_cur_u32(&c), 0);
    assert_int_equal(dns_cur_left(&c), 0);
    assert_int_equal(c.err, DV_EMALFORMED);
    dns_cur_seek(&c, 0);
    assert_int_equal(c.pos, 4);
    assert_int_equal(dns_cur_u8(&c), 0);

    uint8_t dst[4] = { 9, 9, 9, 9 };
    dns_cur_init(&c, buf, sizeof(buf));
    dns_cur_skip(&c, 2);
    dns_cur_read(&c, dst, 4);
    assert_int_equal(c.err, DV_EMALFORMED);
    assert_memory_equal(dst, BYTES(0, 0, 0, 0), 4);

    dns_cur_init(&c, buf, sizeof(buf));
    assert_int_equal(dns_cur_u32(&c), 0x01020304u);
    assert_int_equal(dns_cur_u8(&c), 5);
    assert_int_equal(dns_cur_left(&c), 0);
    assert_int_equal(c.err, 0);

    /* Huge lengths must not wrap the position arithmetic. */
    dns_cur_init(&c, buf, sizeof(buf));
    dns_cur_skip(&c, 1);
    dns_cur_skip(&c, SIZE_MAX);
    assert_int_equal(c.err, DV_EMALFORMED);
    assert_int_equal(c.pos, 1);

    dns_cur_init(&c, buf, sizeof(buf));
    dns_cur_seek(&c, 5);
    assert_int_equal(c.err, 0);
    dns_cur_seek(&c, 6);
    assert_int_equal(c.err, DV_EMALFORMED);

    /* A position set by hand past the end cannot reach memory beyond it. */
    dns_cur_init(&c, buf, sizeof(buf));
    c.pos = 10;
    assert_int_equal(dns_cur_left(&c), 0);
    assert_int_equal(dns_cur_u8(&c), 0);
    assert_int_equal(c.err, DV_EMALFORMED);

    dns_cur_init(&c, NULL, 100);
    assert_int_equal(dns_cur_u8(&c), 0);
    assert_int_equal(c.err, DV_EMALFORMED);
}

static void test_cursor_write_sticky(void **state)
{
    (void)state;
    uint8_t buf[8];
    struct dns_cur c;

    memset(buf, 0xaa, sizeof(buf));
    dns_cur_init_w(&c, buf, 7);
    dns_cur_put_u32(&c, 0x01020304);
    dns_cur_put_u16(&c, 0x0506);
    assert_int_equal(c.err, 0);
    dns_cur_put_u16(&c, 0x0708); /* one byte of room: nothing written */
    assert_int_equal(c.err, DV_ESPACE);
    assert_int_equal(c.pos, 6);
    dns_cur_put_u8(&c, 0x09); /* would fit, but the error sticks */
    assert_int_equal(c.err, DV_ESPACE);
    assert_memory_equal(buf, BYTES(1, 2, 3, 4, 5, 6, 0xaa, 0xaa), 8);

    dns_cur_init_w(&c, buf, sizeof(buf));
    dns_cur_put(&c, "abcdefgh", 8);
    assert_int_equal(c.err, 0);
    dns_cur_put(&c, "", 0);
    assert_int_equal(c.err, 0);
    dns_cur_put(&c, "x", 1);
    assert_int_equal(c.err, DV_ESPACE);

    /* A read cursor never writes through its base. */
    uint8_t ro[4] = { 0 };
    dns_cur_init(&c, ro, sizeof(ro));
    dns_cur_put_u16(&c, 0xffff);
    assert_int_equal(c.err, DV_ESPACE);
    assert_memory_equal(ro, BYTES(0, 0, 0, 0), 4);
}

static void test_header_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[DNS_HDR_LEN];
    struct dns_hdr h = { 0x1234, 0x8180, 1, 2, 3, 4 }, g;
    struct dns_cur c;

    dns_cur_init_w(&c, buf, sizeof(buf));
    dns_hdr_write(&c, &h);
    assert_int_equal(c.err, 0);
    assert_memory_equal(buf, BYTES(HDR(0x1234, 0x8180, 1, 2, 3, 4)), DNS_HDR_LEN);
    dns_cur_init(&c, buf, sizeof(buf));
    dns_hdr_read(&c, &g);
    assert_int_equal(c.err, 0);
    assert_memory_equal(&g, &h, sizeof(h));
    dns_cur_init(&c, buf, 11);
    dns_hdr_read(&c, &g);
    assert_int_equal(c.err, DV_EMALFORMED);
    assert_int_equal(g.arcount, 0);
}

/* ---- names --------------------------------------------------------------- */

static void test_name_text_roundtrip(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "www.example.com", "www.example.com." },
        { "www.example.com.", "www.example.com." },
        { ".", "." },
        { "a\\.b.c", "a\\046b.c." },
        { "\\065bc", "Abc." },
        { "a b", "a\\032b." },
        { "x\\\\y", "x\\092y." },
        { "\\000.\\255", "\\000.\\255." },
        { "_dns.resolver.arpa", "_dns.resolver.arpa." },
        { "MiXeD-Case.Org", "MiXeD-Case.Org." },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t wire[DNS_NAME_MAX], again[DNS_NAME_MAX];
        char text[1024];
        int n = dns_name_from_str(cases[i].in, wire);
        if (n <= 0)
            fail_msg("%s: from_str %d", cases[i].in, n);
        size_t tl = dns_name_to_str(wire, (size_t)n, text, sizeof(text));
        if (strcmp(text, cases[i].out) != 0 || tl != strlen(cases[i].out))
            fail_msg("%s: got \"%s\" want \"%s\"", cases[i].in, text, cases[i].out);
        /* And the printed form parses back to the same wire name. */
        assert_int_equal(dns_name_from_str(text, again), n);
        assert_memory_equal(again, wire, (size_t)n);
    }

    uint8_t w[DNS_NAME_MAX];
    assert_int_equal(dns_name_from_str("www.example.com", w), 17);
    assert_memory_equal(w, BYTES(3, 'w', 'w', 'w', N_EXAMPLE), 17);
    assert_int_equal(dns_name_from_str(".", w), 1);
    assert_int_equal(w[0], 0);
}

static void test_name_text_errors(void **state)
{
    (void)state;
    static const char *bad[] = { "", "..", "a..b", ".a", "a\\", "a\\2", "a\\25x", "a\\256", "a.\\" };
    uint8_t w[DNS_NAME_MAX];
    char buf[400];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (dns_name_from_str(bad[i], w) != DV_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
    }
    assert_int_equal(dns_name_from_str(NULL, w), DV_EINVAL);

    /* Label of 63 is fine, 64 is not. */
    memset(buf, 'a', 64);
    buf[63] = '\0';
    assert_int_equal(dns_name_from_str(buf, w), 65);
    buf[63] = 'a';
    buf[64] = '\0';
    assert_int_equal(dns_name_from_str(buf, w), DV_EINVAL);

    /* 63.63.63.61 is 255 bytes on the wire; one more character is too long. */
    size_t p = 0;
    const size_t lens[] = { 63, 63, 63, 61 };
    for (size_t i = 0; i < 4; i++) {
        memset(buf + p, 'b', lens[i]);
        p += lens[i];
        buf[p++] = '.';
    }
    buf[p] = '\0';
    assert_int_equal(dns_name_from_str(buf, w), 255);
    buf[p - 1] = 'c';
    buf[p] = '\0';
    assert_int_equal(dns_name_from_str(buf, w), DV_EINVAL);
    /* Escapes count as one byte each. */
    memcpy(buf + p - 1, "\\000", 5);
    assert_int_equal(dns_name_from_str(buf, w), DV_EINVAL);
}

static void test_name_to_str_truncation(void **state)
{
    (void)state;
    uint8_t w[DNS_NAME_MAX];
    char out[16];
    int n = dns_name_from_str("www.example.com", w);

    assert_int_equal(dns_name_to_str(w, (size_t)n, out, 5), 4);
    assert_string_equal(out, "www.");
    assert_int_equal(dns_name_to_str(w, (size_t)n, out, 0), 0);
    out[0] = 'x';
    assert_int_equal(dns_name_to_str(w, (size_t)n, out, 1), 0);
    assert_string_equal(out, "");

    /* An escape is never cut in half. */
    n = dns_name_from_str("a\\001", w);
    assert_int_equal(dns_name_to_str(w, (size_t)n, out, 4), 1);
    assert_string_equal(out, "a");
    assert_int_equal(dns_name_to_str(w, (size_t)n, out, 6), 5);
    assert_string_equal(out, "a\\001");

    /* A malformed label in a log line stops instead of over-reading. */
    const uint8_t broken[] = { 3, 'a', 'b' };
    assert_int_equal(dns_name_to_str(broken, sizeof(broken), out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(dns_name_to_str(w, 0, out, sizeof(out)), 0);
}

static void test_name_compare(void **state)
{
    (void)state;
    uint8_t a[DNS_NAME_MAX], b[DNS_NAME_MAX], r[DNS_NAME_MAX];
    int al = dns_name_from_str("WWW.Example.COM", a);
    int bl = dns_name_from_str("www.example.com", b);
    int rl = dns_name_from_str(".", r);

    assert_true(dns_name_eq(a, (size_t)al, b, (size_t)bl));
    assert_true(dns_name_is_sub(a, (size_t)al, b + 4, (size_t)bl - 4));
    assert_true(dns_name_is_sub(a, (size_t)al, a, (size_t)al));
    assert_true(dns_name_is_sub(a, (size_t)al, r, (size_t)rl));
    assert_false(dns_name_is_sub(b + 4, (size_t)bl - 4, a, (size_t)al));

    /* Suffix matches only at label boundaries. */
    uint8_t x[DNS_NAME_MAX], p[DNS_NAME_MAX];
    int xl = dns_name_from_str("xexample.com", x);
    int pl = dns_name_from_str("example.com", p);
    assert_false(dns_name_is_sub(x, (size_t)xl, p, (size_t)pl));
    pl = dns_name_from_str("ample.com", p);
    assert_false(dns_name_is_sub(b, (size_t)bl, p, (size_t)pl));

    /* ASCII only: '[' and '{' (and Latin-1 A-acute/a-acute) differ by 0x20 but are not letters. */
    int l1 = dns_name_from_str("a[", x), l2 = dns_name_from_str("a{", p);
    assert_false(dns_name_eq(x, (size_t)l1, p, (size_t)l2));
    l1 = dns_name_from_str("\\193", x);
    l2 = dns_name_from_str("\\225", p);
    assert_false(dns_name_eq(x, (size_t)l1, p, (size_t)l2));
    assert_false(dns_name_eq(a, (size_t)al, a, (size_t)al - 1));

    dns_name_lower(a, (size_t)al);
    assert_memory_equal(a, b, (size_t)bl);
    l1 = dns_name_from_str("\\193Z[", x);
    dns_name_lower(x, (size_t)l1);
    assert_memory_equal(x, BYTES(3, 0xc1, 'z', '['), 4);
}

/* Writes a flat name of the given label lengths at the cursor. */
static void put_labels(struct dns_cur *c, const size_t *lens, size_t n, uint8_t fill, bool root)
{
    for (size_t i = 0; i < n; i++) {
        dns_cur_put_u8(c, (uint8_t)lens[i]);
        for (size_t j = 0; j < lens[i]; j++)
            dns_cur_put_u8(c, fill);
    }
    if (root)
        dns_cur_put_u8(c, 0);
}

static void test_name_read_limits(void **state)
{
    (void)state;
    uint8_t m[1024], out[DNS_NAME_MAX];
    struct dns_cur w, c;

    /* A chain of pointers, each to the one before: 127 hops pass, 128 fail. */
    memset(m, 0, sizeof(m));
    m[12] = 0;
    size_t last = 12;
    for (size_t i = 0; i < 128; i++) {
        size_t at = 13 + 2 * i;
        m[at] = (uint8_t)(0xc0 | last >> 8);
        m[at + 1] = (uint8_t)last;
        last = at;
    }
    dns_cur_init(&c, m, 13 + 2 * 128);
    dns_cur_seek(&c, 13 + 2 * 126);
    assert_int_equal(dns_name_read(&c, out), 1);
    assert_int_equal(c.pos, 13 + 2 * 127);
    assert_int_equal(c.err, 0);
    dns_cur_seek(&c, 13 + 2 * 127);
    assert_int_equal(dns_name_read(&c, out), 0);
    assert_int_equal(c.err, DV_EMALFORMED);

    /* 255 is the limit across pointers too: 129 + 128 bytes = 257. */
    const size_t two63[] = { 63, 63 };
    dns_cur_init_w(&w, m, sizeof(m));
    dns_cur_seek(&w, 12);
    put_labels(&w, two63, 2, 'q', true); /* 12..140 */
    size_t second = w.pos;
    put_labels(&w, two63, 2, 'r', false);
    dns_cur_put_u16(&w, 0xc000 | 12);
    size_t third = w.pos;
    const size_t one61[] = { 61 };
    put_labels(&w, one61, 1, 's', false); /* 62 + 129 + 2 bytes in place, 191 uncompressed */
    dns_cur_put_u16(&w, 0xc000 | 12);
    assert_int_equal(w.err, 0);

    dns_cur_init(&c, m, w.pos);
    dns_cur_seek(&c, second);
    assert_int_equal(dns_name_read(&c, out), 0);
    assert_int_equal(c.err, DV_EMALFORMED);
    dns_cur_init(&c, m, w.pos);
    dns_cur_seek(&c, third);
    assert_int_equal(dns_name_read(&c, out), 191);
    assert_int_equal(c.pos, w.pos);
    char text[1024];
    dns_name_to_str(out, 191, text, sizeof(text));
    assert_int_equal(strlen(text), 61 + 1 + 63 + 1 + 63 + 1);

    /* out may be NULL to validate and skip. */
    dns_cur_init(&c, m, w.pos);
    dns_cur_seek(&c, 12);
    assert_int_equal(dns_name_read(&c, NULL), 129);
    assert_int_equal(c.pos, second);

    /* An error already set makes the read a no-op. */
    c.err = DV_EMALFORMED;
    assert_int_equal(dns_name_read(&c, out), 0);
    assert_int_equal(c.pos, second);
}

/* ---- query parsing -------------------------------------------------------- */

static const struct row query_rows[] = {
    /* Not a query at all: drop. */
    ROW("one byte", DV_ENOTQUERY, 0x12),
    ROW("header 11 bytes", DV_ENOTQUERY, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0),
    ROW("QR set", DV_ENOTQUERY, HDR(1, 0x8100, 1, 0, 0, 0), Q_EX_A),
    ROW("QR set, junk after header", DV_ENOTQUERY, HDR(1, 0x8000, 0, 0, 0, 0), 0xff),
    /* Opcode. */
    ROW("opcode NOTIFY", DV_ENOTIMP, HDR(1, 0x2000, 1, 0, 0, 0), Q_EX_A),
    ROW("opcode UPDATE", DV_ENOTIMP, HDR(1, 0x2800, 1, 0, 0, 0), Q_EX_A),
    /* Question count and question. */
    ROW("qdcount 0", DV_EMALFORMED, HDR(1, 0x0100, 0, 0, 0, 0)),
    ROW("qdcount 2", DV_EMALFORMED, HDR(1, 0x0100, 2, 0, 0, 0), Q_EX_A, Q_EX_A),
    ROW("qdcount 1 without question", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0)),
    ROW("question without type", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), N_EXAMPLE),
    ROW("question cut in class", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), N_EXAMPLE, 0, 1, 0),
    ROW("name without root label", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e'),
    ROW("label overruns message", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 10, 'a', 'b'),
    ROW("label type 0x40", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 0x41, 'a', 0, U16(1), U16(1)),
    ROW("label type 0x80", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 0x81, 'a', 0, U16(1), U16(1)),
    ROW("pointer to itself", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 0xc0, 12, U16(1), U16(1)),
    ROW("pointer forward", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 0xc0, 14, 0, U16(1), U16(1)),
    ROW("pointer into header", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 0xc0, 2, U16(1), U16(1)),
    ROW("pointer cut short", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), 1, 'a', 0xc0),
    /* Owner at 29: "b" then a pointer back to 29 — backwards, yet a loop. */
    ROW("pointer loop", DV_EMALFORMED, HDR(1, 0x0100, 1, 1, 0, 0), Q_EX_A, 1, 'b', 0xc0, 29,
        U16(DNS_TYPE_A), U16(1), U32(60), U16(4), 1, 2, 3, 4),
    /* Two names pointing at each other. */
    ROW("pointer ping-pong", DV_EMALFORMED, HDR(1, 0x0100, 1, 2, 0, 0), Q_EX_A, 0xc0, 43,
        U16(DNS_TYPE_A), U16(1), U32(60), U16(0), 0xc0, 29, U16(DNS_TYPE_A), U16(1), U32(60), U16(0)),
    /* Sections. */
    ROW("trailing garbage", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 0), Q_EX_A, 0),
    ROW("answer count without record", DV_EMALFORMED, HDR(1, 0x0100, 1, 1, 0, 0), Q_EX_A),
    ROW("rdata overruns", DV_EMALFORMED, HDR(1, 0x0100, 1, 1, 0, 0), Q_EX_A, 0xc0, 12,
        U16(DNS_TYPE_A), U16(1), U32(60), U16(4), 1, 2, 3),
    ROW("RR cut in TTL", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, 0xc0, 12, U16(1), U16(1), 0, 0),
    /* OPT placement. */
    ROW("OPT in answer", DV_EMALFORMED, HDR(1, 0x0100, 1, 1, 0, 0), Q_EX_A, OPT_RR(4096, 0, 0)),
    ROW("OPT in authority", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 1, 0), Q_EX_A, OPT_RR(4096, 0, 0)),
    ROW("two OPT", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 2), Q_EX_A, OPT_RR(4096, 0, 0), OPT_RR(4096, 0, 0)),
    ROW("OPT with owner a.", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, 1, 'a', 0,
        U16(DNS_TYPE_OPT), U16(4096), U32(0), U16(0)),
    ROW("OPT with owner pointer", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, 0xc0, 12,
        U16(DNS_TYPE_OPT), U16(4096), U32(0), U16(0)),
    ROW("OPT option overruns", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(4096, 0, 6),
        U16(DNS_OPT_COOKIE), U16(8), 1, 2),
    ROW("OPT option header cut", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(4096, 0, 2),
        U16(DNS_OPT_COOKIE)),
    ROW("EDNS version 1", DV_EBADVERS, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(4096, 0x00010000, 0)),
    ROW("EDNS version 1, trailing", DV_EMALFORMED, HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A,
        OPT_RR(4096, 0x00010000, 0), 0),
    /* Good ones. */
    ROW("plain query", 0, HDR(0xbeef, 0x0100, 1, 0, 0, 0), Q_EX_A),
    ROW("root NS query", 0, HDR(7, 0x0000, 1, 0, 0, 0), 0, U16(DNS_TYPE_NS), U16(1)),
    ROW("TC, AD, CD set", 0, HDR(7, 0x0330, 1, 0, 0, 0), Q_EX_A),
    ROW("query with OPT and cookie", 0, HDR(2, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(1232, 0x8000, 12),
        U16(DNS_OPT_COOKIE), U16(8), 1, 2, 3, 4, 5, 6, 7, 8),
    ROW("answer record tolerated", 0, HDR(3, 0x0100, 1, 1, 0, 0), Q_EX_A, RR_A(60)),
    ROW("OPT after another additional", 0, HDR(4, 0x0100, 1, 0, 0, 2), Q_EX_A, RR_A(1), OPT_RR(512, 0, 0)),
};

static void run_query_rows(const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct dns_query_info qi;
        int rc = dns_query_parse(rows[i].msg, rows[i].len, &qi);
        if (rc != rows[i].want)
            fail_msg("query row \"%s\": got %d (%s), want %d", rows[i].name, rc, dv_strerror(rc),
                     rows[i].want);
    }
}

static void test_query_table(void **state)
{
    (void)state;
    struct dns_query_info qi;

    run_query_rows(query_rows, sizeof(query_rows) / sizeof(query_rows[0]));
    assert_int_equal(dns_query_parse(BYTES(0), 0, &qi), DV_ENOTQUERY);
    assert_int_equal(dns_query_parse(NULL, 0, &qi), DV_ENOTQUERY);
}

/* Rows too long to write out: label 64, names of 256 and 255 bytes. */
static size_t build_query(uint8_t *buf, size_t cap, const size_t *lens, size_t n)
{
    struct dns_cur w;
    struct dns_hdr h = { 0x55, DNS_FLAG_RD, 1, 0, 0, 0 };

    dns_cur_init_w(&w, buf, cap);
    dns_hdr_write(&w, &h);
    put_labels(&w, lens, n, 'x', true);
    dns_cur_put_u16(&w, DNS_TYPE_A);
    dns_cur_put_u16(&w, DNS_CLASS_IN);
    assert_int_equal(w.err, 0);
    return w.pos;
}

static void test_query_long_names(void **state)
{
    (void)state;
    uint8_t buf[600];
    struct dns_query_info qi;
    const size_t l64[] = { 64 }, l63[] = { 63 };
    const size_t n256[] = { 50, 50, 50, 50, 50 }, n255[] = { 63, 63, 63, 61 };
    size_t len;

    len = build_query(buf, sizeof(buf), l64, 1);
    assert_int_equal(dns_query_parse(buf, len, &qi), DV_EMALFORMED);
    assert_int_equal(qi.hdr.id, 0x55); /* hdr filled for the FORMERR */
    assert_int_equal(qi.q.name_len, 0);
    len = build_query(buf, sizeof(buf), l63, 1);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    len = build_query(buf, sizeof(buf), n256, 5);
    assert_int_equal(dns_query_parse(buf, len, &qi), DV_EMALFORMED);
    len = build_query(buf, sizeof(buf), n255, 4);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_int_equal(qi.q.name_len, 255);

    /* Over 255 only once a pointer is followed: owner = 63.63 + question's 129. */
    const size_t two63[] = { 63, 63 };
    struct dns_cur w;
    len = build_query(buf, sizeof(buf), two63, 2);
    dns_put16(buf + 6, 1);
    dns_cur_init_w(&w, buf, sizeof(buf));
    dns_cur_seek(&w, len);
    put_labels(&w, two63, 2, 'y', false);
    dns_cur_put_u16(&w, 0xc000 | 12);
    dns_cur_put_u16(&w, DNS_TYPE_A);
    dns_cur_put_u16(&w, DNS_CLASS_IN);
    dns_cur_put_u32(&w, 60);
    dns_cur_put_u16(&w, 0);
    assert_int_equal(w.err, 0);
    assert_int_equal(dns_query_parse(buf, w.pos, &qi), DV_EMALFORMED);
    assert_int_equal(qi.q.name_len, 129); /* the question itself did parse */
}

/* What dig +cookie sends: www.example.com A, RD AD, EDNS 1232 DO, cookie. */
static const uint8_t dig_query[] = {
    HDR(0x1a2b, 0x0120, 1, 0, 0, 1),
    3, 'w', 'w', 'w', N_EXAMPLE, U16(DNS_TYPE_A), U16(DNS_CLASS_IN),
    OPT_RR(1232, 0x00008000, 12), U16(DNS_OPT_COOKIE), U16(8), 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
};

static void test_query_good(void **state)
{
    (void)state;
    struct dns_query_info qi;

    assert_int_equal(dns_query_parse(dig_query, sizeof(dig_query), &qi), 0);
    assert_int_equal(qi.hdr.id, 0x1a2b);
    assert_int_equal(qi.hdr.flags, 0x0120);
    assert_int_equal(qi.hdr.arcount, 1);
    assert_int_equal(qi.q.name_len, 17);
    assert_memory_equal(qi.q.name, dig_query + 12, 17);
    assert_int_equal(qi.q.qtype, DNS_TYPE_A);
    assert_int_equal(qi.q.qclass, DNS_CLASS_IN);
    assert_int_equal(qi.question_end, 33);
    assert_true(qi.edns.present);
    assert_int_equal(qi.edns.udp_size, 1232);
    assert_int_equal(qi.edns.version, 0);
    assert_int_equal(qi.edns.ext_rcode, 0);
    assert_true(qi.edns.do_bit);
    assert_true(qi.edns.has_cookie);
    assert_false(qi.edns.has_ecs);
    assert_false(qi.edns.has_padding);
    assert_false(qi.edns.has_keepalive);
    assert_int_equal(qi.edns.rr_off, 33);
    assert_int_equal(qi.edns.rr_len, 23);

    /* Every strict prefix is refused. */
    for (size_t l = 0; l < sizeof(dig_query); l++) {
        int rc = dns_query_parse(dig_query, l, &qi);
        if (rc != (l < DNS_HDR_LEN ? DV_ENOTQUERY : DV_EMALFORMED))
            fail_msg("prefix %zu: %d", l, rc);
    }
}

/* ---- responses ---------------------------------------------------------- */

struct built {
    uint8_t msg[512];
    size_t len;
    size_t opt_off, opt_len;
    struct dns_question q;
};

/* www.example.com A: CNAME web.example.com (compressed into the question),
 * CNAME edge.net, A; SOA for net in authority; OPT with cookie and padding. */
static void build_response(struct built *b)
{
    struct dns_cur w;
    struct dns_hdr h = { 0x1a2b, 0x8180, 1, 3, 1, 1 };

    memset(b, 0, sizeof(*b));
    dns_cur_init_w(&w, b->msg, sizeof(b->msg));
    dns_hdr_write(&w, &h);
    dns_cur_put(&w, BYTES(3, 'w', 'w', 'w', N_EXAMPLE), 17);
    dns_cur_put_u16(&w, DNS_TYPE_A);
    dns_cur_put_u16(&w, DNS_CLASS_IN);

    dns_cur_put_u16(&w, 0xc000 | 12);
    dns_cur_put(&w, BYTES(U16(DNS_TYPE_CNAME), U16(1), U32(300), U16(6)), 10);
    size_t web = w.pos;
    dns_cur_put(&w, BYTES(3, 'w', 'e', 'b', 0xc0, 16), 6);

    dns_cur_put_u16(&w, (uint16_t)(0xc000 | web));
    dns_cur_put(&w, BYTES(U16(DNS_TYPE_CNAME), U16(1), U32(200), U16(10)), 10);
    size_t edge = w.pos;
    dns_cur_put(&w, BYTES(4, 'e', 'd', 'g', 'e', 3, 'n', 'e', 't', 0), 10);

    dns_cur_put_u16(&w, (uint16_t)(0xc000 | edge));
    dns_cur_put(&w, BYTES(U16(DNS_TYPE_A), U16(1), U32(60), U16(4), 192, 0, 2, 7), 14);

    size_t net = edge + 5;
    dns_cur_put_u16(&w, (uint16_t)(0xc000 | net));
    dns_cur_put(&w, BYTES(U16(DNS_TYPE_SOA), U16(1), U32(900), U16(32)), 10);
    dns_cur_put(&w, BYTES(2, 'n', 's'), 3);
    dns_cur_put_u16(&w, (uint16_t)(0xc000 | net));
    dns_cur_put(&w, BYTES(4, 'h', 'o', 's', 't'), 5);
    dns_cur_put_u16(&w, (uint16_t)(0xc000 | net));
    dns_cur_put(&w, BYTES(U32(2024010101), U32(7200), U32(3600), U32(1209600), U32(120)), 20);

    b->opt_off = w.pos;
    dns_cur_put(&w, BYTES(OPT_RR(1232, 0x8000, 26), U16(DNS_OPT_COOKIE), U16(16), 1, 2, 3, 4, 5, 6, 7, 8,
                          9, 10, 11, 12, 13, 14, 15, 16, U16(DNS_OPT_PADDING), U16(2), 0, 0),
                37);
    b->opt_len = w.pos - b->opt_off;
    assert_int_equal(w.err, 0);
    b->len = w.pos;

    assert_int_equal(dns_name_from_str("www.example.com", b->q.name), 17);
    b->q.name_len = 17;
    b->q.qtype = DNS_TYPE_A;
    b->q.qclass = DNS_CLASS_IN;
}

static void rr_owner(const uint8_t *msg, size_t len, size_t off, char *text, size_t cap)
{
    struct dns_cur c;
    uint8_t name[DNS_NAME_MAX];

    dns_cur_init(&c, msg, len);
    dns_cur_seek(&c, off);
    size_t n = dns_name_read(&c, name);
    assert_int_equal(c.err, 0);
    dns_name_to_str(name, n, text, cap);
}

static void test_response_walk(void **state)
{
    (void)state;
    static const struct {
        int section;
        uint16_t type;
        uint32_t ttl;
        const char *owner, *target;
    } want[] = {
        { DNS_SEC_ANSWER, DNS_TYPE_CNAME, 300, "www.example.com.", "web.example.com." },
        { DNS_SEC_ANSWER, DNS_TYPE_CNAME, 200, "web.example.com.", "edge.net." },
        { DNS_SEC_ANSWER, DNS_TYPE_A, 60, "edge.net.", NULL },
        { DNS_SEC_AUTHORITY, DNS_TYPE_SOA, 900, "net.", "ns.net." },
        { DNS_SEC_ADDITIONAL, DNS_TYPE_OPT, 0x8000, ".", NULL },
    };
    struct built b;
    struct dns_rr_iter it;
    struct dns_rr rr;
    char text[300];
    size_t i = 0;
    int rc;

    build_response(&b);
    assert_int_equal(dns_response_check(b.msg, b.len, &b.q), 0);
    assert_int_equal(dns_rr_iter_init(&it, b.msg, b.len), 0);
    while ((rc = dns_rr_next(&it, &rr)) == 1) {
        assert_true(i < sizeof(want) / sizeof(want[0]));
        assert_int_equal(rr.section, want[i].section);
        assert_int_equal(rr.type, want[i].type);
        assert_int_equal(rr.ttl, want[i].ttl);
        rr_owner(b.msg, b.len, rr.off, text, sizeof(text));
        assert_string_equal(text, want[i].owner);
        if (want[i].target) {
            rr_owner(b.msg, b.len, rr.rdata_off, text, sizeof(text));
            assert_string_equal(text, want[i].target);
        }
        i++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(i, 5);
    assert_int_equal(dns_rr_next(&it, &rr), 0);

    struct dns_rr opt;
    struct dns_edns e;
    assert_int_equal(dns_msg_find_opt(b.msg, b.len, &opt), 1);
    assert_int_equal(opt.off, b.opt_off);
    assert_int_equal(dns_edns_read(b.msg, b.len, &opt, &e), 0);
    assert_true(e.present && e.do_bit && e.has_cookie && e.has_padding);
    assert_int_equal(e.rr_len, b.opt_len);

    /* Every strict prefix fails somewhere. */
    for (size_t l = 0; l < b.len; l++) {
        if (dns_response_check(b.msg, l, &b.q) != DV_EMALFORMED)
            fail_msg("prefix %zu accepted", l);
    }
}

static void test_response_match(void **state)
{
    (void)state;
    struct built b;
    struct dns_question q;

    build_response(&b);
    q = b.q;
    q.qtype = DNS_TYPE_AAAA;
    assert_int_equal(dns_response_check(b.msg, b.len, &q), DV_EMISMATCH);
    q = b.q;
    q.qclass = 3;
    assert_int_equal(dns_response_check(b.msg, b.len, &q), DV_EMISMATCH);
    q = b.q;
    q.name_len = (uint16_t)dns_name_from_str("WwW.ExAmPlE.CoM", q.name);
    assert_int_equal(dns_response_check(b.msg, b.len, &q), 0);
    q.name_len = (uint16_t)dns_name_from_str("www.example.net", q.name);
    assert_int_equal(dns_response_check(b.msg, b.len, &q), DV_EMISMATCH);
    assert_int_equal(dns_upstream_answer_check(b.msg, b.len, &q), DV_EMISMATCH);

    /* an upstream's final answer never has TC (it came over a stream) */
    assert_int_equal(dns_upstream_answer_check(b.msg, b.len, &b.q), 0);
    b.msg[2] |= DNS_FLAG_TC >> 8;
    assert_int_equal(dns_response_check(b.msg, b.len, &b.q), 0);
    assert_int_equal(dns_upstream_answer_check(b.msg, b.len, &b.q), DV_EPROTO);
}

static const struct dns_question q_example = {
    { N_EXAMPLE }, 13, DNS_TYPE_A, DNS_CLASS_IN,
};

static const struct row response_rows[] = {
    ROW("simple answer", 0, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, RR_A(60)),
    ROW("NXDOMAIN with SOA", 0, HDR(1, 0x8183, 1, 0, 1, 0), Q_EX_A, 0xc0, 12, U16(DNS_TYPE_SOA), U16(1),
        U32(300), U16(24), 0xc0, 12, 0xc0, 12, U32(1), U32(2), U32(3), U32(4), U32(5)),
    ROW("MX answer", 0, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, 0xc0, 12, U16(DNS_TYPE_MX), U16(1), U32(60),
        U16(4), U16(10), 0xc0, 12),
    ROW("case differs", 0, HDR(1, 0x8180, 1, 0, 0, 0), 7, 'E', 'X', 'A', 'M', 'P', 'L', 'E', 3, 'C', 'o',
        'M', 0, U16(DNS_TYPE_A), U16(1)),
    ROW("short header", DV_EMALFORMED, HDR(1, 0x8180, 1, 0, 0, 0)),
    ROW("11 bytes", DV_EMALFORMED, 0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0),
    ROW("QR clear", DV_EMALFORMED, HDR(1, 0x0180, 1, 1, 0, 0), Q_EX_A, RR_A(60)),
    ROW("opcode STATUS", DV_EMISMATCH, HDR(1, 0x9180, 1, 0, 0, 0), Q_EX_A),
    ROW("qdcount 0", DV_EMISMATCH, HDR(1, 0x8181, 0, 0, 0, 0)),
    ROW("qdcount 2", DV_EMISMATCH, HDR(1, 0x8180, 2, 0, 0, 0), Q_EX_A, Q_EX_A),
    ROW("other type", DV_EMISMATCH, HDR(1, 0x8180, 1, 0, 0, 0), N_EXAMPLE, U16(DNS_TYPE_AAAA), U16(1)),
    ROW("other name", DV_EMISMATCH, HDR(1, 0x8180, 1, 0, 0, 0), 7, 'e', 'x', 'a', 'm', 'p', 'l', 'f', 3,
        'c', 'o', 'm', 0, U16(DNS_TYPE_A), U16(1)),
    ROW("trailing byte", DV_EMALFORMED, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, RR_A(60), 0),
    ROW("missing record", DV_EMALFORMED, HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A, RR_A(60)),
    ROW("CNAME target points forward", DV_EMALFORMED, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, 0xc0, 12,
        U16(DNS_TYPE_CNAME), U16(1), U32(60), U16(2), 0xc0, 45),
    ROW("CNAME rdata longer than name", DV_EMALFORMED, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, 0xc0, 12,
        U16(DNS_TYPE_CNAME), U16(1), U32(60), U16(3), 0xc0, 12, 0),
    /* The target "a" borrows its root label from the next RR's owner. */
    ROW("CNAME name runs out of rdata", DV_EMALFORMED, HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A, 0xc0, 12,
        U16(DNS_TYPE_CNAME), U16(1), U32(60), U16(2), 1, 'a', 0, U16(DNS_TYPE_A), U16(1), U32(60), U16(4),
        1, 2, 3, 4),
    ROW("SOA rdata short", DV_EMALFORMED, HDR(1, 0x8180, 1, 0, 1, 0), Q_EX_A, 0xc0, 12, U16(DNS_TYPE_SOA),
        U16(1), U32(300), U16(23), 0xc0, 12, 0xc0, 12, U32(1), U32(2), U32(3), U32(4), U16(5), 0),
    ROW("OPT in answer", DV_EMALFORMED, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, OPT_RR(1232, 0, 0)),
    ROW("two OPT", DV_EMALFORMED, HDR(1, 0x8180, 1, 0, 0, 2), Q_EX_A, OPT_RR(1232, 0, 0), OPT_RR(1232, 0, 0)),
    ROW("OPT option overruns", DV_EMALFORMED, HDR(1, 0x8180, 1, 0, 0, 1), Q_EX_A, OPT_RR(1232, 0, 6),
        U16(DNS_OPT_PADDING), U16(3), 0, 0),
    ROW("OPT with options", 0, HDR(1, 0x8180, 1, 0, 0, 1), Q_EX_A, OPT_RR(1232, 0, 10),
        U16(DNS_OPT_PADDING), U16(2), 0, 0, U16(DNS_OPT_KEEPALIVE), U16(0)),
    /* The second owner points at the first RR's TTL (0x00000001 reads as the
     * name "\000."): aging would rename it, so it is refused. */
    ROW("name reads a TTL", DV_EMALFORMED, HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A, RR_A(1), 0xc0, 35,
        U16(DNS_TYPE_A), U16(1), U32(60), U16(4), 192, 0, 2, 2),
    ROW("name reads OPT options", DV_EMALFORMED, HDR(1, 0x8180, 1, 0, 0, 2), Q_EX_A,
        OPT_RR(1232, 0, 4), U16(0), U16(0), 0xc0, 41, U16(DNS_TYPE_A), U16(1), U32(60), U16(0)),
    ROW("name reads A rdata", 0, HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A, 0xc0, 12, U16(DNS_TYPE_A), U16(1),
        U32(60), U16(4), 1, 'x', 0, 0, 0xc0, 41, U16(DNS_TYPE_A), U16(1), U32(60), U16(0)),
    ROW("pointer loop in answer", DV_EMALFORMED, HDR(1, 0x8180, 1, 1, 0, 0), Q_EX_A, 1, 'b', 0xc0, 29,
        U16(DNS_TYPE_A), U16(1), U32(60), U16(4), 1, 2, 3, 4),
};

static void test_response_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(response_rows) / sizeof(response_rows[0]); i++) {
        const struct row *r = &response_rows[i];
        int rc = dns_response_check(r->msg, r->len, &q_example);
        if (rc != r->want)
            fail_msg("response row \"%s\": got %d (%s), want %d", r->name, rc, dv_strerror(rc), r->want);
    }
}

static uint32_t ttl_at(const uint8_t *msg, size_t off)
{
    return (uint32_t)dns_get16(msg + off) << 16 | dns_get16(msg + off + 2);
}

static void collect_ttls(const uint8_t *msg, size_t len, uint32_t *ttls, size_t n)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    size_t i = 0;

    assert_int_equal(dns_rr_iter_init(&it, msg, len), 0);
    while (dns_rr_next(&it, &rr) == 1) {
        assert_true(i < n);
        ttls[i++] = ttl_at(msg, rr.ttl_off);
    }
    assert_int_equal(i, n);
}

/* Found by fuzz_dns: a compression pointer whose two bytes are another
 * record's TTL (0xc00c0005, top bit set, so aging writes 0 there) named
 * example.com. when checked and the root once aged. Refused up front. */
static void test_pointer_in_ttl_refused(void **state)
{
    (void)state;
    uint8_t msg[] = {HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A,
                     /* 29 */ RR_A(0xc00c0005),
                     /* 45: owned by the "name" in RR 29's TTL bytes (35) */
                     0xc0, 35, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 192, 0, 2, 2};
    struct dns_question q = {.qtype = DNS_TYPE_A, .qclass = DNS_CLASS_IN};
    struct dns_cur c;

    dns_cur_init(&c, msg, sizeof(msg));
    dns_cur_seek(&c, DNS_HDR_LEN);
    assert_int_equal(dns_question_read(&c, &q), 0);
    assert_int_equal(dns_response_check(msg, sizeof(msg), &q), DV_EMALFORMED);
}

static void test_age_and_min_ttl(void **state)
{
    (void)state;
    struct built b;
    uint32_t ttls[5];

    build_response(&b);
    assert_int_equal(dns_msg_min_ttl(b.msg, b.len), 60);
    dns_msg_age(b.msg, b.len, 100);
    collect_ttls(b.msg, b.len, ttls, 5);
    assert_int_equal(ttls[0], 200);
    assert_int_equal(ttls[1], 100);
    assert_int_equal(ttls[2], 0); /* floor, not wrap-around */
    assert_int_equal(ttls[3], 800);
    assert_int_equal(ttls[4], 0x8000); /* OPT: DO bit, untouched */
    assert_int_equal(dns_msg_min_ttl(b.msg, b.len), 0);
    assert_int_equal(dns_response_check(b.msg, b.len, &b.q), 0);

    dns_msg_age(b.msg, b.len, UINT32_MAX);
    collect_ttls(b.msg, b.len, ttls, 5);
    assert_memory_equal(ttls, ((uint32_t[]){ 0, 0, 0, 0, 0x8000 }), sizeof(ttls));

    build_response(&b);
    dns_msg_age(b.msg, b.len, 0);
    collect_ttls(b.msg, b.len, ttls, 5);
    assert_memory_equal(ttls, ((uint32_t[]){ 300, 200, 60, 900, 0x8000 }), sizeof(ttls));

    /* No records (OPT does not count): UINT32_MAX. A TTL with the top bit
     * set counts as 0 (RFC 2181). */
    const uint8_t empty[] = { HDR(1, 0x8180, 1, 0, 0, 1), Q_EX_A, OPT_RR(1232, 0, 0) };
    assert_int_equal(dns_msg_min_ttl(empty, sizeof(empty)), UINT32_MAX);
    uint8_t big[] = { HDR(1, 0x8180, 1, 2, 0, 0), Q_EX_A, RR_A(0x80000000u), RR_A(500) };
    assert_int_equal(dns_msg_min_ttl(big, sizeof(big)), 0);
    dns_msg_age(big, sizeof(big), 1);
    collect_ttls(big, sizeof(big), ttls, 2);
    assert_int_equal(ttls[0], 0);
    assert_int_equal(ttls[1], 499);
}

static void test_truncate(void **state)
{
    (void)state;
    struct built b, orig;
    struct dns_hdr h;
    struct dns_cur c;

    build_response(&b);
    orig = b;
    assert_int_equal(dns_msg_truncate(b.msg, b.len, b.len), b.len);
    assert_int_equal(dns_msg_truncate(b.msg, b.len, 4096), b.len);
    assert_memory_equal(b.msg, orig.msg, b.len);

    size_t n = dns_msg_truncate(b.msg, b.len, 100);
    assert_int_equal(n, 33 + b.opt_len);
    dns_cur_init(&c, b.msg, n);
    dns_hdr_read(&c, &h);
    assert_int_equal(h.id, 0x1a2b);
    assert_int_equal(h.flags, 0x8180 | DNS_FLAG_TC);
    assert_int_equal(h.qdcount, 1);
    assert_int_equal(h.ancount, 0);
    assert_int_equal(h.nscount, 0);
    assert_int_equal(h.arcount, 1);
    assert_memory_equal(b.msg + 12, orig.msg + 12, 21);
    assert_memory_equal(b.msg + 33, orig.msg + orig.opt_off, orig.opt_len);
    assert_int_equal(dns_response_check(b.msg, n, &b.q), 0);

    /* Without an OPT: header and question only. */
    uint8_t plain[] = { HDR(9, 0x8180, 1, 3, 0, 0), Q_EX_A, RR_A(1), RR_A(2), RR_A(3) };
    n = dns_msg_truncate(plain, sizeof(plain), 40);
    assert_int_equal(n, 29);
    assert_memory_equal(plain, BYTES(HDR(9, 0x8380, 1, 0, 0, 0), Q_EX_A), 29);

    /* A limit too small even for the question keeps a bare TC header. */
    build_response(&b);
    n = dns_msg_truncate(b.msg, b.len, 20);
    assert_int_equal(n, 12);
    assert_memory_equal(b.msg, BYTES(HDR(0x1a2b, 0x8380, 0, 0, 0, 0)), 12);
}

static void test_restore(void **state)
{
    (void)state;
    struct built b;
    struct dns_question client;
    char text[300];

    build_response(&b);
    client = b.q;
    client.name_len = (uint16_t)dns_name_from_str("WwW.eXaMpLe.CoM", client.name);
    dns_msg_restore(b.msg, b.len, 0xcafe, &client);
    assert_int_equal(dns_get16(b.msg), 0xcafe);
    assert_memory_equal(b.msg + 12, client.name, client.name_len);
    /* Compressed owners that point at the question now show the client's case. */
    rr_owner(b.msg, b.len, 33, text, sizeof(text));
    assert_string_equal(text, "WwW.eXaMpLe.CoM.");
    rr_owner(b.msg, b.len, 45, text, sizeof(text));
    assert_string_equal(text, "web.eXaMpLe.CoM.");
    assert_int_equal(dns_response_check(b.msg, b.len, &client), 0);

    /* A different name is never written over the answer's question. */
    struct dns_question other = client;
    other.name_len = (uint16_t)dns_name_from_str("xyz.example.com", other.name);
    dns_msg_restore(b.msg, b.len, 0x0001, &other);
    assert_int_equal(dns_get16(b.msg), 0x0001);
    assert_memory_equal(b.msg + 12, client.name, client.name_len);
}

/* ---- EDNS ----------------------------------------------------------------- */

/* A query for a name of n 'a's, optionally with an OPT carrying ECS,
 * padding and a cookie. */
static size_t build_edns_query(uint8_t *buf, size_t cap, size_t n, bool opt)
{
    struct dns_cur w;
    struct dns_hdr h = { 0x77, DNS_FLAG_RD, 1, 0, 0, opt ? 1 : 0 };
    size_t lens[4], k = 0;

    dns_cur_init_w(&w, buf, cap);
    dns_hdr_write(&w, &h);
    while (n > 0) {
        lens[k] = n > 60 ? 60 : n;
        n -= lens[k++];
    }
    put_labels(&w, lens, k, 'a', true);
    dns_cur_put_u16(&w, DNS_TYPE_AAAA);
    dns_cur_put_u16(&w, DNS_CLASS_IN);
    if (opt) {
        dns_cur_put(&w, BYTES(OPT_RR(4096, 0x8000, 32), U16(DNS_OPT_ECS), U16(7), 0, 1, 24, 0, 192, 0, 2,
                              U16(DNS_OPT_PADDING), U16(5), 0, 0, 0, 0, 0, U16(DNS_OPT_COOKIE), U16(8), 1, 2,
                              3, 4, 5, 6, 7, 8),
                    43);
    }
    assert_int_equal(w.err, 0);
    return w.pos;
}

static void check_padded(const uint8_t *msg, size_t len, size_t block, bool cookie)
{
    struct dns_query_info qi;
    struct dns_rr opt;

    if (len % block != 0)
        fail_msg("padded length %zu not a multiple of %zu", len, block);
    assert_int_equal(dns_query_parse(msg, len, &qi), 0);
    assert_true(qi.edns.present);
    assert_true(qi.edns.has_padding);
    assert_false(qi.edns.has_ecs);
    assert_int_equal(qi.edns.has_cookie, cookie);
    assert_int_equal(qi.edns.rr_off + qi.edns.rr_len, len);
    assert_int_equal(dns_msg_find_opt(msg, len, &opt), 1);
    /* The padding option is last and all zeros. */
    size_t p = opt.rdata_off;
    while (dns_get16(msg + p) != DNS_OPT_PADDING)
        p += 4u + dns_get16(msg + p + 2);
    size_t plen = dns_get16(msg + p + 2);
    assert_int_equal(p + 4 + plen, len);
    for (size_t i = 0; i < plen; i++)
        assert_int_equal(msg[p + 4 + i], 0);
}

static void test_pad_query(void **state)
{
    (void)state;
    static const size_t sizes[] = { 1, 5, 20, 40, 59, 60, 61, 80, 100, 150, 200, 240 };
    uint8_t buf[1024], again[1024];

    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int with_opt = 0; with_opt < 2; with_opt++) {
            size_t len = build_edns_query(buf, sizeof(buf), sizes[s], with_opt);
            assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), 0);
            check_padded(buf, len, 128, with_opt);

            /* Idempotent: padding an already padded query changes nothing. */
            size_t len2 = len;
            memcpy(again, buf, len);
            assert_int_equal(dns_edns_pad_query(again, &len2, sizeof(again), 128), 0);
            assert_int_equal(len2, len);
            assert_memory_equal(again, buf, len);

            /* Another block size re-pads from scratch. */
            assert_int_equal(dns_edns_pad_query(again, &len2, sizeof(again), 468), 0);
            check_padded(again, len2, 468, with_opt);
        }
    }

    /* No room: nothing changes. */
    size_t len = build_edns_query(buf, sizeof(buf), 20, true);
    size_t before = len;
    memcpy(again, buf, len);
    assert_int_equal(dns_edns_pad_query(buf, &len, 127, 128), DV_ESPACE);
    assert_int_equal(len, before);
    assert_memory_equal(buf, again, len);
    assert_int_equal(dns_edns_pad_query(buf, &len, 128, 128), 0);
    assert_int_equal(len, 128);

    len = build_edns_query(buf, sizeof(buf), 20, false);
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 0), DV_EINVAL);

    /* The OPT must be last; and a malformed query is refused. */
    const uint8_t opt_first[] = { HDR(1, 0x0100, 1, 0, 0, 2), Q_EX_A, OPT_RR(512, 0, 0), RR_A(1) };
    memcpy(buf, opt_first, sizeof(opt_first));
    len = sizeof(opt_first);
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), DV_EMALFORMED);
    const uint8_t bad_opt[] = { HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(512, 0, 3), 0, 8, 0 };
    memcpy(buf, bad_opt, sizeof(bad_opt));
    len = sizeof(bad_opt);
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), DV_EMALFORMED);
    len = 5;
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), DV_EMALFORMED);

    /* Found by fuzz_dns: the second answer's owner points at 41, a byte of
     * the first answer's RDATA read as a 29-byte label that runs through the
     * OPT up to its RDLENGTH's last byte, the name's root. Padding rewrites
     * those bytes, so it would rename the owner (and break the message):
     * refused, unchanged. */
    uint8_t through[] = { HDR(1, 0x0100, 1, 2, 0, 1), Q_EX_A,
                          /* 29 */ 0xc0, 12, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 29, 0, 0, 1,
                          /* 45 */ 0xc0, 41, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 10, 0, 0, 1,
                          /* 61 */ OPT_RR(1232, 0, 0) };
    uint8_t tcopy[sizeof(through)];
    struct dns_query_info qi;
    char text[160];
    memcpy(tcopy, through, sizeof(through));
    assert_int_equal(dns_query_parse(through, sizeof(through), &qi), 0);
    rr_owner(through, sizeof(through), 45, text, sizeof(text)); /* a valid name, as crafted */
    len = sizeof(through);
    assert_int_equal(dns_edns_pad_query(through, &len, sizeof(buf), 128), DV_EMALFORMED);
    assert_int_equal(len, sizeof(through));
    assert_memory_equal(through, tcopy, sizeof(through));
    /* The same answers without the overlap pad as usual. */
    memcpy(buf, through, sizeof(through));
    buf[46] = 12;
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), 0);
    assert_int_equal(len, 128);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_true(qi.edns.has_padding);

    /* Found by fuzz_dns: a PTR with empty RDATA (no name) padded once, but
     * the padded query was then refused. Refused both times, unchanged. */
    uint8_t noname[] = { HDR(1, 0x0100, 1, 0, 0, 1), 0, U16(DNS_TYPE_A), U16(DNS_CLASS_IN),
                         0, U16(DNS_TYPE_PTR), U16(DNS_CLASS_IN), U32(0), U16(0) };
    assert_int_equal(dns_query_parse(noname, sizeof(noname), &qi), 0);
    memcpy(buf, noname, sizeof(noname));
    len = sizeof(noname);
    assert_int_equal(dns_edns_pad_query(buf, &len, sizeof(buf), 128), DV_EMALFORMED);
    assert_int_equal(len, sizeof(noname));
    assert_memory_equal(buf, noname, sizeof(noname));
}

static void test_strip_and_add_opt(void **state)
{
    (void)state;
    uint8_t buf[512];
    struct dns_query_info qi;
    size_t len = build_edns_query(buf, sizeof(buf), 10, true);
    size_t orig = len;

    assert_int_equal(dns_edns_strip_opt(buf, &len, DNS_OPT_ECS), 0);
    assert_int_equal(len, orig - 11);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_false(qi.edns.has_ecs);
    assert_true(qi.edns.has_padding);
    assert_true(qi.edns.has_cookie);
    assert_int_equal(dns_edns_strip_opt(buf, &len, DNS_OPT_ECS), 0);
    assert_int_equal(len, orig - 11);
    assert_int_equal(dns_edns_strip_opt(buf, &len, DNS_OPT_COOKIE), 0);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_false(qi.edns.has_cookie);
    assert_true(qi.edns.has_padding);
    assert_int_equal(qi.edns.rr_len, 11 + 9);

    /* Append a keepalive (empty in a query) and see it parsed. */
    assert_int_equal(dns_edns_add_opt(buf, &len, sizeof(buf), qi.edns.rr_off, DNS_OPT_KEEPALIVE, NULL, 0), 0);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_true(qi.edns.has_keepalive);
    assert_int_equal(qi.edns.keepalive_len, 0);
    const uint8_t ka[2] = { U16(1200) };
    assert_int_equal(dns_edns_add_opt(buf, &len, len + 5, qi.edns.rr_off, DNS_OPT_KEEPALIVE, ka, 2),
                     DV_ESPACE);
    assert_int_equal(dns_edns_add_opt(buf, &len, len + 6, qi.edns.rr_off, DNS_OPT_KEEPALIVE, ka, 2), 0);
    assert_int_equal(dns_query_parse(buf, len, &qi), 0);
    assert_int_equal(qi.edns.keepalive_len, 2);
    assert_int_equal(qi.edns.keepalive, 1200);
    assert_int_equal(dns_edns_add_opt(buf, &len, sizeof(buf), 12, DNS_OPT_PADDING, NULL, 0), DV_EMALFORMED);
    /* An answer whose second owner reads the OPT's RDLENGTH as the end of a
     * 29-byte label (as in test_pad_query): adding would rename it. */
    uint8_t reads_rdlen[] = { HDR(1, 0x8180, 1, 2, 0, 1), Q_EX_A,
                              /* 29 */ RR_A(5), /* its last RDATA byte, at 44, is 1 */
                              /* 45 */ 0xc0, 41, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 10, 0, 0, 1,
                              /* 61 */ OPT_RR(1232, 0, 0) };
    reads_rdlen[41] = 29;
    uint8_t rcopy[sizeof(reads_rdlen)];
    memcpy(rcopy, reads_rdlen, sizeof(reads_rdlen));
    memcpy(buf, reads_rdlen, sizeof(reads_rdlen));
    len = sizeof(reads_rdlen);
    assert_int_equal(dns_edns_add_opt(buf, &len, sizeof(buf), 61, DNS_OPT_KEEPALIVE, ka, 2), DV_EMALFORMED);
    assert_int_equal(len, sizeof(reads_rdlen));
    assert_memory_equal(buf, rcopy, sizeof(rcopy));
    buf[46] = 12; /* the owner is example.com. again */
    assert_int_equal(dns_edns_add_opt(buf, &len, sizeof(buf), 61, DNS_OPT_KEEPALIVE, ka, 2), 0);
    assert_int_equal(dns_response_check(buf, len, &q_example), 0);

    /* OPT not last: the records after it move down. */
    uint8_t mid[] = { HDR(1, 0x8180, 1, 0, 0, 2), Q_EX_A, OPT_RR(1232, 0, 11), U16(DNS_OPT_ECS), U16(7),
                      0, 1, 24, 0, 10, 0, 0, RR_A(77) };
    len = sizeof(mid);
    assert_int_equal(dns_edns_strip_opt(mid, &len, DNS_OPT_ECS), 0);
    assert_int_equal(len, sizeof(mid) - 11);
    assert_memory_equal(mid, BYTES(HDR(1, 0x8180, 1, 0, 0, 2), Q_EX_A, OPT_RR(1232, 0, 0), RR_A(77)), len);

    /* Pointers behind the OPT that aim behind it move with the records. */
    uint8_t after[] = { HDR(1, 0x8180, 1, 0, 0, 3), Q_EX_A, OPT_RR(1232, 0, 11), U16(DNS_OPT_ECS), U16(7),
                        0, 1, 24, 0, 10, 0, 0,
                        /* 51: foo.example.com A */
                        3, 'f', 'o', 'o', 0xc0, 12, U16(DNS_TYPE_A), U16(1), U32(5), U16(4), 10, 0, 0, 1,
                        /* 71: CNAME owned by and pointing to the name at 51 */
                        0xc0, 51, U16(DNS_TYPE_CNAME), U16(1), U32(5), U16(2), 0xc0, 51 };
    char text[64];
    len = sizeof(after);
    assert_int_equal(dns_edns_strip_opt(after, &len, DNS_OPT_ECS), 0);
    assert_int_equal(len, sizeof(after) - 11);
    assert_int_equal(dns_response_check(after, len, &q_example), 0);
    assert_int_equal(after[71 - 11 + 1], 51 - 11);
    rr_owner(after, len, 71 - 11, text, sizeof(text));
    assert_string_equal(text, "foo.example.com.");
    rr_owner(after, len, 71 - 11 + 12, text, sizeof(text));
    assert_string_equal(text, "foo.example.com.");
    /* A pointer into the OPT itself (its root owner) cannot survive: refused. */
    uint8_t into[] = { HDR(1, 0x8180, 1, 0, 0, 2), Q_EX_A, OPT_RR(1232, 0, 11), U16(DNS_OPT_ECS), U16(7),
                       0, 1, 24, 0, 10, 0, 0, 0xc0, 29, U16(DNS_TYPE_A), U16(1), U32(5), U16(4), 10, 0, 0, 1 };
    uint8_t copy[sizeof(into)];
    memcpy(copy, into, sizeof(into));
    assert_int_equal(dns_response_check(into, sizeof(into), &q_example), 0);
    len = sizeof(into);
    assert_int_equal(dns_edns_strip_opt(into, &len, DNS_OPT_ECS), DV_EMALFORMED);
    assert_int_equal(len, sizeof(into));
    assert_memory_equal(into, copy, sizeof(into));

    /* A crafted name whose label bytes are a pointer we would rewrite (the
     * owner at 63 points to 61, whose 3-byte label covers 62..64): refused
     * rather than silently renamed. */
    uint8_t overlap[] = { HDR(1, 0x8180, 1, 0, 0, 3), Q_EX_A, OPT_RR(1232, 0, 8), U16(DNS_OPT_PADDING), U16(4),
                          0, 0, 0, 0, 0, U16(DNS_TYPE_A), U16(1), U32(5), U16(4), 'a', 'b', 3, 'z', 0xc0, 61,
                          U16(DNS_TYPE_A), U16(1), U32(5), U16(0) };
    uint8_t ocopy[sizeof(overlap)];
    memcpy(ocopy, overlap, sizeof(overlap));
    /* The answer check already refuses it (the label ends on a type field);
     * strip must not rely on that. */
    assert_int_equal(dns_response_check(overlap, sizeof(overlap), &q_example), DV_EMALFORMED);
    assert_int_equal(dns_msg_find_opt(overlap, sizeof(overlap), NULL), 1);
    rr_owner(overlap, sizeof(overlap), 63, text, sizeof(text));
    assert_string_equal(text, "z\\192\\061.");
    len = sizeof(overlap);
    assert_int_equal(dns_edns_strip_opt(overlap, &len, DNS_OPT_PADDING), DV_EMALFORMED);
    assert_int_equal(len, sizeof(overlap));
    assert_memory_equal(overlap, ocopy, sizeof(overlap));

    /* Found by fuzz_dns: an owner points behind the OPT (at 58, so we
     * rewrite it) at a pointer inside an unknown type's RDATA, which we do
     * not parse and so do not rewrite; that one aims behind the OPT too (at
     * 55, "a."), so after the move it would read other bytes. Refused,
     * unchanged. */
    uint8_t opaque[] = { HDR(1, 0x8180, 1, 0, 0, 3), Q_EX_A, OPT_RR(1232, 0, 4), U16(DNS_OPT_PADDING), U16(0),
                         /* 44: an unknown type; RDATA at 55: "a.", then at 58 a pointer to it */
                         0, U16(0xc036), U16(1), U32(5), U16(5), 1, 'a', 0, 0xc0, 55,
                         /* 60: owned by the pointer at 58 */
                         0xc0, 58, U16(DNS_TYPE_A), U16(1), U32(5), U16(4), 10, 0, 0, 1 };
    uint8_t pcopy[sizeof(opaque)];
    memcpy(pcopy, opaque, sizeof(opaque));
    assert_int_equal(dns_response_check(opaque, sizeof(opaque), &q_example), 0);
    rr_owner(opaque, sizeof(opaque), 60, text, sizeof(text));
    assert_string_equal(text, "a.");
    len = sizeof(opaque);
    assert_int_equal(dns_edns_strip_opt(opaque, &len, DNS_OPT_PADDING), DV_EMALFORMED);
    assert_int_equal(len, sizeof(opaque));
    assert_memory_equal(opaque, pcopy, sizeof(opaque));

    /* A name before the OPT can read it too: the owner at 45 points at 41, a
     * 30-byte label through the OPT whose end is the ECS option's first byte
     * (0). Stripping that option would rename it: refused, unchanged. */
    uint8_t before[] = { HDR(1, 0x8180, 1, 2, 0, 1), Q_EX_A,
                         /* 29 */ 0xc0, 12, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 30, 0, 0, 1,
                         /* 45 */ 0xc0, 41, U16(DNS_TYPE_A), U16(DNS_CLASS_IN), U32(5), U16(4), 10, 0, 0, 1,
                         /* 61 */ OPT_RR(1232, 0, 11), U16(DNS_OPT_ECS), U16(7), 0, 1, 24, 0, 10, 0, 0 };
    uint8_t bcopy[sizeof(before)];
    memcpy(bcopy, before, sizeof(before));
    assert_int_equal(dns_msg_find_opt(before, sizeof(before), NULL), 1);
    rr_owner(before, sizeof(before), 45, text, sizeof(text));
    len = sizeof(before);
    assert_int_equal(dns_edns_strip_opt(before, &len, DNS_OPT_ECS), DV_EMALFORMED);
    assert_int_equal(len, sizeof(before));
    assert_memory_equal(before, bcopy, sizeof(before));

    /* No OPT: nothing to do. Malformed: refused, unchanged. */
    uint8_t none[] = { HDR(1, 0x0100, 1, 0, 0, 0), Q_EX_A };
    len = sizeof(none);
    assert_int_equal(dns_edns_strip_opt(none, &len, DNS_OPT_ECS), 0);
    assert_int_equal(len, sizeof(none));
    uint8_t bad[] = { HDR(1, 0x0100, 1, 0, 0, 1), Q_EX_A, OPT_RR(512, 0, 5), U16(8), U16(2), 0 };
    len = sizeof(bad);
    assert_int_equal(dns_edns_strip_opt(bad, &len, DNS_OPT_ECS), DV_EMALFORMED);
    assert_int_equal(len, sizeof(bad));
}

static void test_edns_write(void **state)
{
    (void)state;
    uint8_t buf[16];
    struct dns_cur w;

    dns_cur_init_w(&w, buf, sizeof(buf));
    dns_edns_write(&w, 1232, true, 1);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.pos, 11);
    assert_memory_equal(buf, BYTES(OPT_RR(1232, 0x01008000, 0)), 11);
    dns_cur_init_w(&w, buf, 10);
    dns_edns_write(&w, 1232, false, 0);
    assert_int_equal(w.err, DV_ESPACE);

    struct dns_edns e;
    assert_int_equal(dns_edns_parse_opts(BYTES(U16(11), U16(2), U16(300), U16(12), U16(0)), 10, &e), 0);
    assert_true(e.has_keepalive && e.has_padding);
    assert_int_equal(e.keepalive, 300);
    assert_int_equal(dns_edns_parse_opts(BYTES(U16(11), U16(3), 0, 0), 6, &e), DV_EMALFORMED);
    assert_int_equal(dns_edns_parse_opts(BYTES(0), 0, &e), 0);
    assert_false(e.has_keepalive);
}

/* ---- error replies -------------------------------------------------------- */

static void check_reply(const uint8_t *r, size_t n, const struct dns_query_info *qi, bool have_q,
                        int rcode)
{
    struct dns_cur c;
    struct dns_hdr h;

    dns_cur_init(&c, r, n);
    dns_hdr_read(&c, &h);
    assert_int_equal(h.id, qi->hdr.id);
    assert_true(h.flags & DNS_FLAG_QR);
    assert_true(h.flags & DNS_FLAG_RA);
    assert_int_equal(DNS_OPCODE(h.flags), DNS_OPCODE(qi->hdr.flags));
    assert_int_equal(h.flags & DNS_FLAG_RD, qi->hdr.flags & DNS_FLAG_RD);
    assert_int_equal(h.flags & (DNS_FLAG_AA | DNS_FLAG_TC), 0);
    assert_int_equal(DNS_RCODE(h.flags), rcode & 0xf);
    assert_int_equal(h.qdcount, have_q ? 1 : 0);
    assert_int_equal(h.ancount + h.nscount, 0);
    assert_int_equal(h.arcount, qi->edns.present ? 1 : 0);
    if (have_q) {
        if (DNS_OPCODE(h.flags) == DNS_OPCODE_QUERY)
            assert_int_equal(dns_response_check(r, n, &qi->q), 0);
        assert_memory_equal(r + 12, qi->q.name, qi->q.name_len);
    }
    struct dns_rr opt;
    int found = dns_msg_find_opt(r, n, &opt);
    assert_int_equal(found, qi->edns.present ? 1 : 0);
    if (found == 1) {
        struct dns_edns e;
        assert_int_equal(dns_edns_read(r, n, &opt, &e), 0);
        assert_int_equal(e.udp_size, DNS_EDNS_DEFAULT);
        assert_int_equal(e.version, 0);
        assert_int_equal(e.do_bit, qi->edns.do_bit);
        assert_int_equal(e.ext_rcode, rcode >> 4);
        assert_int_equal(opt.rdlen, 0);
        assert_int_equal(opt.off + 11, n);
    }
}

static void test_reply_error(void **state)
{
    (void)state;
    static const int rcodes[] = { DNS_RCODE_FORMERR, DNS_RCODE_SERVFAIL, DNS_RCODE_REFUSED };
    struct dns_query_info qi;
    uint8_t out[512];
    int n;

    assert_int_equal(dns_query_parse(dig_query, sizeof(dig_query), &qi), 0);
    for (size_t i = 0; i < 3; i++) {
        n = dns_reply_error(&qi, true, rcodes[i], out, sizeof(out));
        assert_int_equal(n, 12 + 21 + 11);
        check_reply(out, (size_t)n, &qi, true, rcodes[i]);
    }
    assert_memory_equal(out, BYTES(HDR(0x1a2b, 0x8185, 1, 0, 0, 1)), 12);

    /* BADVERS: header rcode 0, upper bits 1 in the OPT. */
    uint8_t v1[sizeof(dig_query)];
    memcpy(v1, dig_query, sizeof(v1));
    v1[33 + 6] = 1; /* OPT TTL: version byte */
    assert_int_equal(dns_query_parse(v1, sizeof(v1), &qi), DV_EBADVERS);
    assert_int_equal(qi.edns.version, 1);
    n = dns_reply_error(&qi, true, DNS_RCODE_BADVERS, out, sizeof(out));
    assert_true(n > 0);
    check_reply(out, (size_t)n, &qi, true, DNS_RCODE_BADVERS);
    assert_int_equal(DNS_RCODE(dns_get16(out + 2)), 0);
    assert_int_equal(out[n - 11 + 5], 1);

    /* No EDNS in the query: no OPT, and no way to say BADVERS. */
    const uint8_t plain[] = { HDR(0x4444, 0x0000, 1, 0, 0, 0), Q_EX_A };
    assert_int_equal(dns_query_parse(plain, sizeof(plain), &qi), 0);
    n = dns_reply_error(&qi, true, DNS_RCODE_SERVFAIL, out, sizeof(out));
    assert_int_equal(n, 29);
    check_reply(out, (size_t)n, &qi, true, DNS_RCODE_SERVFAIL);
    assert_int_equal(dns_reply_error(&qi, true, DNS_RCODE_BADVERS, out, sizeof(out)), DV_EINVAL);
    assert_int_equal(dns_reply_error(&qi, true, -1, out, sizeof(out)), DV_EINVAL);

    /* A FORMERR for a query whose question did not parse: header only. */
    const uint8_t two_q[] = { HDR(0x5555, 0x0100, 2, 0, 0, 0), Q_EX_A, Q_EX_A };
    assert_int_equal(dns_query_parse(two_q, sizeof(two_q), &qi), DV_EMALFORMED);
    n = dns_reply_error(&qi, qi.q.name_len > 0, DNS_RCODE_FORMERR, out, sizeof(out));
    assert_int_equal(n, 12);
    check_reply(out, (size_t)n, &qi, false, DNS_RCODE_FORMERR);

    /* NOTIMP keeps the opcode. */
    const uint8_t notify[] = { HDR(0x6666, 0x2000, 1, 0, 0, 0), Q_EX_A };
    assert_int_equal(dns_query_parse(notify, sizeof(notify), &qi), DV_ENOTIMP);
    n = dns_reply_error(&qi, false, DNS_RCODE_NOTIMP, out, sizeof(out));
    assert_int_equal(n, 12);
    check_reply(out, (size_t)n, &qi, false, DNS_RCODE_NOTIMP);
    assert_int_equal(dns_get16(out + 2), 0xa084);

    /* Too small a buffer. */
    assert_int_equal(dns_query_parse(dig_query, sizeof(dig_query), &qi), 0);
    assert_int_equal(dns_reply_error(&qi, true, DNS_RCODE_REFUSED, out, 43), DV_ESPACE);
    assert_int_equal(dns_reply_error(&qi, true, DNS_RCODE_REFUSED, out, 44), 44);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_read_sticky),
        cmocka_unit_test(test_cursor_write_sticky),
        cmocka_unit_test(test_header_roundtrip),
        cmocka_unit_test(test_name_text_roundtrip),
        cmocka_unit_test(test_name_text_errors),
        cmocka_unit_test(test_name_to_str_truncation),
        cmocka_unit_test(test_name_compare),
        cmocka_unit_test(test_name_read_limits),
        cmocka_unit_test(test_query_table),
        cmocka_unit_test(test_query_long_names),
        cmocka_unit_test(test_query_good),
        cmocka_unit_test(test_response_walk),
        cmocka_unit_test(test_response_match),
        cmocka_unit_test(test_response_table),
        cmocka_unit_test(test_pointer_in_ttl_refused),
        cmocka_unit_test(test_age_and_min_ttl),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_pad_query),
        cmocka_unit_test(test_strip_and_add_opt),
        cmocka_unit_test(test_edns_write),
        cmocka_unit_test(test_reply_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
