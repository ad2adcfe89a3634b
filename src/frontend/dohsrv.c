/* dohsrv — DoH server sessions on nghttp2; see dohsrv.h for the contract. */
#include "frontend/dohsrv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "core/err.h"

#ifdef DV_HAVE_NGHTTP2

#include <nghttp2/nghttp2.h>

#include "dns/dns.h"

#define CT_DNS "application/dns-message"
#define CT_ODOH "application/oblivious-dns-message"

enum method { M_NONE, M_GET, M_POST, M_OTHER };

/* One request stream, from its HEADERS to its close. */
struct dstream {
    struct dstream *prev, *next; /* every stream of the session */
    int32_t sid;
    enum method method;
    char path[DOHSRV_PATH_MAX + 1];
    bool path_long;
    bool ctype_dns;   /* content-type: application/dns-message */
    bool ctype_odoh;  /* content-type: application/oblivious-dns-message */
    bool ctype_seen;
    bool too_big;     /* body over DOHSRV_BODY_MAX: discarded, 413 */
    bool waiting;     /* handed out, not answered */
    bool answered;
    uint8_t *body;    /* request body, then the response body */
    size_t len, cap, off;
};

struct dohsrv {
    nghttp2_session *h;
    const struct dohsrv_events *ev;
    void *arg;
    char *path;
    char *relay_path; /* NULL: no relay */
    struct dstream *streams; /* nghttp2_session_del frees none of them */
    size_t waiting;
    bool http1;
    int err;          /* a callback failed for want of memory */
};

static int respond_ct(struct dohsrv *s, struct dstream *d, int status, const char *ctype,
                      const uint8_t *body, size_t len, long max_age);

static int respond(struct dohsrv *s, struct dstream *d, int status, const uint8_t *body,
                   size_t len, long max_age)
{
    return respond_ct(s, d, status, CT_DNS, body, len, max_age);
}

/* RFC 4648 §5 without padding (RFC 8484 §4.1); '=' is tolerated at the end. */
static int b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    while (n && in[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        int v;
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '-')
            v = 62;
        else if (c == '_')
            v = 63;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6)
        return -1; /* a lone trailing character carries no byte */
    return (int)o;
}

static bool body_append(struct dstream *d, const uint8_t *p, size_t n)
{
    if (d->too_big || d->len + n > DOHSRV_BODY_MAX) {
        d->too_big = true;
        return true;
    }
    if (d->len + n > d->cap) {
        size_t cap = d->cap ? d->cap : 512;
        while (cap < d->len + n)
            cap *= 2;
        uint8_t *b = realloc(d->body, cap);
        if (!b)
            return false;
        d->body = b;
        d->cap = cap;
    }
    memcpy(d->body + d->len, p, n);
    d->len += n;
    return true;
}

/* The value of parameter name in the query string q ("a=1&dns=..."). */
static const char *query_param(const char *q, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);

    while (q && *q) {
        const char *end = strchr(q, '&');
        size_t l = end ? (size_t)(end - q) : strlen(q);
        if (l > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            *vlen = l - nl - 1;
            return q + nl + 1;
        }
        q = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Percent-decodes n bytes of in into out (cap >= n + 1), NUL-terminated. */
static int pct_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%') {
            unsigned v;
            if (i + 2 >= n || !isxdigit((unsigned char)in[i + 1]) ||
                !isxdigit((unsigned char)in[i + 2]) || sscanf(in + i + 1, "%2x", &v) != 1 ||
                v < 0x20 || v == 0x7f)
                return -1;
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = 0;
    return 0;
}

/* A POST on the relay path: checked, decoded and handed out. */
static int relay_request(struct dohsrv *s, struct dstream *d, const char *q)
{
    char host[DOHSRV_PATH_MAX + 1], path[DOHSRV_PATH_MAX + 1];
    const char *h, *p;
    size_t hl, pl;

    if (d->method != M_POST)
        return respond(s, d, 405, NULL, 0, -1);
    if (!d->ctype_odoh)
        return respond(s, d, 415, NULL, 0, -1);
    if (d->too_big)
        return respond(s, d, 413, NULL, 0, -1);
    if (!q || !(h = query_param(q, "targethost", &hl)) || !(p = query_param(q, "targetpath", &pl)) ||
        pct_decode(h, hl, host) || pct_decode(p, pl, path) || !host[0] || path[0] != '/' ||
        strpbrk(host, "/?#@ ") || strpbrk(path, " ") || d->len == 0)
        return respond(s, d, 400, NULL, 0, -1);
    d->waiting = true;
    s->waiting++;
    s->ev->relay(s->arg, d->sid, host, path, d->body, d->len);
    return 0;
}

