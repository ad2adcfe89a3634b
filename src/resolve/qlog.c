#include "resolve/qlog.h"

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
    if (o->len + n >= o->cap)
        n = o->len + 1 < o->cap ? o->cap - o->len - 1 : 0;
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
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!text && (ch == '"' || ch == '\\')) {
            char esc[2] = {'\\', (char)ch};
            put(o, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f || (text && ch == ' ')) {
            putf(o, text ? "\\%03u" : "\\u%04x", ch);
        } else {
            put(o, (const char *)&ch, 1);
        }
    }
    if (!text)
        put(o, "\"", 1);
}

static void field_str(struct out *o, bool text, const char *key, const char *v)
{
    if (!v)
        return;
    putf(o, text ? " %s=" : ",\"%s\":", key);
    put_str(o, text, v);
}

static const char *rcode_name(int rcode, char *buf, size_t cap)
{
    static const char *const names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                        "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                        "NXRRSET", "NOTAUTH", "NOTZONE"};
    if (rcode >= 0 && (size_t)rcode < sizeof(names) / sizeof(names[0]))
        return names[rcode];
    snprintf(buf, cap, "RCODE%d", rcode);
    return buf;
}

static const char *type_name(uint16_t t, char *buf, size_t cap)
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

size_t qlog_format(const struct qlog_entry *e, bool text, uint64_t realtime_ms, char *buf,
                   size_t cap)
{
    struct out o = {.p = buf, .cap = cap};
    char ts[40], name[DNS_NAME_MAX * 4 + 1], client[NET_ADDRSTRLEN], tb[16], rb[16];
    time_t secs = (time_t)(realtime_ms / 1000);
    struct tm tm;
    size_t n;

    if (!cap)
        return 0;
    gmtime_r(&secs, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03uZ", (unsigned)(realtime_ms % 1000));
    dns_name_to_str(e->name, e->name_len, name, sizeof(name));
    net_addr_str(e->client, client, sizeof(client));
    if (text)
        putf(&o, "%s %s %s", ts, client, e->tcp ? "tcp" : "udp");
    else
        putf(&o, "{\"time\":\"%s\",\"client\":\"%s\",\"proto\":\"%s\"", ts, client,
             e->tcp ? "tcp" : "udp");
    if (e->app_known) {
        putf(&o, text ? " uid=%u" : ",\"uid\":%u", e->uid);
        field_str(&o, text, "cgroup", e->cgroup);
        field_str(&o, text, "comm", e->comm);
    }
    field_str(&o, text, "name", name);
    field_str(&o, text, "type", type_name(e->qtype, tb, sizeof(tb)));
    if (e->rule)
        putf(&o, text ? " rule=%d" : ",\"rule\":%d", e->rule);
    field_str(&o, text, "group", e->group);
    field_str(&o, text, "upstream", e->upstream);
    field_str(&o, text, "transport", e->transport);
    field_str(&o, text, "rcode", rcode_name(e->rcode, rb, sizeof(rb)));
    putf(&o, text ? " latency_ms=%.3f" : ",\"latency_ms\":%.3f", (double)e->latency_us / 1000.0);
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
    size_t n;

    clock_gettime(CLOCK_REALTIME, &now);
    n = qlog_format(e, l->text, (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u,
                    line, sizeof(line) - 1);
    if (l->fd < 0) {
        syslog(LOG_INFO, "%s", line);
        return;
    }
    line[n++] = '\n';
    if (l->used + n > sizeof(l->buf))
        flush(l);
    memcpy(l->buf + l->used, line, n);
    l->used += n;
    if (!ev_is_active(&l->flush)) {
        ev_timer_set(&l->flush, 0.5, 0.);
        ev_timer_start(l->loop, &l->flush);
    }
}
