/* Unit tests for the DoH server session (src/frontend/dohsrv.h): hand-made
 * client frames in (HPACK literals, no Huffman), the queries and relay
 * requests it hands out, and its responses read back with nghttp2's own
 * HPACK decoder: status, content-type, cache-control, body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "frontend/dohsrv.h"

#if defined(DV_HAVE_NGHTTP2)

#include <nghttp2/nghttp2.h>

struct wire {
    uint8_t b[4096];
    size_t n;
};

static void frame(struct wire *w, uint8_t type, uint8_t flags, uint32_t sid, const void *p,
                  size_t len)
{
    uint8_t *o = w->b + w->n;

    assert_true(w->n + 9 + len <= sizeof(w->b));
    o[0] = (uint8_t)(len >> 16);
    o[1] = (uint8_t)(len >> 8);
    o[2] = (uint8_t)len;
    o[3] = type;
    o[4] = flags;
    o[5] = (uint8_t)(sid >> 24);
    o[6] = (uint8_t)(sid >> 16);
    o[7] = (uint8_t)(sid >> 8);
    o[8] = (uint8_t)sid;
    if (len)
        memcpy(o + 9, p, len);
    w->n += 9 + len;
}

/* HPACK literal without indexing, new name (both strings short, raw). */
static size_t literal(uint8_t *o, const char *name, const char *value)
{
    size_t n = 0, nl = strlen(name), vl = strlen(value);

    assert_true(nl < 127 && vl < 127);
    o[n++] = 0x00;
    o[n++] = (uint8_t)nl;
    memcpy(o + n, name, nl);
    n += nl;
    o[n++] = (uint8_t)vl;
    memcpy(o + n, value, vl);
    return n + vl;
}

static void preface(struct wire *w)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    memcpy(w->b, magic, sizeof(magic) - 1);
    w->n = sizeof(magic) - 1;
    frame(w, 4, 0, 0, NULL, 0); /* SETTINGS */
}

/* A request on sid: headers (NULL-terminated name/value pairs), then body. */
static void request(struct wire *w, uint32_t sid, const char *const *hdrs, const void *body,
                    size_t len)
{
    uint8_t hb[1024];
    size_t n = 0;

    n += literal(hb + n, ":scheme", "https");
    n += literal(hb + n, ":authority", "dns.test");
    for (size_t i = 0; hdrs[i]; i += 2)
        n += literal(hb + n, hdrs[i], hdrs[i + 1]);
    frame(w, 1, 0x4 | (body ? 0 : 0x1), sid, hb, n); /* HEADERS, END_HEADERS */
    if (body && len)
        frame(w, 0, 0x1, sid, body, len);            /* DATA, END_STREAM */
    /* body with len 0: the stream stays open, the body still to come */
}

/* What the session handed out. */
struct seen {
    int queries, relays;
    int32_t sid;
    uint8_t msg[512];
    size_t len;
    char host[128], path[128];
};

static struct dohsrv *cur;
static bool answer_at_once;

static const uint8_t answer[] = {0x00, 0x00, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
                                 3, 'w', 'w', 'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
                                 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 192, 0, 2, 1};

static void on_query(void *arg, int32_t sid, const uint8_t *msg, size_t len)
{
    struct seen *s = arg;

    s->queries++;
    s->sid = sid;
    assert_true(len <= sizeof(s->msg));
    memcpy(s->msg, msg, len);
    s->len = len;
    if (answer_at_once)
        assert_int_equal(dohsrv_answer(cur, sid, answer, sizeof(answer)), 0);
}

static void on_relay(void *arg, int32_t sid, const char *host, const char *path,
                     const uint8_t *body, size_t len)
{
    struct seen *s = arg;

    s->relays++;
    s->sid = sid;
    snprintf(s->host, sizeof(s->host), "%s", host);
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->len = len;
}

static const struct dohsrv_events events = {.query = on_query, .relay = on_relay};

/* One response as read back. */
struct resp {
    int status;
    char ctype[64], cache[64];
    uint8_t body[512];
    size_t len;
    bool ended;
};

