/* netmon — network change and sleep detection (see netmon.h). */
#include "core/netmon.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <linux/rtnetlink.h>

#include "core/log.h"
#include "core/net.h"
#include "core/nl.h"

/* ---- the pure parts ------------------------------------------------------ */

bool netmon_clock_slept(struct netmon_clock *c, uint64_t mono_ms, uint64_t boot_ms,
                        uint64_t threshold_ms)
{
    int64_t gap = (int64_t)(boot_ms - mono_ms);
    bool slept = c->init && gap - c->gap_ms > (int64_t)threshold_ms;

    c->gap_ms = gap;
    c->init = true;
    return slept;
}

uint64_t netmon_debounce_note(struct netmon_debounce *d, unsigned why, uint64_t now)
{
    if (!d->pending) {
        d->pending = true;
        d->first = now;
        d->why = 0;
    }
    d->last = now;
    d->why |= why;
    uint64_t at = d->last + NETMON_QUIET_MS;
    return at < d->first + NETMON_MAX_MS ? at : d->first + NETMON_MAX_MS;
}

unsigned netmon_debounce_take(struct netmon_debounce *d)
{
    unsigned why = d->why;

    memset(d, 0, sizeof(*d));
    return why;
}

const char *netmon_why_str(unsigned why, char *out, size_t cap)
{
    static const char *const names[] = {"link", "address", "route", "sleep", "control"};
    size_t n = 0;

    out[0] = 0;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(why & 1u << i) || n >= cap)
            continue;
        int w = snprintf(out + n, cap - n, "%s%s", n ? "," : "", names[i]);
        n += w > 0 ? (size_t)w : 0;
    }
    return out;
}

/* ---- what the kernel told us so far ------------------------------------- */

enum { SEEN_LINK = 1, SEEN_ADDR, SEEN_ROUTE };
enum { NETMON_SEEN_MAX = 256, NETMON_BUF = 32768 };

/* One link (ifindex, state = its up/running flags), local address or
 * default route (gateway, output interface, metric, preferred source). */
struct seen {
    uint8_t kind, family;
    int32_t ifindex;
    uint32_t metric;
    uint32_t state;
    uint8_t addr[16], src[16];
};

struct netmon {
    struct ev_loop *loop;
    netmon_fn fn;
    void *arg;
    struct nl_sock nl;
    ev_io io;
    ev_timer fire;    /* the end of a burst */
    ev_timer clock;   /* the sleep check */
    struct netmon_debounce db;
    struct netmon_clock ck;
    struct seen seen[NETMON_SEEN_MAX];
    size_t nseen;
    bool seeding;     /* reading the dump at start: nothing is news */
};

static bool seen_same(const struct seen *a, const struct seen *b)
{
    return a->kind == b->kind && a->family == b->family && a->ifindex == b->ifindex &&
           a->metric == b->metric && !memcmp(a->addr, b->addr, sizeof(a->addr)) &&
           !memcmp(a->src, b->src, sizeof(a->src));
}

/* Records k as present or gone. True when that is news: a new entry, a link
 * whose state changed, an entry removed. A full table makes everything news. */
static bool seen_set(struct netmon *m, const struct seen *k, bool present)
{
    for (size_t i = 0; i < m->nseen; i++) {
        if (!seen_same(&m->seen[i], k))
            continue;
        if (!present) {
            m->seen[i] = m->seen[--m->nseen];
            return true;
        }
        bool changed = m->seen[i].state != k->state;
        m->seen[i].state = k->state;
        return changed;
    }
    if (!present)
        return false;
    if (m->nseen == NETMON_SEEN_MAX)
        return true;
    m->seen[m->nseen++] = *k;
    return true;
}

static void note(struct netmon *m, unsigned why);

static void attr_copy(uint8_t *dst, const struct nlattr *a)
{
    size_t n = a ? nl_attr_len(a) : 0;

    if (n > 16)
        n = 16;
    if (n)
        memcpy(dst, nl_attr_data(a), n);
}

static uint32_t attr_u32(const struct nlattr *a, uint32_t dflt)
{
    uint32_t v;

    if (!a || nl_attr_len(a) < sizeof(v))
        return dflt;
    memcpy(&v, nl_attr_data(a), sizeof(v));
    return v;
}

