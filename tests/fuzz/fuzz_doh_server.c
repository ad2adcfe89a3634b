/* libFuzzer target for the DoH request path: a server session (dohsrv.c)
 * takes the input as a client's bytes (HEADERS with any pseudo-headers,
 * paths, query strings and content types, DATA bodies of any size,
 * RST_STREAM, SETTINGS, GOAWAY, garbage) and answers every query it hands
 * out at once with the query itself, QR set, and every ODoH relay request
 * (POST /proxy?targethost=..&targetpath=..) with its own body; whatever it
 * sends back is drained after each chunk.
 *
 * An odd first byte puts a valid client preface (the magic and an empty
 * SETTINGS frame) in front of the rest, so the fuzzer spends its time past
 * the preface; the second byte splits the rest into two chunks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/dohsrv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dohsrv *cur;

static void on_query(void *arg, int32_t sid, const uint8_t *msg, size_t len)
{
    uint8_t ans[DOHSRV_BODY_MAX];

    if (len < 12 || len > sizeof(ans) || (msg[2] & 0x80))
        abort(); /* dohsrv hands out only what could be a query */
    memcpy(ans, msg, len);
    ans[2] |= 0x80;
    (void)dohsrv_answer(cur, sid, ans, len);
}

/* ODoH relay requests get the target's verdict at once: the body back. */
static void on_relay(void *arg, int32_t sid, const char *host, const char *path,
                     const uint8_t *body, size_t len)
{
    if (!host[0] || path[0] != '/' || len == 0 || len > DOHSRV_BODY_MAX)
        abort(); /* dohsrv hands out only checked relay requests */
    (void)dohsrv_reply(cur, sid, 200, "application/oblivious-dns-message", body, len);
}

static const struct dohsrv_events events = {.query = on_query, .relay = on_relay};

static void drain(struct dohsrv *s)
{
    const uint8_t *p;

    for (int i = 0; i < 1000 && dohsrv_send(s, &p) > 0; i++)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                     "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    struct dohsrv_opts o = {.path = "/dns-query", .max_streams = 8, .relay_path = "/proxy"};
    struct dohsrv *s;

    if (size < 2 || dohsrv_new(&o, &events, NULL, &s))
        return 0;
    cur = s;
    drain(s);
    if (data[0] & 1 && dohsrv_recv(s, preface, sizeof(preface) - 1))
        goto out;
    drain(s);
    size_t split = 2 + (size - 2) * data[1] / 256;
    if (dohsrv_recv(s, data + 2, split - 2) == 0) {
        drain(s);
        if (dohsrv_recv(s, data + split, size - split) == 0)
            drain(s);
    }
    dohsrv_terminate(s);
    drain(s);
out:
    dohsrv_del(s);
    cur = NULL;
    return 0;
}