/* Reads every frame s has to send; the response of stream sid into r. */
static void read_back(struct dohsrv *s, int32_t sid, struct resp *r)
{
    uint8_t out[8192];
    size_t n = 0;
    const uint8_t *p;
    long k;
    nghttp2_hd_inflater *inf;

    while ((k = dohsrv_send(s, &p)) > 0) {
        assert_true(n + (size_t)k <= sizeof(out));
        memcpy(out + n, p, (size_t)k);
        n += (size_t)k;
    }
    memset(r, 0, sizeof(*r));
    assert_int_equal(nghttp2_hd_inflate_new(&inf), 0);
    for (size_t off = 0; off + 9 <= n;) {
        size_t len = (size_t)out[off] << 16 | (size_t)out[off + 1] << 8 | out[off + 2];
        uint8_t type = out[off + 3], flags = out[off + 4];
        int32_t fsid = (int32_t)((uint32_t)(out[off + 5] & 0x7f) << 24 |
                                 (uint32_t)out[off + 6] << 16 | (uint32_t)out[off + 7] << 8 |
                                 out[off + 8]);
        const uint8_t *pl = out + off + 9;
        assert_true(off + 9 + len <= n);
        if (type == 1) { /* HEADERS: decode always, the table is shared */
            size_t used = 0;
            while (used < len) {
                nghttp2_nv nv;
                int fl = 0;
                ssize_t rv = nghttp2_hd_inflate_hd2(inf, &nv, &fl, pl + used, len - used, 1);
                assert_true(rv >= 0);
                used += (size_t)rv;
                if ((fl & NGHTTP2_HD_INFLATE_EMIT) && fsid == sid) {
                    char v[64];
                    snprintf(v, sizeof(v), "%.*s", (int)nv.valuelen, nv.value);
                    if (nv.namelen == 7 && !memcmp(nv.name, ":status", 7))
                        r->status = atoi(v);
                    else if (nv.namelen == 12 && !memcmp(nv.name, "content-type", 12))
                        snprintf(r->ctype, sizeof(r->ctype), "%s", v);
                    else if (nv.namelen == 13 && !memcmp(nv.name, "cache-control", 13))
                        snprintf(r->cache, sizeof(r->cache), "%s", v);
                }
                if (fl & NGHTTP2_HD_INFLATE_FINAL) {
                    nghttp2_hd_inflate_end_headers(inf);
                    break;
                }
                if (rv == 0 && !(fl & NGHTTP2_HD_INFLATE_EMIT))
                    break;
            }
        }
        if (type == 0 && fsid == sid) {
            memcpy(r->body + r->len, pl, len);
            r->len += len;
        }
        if ((type == 0 || type == 1) && fsid == sid && (flags & 0x1))
            r->ended = true;
        off += 9 + len;
    }
    nghttp2_hd_inflate_del(inf);
}

static struct dohsrv *session(struct seen *seen)
{
    struct dohsrv_opts o = {.path = "/dns-query", .max_streams = 10, .relay_path = "/proxy"};
    struct dohsrv *s;

    memset(seen, 0, sizeof(*seen));
    assert_int_equal(dohsrv_new(&o, &events, seen, &s), 0);
    cur = s;
    return s;
}

