/* Unit tests for the answer cache. Answers are built byte by byte; the clock is
 * a plain number moved by the tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "dns/dns.h"
#include "resolve/cache.h"

#define SEC 1000ull
#define T0 (1000 * SEC) /* an arbitrary start for the monotonic clock */

/* ---- building messages ------------------------------------------------- */

struct mb {
    uint8_t b[8192];
    size_t len;
    uint16_t count[3];
};

static void put8(struct mb *m, uint8_t v)
{
    assert_true(m->len < sizeof(m->b));
    m->b[m->len++] = v;
}

static void put16(struct mb *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}

static void put32(struct mb *m, uint32_t v)
{
    put16(m, (uint16_t)(v >> 16));
    put16(m, (uint16_t)v);
}

/* "www.example.com" -> wire form; "." or "" -> the root. */
static size_t wire_name(const char *s, uint8_t *out)
{
    size_t n = 0;

    while (*s && strcmp(s, ".") != 0) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        out[n++] = (uint8_t)l;
        memcpy(out + n, s, l);
        n += l;
        s += l;
        if (*s == '.')
            s++;
    }
    out[n++] = 0;
    return n;
}

static void put_name(struct mb *m, const char *s)
{
    uint8_t w[DNS_NAME_MAX];
    size_t n = wire_name(s, w);

    for (size_t i = 0; i < n; i++)
        put8(m, w[i]);
}

static void put_qptr(struct mb *m)
{
    put16(m, 0xc00c); /* compression pointer to the question name */
}

/* Header (counts filled in by mb_end) and question. */
static void mb_start(struct mb *m, uint16_t flags, const char *qname, uint16_t qtype)
{
    memset(m, 0, sizeof(*m));
    put16(m, 0xbeef);
    put16(m, (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA | flags));
    put16(m, 1);
    put16(m, 0);
    put16(m, 0);
    put16(m, 0);
    put_name(m, qname);
    put16(m, qtype);
    put16(m, DNS_CLASS_IN);
}

static void rr_head(struct mb *m, int sec, uint16_t type, uint32_t ttl)
{
    put16(m, type);
    put16(m, DNS_CLASS_IN);
    put32(m, ttl);
    m->count[sec]++;
}

/* An A record owned by the question name. */
static void mb_a(struct mb *m, int sec, uint32_t ttl, uint8_t last_octet)
{
    put_qptr(m);
    rr_head(m, sec, DNS_TYPE_A, ttl);
    put16(m, 4);
    put8(m, 192);
    put8(m, 0);
    put8(m, 2);
    put8(m, last_octet);
}

static void mb_cname(struct mb *m, uint32_t ttl, const char *target)
{
    uint8_t w[DNS_NAME_MAX];
    size_t n = wire_name(target, w);

    put_qptr(m);
    rr_head(m, DNS_SEC_ANSWER, DNS_TYPE_CNAME, ttl);
    put16(m, (uint16_t)n);
    put_name(m, target);
}

static void mb_txt(struct mb *m, uint32_t ttl, size_t chars)
{
    put_qptr(m);
    rr_head(m, DNS_SEC_ANSWER, DNS_TYPE_TXT, ttl);
    put16(m, (uint16_t)(chars + 1));
    put8(m, (uint8_t)chars);
    for (size_t i = 0; i < chars; i++)
        put8(m, 'x');
}

static void mb_soa(struct mb *m, const char *zone, uint32_t ttl, uint32_t minimum)
{
    put_name(m, zone);
    rr_head(m, DNS_SEC_AUTHORITY, DNS_TYPE_SOA, ttl);
    put16(m, 1 + 1 + 20);
    put8(m, 0); /* mname and rname: the root, to keep it short */
    put8(m, 0);
    put32(m, 2024010101); /* serial */
    put32(m, 7200);
    put32(m, 3600);
    put32(m, 1209600);
    put32(m, minimum);
}

/* OPT with DO and ext_rcode, optionally a padding option of pad bytes. */
static void mb_opt(struct mb *m, bool do_bit, uint8_t ext_rcode, uint16_t pad)
{
    put8(m, 0);
    put16(m, DNS_TYPE_OPT);
    put16(m, 1232);
    put8(m, ext_rcode);
    put8(m, 0);
    put16(m, do_bit ? 0x8000 : 0);
    put16(m, pad ? (uint16_t)(4 + pad) : 0);
    if (pad) {
        put16(m, DNS_OPT_PADDING);
        put16(m, pad);
        for (uint16_t i = 0; i < pad; i++)
            put8(m, 0);
    }
    m->count[DNS_SEC_ADDITIONAL]++;
}

static size_t mb_end(struct mb *m)
{
    dns_put16(m->b + 6, m->count[0]);
    dns_put16(m->b + 8, m->count[1]);
    dns_put16(m->b + 10, m->count[2]);
    return m->len;
}

static struct dns_question mkq(const char *name, uint16_t qtype)
{
    struct dns_question q;

    memset(&q, 0, sizeof(q));
    q.name_len = (uint16_t)wire_name(name, q.name);
    q.qtype = qtype;
    q.qclass = DNS_CLASS_IN;
    return q;
}

/* A positive answer with one A record of ttl. */
static size_t answer_a(struct mb *m, const char *name, uint32_t ttl)
{
    mb_start(m, 0, name, DNS_TYPE_A);
    mb_a(m, DNS_SEC_ANSWER, ttl, 1);
    return mb_end(m);
}

/* ---- reading answers back ---------------------------------------------- */

struct seen {
    uint32_t ttl[32];
    uint16_t type[32];
    int n;
    uint32_t opt_ttl; /* raw OPT TTL field, to check it is never aged */
    bool opt;
};

