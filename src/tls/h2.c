#include "tls/h2.h"

#include "core/err.h"

#ifdef DV_HAVE_NGHTTP2

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "core/log.h"

enum {
    H2_STREAMS_ASSUMED = 100, /* until the server's SETTINGS arrive (RFC 9113 6.5.2) */
    H2_STREAM_WINDOW = 1 << 20,
    H2_CONN_WINDOW = 16 << 20,
};

struct h2 {
    nghttp2_session *ng;
    const struct h2_events *ev;
    void *arg;
    char *authority;
    char *name;
    struct list reqs;           /* requests in the session */
    size_t streams;             /* submitted and not yet closed, cancelled ones too */
    bool draining;
};

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *option;

/* ------------------------------------------------------------ requests */

/* r leaves the session; the stream, if open, is no longer tied to it. */
static void req_leave(struct h2 *s, struct h2_req *r)
{
    if (r->sid > 0)
        nghttp2_session_set_stream_user_data(s->ng, r->sid, NULL);
    list_unlink(&s->reqs, &r->link);
}

static void req_done(struct h2 *s, struct h2_req *r, int rc)
{
    req_leave(s, r);
    s->ev->done(s->arg, r, rc);
}

static void req_refused(struct h2 *s, struct h2_req *r)
{
    req_leave(s, r);
    r->sid = -1;
    s->ev->refused(s->arg, r);
}

/* Media type, parameters ignored, case-insensitive (RFC 9110 8.3.1). */
static bool ctype_is(const uint8_t *v, size_t len, const char *want)
{
    size_t n = 0;

    while (n < len && v[n] != ';' && v[n] != ' ' && v[n] != '\t')
        n++;
    return n == strlen(want) && strncasecmp((const char *)v, want, n) == 0;
}

/* max-age=N from a Cache-Control value (RFC 9111 5.2.2.1); -1 if absent.
 * no-store and no-cache read as 0: keep nothing. */
static int64_t cache_max_age(const uint8_t *v, size_t len)
{
    int64_t age = -1;
    size_t i = 0;

    while (i < len) {
        size_t start, end;
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        start = i;
        while (i < len && v[i] != ',')
            i++;
        end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start >= 8 && strncasecmp((const char *)v + start, "max-age=", 8) == 0) {
            int64_t n = 0;
            size_t j = start + 8;
            if (j < end && v[j] == '"')
                j++;
            if (j == end || v[j] < '0' || v[j] > '9')
                continue;
            for (; j < end && v[j] >= '0' && v[j] <= '9'; j++)
                if (n < (int64_t)1 << 40)
                    n = n * 10 + (v[j] - '0');
            age = n;
        } else if ((end - start == 8 && strncasecmp((const char *)v + start, "no-store", 8) == 0) ||
                   (end - start == 8 && strncasecmp((const char *)v + start, "no-cache", 8) == 0)) {
            return 0;
        }
    }
    return age;
}

/* ------------------------------------------------------------ callbacks */

static int on_header_cb(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    struct h2_req *r;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_RESPONSE)
        return 0;
    r = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!r)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        /* nghttp2 checked it is 3 digits */
        r->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        r->ctype_ok = !r->ctype || ctype_is(value, valuelen, r->ctype);
    } else if (namelen == 13 && memcmp(name, "cache-control", 13) == 0) {
        r->max_age = cache_max_age(value, valuelen);
    }
    return 0;
}

static int on_data_cb(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *ud)
{
    struct h2 *s = ud;
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, sid);

    if (!r)
        return 0;
    if (buf_used(&r->resp) + len > H2_BODY_MAX) {
        log_warn("upstream %s: HTTP/2 answer longer than %d bytes", s->name, H2_BODY_MAX);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
        req_done(s, r, DV_EPROTO);
        return 0;
    }
    if (buf_append(&r->resp, data, len)) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
        req_done(s, r, DV_ENOMEM);
    }
    return 0;
}