static void on_link(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct ifinfomsg *ifi = nl_msg_payload(nlh, sizeof(*ifi));
    struct seen k = {.kind = SEEN_LINK};

    if (!ifi || ifi->ifi_flags & IFF_LOOPBACK)
        return;
    k.ifindex = ifi->ifi_index;
    k.state = ifi->ifi_flags & (IFF_UP | IFF_RUNNING);
    if (seen_set(m, &k, nlh->nlmsg_type == RTM_NEWLINK))
        note(m, NETMON_LINK);
}

static void on_addr(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct ifaddrmsg *ifa = nl_msg_payload(nlh, sizeof(*ifa));
    const struct nlattr *a[IFA_MAX + 1];
    struct seen k = {.kind = SEEN_ADDR};
    uint32_t flags;

    if (!ifa || ifa->ifa_scope == RT_SCOPE_HOST)
        return;
    /* a malformed attribute ends the list: those before it still count */
    nl_attr_parse(nlh, sizeof(*ifa), a, IFA_MAX);
    flags = attr_u32(a[IFA_FLAGS], ifa->ifa_flags);
    k.family = ifa->ifa_family;
    k.ifindex = (int32_t)ifa->ifa_index;
    /* IFA_LOCAL is ours on a point-to-point link, where IFA_ADDRESS is the peer */
    attr_copy(k.addr, a[IFA_LOCAL] ? a[IFA_LOCAL] : a[IFA_ADDRESS]);
    /* an address still in duplicate address detection cannot be used yet */
    bool present = nlh->nlmsg_type == RTM_NEWADDR && !(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED));
    if (seen_set(m, &k, present))
        note(m, NETMON_ADDR);
}

static void on_route(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct rtmsg *rtm = nl_msg_payload(nlh, sizeof(*rtm));
    const struct nlattr *a[RTA_MAX + 1];
    struct seen k = {.kind = SEEN_ROUTE};
    uint32_t table;

    if (!rtm || rtm->rtm_dst_len != 0 || rtm->rtm_type != RTN_UNICAST)
        return;
    nl_attr_parse(nlh, sizeof(*rtm), a, RTA_MAX);
    table = attr_u32(a[RTA_TABLE], rtm->rtm_table);
    if (table != RT_TABLE_MAIN)
        return;
    k.family = rtm->rtm_family;
    k.ifindex = (int32_t)attr_u32(a[RTA_OIF], 0);
    k.metric = attr_u32(a[RTA_PRIORITY], 0);
    attr_copy(k.addr, a[RTA_GATEWAY]);
    attr_copy(k.src, a[RTA_PREFSRC]);
    if (seen_set(m, &k, nlh->nlmsg_type == RTM_NEWROUTE))
        note(m, NETMON_ROUTE);
}

static int msg_cb(const struct nlmsghdr *nlh, void *data)
{
    struct netmon *m = data;

    switch (nlh->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: on_link(m, nlh); break;
    case RTM_NEWADDR:
    case RTM_DELADDR: on_addr(m, nlh); break;
    case RTM_NEWROUTE:
    case RTM_DELROUTE: on_route(m, nlh); break;
    default: break;
    }
    return 1;
}

/* ---- events -------------------------------------------------------------- */

static void arm(struct netmon *m, uint64_t at)
{
    uint64_t now = net_now_ms();

    ev_timer_stop(m->loop, &m->fire);
    ev_timer_set(&m->fire, at > now ? (double)(at - now) / 1000.0 : 0., 0.);
    ev_timer_start(m->loop, &m->fire);
}

static void note(struct netmon *m, unsigned why)
{
    if (m->seeding)
        return;
    arm(m, netmon_debounce_note(&m->db, why, net_now_ms()));
}

void netmon_trigger(struct netmon *m, unsigned why)
{
    note(m, why);
}