static void read_ttls(const uint8_t *msg, size_t len, struct seen *s)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    int rc;

    memset(s, 0, sizeof(*s));
    assert_int_equal(dns_rr_iter_init(&it, msg, len), 0);
    while ((rc = dns_rr_next(&it, &rr)) == 1) {
        if (rr.type == DNS_TYPE_OPT) {
            s->opt = true;
            s->opt_ttl = rr.ttl;
            continue;
        }
        assert_true(s->n < 32);
        s->type[s->n] = rr.type;
        s->ttl[s->n++] = rr.ttl;
    }
    assert_int_equal(rc, 0);
}

struct fx {
    struct cache *c;
    struct cache_opts o;
    uint8_t out[DNS_MSG_MAX];
    size_t olen;
};

static struct fx fx_cur;

static void fx_done(struct fx *f)
{
    cache_del(f->c);
    f->c = NULL;
}

/* A failed assertion jumps out of the test: teardown frees what is left. */
static int teardown(void **state)
{
    (void)state;
    fx_done(&fx_cur);
    return 0;
}

static struct fx *fx_new(const struct cache_opts *o)
{
    struct fx *f = &fx_cur;

    fx_done(f);
    memset(f, 0, sizeof(*f));
    if (o)
        f->o = *o;
    else
        cache_opts_default(&f->o);
    assert_int_equal(cache_new(&f->c, &f->o), 0);
    assert_non_null(f->c);
    return f;
}

static int look(struct fx *f, const struct dns_question *q, unsigned flags, uint64_t now)
{
    return cache_lookup(f->c, q, flags, 0x4242, now, f->out, sizeof(f->out), &f->olen);
}

static struct cache_stats stats(const struct fx *f)
{
    struct cache_stats st;

    cache_stats(f->c, &st);
    return st;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_new_rejects_bad_opts(void **state)
{
    struct cache_opts o;
    struct cache *c = (struct cache *)&o;

    (void)state;
    cache_opts_default(&o);
    assert_int_equal(o.size, CACHE_SIZE_DEFAULT);
    assert_int_equal(o.max_ttl, 86400);
    assert_int_equal(o.servfail_ttl, 5);
    assert_int_equal(o.prefetch_hits, 2);
    o.size = CACHE_SIZE_MIN - 1;
    assert_int_equal(cache_new(&c, &o), DV_EINVAL);
    assert_null(c);
    cache_opts_default(&o);
    o.min_ttl = 100;
    o.max_ttl = 99;
    assert_int_equal(cache_new(&c, &o), DV_EINVAL);
    cache_del(NULL);
}

static void test_hit_ages_ttls(void **state)
{
    struct mb m;
    struct seen s;
    struct dns_question q = mkq("www.example.com", DNS_TYPE_A);
    struct fx *f = fx_new(NULL);
    (void)state;

    mb_start(&m, 0, "www.example.com", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 300, 1);
    mb_a(&m, DNS_SEC_ANSWER, 100, 2);
    put_name(&m, "ns.example.com");
    rr_head(&m, DNS_SEC_ADDITIONAL, DNS_TYPE_A, 250);
    put16(&m, 4);
    put32(&m, 0x7f000001);
    mb_opt(&m, false, 0, 0);
    size_t len = mb_end(&m);

    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    assert_int_equal(f->olen, 0);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);

    assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);
    assert_int_equal(f->olen, len);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ttl[0], 300);
    assert_int_equal(s.ttl[1], 100);
    assert_int_equal(s.ttl[2], 250);
    assert_true(s.opt);
    assert_int_equal(s.opt_ttl, 0);

    /* Whole seconds elapsed count; the OPT (UDP size, flags) is untouched. */
    assert_int_equal(look(f, &q, 0, T0 + 30 * SEC + 999), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 270);
    assert_int_equal(s.ttl[1], 70);
    assert_int_equal(s.ttl[2], 220);
    assert_int_equal(s.opt_ttl, 0);
    assert_int_equal(dns_get16(f->out + f->olen - 2 - 4 - 2), 1232);

    /* Third hit, in the last tenth of its life: time to refresh it too. */
    assert_int_equal(look(f, &q, 0, T0 + 99 * SEC + 999), CACHE_HIT_REFRESH);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[1], 1);
    assert_int_equal(s.ttl[0], 201);

    /* The entry lives as long as its smallest TTL. */
    assert_int_equal(look(f, &q, 0, T0 + 100 * SEC), CACHE_STALE);
    assert_int_equal(f->olen, 0);

    struct cache_stats st = stats(f);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.inserts, 1);
    fx_done(f);
}

static void test_expiry_without_stale(void **state)
{
    struct mb m;
    struct cache_opts o;
    struct dns_question q = mkq("a.example", DNS_TYPE_A);
    (void)state;

    cache_opts_default(&o);
    o.max_stale = 0;
    struct fx *f = fx_new(&o);
    size_t len = answer_a(&m, "a.example", 10);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 10 * SEC - 1), CACHE_HIT);
    assert_int_equal(look(f, &q, 0, T0 + 10 * SEC), CACHE_MISS);
    assert_int_equal(stats(f).entries, 0);
    assert_int_equal(stats(f).expired, 1);
    /* Nothing to serve stale either. */
    assert_int_equal(cache_lookup_stale(f->c, &q, 0, 1, T0 + 10 * SEC, f->out, sizeof(f->out),
                                        &f->olen),
                     CACHE_MISS);
    fx_done(f);
}

