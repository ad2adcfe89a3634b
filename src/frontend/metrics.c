#include "frontend/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "frontend/accept.h"

enum {
    METRICS_MAX_CONNS = 8,
    METRICS_REQ_MAX = 4096,   /* a request line and a few headers */
    METRICS_TIMEOUT_S = 3,
};

struct mconn {
    struct mconn *next;
    struct metrics *m;
    ev_io io;
    ev_timer timer;
    int fd;
    bool responding;
    struct buf in, out;
};

struct metrics {
    ev_io io;
    struct fe_accept_guard guard;
    struct ev_loop *loop;
    int fd;
    metrics_render_fn fn;
    metrics_render_fn json;
    const unsigned char *page;
    size_t page_len;
    char *auth; /* the expected Authorization value, "Basic ..." */
    void *arg;
    struct mconn *conns;
    unsigned nconns;
};

int metrics_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n + 1))
        return DV_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static void mconn_close(struct mconn *c)
{
    struct metrics *m = c->m;

    ev_io_stop(m->loop, &c->io);
    ev_timer_stop(m->loop, &c->timer);
    close(c->fd);
    for (struct mconn **pp = &m->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (m->nconns-- == METRICS_MAX_CONNS && !fe_accept_guard_paused(&m->guard))
        ev_io_start(m->loop, &m->io);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void respond(struct mconn *c, const char *status, const char *type, struct buf *body)
{
    metrics_printf(&c->out,
                   "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                   "%sConnection: close\r\n\r\n",
                   status, type, body ? buf_used(body) : 0,
                   strncmp(status, "401", 3) ? ""
                                             : "WWW-Authenticate: Basic realm=\"dnsveil\", "
                                               "charset=\"UTF-8\"\r\n");
    if (body)
        buf_append(&c->out, buf_head(body), buf_used(body));
    c->responding = true;
    ev_io_stop(c->m->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(c->m->loop, &c->io);
}

static bool path_is(const struct metrics_req *r, const char *p)
{
    return r->path_len == strlen(p) && !memcmp(r->path, p, r->path_len);
}

/* Same length and bytes, in time that does not depend on where they differ. */
static bool secret_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char d = alen != blen;

    for (size_t i = 0; i < blen; i++)
        d |= (unsigned char)(i < alen ? a[i] : 0) ^ (unsigned char)b[i];
    return d == 0;
}

int metrics_parse_request(const char *req, size_t len, struct metrics_req *out)
{
    const char *end = req + len, *p;

    memset(out, 0, sizeof(*out));
    const char *eol = memchr(req, '\n', len);
    if (!eol)
        return DV_EMALFORMED;
    out->get = len >= 4 && !memcmp(req, "GET ", 4);
    p = out->get ? req + 4 : req;
    out->path = p;
    while (p < eol && *p != ' ' && *p != '?' && *p != '\r')
        p++;
    out->path_len = (size_t)(p - out->path);
    /* headers: "Name: value" lines until an empty one */
    for (const char *line = eol + 1; line < end;) {
        const char *next = memchr(line, '\n', (size_t)(end - line));
        const char *lend = next ? next : end;
        size_t n = (size_t)(lend - line);
        if (n && line[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        if (n > 14 && !strncasecmp(line, "Authorization:", 14)) {
            const char *v = line + 14;
            while (v < line + n && (*v == ' ' || *v == '\t'))
                v++;
            out->auth = v;
            out->auth_len = (size_t)(line + n - v);
        }
        if (!next)
            break;
        line = next + 1;
    }
    return 0;
}

/* GET /metrics: the counters; with the page on, / is the page and
 * /status.json its data; without it, / is the counters as it always was. */
static void handle_request(struct mconn *c)
{
    struct metrics *m = c->m;
    struct metrics_req r;
    struct buf body;

    if (metrics_parse_request((const char *)buf_head(&c->in), buf_used(&c->in), &r) || !r.get) {
        respond(c, "405 Method Not Allowed", "text/plain", NULL);
        return;
    }
    if (m->auth && !(r.auth && secret_eq(r.auth, r.auth_len, m->auth))) {
        respond(c, "401 Unauthorized", "text/plain", NULL);
        return;
    }
    buf_init(&body);
    if (path_is(&r, "/metrics") || (!m->json && path_is(&r, "/"))) {
        m->fn(m->arg, &body);
        respond(c, "200 OK", "text/plain; version=0.0.4", &body);
    } else if (m->json && path_is(&r, "/status.json")) {
        m->json(m->arg, &body);
        respond(c, "200 OK", "application/json", &body);
    } else if (m->json && path_is(&r, "/")) {
        buf_append(&body, m->page, m->page_len);
        respond(c, "200 OK", "text/html; charset=utf-8", &body);
    } else {
        respond(c, "404 Not Found", "text/plain", NULL);
    }
    buf_free(&body);
}

void metrics_set_page(struct metrics *m, metrics_render_fn json, const unsigned char *page,
                      size_t len)
{
    m->json = json;
    m->page = page;
    m->page_len = len;
}

int metrics_set_auth(struct metrics *m, const char *user, const char *password)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *plain = NULL, *enc;
    size_t n, k = 0;

    free(m->auth);
    m->auth = NULL;
    if (!user)
        return 0;
    if (asprintf(&plain, "%s:%s", user, password ? password : "") < 0)
        return DV_ENOMEM;
    n = strlen(plain);
    enc = malloc(6 + (n + 2) / 3 * 4 + 1);
    if (!enc) {
        free(plain);
        return DV_ENOMEM;
    }
    memcpy(enc, "Basic ", 6);
    k = 6;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)plain[i + 2];
        enc[k++] = b64[v >> 18 & 63];
        enc[k++] = b64[v >> 12 & 63];
        enc[k++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        enc[k++] = i + 2 < n ? b64[v & 63] : '=';
    }
    enc[k] = 0;
    explicit_bzero(plain, n);
    free(plain);
    m->auth = enc;
    return 0;
}

static void mconn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mconn *c = w->data;

    if (c->responding) {
        ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n > 0)
            buf_consume(&c->out, (size_t)n);
        if (n <= 0 || buf_used(&c->out) == 0)
            mconn_close(c);
        return;
    }
    if (buf_reserve(&c->in, 1024)) {
        mconn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        mconn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = 0;
    if (strstr((const char *)buf_head(&c->in), "\r\n\r\n") ||
        strstr((const char *)buf_head(&c->in), "\n\n"))
        handle_request(c);
    else if (buf_used(&c->in) > METRICS_REQ_MAX)
        respond(c, "431 Request Header Fields Too Large", "text/plain", NULL);
}

static void mconn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    mconn_close(w->data);
}