static const uint8_t query[] = {0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                3, 'w', 'w', 'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};

static void test_post_and_answer(void **state)
{
    static const char *const h[] = {":method", "POST", ":path", "/dns-query",
                                    "content-type", "application/dns-message", NULL};
    struct seen seen;
    struct dohsrv *s = session(&seen);
    struct wire w;
    struct resp r;

    answer_at_once = false;
    preface(&w);
    request(&w, 1, h, query, sizeof(query));
    assert_int_equal(dohsrv_recv(s, w.b, w.n), 0);
    assert_int_equal(seen.queries, 1);
    assert_int_equal(seen.sid, 1);
    assert_memory_equal(seen.msg, query, sizeof(query));
    assert_int_equal(dohsrv_waiting(s), 1);
    assert_int_equal(dohsrv_answer(s, 1, answer, sizeof(answer)), 0);
    assert_int_equal(dohsrv_waiting(s), 0);
    read_back(s, 1, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/dns-message");
    assert_string_equal(r.cache, "max-age=300"); /* the A record's TTL */
    assert_int_equal(r.len, sizeof(answer));
    assert_memory_equal(r.body, answer, sizeof(answer));
    assert_true(r.ended);
    /* a second answer for the same stream is ignored */
    assert_int_equal(dohsrv_answer(s, 1, answer, sizeof(answer)), 0);
    dohsrv_del(s);
}

static void test_get_base64url(void **state)
{
    /* base64url of query, unpadded */
    static const char *const h[] = {":method", "GET", ":path",
                                    "/dns-query?ct&dns=q80BAAABAAAAAAAAA3d3dwR0ZXN0AAABAAE",
                                    NULL};
    struct seen seen;
    struct dohsrv *s = session(&seen);
    struct wire w;
    struct resp r;

    answer_at_once = true;
    preface(&w);
    request(&w, 1, h, NULL, 0);
    assert_int_equal(dohsrv_recv(s, w.b, w.n), 0);
    assert_int_equal(seen.queries, 1);
    assert_int_equal(seen.len, sizeof(query));
    assert_memory_equal(seen.msg, query, sizeof(query));
    read_back(s, 1, &r);
    assert_int_equal(r.status, 200);
    dohsrv_del(s);
}

static int status_of(const char *const *h, const void *body, size_t len)
{
    struct seen seen;
    struct dohsrv *s = session(&seen);
    struct wire w;
    struct resp r;

    answer_at_once = true;
    preface(&w);
    request(&w, 1, h, body, len);
    assert_int_equal(dohsrv_recv(s, w.b, w.n), 0);
    read_back(s, 1, &r);
    assert_true(r.ended);
    dohsrv_del(s);
    return r.status;
}

static void test_errors(void **state)
{
    static const char *const path[] = {":method", "GET", ":path", "/other?dns=AAAA", NULL};
    static const char *const put[] = {":method", "PUT", ":path", "/dns-query", NULL};
    static const char *const ctype[] = {":method", "POST", ":path", "/dns-query",
                                        "content-type", "text/plain", NULL};
    static const char *const nodns[] = {":method", "GET", ":path", "/dns-query?x=1", NULL};
    static const char *const badb64[] = {":method", "GET", ":path", "/dns-query?dns=a*b", NULL};
    static const char *const big[] = {":method", "POST", ":path", "/dns-query",
                                      "content-type", "application/dns-message",
                                      "content-length", "70000", NULL};
    static const char *const resp[] = {":method", "POST", ":path", "/dns-query",
                                       "content-type", "application/dns-message", NULL};
    uint8_t r[12] = {0, 0, 0x81, 0x80};

    assert_int_equal(status_of(path, NULL, 0), 404);
    assert_int_equal(status_of(put, NULL, 0), 405);
    assert_int_equal(status_of(ctype, query, sizeof(query)), 415);
    assert_int_equal(status_of(nodns, NULL, 0), 400);
    assert_int_equal(status_of(badb64, NULL, 0), 400);
    /* refused on its content-length, before any of the body */
    assert_int_equal(status_of(big, query, 0), 413);
    assert_int_equal(status_of(resp, r, sizeof(r)), 400);    /* a response, not a query */
    assert_int_equal(status_of(resp, query, 5), 400);        /* shorter than a header */
}

static void test_relay(void **state)
{
    static const char *const h[] = {":method", "POST", ":path",
                                    "/proxy?targethost=t.test%3A8443&targetpath=%2Fdns-query",
                                    "content-type", "application/oblivious-dns-message", NULL};
    static const char *const nopath[] = {":method", "POST", ":path", "/proxy?targethost=t.test",
                                         "content-type", "application/oblivious-dns-message",
                                         NULL};
    static const uint8_t sealed[40] = {1, 2, 3};
    struct seen seen;
    struct dohsrv *s = session(&seen);
    struct wire w;
    struct resp r;

    preface(&w);
    request(&w, 1, h, sealed, sizeof(sealed));
    assert_int_equal(dohsrv_recv(s, w.b, w.n), 0);
    assert_int_equal(seen.relays, 1);
    assert_int_equal(seen.queries, 0);
    assert_string_equal(seen.host, "t.test:8443");
    assert_string_equal(seen.path, "/dns-query");
    assert_int_equal(seen.len, sizeof(sealed));
    assert_int_equal(dohsrv_reply(s, 1, 401, NULL, NULL, 0), 0);
    read_back(s, 1, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.cache, ""); /* nothing cached on a relay's word */
    dohsrv_del(s);
    assert_int_equal(status_of(nopath, sealed, sizeof(sealed)), 400);
}

static void test_http1_refused(void **state)
{
    static const char req[] = "GET /dns-query?dns=AAAB HTTP/1.1\r\nHost: x\r\n\r\n";
    struct seen seen;
    struct dohsrv *s = session(&seen);

    assert_int_equal(dohsrv_recv(s, (const uint8_t *)req, sizeof(req) - 1), DV_EPROTO);
    assert_true(dohsrv_was_http1(s));
    dohsrv_del(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_and_answer),
        cmocka_unit_test(test_get_base64url),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_relay),
        cmocka_unit_test(test_http1_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

int main(void)
{
    return 0;
}

#endif