static void check_negative(struct fx *f, int rcode, uint32_t soa_ttl, uint32_t soa_min,
                           uint32_t want)
{
    struct mb m;
    struct seen s;
    struct dns_question q = mkq("nope.example.com", DNS_TYPE_AAAA);

    cache_flush_all(f->c);
    mb_start(&m, (uint16_t)rcode, "nope.example.com", DNS_TYPE_AAAA);
    mb_soa(&m, "example.com", soa_ttl, soa_min);
    size_t len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);

    assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);
    assert_int_equal(DNS_RCODE(dns_get16(f->out + 2)), rcode);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.type[0], DNS_TYPE_SOA);
    assert_int_equal(s.ttl[0], want); /* RFC 2308 §5: the SOA says how long */

    assert_int_equal(look(f, &q, 0, T0 + want * SEC - 1), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 1);
    assert_int_equal(look(f, &q, 0, T0 + want * SEC), CACHE_STALE);
}

static void test_negative_ttl_from_soa(void **state)
{
    struct cache_opts o;
    (void)state;

    cache_opts_default(&o);
    o.prefetch_hits = 0; /* exact HIT results */
    struct fx *f = fx_new(&o);

    /* min(SOA TTL, SOA MINIMUM), whichever of the two is smaller. */
    check_negative(f, DNS_RCODE_NXDOMAIN, 3600, 60, 60);
    check_negative(f, DNS_RCODE_NXDOMAIN, 45, 900, 45);
    /* NODATA: NOERROR without records. */
    check_negative(f, DNS_RCODE_NOERROR, 3600, 120, 120);
    check_negative(f, DNS_RCODE_NOERROR, 20, 300, 20);
    fx_done(f);
}

static void test_nodata_after_cname(void **state)
{
    struct mb m;
    struct seen s;
    struct dns_question q = mkq("alias.example.com", DNS_TYPE_AAAA);
    struct fx *f = fx_new(NULL);
    (void)state;

    /* A CNAME but no AAAA: NODATA, so the SOA rules, and the CNAME's TTL is
     * capped at the negative lifetime. */
    mb_start(&m, 0, "alias.example.com", DNS_TYPE_AAAA);
    mb_cname(&m, 3600, "target.example.net");
    mb_soa(&m, "example.net", 600, 30);
    size_t len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 10 * SEC), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ttl[0], 20);
    assert_int_equal(s.ttl[1], 20);
    assert_int_equal(look(f, &q, 0, T0 + 30 * SEC), CACHE_STALE);

    /* The same CNAME answering a CNAME question is positive. */
    struct dns_question qc = mkq("alias.example.com", DNS_TYPE_CNAME);
    mb_start(&m, 0, "alias.example.com", DNS_TYPE_CNAME);
    mb_cname(&m, 3600, "target.example.net");
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &qc, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &qc, 0, T0 + 1000 * SEC), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 2600);
    fx_done(f);
}

static void test_negative_without_soa(void **state)
{
    struct mb m;
    struct cache_opts o;
    struct dns_question q = mkq("gone.example", DNS_TYPE_A);
    (void)state;

    mb_start(&m, DNS_RCODE_NXDOMAIN, "gone.example", DNS_TYPE_A);
    size_t len = mb_end(&m);

    struct fx *f = fx_new(NULL);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);
    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    assert_int_equal(stats(f).entries, 0);
    fx_done(f);

    cache_opts_default(&o);
    o.neg_ttl_nosoa = 7;
    o.min_ttl = 60; /* not applied: the configured time is the whole story */
    f = fx_new(&o);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 7 * SEC - 1), CACHE_HIT);
    assert_int_equal(look(f, &q, 0, T0 + 7 * SEC), CACHE_STALE);
    fx_done(f);
}

static void test_ttl_clamps(void **state)
{
    struct mb m;
    struct seen s;
    struct cache_opts o;
    struct dns_question qs = mkq("short.example", DNS_TYPE_A);
    struct dns_question ql = mkq("long.example", DNS_TYPE_A);
    struct dns_question qn = mkq("neg.example", DNS_TYPE_A);
    (void)state;

    cache_opts_default(&o);
    o.min_ttl = 60;
    o.max_ttl = 600;
    o.max_stale = 0;
    o.prefetch_hits = 0;
    struct fx *f = fx_new(&o);

    /* Clamped up: clients see the TTL we keep it for, aging from there. */
    size_t len = answer_a(&m, "short.example", 5);
    assert_int_equal(cache_insert(f->c, &qs, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &qs, 0, T0), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 60);
    assert_int_equal(look(f, &qs, 0, T0 + 59 * SEC), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 1);
    assert_int_equal(look(f, &qs, 0, T0 + 60 * SEC), CACHE_MISS);

    /* Clamped down: never claims more than the entry will live. */
    len = answer_a(&m, "long.example", 1000000);
    assert_int_equal(cache_insert(f->c, &ql, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &ql, 0, T0 + 100 * SEC), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 500);
    assert_int_equal(look(f, &ql, 0, T0 + 600 * SEC), CACHE_MISS);

    /* Negative lifetimes are clamped the same way. */
    mb_start(&m, DNS_RCODE_NXDOMAIN, "neg.example", DNS_TYPE_A);
    mb_soa(&m, "example", 10, 10);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &qn, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &qn, 0, T0 + 59 * SEC), CACHE_HIT);
    assert_int_equal(look(f, &qn, 0, T0 + 60 * SEC), CACHE_MISS);
    fx_done(f);

    /* Without a floor, TTL 0 (and a TTL with the top bit set, RFC 2181 §8)
     * means "do not cache". */
    f = fx_new(NULL);
    len = answer_a(&m, "short.example", 0);
    assert_int_equal(cache_insert(f->c, &qs, 0, m.b, len, T0), 0);
    len = answer_a(&m, "short.example", 0x80000001u);
    assert_int_equal(cache_insert(f->c, &qs, 0, m.b, len, T0), 0);
    assert_int_equal(stats(f).entries, 0);
    fx_done(f);
}

