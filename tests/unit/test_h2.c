/* Unit tests for the pure HTTP/2 exchange (src/tls/h2.h) that DoH and
 * ODoH share: hand-made server frames in, one event per request out, with
 * the status, media type verdict, Cache-Control max-age and body ODoH needs
 * (a configs fetch, a 401, a cancelled request). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "tls/h2.h"

#if defined(DV_HAVE_NGHTTP2)

static const char odoh_ctype[] = "application/oblivious-dns-message";

struct req {
    struct h2_req h;
    unsigned events;
    int rc;
    bool refused;
};

static void on_done(void *arg, struct h2_req *h, int rc)
{
    struct req *r = (struct req *)(void *)h;

    r->events++;
    r->rc = rc;
}

static void on_refused(void *arg, struct h2_req *h)
{
    struct req *r = (struct req *)(void *)h;

    r->events++;
    r->refused = true;
}

static const struct h2_events events = {.done = on_done, .refused = on_refused};

/* A server byte stream under construction. */
struct wire {
    uint8_t b[1024];
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

/* HPACK literal without indexing, the name from the static table. */
static size_t literal(uint8_t *o, unsigned index, const char *value)
{
    size_t n = 0, len = strlen(value);

    if (index < 15) {
        o[n++] = (uint8_t)index;
    } else {
        o[n++] = 0x0f;
        o[n++] = (uint8_t)(index - 15);
    }
    o[n++] = (uint8_t)len;
    memcpy(o + n, value, len);
    return n + len;
}

enum { F_DATA = 0, F_HEADERS = 1, F_SETTINGS = 4 };
enum { END_STREAM = 1, END_HEADERS = 4 };
enum { IDX_STATUS = 8, IDX_CACHE_CONTROL = 24, IDX_CONTENT_TYPE = 31 };

static struct h2 *session(struct req *r, size_t n)
{
    struct h2 *s;
    const uint8_t *out;

    assert_int_equal(h2_new(&events, NULL, "target.test", "test", &s), 0);
    for (size_t i = 0; i < n; i++) {
        buf_init(&r[i].h.resp);
        assert_int_equal(h2_submit(s, &r[i].h), 0);
    }
    while (h2_send(s, &out) > 0)
        ;
    return s;
}

static void finish(struct h2 *s, struct req *r, size_t n)
{
    h2_abort(s, DV_ECONN);
    for (size_t i = 0; i < n; i++)
        buf_free(&r[i].h.resp);
    h2_del(s);
}

/* The configs fetch: a GET with no media type asked, any content-type
 * accepted, max-age read from a Cache-Control list. */
static void test_configs_fetch(void **state)
{
    static const uint8_t body[] = {0, 2, 0xab, 0xcd};
    struct req r[1] = {{.h = {.path = "/.well-known/odohconfigs"}}};
    struct h2 *s = session(r, 1);
    struct wire w = {0};
    uint8_t hb[128];
    size_t n = 0;

    frame(&w, F_SETTINGS, 0, 0, NULL, 0);
    hb[n++] = 0x88; /* :status 200 */
    n += literal(hb + n, IDX_CONTENT_TYPE, "application/octet-stream");
    n += literal(hb + n, IDX_CACHE_CONTROL, "public, max-age=86400");
    frame(&w, F_HEADERS, END_HEADERS, 1, hb, n);
    frame(&w, F_DATA, END_STREAM, 1, body, sizeof(body));
    assert_int_equal(h2_recv(s, w.b, w.n), 0);
    assert_int_equal(r[0].events, 1);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[0].h.status, 200);
    assert_true(r[0].h.ctype_ok);
    assert_int_equal(r[0].h.max_age, 86400);
    assert_int_equal(buf_used(&r[0].h.resp), sizeof(body));
    assert_memory_equal(buf_head(&r[0].h.resp), body, sizeof(body));
    assert_int_equal(h2_live(s), 0);
    finish(s, r, 1);
}