/* The request is complete: a query for the engine, or an error answer. */
static int request_done(struct dohsrv *s, struct dstream *d)
{
    uint8_t msg[DOHSRV_BODY_MAX];
    const uint8_t *m = NULL;
    size_t mlen = 0;

    if (d->path_long)
        return respond(s, d, 400, NULL, 0, -1);
    char *q = strchr(d->path, '?');
    size_t plen = q ? (size_t)(q - d->path) : strlen(d->path);
    if (s->relay_path && plen == strlen(s->relay_path) && !strncmp(d->path, s->relay_path, plen))
        return relay_request(s, d, q ? q + 1 : NULL);
    if (plen != strlen(s->path) || strncmp(d->path, s->path, plen))
        return respond(s, d, 404, NULL, 0, -1);
    if (d->method == M_POST) {
        if (!d->ctype_dns)
            return respond(s, d, 415, NULL, 0, -1);
        if (d->too_big)
            return respond(s, d, 413, NULL, 0, -1);
        m = d->body;
        mlen = d->len;
    } else if (d->method == M_GET) {
        size_t vlen;
        const char *v = q ? query_param(q + 1, "dns", &vlen) : NULL;
        int n = v ? b64url_decode(v, vlen, msg, sizeof(msg)) : -1;
        if (n < 0)
            return respond(s, d, 400, NULL, 0, -1);
        m = msg;
        mlen = (size_t)n;
    } else {
        return respond(s, d, 405, NULL, 0, -1);
    }
    /* what the query engine would drop without a word gets a word here */
    if (mlen < DNS_HDR_LEN || (m[2] & 0x80))
        return respond(s, d, 400, NULL, 0, -1);
    d->waiting = true;
    s->waiting++;
    s->ev->query(s->arg, d->sid, m, mlen);
    return 0;
}