static void test_servfail_brief(void **state)
{
    struct mb m, good;
    struct cache_opts o;
    struct dns_question q = mkq("broken.example", DNS_TYPE_A);
    (void)state;

    mb_start(&m, DNS_RCODE_SERVFAIL, "broken.example", DNS_TYPE_A);
    size_t len = mb_end(&m);

    struct fx *f = fx_new(NULL);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 4 * SEC), CACHE_HIT);
    assert_int_equal(DNS_RCODE(dns_get16(f->out + 2)), DNS_RCODE_SERVFAIL);
    /* Gone at 5 s, and never served stale. */
    assert_int_equal(look(f, &q, 0, T0 + 5 * SEC), CACHE_MISS);
    assert_int_equal(stats(f).entries, 0);

    /* A failure does not push out a good answer, fresh or stale. */
    size_t glen = answer_a(&good, "broken.example", 60);
    assert_int_equal(cache_insert(f->c, &q, 0, good.b, glen, T0), 1);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0 + SEC), 0);
    assert_int_equal(look(f, &q, 0, T0 + 2 * SEC), CACHE_HIT);
    assert_int_equal(DNS_RCODE(dns_get16(f->out + 2)), DNS_RCODE_NOERROR);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0 + 70 * SEC), 0);
    assert_int_equal(look(f, &q, 0, T0 + 71 * SEC), CACHE_STALE);
    fx_done(f);

    cache_opts_default(&o);
    o.servfail_ttl = 0;
    f = fx_new(&o);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);
    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    fx_done(f);
}

static void test_refused_uncacheable(void **state)
{
    struct mb m;
    struct dns_question q = mkq("x.example", DNS_TYPE_A);
    struct fx *f = fx_new(NULL);
    size_t len;
    (void)state;

    /* Truncated: the full answer is elsewhere. */
    mb_start(&m, DNS_FLAG_TC, "x.example", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 300, 1);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);

    /* Rcodes other than NOERROR, NXDOMAIN and SERVFAIL. */
    mb_start(&m, DNS_RCODE_REFUSED, "x.example", DNS_TYPE_A);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);
    mb_start(&m, DNS_RCODE_FORMERR, "x.example", DNS_TYPE_A);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);
    /* An extended rcode in the OPT (here 16, BADVERS) is not NOERROR, even
     * with records and a zero rcode in the header. */
    mb_start(&m, 0, "x.example", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 300, 1);
    mb_opt(&m, false, 1, 0);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);

    /* A question that is not the key: another name, type, class. */
    len = answer_a(&m, "y.example", 300);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), DV_EMISMATCH);
    mb_start(&m, 0, "x.example", DNS_TYPE_AAAA);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), DV_EMISMATCH);
    len = answer_a(&m, "x.example", 300);
    m.b[len - 4 - 2 - 4 - 2 - 2 - 2 - 1] = 3; /* question class IN -> CH */
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), DV_EMISMATCH);

    /* Not an answer, cut short, or garbage. */
    len = answer_a(&m, "x.example", 300);
    m.b[2] &= 0x7f;
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), DV_EMALFORMED);
    len = answer_a(&m, "x.example", 300);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len - 1, T0), DV_EMALFORMED);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, 5, T0), DV_EMALFORMED);
    assert_int_equal(cache_insert(f->c, &q, 0, NULL, 0, T0), DV_EMALFORMED);

    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    assert_int_equal(stats(f).entries, 0);
    assert_int_equal(stats(f).inserts, 0);
    fx_done(f);
}

static void test_compressed_question_refused(void **state)
{
    struct mb m;
    struct dns_question q = mkq(".", DNS_TYPE_A);
    struct fx *f = fx_new(NULL);
    (void)state;

    /* The question name is a pointer to the ARCOUNT field, whose zero bytes
     * read as the root. Such a name cannot serve as the stored key nor take
     * the client's spelling: refused (by the wire check or by the cache's). */
    mb_start(&m, 0, ".", DNS_TYPE_A);
    m.len = DNS_HDR_LEN;
    put16(&m, 0xc000 | 10);
    put16(&m, DNS_TYPE_A);
    put16(&m, DNS_CLASS_IN);
    mb_a(&m, DNS_SEC_ANSWER, 60, 1);
    size_t len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), DV_EMALFORMED);
    assert_int_equal(stats(f).entries, 0);

    /* The same answer with the name in place is fine. */
    mb_start(&m, 0, ".", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 60, 1);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    fx_done(f);
}

static void test_case_and_id_restored(void **state)
{
    struct mb m;
    struct dns_question up = mkq("WwW.ExAmPlE.CoM", DNS_TYPE_A);
    struct dns_question lo = mkq("www.example.com", DNS_TYPE_A);
    struct dns_question hi = mkq("WWW.EXAMPLE.COM", DNS_TYPE_A);
    struct fx *f = fx_new(NULL);
    (void)state;

    size_t len = answer_a(&m, "WwW.ExAmPlE.CoM", 300);
    assert_int_equal(cache_insert(f->c, &up, 0, m.b, len, T0), 1);

    assert_int_equal(cache_lookup(f->c, &lo, 0, 0x1234, T0, f->out, sizeof(f->out), &f->olen),
                     CACHE_HIT);
    assert_int_equal(dns_get16(f->out), 0x1234);
    assert_memory_equal(f->out + DNS_HDR_LEN, lo.name, lo.name_len);

    assert_int_equal(cache_lookup(f->c, &hi, 0, 0xfedc, T0, f->out, sizeof(f->out), &f->olen),
                     CACHE_HIT);
    assert_int_equal(dns_get16(f->out), 0xfedc);
    assert_memory_equal(f->out + DNS_HDR_LEN, hi.name, hi.name_len);
    /* Everything past the header and question is the upstream's answer. */
    size_t qend = DNS_HDR_LEN + hi.name_len + 4;
    assert_memory_equal(f->out + qend, m.b + qend, len - qend);
    assert_int_equal(stats(f).entries, 1);

    /* A too-small buffer is an error, not a hit. */
    assert_int_equal(cache_lookup(f->c, &hi, 0, 1, T0, f->out, len - 1, &f->olen), DV_ESPACE);
    struct dns_question bad = lo;
    bad.name_len = 0;
    assert_int_equal(look(f, &bad, 0, T0), DV_EINVAL);
    fx_done(f);
}