/* Sealed queries: a 401 comes back as a complete response (the caller
 * judges it), a wrong media type is told, no-store reads as max-age 0. */
static void test_status_and_media_type(void **state)
{
    static const uint8_t q[] = {1, 0, 0, 0, 1, 0xee};
    struct req r[3];
    struct h2 *s;
    struct wire w = {0};
    uint8_t hb[128];
    size_t n;

    for (int i = 0; i < 3; i++)
        r[i] = (struct req){.h = {.path = "/proxy?targethost=t&targetpath=%2Fdns-query",
                                  .ctype = odoh_ctype, .body = q, .len = sizeof(q)}};
    s = session(r, 3);
    frame(&w, F_SETTINGS, 0, 0, NULL, 0);
    n = literal(hb, IDX_STATUS, "401");
    frame(&w, F_HEADERS, END_HEADERS | END_STREAM, 1, hb, n);
    n = 0;
    hb[n++] = 0x88;
    n += literal(hb + n, IDX_CONTENT_TYPE, "text/plain");
    frame(&w, F_HEADERS, END_HEADERS | END_STREAM, 3, hb, n);
    n = 0;
    hb[n++] = 0x88;
    n += literal(hb + n, IDX_CONTENT_TYPE, "Application/Oblivious-DNS-Message; x=1");
    n += literal(hb + n, IDX_CACHE_CONTROL, "no-store");
    frame(&w, F_HEADERS, END_HEADERS, 5, hb, n);
    frame(&w, F_DATA, END_STREAM, 5, q, sizeof(q));
    assert_int_equal(h2_recv(s, w.b, w.n), 0);
    for (int i = 0; i < 3; i++)
        assert_true(r[i].events == 1 && r[i].rc == 0 && !r[i].refused);
    assert_int_equal(r[0].h.status, 401);
    assert_int_equal(r[0].h.max_age, -1);
    assert_false(r[1].h.ctype_ok);
    assert_true(r[2].h.ctype_ok);
    assert_int_equal(r[2].h.max_age, 0);
    finish(s, r, 3);
}

/* A cancelled request gets no event, even when its answer arrives; the
 * other one is still answered, and the one never sent is refused at the
 * end of the session. */
static void test_cancel_and_abort(void **state)
{
    static const uint8_t q[] = {1, 0, 0, 0, 1, 0xee};
    struct req r[2];
    struct h2 *s;
    struct req late = {.h = {.path = "/p", .ctype = odoh_ctype, .body = q, .len = sizeof(q)}};
    struct wire w = {0};
    uint8_t hb[4] = {0x88};

    for (int i = 0; i < 2; i++)
        r[i] = (struct req){.h = {.path = "/p", .ctype = NULL, .body = q, .len = sizeof(q)}};
    s = session(r, 2);
    h2_cancel(s, &r[0].h);
    assert_int_equal(h2_live(s), 1);
    frame(&w, F_SETTINGS, 0, 0, NULL, 0);
    frame(&w, F_HEADERS, END_HEADERS | END_STREAM, 1, hb, 1);
    frame(&w, F_HEADERS, END_HEADERS | END_STREAM, 3, hb, 1);
    assert_int_equal(h2_recv(s, w.b, w.n), 0);
    assert_int_equal(r[0].events, 0);
    assert_true(r[1].events == 1 && r[1].rc == 0 && r[1].h.status == 200);
    buf_init(&late.h.resp);
    assert_int_equal(h2_submit(s, &late.h), 0); /* submitted, never sent */
    h2_abort(s, DV_ECONN);
    assert_true(late.events == 1 && late.refused);
    buf_free(&late.h.resp);
    finish(s, r, 2);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#if defined(DV_HAVE_NGHTTP2)
        cmocka_unit_test(test_configs_fetch),
        cmocka_unit_test(test_status_and_media_type),
        cmocka_unit_test(test_cancel_and_abort),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