static int on_frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2 *s = ud;
    struct h2_req *r;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        r = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (r)
            req_done(s, r, 0);
        break;
    case NGHTTP2_GOAWAY:
        /* nghttp2 closes our streams above last_stream_id as refused, which
         * reports them so; the others may still complete */
        s->draining = true;
        log_debug("upstream %s: HTTP/2 GOAWAY (last stream %d, error %u)", s->name,
                  frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            log_debug("upstream %s: HTTP/2 server allows %u streams", s->name,
                      nghttp2_session_get_remote_settings(
                          ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
        break;
    default:
        break;
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *ud)
{
    struct h2 *s = ud;
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, sid);

    if (s->streams)
        s->streams--;
    if (!r)
        return 0;
    if (error_code == NGHTTP2_REFUSED_STREAM) {
        /* not processed by the server (RFC 9113 8.7): safe elsewhere */
        req_refused(s, r);
        return 0;
    }
    log_debug("upstream %s: HTTP/2 stream %d reset (error %u)", s->name, sid, error_code);
    req_done(s, r, DV_EPROTO);
    return 0;
}

/* A request the session could not start (GOAWAY arrived, or the server
 * lowered its stream limit) never reached the server. */
static int on_frame_not_send_cb(nghttp2_session *ng, const nghttp2_frame *frame, int err,
                                void *ud)
{
    struct h2 *s = ud;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (s->streams)
        s->streams--;
    for (struct list_link *e = s->reqs.head; e; e = e->next) {
        struct h2_req *r = list_elem(e, struct h2_req, link);
        if (r->sid == frame->hd.stream_id) {
            req_refused(s, r);
            break;
        }
    }
    return 0;
}

static ssize_t body_read_cb(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, sid);
    size_t n;

    if (!r)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cancelled: reset the stream */
    n = r->len - r->off;
    if (n > length)
        n = length;
    memcpy(buf, r->body + r->off, n);
    r->off += n;
    if (r->off == r->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int global_init(void)
{
    if (callbacks)
        return 0;
    if (nghttp2_session_callbacks_new(&callbacks))
        return DV_ENOMEM;
    if (nghttp2_option_new(&option)) {
        nghttp2_session_callbacks_del(callbacks);
        callbacks = NULL;
        return DV_ENOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send_cb);
    nghttp2_option_set_peer_max_concurrent_streams(option, H2_STREAMS_ASSUMED);
    return 0;
}

/* ------------------------------------------------------------ session */

int h2_new(const struct h2_events *ev, void *arg, const char *authority, const char *name,
           struct h2 **ps)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    struct h2 *s;

    if (global_init() || !(s = calloc(1, sizeof(*s))))
        return DV_ENOMEM;
    s->ev = ev;
    s->arg = arg;
    s->authority = strdup(authority);
    s->name = strdup(name);
    if (!s->authority || !s->name || nghttp2_session_client_new2(&s->ng, callbacks, s, option))
        goto fail;
    /* a 16 KB answer must never wait for a WINDOW_UPDATE round trip */
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) ||
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW))
        goto fail;
    *ps = s;
    return 0;
fail:
    h2_del(s);
    return DV_ENOMEM;
}

void h2_del(struct h2 *s)
{
    if (!s)
        return;
    if (s->ng)
        nghttp2_session_del(s->ng);
    free(s->authority);
    free(s->name);
    free(s);
}

#define NV(n, v, vlen) \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

/* n in decimal into out (at least 20 bytes); returns the length. snprintf's
 * format machinery was a tenth of the HTTP/2 layer's cost per request. */