/* A group keeps its view number by name, whatever its place in a later
 * configuration, and no two names share one: 200 groups, 200 views. */
static void test_views_by_name(void **state)
{
    struct fx *f = fx_new(NULL);
    char name[32];
    int first[200];
    (void)state;

    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "group%d", i);
        first[i] = cache_view(f->c, name);
        assert_true(first[i] >= 0);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(first[i], first[j]);
    }
    for (int i = 199; i >= 0; i--) { /* a reload that lists them backwards */
        snprintf(name, sizeof(name), "group%d", i);
        assert_int_equal(cache_view(f->c, name), first[i]);
    }
    fx_done(f);
}

static void test_do_cd_separate(void **state)
{
    struct mb m;
    struct dns_question q = mkq("sec.example", DNS_TYPE_A);
    struct fx *f = fx_new(NULL);
    (void)state;

    size_t len = answer_a(&m, "sec.example", 300);
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    assert_int_equal(look(f, &q, CACHE_F_CD, T0), CACHE_MISS);
    assert_int_equal(look(f, &q, CACHE_F_DO | CACHE_F_CD, T0), CACHE_MISS);
    assert_int_equal(look(f, &q, CACHE_F_DO, T0), CACHE_HIT);
    /* Views past the 63rd are views of their own (no shared last view). */
    assert_int_equal(look(f, &q, CACHE_F_DO | 64u << CACHE_F_VIEW_SHIFT, T0), CACHE_MISS);
    assert_int_equal(look(f, &q, CACHE_F_DO | 1000u << CACHE_F_VIEW_SHIFT, T0), CACHE_MISS);
    /* A different view (upstream group) is a different entry. */
    assert_int_equal(look(f, &q, CACHE_F_DO | 1u << CACHE_F_VIEW_SHIFT, T0), CACHE_MISS);
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO | 5u << CACHE_F_VIEW_SHIFT, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, CACHE_F_DO | 5u << CACHE_F_VIEW_SHIFT, T0), CACHE_HIT);
    assert_int_equal(look(f, &q, CACHE_F_DO | 4u << CACHE_F_VIEW_SHIFT, T0), CACHE_MISS);
    cache_flush_all(f->c);
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0), 1);

    assert_int_equal(cache_insert(f->c, &q, CACHE_F_CD, m.b, len, T0), 1);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(stats(f).entries, 3);
    assert_int_equal(look(f, &q, CACHE_F_CD, T0), CACHE_HIT);
    assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);

    /* The flags come from the client's query. */
    struct dns_query_info qi;
    memset(&qi, 0, sizeof(qi));
    assert_int_equal(cache_flags(&qi), 0);
    qi.edns.present = true;
    qi.edns.do_bit = true;
    assert_int_equal(cache_flags(&qi), CACHE_F_DO);
    qi.hdr.flags = DNS_FLAG_CD | DNS_FLAG_RD;
    assert_int_equal(cache_flags(&qi), CACHE_F_DO | CACHE_F_CD);
    qi.edns.present = false;
    assert_int_equal(cache_flags(&qi), CACHE_F_CD);
    fx_done(f);
}

static void test_serve_stale(void **state)
{
    struct mb m;
    struct seen s;
    struct cache_opts o;
    struct dns_question q = mkq("Old.Example", DNS_TYPE_A);
    (void)state;

    cache_opts_default(&o);
    o.max_stale = 100;
    struct fx *f = fx_new(&o);
    mb_start(&m, 0, "old.example", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 60, 1);
    mb_a(&m, DNS_SEC_ADDITIONAL, 3000, 2);
    mb_opt(&m, true, 0, 0);
    size_t len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0), 1);

    /* Fresh: the stale copy is just a normal hit. */
    assert_int_equal(cache_lookup_stale(f->c, &q, CACHE_F_DO, 7, T0 + 10 * SEC, f->out,
                                        sizeof(f->out), &f->olen),
                     CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 50);

    /* Expired: the lookup says so and copies nothing ... */
    assert_int_equal(look(f, &q, CACHE_F_DO, T0 + 60 * SEC), CACHE_STALE);
    assert_int_equal(f->olen, 0);
    /* ... and the stale copy has every TTL at 30, OPT untouched. */
    assert_int_equal(cache_lookup_stale(f->c, &q, CACHE_F_DO, 0x0707, T0 + 159 * SEC, f->out,
                                        sizeof(f->out), &f->olen),
                     CACHE_STALE);
    assert_int_equal(f->olen, len);
    assert_int_equal(dns_get16(f->out), 0x0707);
    assert_memory_equal(f->out + DNS_HDR_LEN, q.name, q.name_len);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ttl[0], CACHE_STALE_TTL);
    assert_int_equal(s.ttl[1], CACHE_STALE_TTL);
    assert_true(s.opt);
    assert_int_equal(s.opt_ttl, 0x8000);
    assert_int_equal(stats(f).stale_served, 1);

    /* Past the window it is gone. */
    assert_int_equal(cache_lookup_stale(f->c, &q, CACHE_F_DO, 1, T0 + 160 * SEC, f->out,
                                        sizeof(f->out), &f->olen),
                     CACHE_MISS);
    assert_int_equal(look(f, &q, CACHE_F_DO, T0 + 160 * SEC), CACHE_MISS);
    assert_int_equal(stats(f).entries, 0);

    /* A fresh answer replaces a stale one. */
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, CACHE_F_DO, T0 + 70 * SEC), CACHE_STALE);
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0 + 71 * SEC), 1);
    assert_int_equal(look(f, &q, CACHE_F_DO, T0 + 72 * SEC), CACHE_HIT);
    assert_int_equal(stats(f).entries, 1);
    fx_done(f);
}