static void metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct metrics *m = w->data;

    while (m->nconns < METRICS_MAX_CONNS) {
        int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            fe_accept_guard_failed(&m->guard, errno);
            return;
        }
        struct mconn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->m = m;
        c->fd = fd;
        buf_init(&c->in);
        buf_init(&c->out);
        ev_io_init(&c->io, mconn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->timer, mconn_timer_cb, METRICS_TIMEOUT_S, 0.);
        c->timer.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
        c->next = m->conns;
        m->conns = c;
        m->nconns++;
    }
    /* at the cap: leave further clients in the backlog until one closes */
    ev_io_stop(loop, &m->io);
}

static void metrics_resume(void *arg)
{
    struct metrics *m = arg;

    if (m->nconns < METRICS_MAX_CONNS)
        ev_io_start(m->loop, &m->io);
}

struct metrics *metrics_new(struct ev_loop *loop, const struct net_addr *a,
                            metrics_render_fn fn, void *arg)
{
    int fd = net_listen(a, SOCK_STREAM, 16);
    struct metrics *m;

    if (fd < 0)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    m->loop = loop;
    m->fd = fd;
    m->fn = fn;
    m->arg = arg;
    ev_io_init(&m->io, metrics_accept_cb, fd, EV_READ);
    m->io.data = m;
    fe_accept_guard_init(&m->guard, loop, &m->io, "metrics", metrics_resume, m);
    ev_io_start(loop, &m->io);
    return m;
}

void metrics_del(struct metrics *m)
{
    if (!m)
        return;
    while (m->conns)
        mconn_close(m->conns);
    ev_io_stop(m->loop, &m->io);
    fe_accept_guard_stop(&m->guard);
    close(m->fd);
    free(m->auth);
    free(m);
}