static void fire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct netmon *m = w->data;

    m->fn(m->arg, netmon_debounce_take(&m->db));
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    static _Alignas(NLMSG_ALIGNTO) uint8_t buf[NETMON_BUF];
    struct netmon *m = w->data;

    for (;;) {
        ssize_t n = nl_recv(&m->nl, buf, sizeof(buf));
        if (n < 0) {
            if (errno == ENOBUFS) {
                /* the kernel dropped events: assume the worst */
                log_debug("netmon: netlink overrun");
                note(m, NETMON_LINK | NETMON_ADDR | NETMON_ROUTE);
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_debug("netmon: recv: %s", strerror(errno));
            return;
        }
        if (nl_walk(buf, (size_t)n, 0, 0, msg_cb, m) < 0 && errno)
            log_debug("netmon: %s", strerror(errno));
    }
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void clock_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct netmon *m = w->data;
    int64_t before = m->ck.gap_ms;

    if (netmon_clock_slept(&m->ck, clock_ms(CLOCK_MONOTONIC), clock_ms(CLOCK_BOOTTIME),
                           NETMON_SLEEP_MS)) {
        log_info("the machine slept for about %lld s", (long long)((m->ck.gap_ms - before) / 1000));
        note(m, NETMON_SLEEP);
    }
}

/* What is there now (links, addresses, default routes), from a dump on a
 * socket of its own, so it is not news later. */
static void seed(struct netmon *m)
{
    static const uint16_t what[] = {RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE};
    static _Alignas(NLMSG_ALIGNTO) uint8_t buf[NETMON_BUF];
    struct nl_sock nl;
    struct timeval tv = {.tv_sec = 1};

    if (nl_open(&nl, NETLINK_ROUTE, 0, 0) < 0)
        return;
    if (setsockopt(nl.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        goto out;
    m->seeding = true;
    for (size_t i = 0; i < sizeof(what) / sizeof(what[0]); i++) {
        unsigned seq = (unsigned)i + 1;
        struct nlmsghdr *nlh =
            nl_msg_start(buf, sizeof(buf), what[i], NLM_F_REQUEST | NLM_F_DUMP, seq);
        /* every dump request starts with a family byte; a zeroed rtmsg
         * is long enough for each of them */
        struct rtmsg *rtm = nl_msg_put(nlh, sizeof(buf), sizeof(*rtm));
        rtm->rtm_family = AF_UNSPEC;
        if (nl_send(&nl, nlh) < 0)
            break;
        for (;;) {
            ssize_t n = nl_recv(&nl, buf, sizeof(buf));
            if (n <= 0 || nl_walk(buf, (size_t)n, seq, nl.portid, msg_cb, m) <= 0)
                break;
        }
    }
    m->seeding = false;
out:
    nl_close(&nl);
}

struct netmon *netmon_new(struct ev_loop *loop, netmon_fn fn, void *arg)
{
    struct netmon *m = calloc(1, sizeof(*m));
    int e;

    if (!m)
        return NULL;
    m->loop = loop;
    m->fn = fn;
    m->arg = arg;
    /* subscribed before the dump, so nothing falls between the two */
    if (nl_open(&m->nl, NETLINK_ROUTE,
                RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE |
                    RTMGRP_IPV6_ROUTE,
                SOCK_NONBLOCK) < 0)
        goto fail;
    seed(m);
    ev_io_init(&m->io, io_cb, m->nl.fd, EV_READ);
    ev_init(&m->fire, fire_cb);
    ev_timer_init(&m->clock, clock_cb, NETMON_CLOCK_EVERY_MS / 1000.0,
                  NETMON_CLOCK_EVERY_MS / 1000.0);
    m->io.data = m->fire.data = m->clock.data = m;
    ev_io_start(loop, &m->io);
    ev_timer_start(loop, &m->clock);
    /* the gap at start is the sleep before it */
    netmon_clock_slept(&m->ck, clock_ms(CLOCK_MONOTONIC), clock_ms(CLOCK_BOOTTIME),
                       NETMON_SLEEP_MS);
    log_debug("netmon: watching links, addresses and default routes (%zu known)", m->nseen);
    return m;
fail:
    e = errno;
    free(m);
    errno = e;
    return NULL;
}

void netmon_del(struct netmon *m)
{
    if (!m)
        return;
    ev_io_stop(m->loop, &m->io);
    ev_timer_stop(m->loop, &m->fire);
    ev_timer_stop(m->loop, &m->clock);
    nl_close(&m->nl);
    free(m);
}