static void test_prefetch(void **state)
{
    struct mb m;
    struct cache_opts o;
    struct dns_question q = mkq("pop.example", DNS_TYPE_A);
    (void)state;

    struct fx *f = fx_new(NULL);
    size_t len = answer_a(&m, "pop.example", 100);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);

    /* Before the last tenth nothing happens, however popular. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(look(f, &q, 0, T0 + 89 * SEC), CACHE_HIT);
    /* First hit in the last 10 s: refresh, once. */
    assert_int_equal(look(f, &q, 0, T0 + 90 * SEC), CACHE_HIT_REFRESH);
    assert_int_equal(f->olen, len); /* still a full answer */
    assert_int_equal(look(f, &q, 0, T0 + 91 * SEC), CACHE_HIT);
    assert_int_equal(look(f, &q, 0, T0 + 92 * SEC), CACHE_HIT);
    assert_int_equal(stats(f).prefetches, 1);

    /* The refresh failed: a later hit may try again. */
    cache_refresh_failed(f->c, &q, 0);
    assert_int_equal(look(f, &q, 0, T0 + 93 * SEC), CACHE_HIT_REFRESH);
    assert_int_equal(look(f, &q, 0, T0 + 94 * SEC), CACHE_HIT);

    /* The refresh brought a new answer: the count starts over. Only one hit
     * in its last tenth is not enough ... */
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0 + 95 * SEC), 1);
    assert_int_equal(look(f, &q, 0, T0 + 185 * SEC), CACHE_HIT);
    /* ... the second one is. */
    assert_int_equal(look(f, &q, 0, T0 + 186 * SEC), CACHE_HIT_REFRESH);
    assert_int_equal(look(f, &q, 0, T0 + 187 * SEC), CACHE_HIT);
    assert_int_equal(stats(f).prefetches, 3);

    /* An answer stored by the refresh, even an uncacheable one, ends it. */
    mb_start(&m, DNS_RCODE_REFUSED, "pop.example", DNS_TYPE_A);
    size_t rlen = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, rlen, T0 + 188 * SEC), 0);
    assert_int_equal(look(f, &q, 0, T0 + 189 * SEC), CACHE_HIT_REFRESH);
    fx_done(f);

    /* prefetch_hits = 0 turns it off; SERVFAIL is never prefetched. */
    cache_opts_default(&o);
    o.prefetch_hits = 0;
    f = fx_new(&o);
    len = answer_a(&m, "pop.example", 100);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(look(f, &q, 0, T0 + 95 * SEC), CACHE_HIT);
    assert_int_equal(stats(f).prefetches, 0);
    fx_done(f);

    cache_opts_default(&o);
    o.prefetch_hits = 1;
    f = fx_new(&o);
    mb_start(&m, DNS_RCODE_SERVFAIL, "pop.example", DNS_TYPE_A);
    len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 4900), CACHE_HIT);
    len = answer_a(&m, "pop.example", 10);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, 0, T0 + 9 * SEC), CACHE_HIT_REFRESH);
    fx_done(f);
}

static void name_of(char *buf, size_t cap, const char *prefix, int i)
{
    snprintf(buf, cap, "%s%d.example.org", prefix, i);
}

static void insert_a(struct fx *f, const char *name, uint32_t ttl, uint64_t now)
{
    struct mb m;
    struct dns_question q = mkq(name, DNS_TYPE_A);
    size_t len = answer_a(&m, name, ttl);

    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, now), 1);
}

static void test_eviction_keeps_hot(void **state)
{
    struct cache_opts o;
    char name[64];
    enum { HOT = 40, COLD = 20000, EVERY = 25 };
    int hot_miss = 0;
    (void)state;

    cache_opts_default(&o);
    o.size = 64 * 1024;
    struct fx *f = fx_new(&o);
    uint64_t now = T0;

    for (int i = 0; i < HOT; i++) {
        name_of(name, sizeof(name), "hot", i);
        insert_a(f, name, 86400, now);
    }
    for (int i = 0; i < COLD; i++) {
        struct dns_question q;
        name_of(name, sizeof(name), "cold", i);
        q = mkq(name, DNS_TYPE_A);
        assert_int_equal(look(f, &q, 0, now), CACHE_MISS);
        insert_a(f, name, 86400, now);
        struct cache_stats st = stats(f);
        assert_true(st.bytes <= st.size);
        if (i % EVERY == 0) {
            for (int h = 0; h < HOT; h++) {
                name_of(name, sizeof(name), "hot", h);
                q = mkq(name, DNS_TYPE_A);
                if (look(f, &q, 0, now) != CACHE_MISS)
                    continue;
                hot_miss++;
                insert_a(f, name, 86400, now);
            }
        }
        now += 10;
    }
    struct cache_stats st = stats(f);
    assert_true(st.evictions > COLD / 2);
    assert_true(st.bytes <= st.size);
    /* The cache holds a few hundred entries; the cold stream is 50 times
     * that, yet the hot set, hit between every few cold names, stays. */
    assert_true(st.entries < COLD / 10);
    /* Hit while in the small queue, hot names are promoted to main before
     * they ever fall out: not one round of misses. */
    assert_int_equal(hot_miss, 0);
    int hot_left = 0;
    for (int h = 0; h < HOT; h++) {
        name_of(name, sizeof(name), "hot", h);
        struct dns_question q = mkq(name, DNS_TYPE_A);
        hot_left += look(f, &q, 0, now) == CACHE_HIT;
    }
    assert_true(hot_left >= HOT * 9 / 10);
    /* And most of the cold stream is gone. */
    int cold_left = 0;
    for (int i = 0; i < COLD; i++) {
        name_of(name, sizeof(name), "cold", i);
        struct dns_question q = mkq(name, DNS_TYPE_A);
        cold_left += look(f, &q, 0, now) == CACHE_HIT;
    }
    assert_true(cold_left < (int)st.entries);
    fx_done(f);
}

