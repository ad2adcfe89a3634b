#include "resolve/qlog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"

enum {
    QLOG_BUF = 64 * 1024,
    QLOG_LINE = 8192,
};

struct qlog {
    struct ev_loop *loop;
    char *path; /* NULL: syslog */
    bool text;
    int fd;
    ev_timer flush;
    size_t used;
    char buf[QLOG_BUF];
};

uint64_t qlog_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static void flush(struct qlog *l)
{
    size_t off = 0;

    while (off < l->used) {
        ssize_t n = write(l->fd, l->buf + off, l->used - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* a full disk loses log lines, never queries */
            log_warn("query log %s: %s", l->path, strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    l->used = 0;
}

static void flush_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    flush(w->data);
}

struct qlog *qlog_new(struct ev_loop *loop, const struct qlog_opts *o)
{
    struct qlog *l = calloc(1, sizeof(*l));

    if (!l)
        return NULL;
    l->loop = loop;
    l->text = o->text;
    l->fd = -1;
    if (o->file) {
        if (!(l->path = strdup(o->file)) || (l->fd = open_file(o->file)) < 0) {
            int e = errno;
            free(l->path);
            free(l);
            errno = e;
            return NULL;
        }
    } else {
        openlog("dnsveil", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    }
    ev_init(&l->flush, flush_cb);
    l->flush.data = l;
    return l;
}

void qlog_del(struct qlog *l)
{
    if (!l)
        return;
    if (l->fd >= 0) {
        flush(l);
        close(l->fd);
    }
    ev_timer_stop(l->loop, &l->flush);
    free(l->path);
    free(l);
}

int qlog_reopen(struct qlog *l)
{
    int fd;

    if (l->fd < 0)
        return 0;
    flush(l);
    fd = open_file(l->path);
    if (fd < 0) {
        log_err("query log %s: cannot reopen: %s; still writing the old file", l->path,
                strerror(errno));
        return DV_EIO;
    }
    close(l->fd);
    l->fd = fd;
    return 0;
}

/* ---- formatting ------------------------------------------------------------ */

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    size_t room = o->len + 1 < o->cap ? o->cap - o->len - 1 : 0;

    if (n > room)
        n = room; /* truncated: a line is never longer than its buffer */
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->len + 1 >= o->cap)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < o->cap - o->len ? (size_t)n : o->cap - o->len - 1;
}

/* A string value: quoted and escaped for JSON; for text, spaces and
 * control bytes escaped so a line stays one record of space-separated
 * fields. Names are already printable (dns_name_to_str escapes the rest). */
static void put_str(struct out *o, bool text, const char *s)
{
    if (!text)
        put(o, "\"", 1);
    while (*s) {
        size_t run = 0;
        /* copy runs of bytes that need no escape at once */
        while (s[run] && (unsigned char)s[run] > (text ? 0x20 : 0x1f) && s[run] != 0x7f &&
               (text || (s[run] != '"' && s[run] != '\\')))
            run++;
        put(o, s, run);
        s += run;
        if (!*s)
            break;
        unsigned char ch = (unsigned char)*s++;
        if (!text && (ch == '"' || ch == '\\')) {
            char esc[2] = {'\\', (char)ch};
            put(o, esc, 2);
        } else {
            putf(o, text ? "\\%03u" : "\\u%04x", ch); /* rare: names arrive escaped */
        }
    }
    if (!text)
        put(o, "\"", 1);
}

static void key(struct out *o, bool text, const char *k);

static void field_str(struct out *o, bool text, const char *k, const char *v)
{
    if (!v)
        return;
    key(o, text, k);
    put_str(o, text, v);
}

const char *qlog_rcode_name(int rcode, char *buf, size_t cap)
{
    static const char *const names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                        "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                        "NXRRSET", "NOTAUTH", "NOTZONE"};
    if (rcode >= 0 && (size_t)rcode < sizeof(names) / sizeof(names[0]))
        return names[rcode];
    snprintf(buf, cap, "RCODE%d", rcode);
    return buf;
}

const char *qlog_type_name(uint16_t t, char *buf, size_t cap)
{
    static const struct {
        uint16_t t;
        const char *n;
    } names[] = {{1, "A"},     {2, "NS"},    {5, "CNAME"}, {6, "SOA"},  {12, "PTR"},
                 {15, "MX"},   {16, "TXT"},  {28, "AAAA"}, {33, "SRV"}, {43, "DS"},
                 {48, "DNSKEY"}, {64, "SVCB"}, {65, "HTTPS"}, {255, "ANY"}, {257, "CAA"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == t)
            return names[i].n;
    snprintf(buf, cap, "TYPE%u", t);
    return buf;
}

static void put_u64(struct out *o, uint64_t v)
{
    char b[24];
    size_t i = sizeof(b);

    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, b + i, sizeof(b) - i);
}

static void put_cstr(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* A numeric field: " key=" (text) or ",\"key\":" (JSON). */
static void key(struct out *o, bool text, const char *k)
{
    put(o, text ? " " : ",\"", text ? 1 : 2);
    put_cstr(o, k);
    put(o, text ? "=" : "\":", text ? 1 : 2);
}

static void field_u64(struct out *o, bool text, const char *k, uint64_t v)
{
    key(o, text, k);
    put_u64(o, v);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ"; the part before the milliseconds changes once
 * a second, so it is formatted once a second. */
static void put_time(struct out *o, uint64_t realtime_ms)
{
    static uint64_t cached_sec = UINT64_MAX; /* one loop thread */
    static char cached[24];
    static size_t cached_len;
    uint64_t sec = realtime_ms / 1000;
    unsigned ms = (unsigned)(realtime_ms % 1000);
    char frac[6] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z', 0};

    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    put(o, cached, cached_len);
    put(o, frac, 5);
}

static void put_addr(struct out *o, const struct net_addr *a)
{
    char host[INET6_ADDRSTRLEN];
    const void *ip;
    uint16_t port;

    if (a->ss.ss_family == AF_INET) {
        ip = &((const struct sockaddr_in *)&a->ss)->sin_addr;
        port = ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    } else if (a->ss.ss_family == AF_INET6) {
        ip = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        port = ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    } else {
        put(o, "?", 1);
        return;
    }
    if (a->ss.ss_family == AF_INET) {
        /* inet_ntop formats IPv4 through sprintf: a third of a line's cost */
        const uint8_t *b = ip;
        for (int i = 0; i < 4; i++) {
            put_u64(o, b[i]);
            put(o, ".", i < 3);
        }
    } else {
        inet_ntop(AF_INET6, ip, host, sizeof(host));
        put(o, "[", 1);
        put_cstr(o, host);
    }
    put(o, a->ss.ss_family == AF_INET6 ? "]:" : ":", a->ss.ss_family == AF_INET6 ? 2 : 1);
    put_u64(o, port);
}

size_t qlog_format(const struct qlog_entry *e, bool text, uint64_t realtime_ms, char *buf,
                   size_t cap)
{
    struct out o = {.p = buf, .cap = cap};
    char name[DNS_NAME_MAX * 4 + 1], tb[16], rb[16];

    if (!cap)
        return 0;
    dns_name_to_str(e->name, e->name_len, name, sizeof(name));
    put_cstr(&o, text ? "" : "{\"time\":\"");
    put_time(&o, realtime_ms);
    put_cstr(&o, text ? " " : "\",\"client\":\"");
    put_addr(&o, e->client);
    put_cstr(&o, text ? (e->tcp ? " tcp" : " udp")
                      : (e->tcp ? "\",\"proto\":\"tcp\"" : "\",\"proto\":\"udp\""));
    if (e->app_known) {
        field_u64(&o, text, "uid", e->uid);
        field_str(&o, text, "cgroup", e->cgroup);
        field_str(&o, text, "comm", e->comm);
    }
    field_str(&o, text, "name", name);
    field_str(&o, text, "type", qlog_type_name(e->qtype, tb, sizeof(tb)));
    if (e->rule)
        field_u64(&o, text, "rule", (uint64_t)e->rule);
    field_str(&o, text, "group", e->group);
    field_str(&o, text, "upstream", e->upstream);
    field_str(&o, text, "transport", e->transport);
    field_str(&o, text, "rcode", qlog_rcode_name(e->rcode, rb, sizeof(rb)));
    key(&o, text, "latency_ms");
    put_u64(&o, e->latency_us / 1000);
    char frac[4] = {'.', (char)('0' + e->latency_us / 100 % 10),
                    (char)('0' + e->latency_us / 10 % 10), (char)('0' + e->latency_us % 10)};
    put(&o, frac, 4);
    field_str(&o, text, "source", e->source);
    if (!text)
        put(&o, "}", 1);
    o.p[o.len] = 0;
    return o.len;
}

void qlog_write(struct qlog *l, const struct qlog_entry *e)
{
    char line[QLOG_LINE];
    struct timespec now;
    uint64_t ms;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &now);
    ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
    if (l->fd < 0) {
        qlog_format(e, l->text, ms, line, sizeof(line));
        syslog(LOG_INFO, "%s", line);
        return;
    }
    /* formatted in place: room for the longest line first */
    if (sizeof(l->buf) - l->used < QLOG_LINE + 1)
        flush(l);
    n = qlog_format(e, l->text, ms, l->buf + l->used, QLOG_LINE);
    l->buf[l->used + n] = '\n';
    l->used += n + 1;
    if (!ev_is_active(&l->flush)) {
        ev_timer_set(&l->flush, 0.5, 0.);
        ev_timer_start(l->loop, &l->flush);
    }
}
