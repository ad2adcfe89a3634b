/* netmon — network change and sleep detection (see netmon.h). */
#include "core/netmon.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>

#include "core/log.h"
#include "core/net.h"

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
    struct mnl_socket *nl;
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
    size_t n = a ? mnl_attr_get_payload_len(a) : 0;

    if (n > 16)
        n = 16;
    if (n)
        memcpy(dst, mnl_attr_get_payload(a), n);
}

static uint32_t attr_u32(const struct nlattr *a, uint32_t dflt)
{
    return a && mnl_attr_get_payload_len(a) >= sizeof(uint32_t) ? mnl_attr_get_u32(a) : dflt;
}

static void on_link(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
    struct seen k = {.kind = SEEN_LINK, .ifindex = ifi->ifi_index};

    if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*ifi)) || ifi->ifi_flags & IFF_LOOPBACK)
        return;
    k.state = ifi->ifi_flags & (IFF_UP | IFF_RUNNING);
    if (seen_set(m, &k, nlh->nlmsg_type == RTM_NEWLINK))
        note(m, NETMON_LINK);
}

struct attrs {
    const struct nlattr *a[RTA_MAX + IFA_MAX + 2];
    int max;
};

static int attr_cb(const struct nlattr *attr, void *data)
{
    struct attrs *t = data;
    int type = mnl_attr_get_type(attr);

    if (type <= t->max && mnl_attr_validate(attr, MNL_TYPE_UNSPEC) >= 0)
        t->a[type] = attr;
    return MNL_CB_OK;
}

static void on_addr(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
    struct seen k = {.kind = SEEN_ADDR};
    struct attrs t = {.max = IFA_MAX};
    uint32_t flags;

    if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*ifa)) || ifa->ifa_scope == RT_SCOPE_HOST)
        return;
    mnl_attr_parse(nlh, sizeof(*ifa), attr_cb, &t);
    flags = attr_u32(t.a[IFA_FLAGS], ifa->ifa_flags);
    k.family = ifa->ifa_family;
    k.ifindex = (int32_t)ifa->ifa_index;
    /* IFA_LOCAL is ours on a point-to-point link, where IFA_ADDRESS is the peer */
    attr_copy(k.addr, t.a[IFA_LOCAL] ? t.a[IFA_LOCAL] : t.a[IFA_ADDRESS]);
    /* an address still in duplicate address detection cannot be used yet */
    bool present = nlh->nlmsg_type == RTM_NEWADDR && !(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED));
    if (seen_set(m, &k, present))
        note(m, NETMON_ADDR);
}

static void on_route(struct netmon *m, const struct nlmsghdr *nlh)
{
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    struct seen k = {.kind = SEEN_ROUTE};
    struct attrs t = {.max = RTA_MAX};
    uint32_t table;

    if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*rtm)) || rtm->rtm_dst_len != 0 ||
        rtm->rtm_type != RTN_UNICAST)
        return;
    mnl_attr_parse(nlh, sizeof(*rtm), attr_cb, &t);
    table = attr_u32(t.a[RTA_TABLE], rtm->rtm_table);
    if (table != RT_TABLE_MAIN)
        return;
    k.family = rtm->rtm_family;
    k.ifindex = (int32_t)attr_u32(t.a[RTA_OIF], 0);
    k.metric = attr_u32(t.a[RTA_PRIORITY], 0);
    attr_copy(k.addr, t.a[RTA_GATEWAY]);
    attr_copy(k.src, t.a[RTA_PREFSRC]);
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
    return MNL_CB_OK;
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
    static uint8_t buf[NETMON_BUF];
    struct netmon *m = w->data;

    for (;;) {
        ssize_t n = mnl_socket_recvfrom(m->nl, buf, sizeof(buf));
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
        if (mnl_cb_run(buf, (size_t)n, 0, 0, msg_cb, m) < 0 && errno)
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
    static uint8_t buf[NETMON_BUF];
    struct mnl_socket *nl = mnl_socket_open(NETLINK_ROUTE);
    struct timeval tv = {.tv_sec = 1};

    if (!nl)
        return;
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
        setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        goto out;
    m->seeding = true;
    for (size_t i = 0; i < sizeof(what) / sizeof(what[0]); i++) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        unsigned seq = (unsigned)i + 1;
        nlh->nlmsg_type = what[i];
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        nlh->nlmsg_seq = seq;
        /* every dump request starts with a family byte; a zeroed rtmsg
         * is long enough for each of them */
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_UNSPEC;
        if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
            break;
        for (;;) {
            ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
            if (n <= 0 ||
                mnl_cb_run(buf, (size_t)n, seq, mnl_socket_get_portid(nl), msg_cb, m) <= 0)
                break;
        }
    }
    m->seeding = false;
out:
    mnl_socket_close(nl);
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
    m->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!m->nl)
        goto fail;
    /* subscribed before the dump, so nothing falls between the two */
    if (mnl_socket_bind(m->nl,
                        RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
                            RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
                        MNL_SOCKET_AUTOPID) < 0)
        goto fail;
    seed(m);
    ev_io_init(&m->io, io_cb, mnl_socket_get_fd(m->nl), EV_READ);
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
    if (m->nl)
        mnl_socket_close(m->nl);
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
    mnl_socket_close(m->nl);
    free(m);
}