static void test_ghost_readmits_to_main(void **state)
{
    struct cache_opts o;
    char name[64];
    (void)state;

    /* A name that comes back soon after it was pushed out unused enters the
     * main queue, so it outlives the cold names that follow. */
    cache_opts_default(&o);
    o.size = 32 * 1024;
    struct fx *f = fx_new(&o);
    struct dns_question qa = mkq("again.example.org", DNS_TYPE_A);
    insert_a(f, "again.example.org", 3600, T0);
    /* It is the oldest entry of the small queue: the first to go. */
    for (int i = 0; stats(f).evictions == 0; i++) {
        name_of(name, sizeof(name), "c", i);
        insert_a(f, name, 3600, T0);
    }
    assert_int_equal(look(f, &qa, 0, T0), CACHE_MISS);
    insert_a(f, "again.example.org", 3600, T0);
    for (int i = 0; i < 2000; i++) {
        name_of(name, sizeof(name), "d", i);
        insert_a(f, name, 3600, T0);
    }
    assert_int_equal(look(f, &qa, 0, T0), CACHE_HIT);
    /* Whereas a name seen once, never hit, is long gone. */
    struct dns_question qd = mkq("d0.example.org", DNS_TYPE_A);
    assert_int_equal(look(f, &qd, 0, T0), CACHE_MISS);
    fx_done(f);
}

static void test_bound_never_exceeded(void **state)
{
    struct cache_opts o;
    struct mb m;
    char name[64];
    uint32_t x = 12345;
    (void)state;

    cache_opts_default(&o);
    o.size = 16 * 1024;
    struct fx *f = fx_new(&o);
    for (int i = 0; i < 3000; i++) {
        x = x * 1103515245u + 12345u;
        name_of(name, sizeof(name), "v", i);
        struct dns_question q = mkq(name, DNS_TYPE_TXT);
        mb_start(&m, 0, name, DNS_TYPE_TXT);
        int n = 1 + (int)((x >> 16) % 6);
        for (int k = 0; k < n; k++)
            mb_txt(&m, 600, (x >> 8) % 200);
        size_t len = mb_end(&m);
        int rc = cache_insert(f->c, &q, 0, m.b, len, T0 + (uint64_t)i);
        assert_true(rc == 0 || rc == 1);
        struct cache_stats st = stats(f);
        assert_true(st.bytes <= st.size);
        if (i % 7 == 0)
            (void)look(f, &q, 0, T0 + (uint64_t)i);
    }
    /* An answer bigger than an eighth of the bound is not cached at all. */
    struct dns_question q = mkq("big.example", DNS_TYPE_TXT);
    mb_start(&m, 0, "big.example", DNS_TYPE_TXT);
    for (int k = 0; k < 10; k++)
        mb_txt(&m, 600, 250);
    size_t len = mb_end(&m);
    assert_true(len > o.size / 8);
    assert_int_equal(cache_insert(f->c, &q, 0, m.b, len, T0), 0);
    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    assert_true(stats(f).bytes <= o.size);
    fx_done(f);
}

static void test_padding_not_stored(void **state)
{
    struct mb m;
    struct seen s;
    struct cache_opts o;
    struct dns_question q = mkq("pad.example", DNS_TYPE_A);
    (void)state;

    cache_opts_default(&o);
    o.size = CACHE_SIZE_MIN; /* entries up to 512 bytes */
    struct fx *f = fx_new(&o);
    mb_start(&m, 0, "pad.example", DNS_TYPE_A);
    mb_a(&m, DNS_SEC_ANSWER, 60, 9);
    mb_opt(&m, true, 0, 600);
    size_t len = mb_end(&m);
    /* Only fits because the padding is dropped. */
    assert_int_equal(cache_insert(f->c, &q, CACHE_F_DO, m.b, len, T0), 1);
    assert_int_equal(look(f, &q, CACHE_F_DO, T0), CACHE_HIT);
    assert_int_equal(f->olen, len - 604);
    read_ttls(f->out, f->olen, &s);
    assert_true(s.opt);
    assert_int_equal(s.opt_ttl, 0x8000);
    assert_int_equal(s.ttl[0], 60);
    assert_true(stats(f).bytes <= o.size);
    fx_done(f);
}

