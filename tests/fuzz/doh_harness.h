/* The DoH response path without a socket, shared by fuzz_doh.c and
 * tests/unit/test_doh.c: one client HTTP/2 session (h2.c) with three DoH
 * requests in flight (streams 1, 3, 5; GET when len is odd, else POST)
 * receives in[0..len) as the server's bytes, then the connection dies. Every
 * request must end in exactly one event, and an answer doh_answer_rc accepts
 * must be a plausible DNS message; anything else aborts. Returns the number
 * of requests answered (0-3). */
#ifndef DV_TESTS_DOH_HARNESS_H
#define DV_TESTS_DOH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/err.h"
#include "upstream/doh.h"
#include "tls/h2.h"

struct harness_req {
    struct h2_req h;
    unsigned events;
    bool answered;
};

static void harness_done(void *arg, struct h2_req *h, int rc)
{
    struct harness_req *r = (struct harness_req *)(void *)h;

    r->events++;
    r->answered = rc == 0 && doh_answer_rc(h) == 0;
    if (r->answered && (buf_used(&h->resp) < 12 || buf_used(&h->resp) > H2_BODY_MAX))
        abort();
}

static void harness_refused(void *arg, struct h2_req *h)
{
    ((struct harness_req *)(void *)h)->events++;
}

static void harness_drain(struct h2 *s)
{
    const uint8_t *out;

    while (h2_send(s, &out) > 0)
        ;
}

static int doh_harness_response(const uint8_t *in, size_t len)
{
    static const struct h2_events ev = {.done = harness_done, .refused = harness_refused};
    static const uint8_t query[] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w',
                                    'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    struct harness_req r[3] = {0};
    struct h2 *s;
    int answered = 0;

    if (h2_new(&ev, NULL, "fuzz.test", "fuzz", &s))
        abort();
    for (size_t i = 0; i < 3; i++) {
        r[i].h.ctype = "application/dns-message";
        if (len % 2) {
            r[i].h.path = "/dns-query?dns=AAABAAABAAAAAAAAA3d3dwR0ZXN0AAABAAE";
        } else {
            r[i].h.path = "/dns-query";
            r[i].h.body = query;
            r[i].h.len = sizeof(query);
        }
        buf_init(&r[i].h.resp);
        if (h2_submit(s, &r[i].h))
            abort();
    }
    harness_drain(s);
    if (h2_recv(s, in, len) == 0)
        harness_drain(s);
    h2_abort(s, DV_ECONN);
    for (size_t i = 0; i < 3; i++) {
        if (r[i].events != 1)
            abort();
        answered += r[i].answered;
        buf_free(&r[i].h.resp);
    }
    h2_del(s);
    return answered;
}

#endif
