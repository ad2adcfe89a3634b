/* qlog — the query log: one line per answered query (JSON lines or text)
 * to a file or to syslog. Off unless configured; the query engine checks
 * one pointer on its hot path when it is off. Lines are buffered and
 * written at most half a second late, and at once when the buffer fills;
 * the file is reopened on SIGHUP so logrotate can move it away. */
#ifndef DV_RESOLVE_QLOG_H
#define DV_RESOLVE_QLOG_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

struct qlog;

struct qlog_opts {
    const char *file; /* NULL: syslog */
    bool text;        /* false: JSON lines */
};

/* What one query came to. Strings may be NULL (not known / not applicable). */
struct qlog_entry {
    const struct net_addr *client;
    bool tcp;
    const uint8_t *name; /* wire form, as the client sent it */
    size_t name_len;
    uint16_t qtype;
    bool app_known;      /* the sender's socket was looked up (a rule needed it) */
    uint32_t uid;
    const char *cgroup, *comm;
    int rule;            /* the matching rule's line in the file; 0 = none */
    const char *group;   /* the group forwarded to */
    const char *upstream, *transport; /* who answered */
    int rcode;
    uint64_t latency_us;
    const char *source;  /* "local", "cache", "stale", "upstream", "error" */
};

/* NULL with errno set when the file cannot be opened. */
struct qlog *qlog_new(struct ev_loop *loop, const struct qlog_opts *o);
/* Writes what is buffered, then frees. */
void qlog_del(struct qlog *l);
/* Writes what is buffered and opens the file again (after logrotate moved
 * it). 0 or DV_EIO (the old file is kept). */
int qlog_reopen(struct qlog *l);
void qlog_write(struct qlog *l, const struct qlog_entry *e);

/* The mnemonics of a type ("AAAA", else "TYPE65280") and an rcode
 * ("NXDOMAIN", else "RCODE23"); buf holds the fallback. */
const char *qlog_type_name(uint16_t t, char *buf, size_t cap);
const char *qlog_rcode_name(int rcode, char *buf, size_t cap);

/* Microseconds on the monotonic clock, for latencies. */
uint64_t qlog_now_us(void);

/* Formats one entry without its newline (exposed for tests). Returns the
 * length, truncated to cap - 1. */
size_t qlog_format(const struct qlog_entry *e, bool text, uint64_t realtime_ms, char *out,
                   size_t cap);

#endif