static void test_flush(void **state)
{
    struct fx *f = fx_new(NULL);
    uint8_t w[DNS_NAME_MAX];
    const char *names[] = {"example.com", "a.example.com", "b.A.example.com",
                           "xexample.com", "other.org", "com"};
    (void)state;

    size_t base = stats(f).bytes;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        insert_a(f, names[i], 300, T0);
    struct dns_question qaaaa = mkq("deep.a.example.com", DNS_TYPE_AAAA);
    struct mb m;
    mb_start(&m, DNS_RCODE_NXDOMAIN, "deep.a.example.com", DNS_TYPE_AAAA);
    mb_soa(&m, "example.com", 300, 300);
    size_t len = mb_end(&m);
    assert_int_equal(cache_insert(f->c, &qaaaa, 0, m.b, len, T0), 1);
    assert_int_equal(stats(f).entries, 7);

    assert_int_equal(cache_flush_name(f->c, w, wire_name("EXAMPLE.com", w)), 4);
    assert_int_equal(stats(f).entries, 3);
    const char *gone[] = {"example.com", "a.example.com", "b.a.example.com"};
    for (size_t i = 0; i < 3; i++) {
        struct dns_question q = mkq(gone[i], DNS_TYPE_A);
        assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    }
    assert_int_equal(look(f, &qaaaa, 0, T0), CACHE_MISS);
    const char *kept[] = {"xexample.com", "other.org", "com"};
    for (size_t i = 0; i < 3; i++) {
        struct dns_question q = mkq(kept[i], DNS_TYPE_A);
        assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);
    }
    assert_int_equal(cache_flush_name(f->c, w, wire_name("nothing.here", w)), 0);
    assert_int_equal(cache_flush_name(f->c, w, 0), DV_EINVAL);

    cache_flush_all(f->c);
    assert_int_equal(stats(f).entries, 0);
    assert_int_equal(stats(f).bytes, base);
    struct dns_question q = mkq("other.org", DNS_TYPE_A);
    assert_int_equal(look(f, &q, 0, T0), CACHE_MISS);
    /* Still usable afterwards. */
    insert_a(f, "other.org", 300, T0);
    assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);
    /* The root flushes everything. */
    assert_int_equal(cache_flush_name(f->c, w, wire_name(".", w)), 1);
    assert_int_equal(stats(f).entries, 0);
    fx_done(f);
}

static void test_set_limits(void **state)
{
    struct cache_opts o;
    char name[64];
    struct seen s;
    (void)state;

    cache_opts_default(&o);
    o.size = 256 * 1024;
    struct fx *f = fx_new(&o);
    for (int i = 0; i < 1500; i++) {
        name_of(name, sizeof(name), "n", i);
        insert_a(f, name, 3600, T0);
    }
    struct cache_stats before = stats(f);
    assert_true(before.entries > 1000);

    /* Invalid limits change nothing. */
    struct cache_opts bad = o;
    bad.size = 100;
    assert_int_equal(cache_set_limits(f->c, &bad), DV_EINVAL);
    bad = o;
    bad.min_ttl = bad.max_ttl + 1;
    assert_int_equal(cache_set_limits(f->c, &bad), DV_EINVAL);
    assert_int_equal(stats(f).entries, before.entries);

    /* Shrinking evicts at once, and the bound holds from then on. */
    o.size = 16 * 1024;
    o.max_ttl = 100;
    assert_int_equal(cache_set_limits(f->c, &o), 0);
    struct cache_stats after = stats(f);
    assert_int_equal(after.size, 16 * 1024);
    assert_true(after.bytes <= after.size);
    assert_true(after.entries > 0 && after.entries < before.entries / 4);
    assert_true(after.evictions >= before.entries - after.entries);
    for (int i = 0; i < 500; i++) {
        name_of(name, sizeof(name), "m", i);
        insert_a(f, name, 3600, T0);
        assert_true(stats(f).bytes <= 16 * 1024);
    }
    /* Entries stored before keep their lifetime; new ones get the new clamp. */
    struct dns_question q = mkq("m499.example.org", DNS_TYPE_A);
    assert_int_equal(look(f, &q, 0, T0), CACHE_HIT);
    read_ttls(f->out, f->olen, &s);
    assert_int_equal(s.ttl[0], 100);

    /* Growing again works too. */
    o.size = 1024 * 1024;
    assert_int_equal(cache_set_limits(f->c, &o), 0);
    for (int i = 0; i < 3000; i++) {
        name_of(name, sizeof(name), "g", i);
        insert_a(f, name, 3600, T0);
    }
    assert_true(stats(f).entries >= 3000);
    assert_true(stats(f).bytes <= o.size);
    /* The index grew with the entries and is counted: it outlives a flush. */
    cache_flush_all(f->c);
    assert_int_equal(stats(f).entries, 0);
    assert_true(stats(f).bytes >= 3000 * (sizeof(void *) + 4));
    fx_done(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_new_rejects_bad_opts, teardown),
        cmocka_unit_test_teardown(test_hit_ages_ttls, teardown),
        cmocka_unit_test_teardown(test_expiry_without_stale, teardown),
        cmocka_unit_test_teardown(test_negative_ttl_from_soa, teardown),
        cmocka_unit_test_teardown(test_nodata_after_cname, teardown),
        cmocka_unit_test_teardown(test_negative_without_soa, teardown),
        cmocka_unit_test_teardown(test_ttl_clamps, teardown),
        cmocka_unit_test_teardown(test_servfail_brief, teardown),
        cmocka_unit_test_teardown(test_refused_uncacheable, teardown),
        cmocka_unit_test_teardown(test_compressed_question_refused, teardown),
        cmocka_unit_test_teardown(test_case_and_id_restored, teardown),
        cmocka_unit_test_teardown(test_do_cd_separate, teardown),
        cmocka_unit_test_teardown(test_views_by_name, teardown),
        cmocka_unit_test_teardown(test_serve_stale, teardown),
        cmocka_unit_test_teardown(test_prefetch, teardown),
        cmocka_unit_test_teardown(test_eviction_keeps_hot, teardown),
        cmocka_unit_test_teardown(test_ghost_readmits_to_main, teardown),
        cmocka_unit_test_teardown(test_bound_never_exceeded, teardown),
        cmocka_unit_test_teardown(test_padding_not_stored, teardown),
        cmocka_unit_test_teardown(test_flush, teardown),
        cmocka_unit_test_teardown(test_set_limits, teardown),
    };
    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