static int fmt_size(char *out, size_t n)
{
    char tmp[20];
    int k = 0;

    do
        tmp[k++] = (char)('0' + n % 10);
    while ((n /= 10) != 0 && k < (int)sizeof(tmp));
    for (int i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    return k;
}

int h2_submit(struct h2 *s, struct h2_req *r)
{
    nghttp2_data_provider prd = {.source = {.ptr = r}, .read_callback = body_read_cb};
    const char *ctype = r->ctype ? r->ctype : "";
    size_t clen = r->ctype ? strlen(r->ctype) : 0;
    char len[24];
    int ln = fmt_size(len, r->len);
    nghttp2_nv nva[] = {
        NV(":method", r->body ? "POST" : "GET", r->body ? 4 : 3),
        NV(":scheme", "https", 5),
        NV(":authority", s->authority, strlen(s->authority)),
        NV(":path", r->path, strlen(r->path)),
        NV("accept", ctype, clen),
        NV("content-type", ctype, clen),
        NV("content-length", len, (size_t)ln),
    };
    /* GET: no body headers; no media type asked: no accept either */
    size_t n = r->body ? 7 : 5;
    int32_t sid;

    if (s->draining)
        return DV_EPROTO;
    if (!r->ctype) {
        nva[4] = nva[6]; /* content-length only, for a POST */
        n = r->body ? 5 : 4;
    }
    r->status = 0;
    r->ctype_ok = !r->ctype;
    r->max_age = -1;
    r->off = 0;
    r->resp.off = r->resp.len = 0;
    /* nghttp2 copies the header block */
    sid = nghttp2_submit_request(s->ng, NULL, nva, n, r->body ? &prd : NULL, r);
    if (sid < 0) {
        if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
            s->draining = true;
        log_debug("upstream %s: HTTP/2 submit: %s", s->name, nghttp2_strerror(sid));
        return sid == NGHTTP2_ERR_NOMEM ? DV_ENOMEM : DV_EPROTO;
    }
    r->sid = sid;
    list_push(&s->reqs, &r->link);
    s->streams++;
    /* a fresh connection would be better long before IDs run out */
    if (nghttp2_session_get_next_stream_id(s->ng) > (1u << 31) - 1000)
        s->draining = true;
    return 0;
}

void h2_cancel(struct h2 *s, struct h2_req *r)
{
    int32_t sid = r->sid;

    req_leave(s, r);
    r->sid = -1;
    if (sid > 0)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
}

int h2_recv(struct h2 *s, const uint8_t *in, size_t len)
{
    ssize_t m = nghttp2_session_mem_recv(s->ng, in, len);

    if (m < 0) {
        log_warn("upstream %s: HTTP/2 error from server: %s", s->name, nghttp2_strerror((int)m));
        return DV_EPROTO;
    }
    return 0;
}

long h2_send(struct h2 *s, const uint8_t **pout)
{
    ssize_t n = nghttp2_session_mem_send(s->ng, pout);

    if (n < 0) {
        log_debug("upstream %s: HTTP/2: %s", s->name, nghttp2_strerror((int)n));
        return DV_EPROTO;
    }
    return (long)n;
}

void h2_abort(struct h2 *s, int rc)
{
    s->draining = true;
    while (s->reqs.head) {
        struct h2_req *r = list_elem(s->reqs.head, struct h2_req, link);
        /* a stream the server never saw goes elsewhere; nghttp2 has not
         * opened one for a request still waiting for its turn */
        nghttp2_stream *st = nghttp2_session_find_stream(s->ng, r->sid);
        if (!st || nghttp2_stream_get_state(st) == NGHTTP2_STREAM_STATE_IDLE)
            req_refused(s, r);
        else
            req_done(s, r, rc);
    }
}

void h2_release(struct h2 *s)
{
    s->draining = true;
    while (s->reqs.head)
        req_refused(s, list_elem(s->reqs.head, struct h2_req, link));
}

void h2_terminate(struct h2 *s)
{
    s->draining = true;
    nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
}

int h2_ping(struct h2 *s)
{
    return nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL) ? DV_ENOMEM : 0;
}

size_t h2_live(const struct h2 *s)
{
    return s->reqs.n;
}

bool h2_has_room(const struct h2 *s, uint32_t cap)
{
    uint32_t max =
        nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

    if (max > cap)
        max = cap;
    return !s->draining && s->streams < max;
}

bool h2_draining(const struct h2 *s)
{
    return s->draining;
}

bool h2_finished(const struct h2 *s)
{
    return !nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng);
}

bool h2_want_write(const struct h2 *s)
{
    return nghttp2_session_want_write(s->ng);
}

#else /* no nghttp2 */

int h2_new(const struct h2_events *ev, void *arg, const char *authority, const char *name,
           struct h2 **ps)
{
    return DV_ENOMEM;
}

void h2_del(struct h2 *s) {}
int h2_submit(struct h2 *s, struct h2_req *r) { return DV_EPROTO; }
void h2_cancel(struct h2 *s, struct h2_req *r) {}
int h2_recv(struct h2 *s, const uint8_t *in, size_t len) { return DV_EPROTO; }
long h2_send(struct h2 *s, const uint8_t **pout) { return DV_EPROTO; }
void h2_abort(struct h2 *s, int rc) {}
void h2_release(struct h2 *s) {}
void h2_terminate(struct h2 *s) {}
int h2_ping(struct h2 *s) { return DV_ENOMEM; }
size_t h2_live(const struct h2 *s) { return 0; }
bool h2_has_room(const struct h2 *s, uint32_t cap) { return false; }
bool h2_draining(const struct h2 *s) { return true; }
bool h2_finished(const struct h2 *s) { return true; }
bool h2_want_write(const struct h2 *s) { return false; }

#endif