static ssize_t body_read(nghttp2_session *h, int32_t sid, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct dstream *d = src->ptr;
    size_t n = d->len - d->off;

    if (n > len)
        n = len;
    memcpy(buf, d->body + d->off, n);
    d->off += n;
    if (d->off == d->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}

/* v in decimal at out (room for 20 digits); its length. Three of these
 * per answer cost a DoH cache hit 7% of its instructions through
 * snprintf (callgrind, bench/listen.sh's load). */
static size_t put_dec(char *out, unsigned long v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static int respond_ct(struct dohsrv *s, struct dstream *d, int status, const char *ctype,
                      const uint8_t *body, size_t len, long max_age)
{
    char st[20], cl[20], cc[8 + 20];
    nghttp2_nv nv[4];
    size_t n = 0;

    if (d->answered)
        return 0;
    d->answered = true;
    nghttp2_nv v0 = NV(":status", st, put_dec(st, (unsigned long)status));
    nv[n++] = v0;
    if (body) {
        nghttp2_nv v1 = NV("content-type", ctype, strlen(ctype));
        nv[n++] = v1;
    }
    nghttp2_nv v2 = NV("content-length", cl, put_dec(cl, len));
    nv[n++] = v2;
    if (max_age >= 0) {
        memcpy(cc, "max-age=", 8);
        nghttp2_nv v3 = NV("cache-control", cc, 8 + put_dec(cc + 8, (unsigned long)max_age));
        nv[n++] = v3;
    }
    if (!body)
        return nghttp2_submit_response(s->h, d->sid, nv, n, NULL) ? DV_ENOMEM : 0;
    /* the request body is spent: its buffer carries the answer */
    if (len > d->cap) {
        uint8_t *b = realloc(d->body, len);
        if (!b)
            return DV_ENOMEM;
        d->body = b;
        d->cap = len;
    }
    memcpy(d->body, body, len);
    d->len = len;
    d->off = 0;
    nghttp2_data_provider dp = {.source.ptr = d, .read_callback = body_read};
    return nghttp2_submit_response(s->h, d->sid, nv, n, &dp) ? DV_ENOMEM : 0;
}

static int on_begin_headers(nghttp2_session *h, const nghttp2_frame *f, void *arg)
{
    struct dohsrv *s = arg;
    struct dstream *d;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (!(d = calloc(1, sizeof(*d)))) {
        s->err = DV_ENOMEM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    d->sid = f->hd.stream_id;
    d->next = s->streams;
    if (d->next)
        d->next->prev = d;
    s->streams = d;
    nghttp2_session_set_stream_user_data(h, d->sid, d);
    return 0;
}

static bool name_is(const uint8_t *n, size_t nl, const char *want)
{
    return nl == strlen(want) && memcmp(n, want, nl) == 0;
}

static int on_header(nghttp2_session *h, const nghttp2_frame *f, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *arg)
{
    struct dstream *d = nghttp2_session_get_stream_user_data(h, f->hd.stream_id);

    if (!d || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (name_is(name, nl, ":method")) {
        d->method = vl == 3 && !memcmp(value, "GET", 3)    ? M_GET
                    : vl == 4 && !memcmp(value, "POST", 4) ? M_POST
                                                           : M_OTHER;
    } else if (name_is(name, nl, ":path")) {
        if (vl > DOHSRV_PATH_MAX) {
            d->path_long = true;
        } else {
            memcpy(d->path, value, vl);
            d->path[vl] = 0;
        }
    } else if (name_is(name, nl, "content-type")) {
        /* the media type, parameters ignored */
        size_t l = 0;
        while (l < vl && value[l] != ';' && value[l] != ' ')
            l++;
        d->ctype_seen = true;
        d->ctype_dns = l == sizeof(CT_DNS) - 1 && !strncasecmp((const char *)value, CT_DNS, l);
        d->ctype_odoh = l == sizeof(CT_ODOH) - 1 && !strncasecmp((const char *)value, CT_ODOH, l);
    } else if (name_is(name, nl, "content-length")) {
        d->too_big = vl > 5 || strtoul((const char *)value, NULL, 10) > DOHSRV_BODY_MAX;
    }
    return 0;
}

static int on_data(nghttp2_session *h, uint8_t flags, int32_t sid, const uint8_t *data,
                   size_t len, void *arg)
{
    struct dohsrv *s = arg;
    struct dstream *d = nghttp2_session_get_stream_user_data(h, sid);

    if (!d || d->answered)
        return 0;
    if (!body_append(d, data, len) ||
        /* no need to wait for the rest of a body that is already too long */
        (d->too_big && respond(s, d, 413, NULL, 0, -1))) {
        s->err = DV_ENOMEM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_frame(nghttp2_session *h, const nghttp2_frame *f, void *arg)
{
    struct dohsrv *s = arg;
    struct dstream *d;

    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    d = nghttp2_session_get_stream_user_data(h, f->hd.stream_id);
    if (!d || d->answered || d->waiting)
        return 0;
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* a content-length over the limit is refused before the body */
        if (d->too_big && respond(s, d, 413, NULL, 0, -1)) {
            s->err = DV_ENOMEM;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (request_done(s, d)) {
        s->err = DV_ENOMEM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static void stream_free(struct dohsrv *s, struct dstream *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        s->streams = d->next;
    if (d->next)
        d->next->prev = d->prev;
    free(d->body);
    free(d);
}

static int on_close(nghttp2_session *h, int32_t sid, uint32_t code, void *arg)
{
    struct dohsrv *s = arg;
    struct dstream *d = nghttp2_session_get_stream_user_data(h, sid);

    if (!d)
        return 0;
    if (d->waiting)
        s->waiting--;
    nghttp2_session_set_stream_user_data(h, sid, NULL);
    stream_free(s, d);
    return 0;
}

int dohsrv_new(const struct dohsrv_opts *o, const struct dohsrv_events *ev, void *arg,
               struct dohsrv **ps)
{
    nghttp2_session_callbacks *cb = NULL;
    struct dohsrv *s = calloc(1, sizeof(*s));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_streams ? o->max_streams : 100},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
    };

    *ps = NULL;
    if (!s || !(s->path = strdup(o->path ? o->path : "/dns-query")) ||
        (o->relay_path && ev->relay && !(s->relay_path = strdup(o->relay_path))) ||
        nghttp2_session_callbacks_new(&cb))
        goto fail;
    s->ev = ev;
    s->arg = arg;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    if (nghttp2_session_server_new(&s->h, cb, s))
        goto fail;
    nghttp2_session_callbacks_del(cb);
    if (nghttp2_submit_settings(s->h, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]))) {
        dohsrv_del(s);
        return DV_ENOMEM;
    }
    *ps = s;
    return 0;
fail:
    nghttp2_session_callbacks_del(cb);
    if (s) {
        free(s->path);
        free(s->relay_path);
    }
    free(s);
    return DV_ENOMEM;
}

void dohsrv_del(struct dohsrv *s)
{
    if (!s)
        return;
    nghttp2_session_del(s->h);
    while (s->streams)
        stream_free(s, s->streams);
    free(s->path);
    free(s->relay_path);
    free(s);
}

int dohsrv_recv(struct dohsrv *s, const uint8_t *in, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(s->h, in, len);

    if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
        static const char *const methods[] = {"GET ", "POST ", "HEAD ", "PUT ", "OPTIONS "};
        for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
            if (len >= strlen(methods[i]) && !memcmp(in, methods[i], strlen(methods[i])))
                s->http1 = true;
    }
    if (s->err)
        return s->err;
    return n < 0 ? DV_EPROTO : 0;
}

bool dohsrv_was_http1(const struct dohsrv *s)
{
    return s->http1;
}

long dohsrv_send(struct dohsrv *s, const uint8_t **pout)
{
    ssize_t n = nghttp2_session_mem_send(s->h, pout);

    return n < 0 ? DV_EPROTO : (long)n;
}

int dohsrv_answer(struct dohsrv *s, int32_t sid, const uint8_t *msg, size_t len)
{
    struct dstream *d = nghttp2_session_get_stream_user_data(s->h, sid);
    long max_age = 0;

    if (!d || !d->waiting)
        return 0;
    d->waiting = false;
    s->waiting--;
    /* RFC 8484 §5.1: fresh no longer than the smallest TTL in the answer */
    if (len >= DNS_HDR_LEN && dns_msg_find_opt(msg, len, NULL) >= 0) {
        uint32_t t = dns_msg_min_ttl(msg, len);
        max_age = t == UINT32_MAX ? 0 : (long)t;
    }
    return respond(s, d, 200, msg, len, max_age);
}

int dohsrv_reply(struct dohsrv *s, int32_t sid, int status, const char *ctype,
                 const uint8_t *body, size_t len)
{
    struct dstream *d = nghttp2_session_get_stream_user_data(s->h, sid);

    if (!d || !d->waiting)
        return 0;
    d->waiting = false;
    s->waiting--;
    if (status < 100 || status > 599)
        status = 502;
    return respond_ct(s, d, status, ctype ? ctype : "application/octet-stream", body, len, -1);
}

void dohsrv_terminate(struct dohsrv *s)
{
    (void)nghttp2_session_terminate_session(s->h, NGHTTP2_NO_ERROR);
}

bool dohsrv_finished(const struct dohsrv *s)
{
    return !nghttp2_session_want_read(s->h) && !nghttp2_session_want_write(s->h);
}

size_t dohsrv_waiting(const struct dohsrv *s)
{
    return s->waiting;
}

#else /* !DV_HAVE_NGHTTP2 */

int dohsrv_new(const struct dohsrv_opts *o, const struct dohsrv_events *ev, void *arg,
               struct dohsrv **ps)
{
    *ps = NULL;
    return DV_ENOMEM;
}
void dohsrv_del(struct dohsrv *s) {}
int dohsrv_recv(struct dohsrv *s, const uint8_t *in, size_t len) { return DV_EPROTO; }
bool dohsrv_was_http1(const struct dohsrv *s) { return false; }
long dohsrv_send(struct dohsrv *s, const uint8_t **pout) { return DV_EPROTO; }
int dohsrv_answer(struct dohsrv *s, int32_t sid, const uint8_t *msg, size_t len) { return 0; }
int dohsrv_reply(struct dohsrv *s, int32_t sid, int status, const char *ctype,
                 const uint8_t *body, size_t len) { return 0; }
void dohsrv_terminate(struct dohsrv *s) {}
bool dohsrv_finished(const struct dohsrv *s) { return true; }
size_t dohsrv_waiting(const struct dohsrv *s) { return 0; }

#endif
