/* nl: the netlink walkers on crafted messages, good and bad (the kernel's
 * bytes are untrusted: every length is checked before use), the request
 * builder, and one real round trip with the kernel (a link dump). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <sys/socket.h>

#include "core/nl.h"

/* A datagram built byte by byte, in an aligned buffer as the kernel's are. */
struct dgram {
    _Alignas(NLMSG_ALIGNTO) uint8_t b[1024];
    size_t len;
};

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Appends a message header (nlmsg_len as given, which may lie) and returns
 * its offset. */
static size_t add_hdr(struct dgram *d, uint32_t len, uint16_t type, uint16_t flags, uint32_t seq,
                      uint32_t pid)
{
    size_t at = d->len;

    put32(d->b + at, len);
    put16(d->b + at + 4, type);
    put16(d->b + at + 6, flags);
    put32(d->b + at + 8, seq);
    put32(d->b + at + 12, pid);
    d->len += 16;
    return at;
}

static void add_bytes(struct dgram *d, const void *p, size_t n)
{
    if (n)
        memcpy(d->b + d->len, p, n);
    d->len += n;
}

static void add_zero(struct dgram *d, size_t n)
{
    memset(d->b + d->len, 0, n);
    d->len += n;
}

/* An attribute whose nla_len may lie; payload n bytes, padded to 4. */
static void add_attr(struct dgram *d, uint16_t nla_len, uint16_t type, const void *p, size_t n)
{
    put16(d->b + d->len, nla_len);
    put16(d->b + d->len + 2, type);
    d->len += 4;
    add_bytes(d, p, n);
    add_zero(d, NLA_ALIGN(n) - n);
}

/* Sets a message's nlmsg_len to what was appended since at. */
static void close_msg(struct dgram *d, size_t at)
{
    put32(d->b + at, (uint32_t)(d->len - at));
}

/* A plain RTM_NEWLINK with an ifinfomsg of this index. */
static void add_link(struct dgram *d, int index, uint32_t seq, uint32_t pid)
{
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = IFF_UP};
    size_t at = add_hdr(d, 0, RTM_NEWLINK, NLM_F_MULTI, seq, pid);

    add_bytes(d, &ifi, sizeof(ifi));
    add_attr(d, 4 + 4, IFLA_IFNAME, "eth", 4);
    close_msg(d, at);
}

struct seen {
    int calls;
    int index[8];
    int ret; /* what the callback returns */
};

static int count_cb(const struct nlmsghdr *nlh, void *arg)
{
    struct seen *s = arg;
    const struct ifinfomsg *ifi = nl_msg_payload(nlh, sizeof(*ifi));

    if (s->calls < 8)
        s->index[s->calls] = ifi ? ifi->ifi_index : -1;
    s->calls++;
    return s->ret;
}

static int walk(const struct dgram *d, uint32_t seq, uint32_t pid, struct seen *s)
{
    errno = 0;
    return nl_walk(d->b, d->len, seq, pid, count_cb, s);
}

/* ---- nl_walk: good ---------------------------------------------------------- */

static void test_walk_multipart_then_done(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};
    size_t at;

    add_link(&d, 2, 7, 99);
    add_link(&d, 3, 7, 99);
    at = add_hdr(&d, 0, NLMSG_DONE, NLM_F_MULTI, 7, 99);
    add_zero(&d, 4);
    close_msg(&d, at);
    add_link(&d, 4, 7, 99); /* after DONE: not read */
    assert_int_equal(walk(&d, 7, 99, &s), 0);
    assert_int_equal(s.calls, 2);
    assert_int_equal(s.index[0], 2);
    assert_int_equal(s.index[1], 3);
}

static void test_walk_part_without_done_wants_more(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_link(&d, 2, 7, 99);
    add_link(&d, 3, 7, 99);
    assert_int_equal(walk(&d, 7, 99, &s), 1);
    assert_int_equal(s.calls, 2);
    /* an empty datagram: nothing, more to come */
    d.len = 0;
    assert_int_equal(walk(&d, 7, 99, &s), 1);
    assert_int_equal(s.calls, 2);
}

static void test_walk_callback_stops_and_fails(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 0};

    add_link(&d, 2, 0, 0);
    add_link(&d, 3, 0, 0);
    assert_int_equal(walk(&d, 0, 0, &s), 0);
    assert_int_equal(s.calls, 1);
    s = (struct seen){.ret = -1};
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(s.calls, 1);
}

static void test_walk_skips_noop_and_overrun(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_hdr(&d, 16, NLMSG_NOOP, 0, 0, 0);
    add_hdr(&d, 16, NLMSG_OVERRUN, 0, 0, 0);
    add_link(&d, 5, 0, 0);
    assert_int_equal(walk(&d, 0, 0, &s), 1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.index[0], 5);
}

static void test_walk_last_message_unpadded(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};
    size_t at;

    add_link(&d, 2, 0, 0);
    /* nlmsg_len 16 + 16 + 5: its padding is not in the datagram */
    at = add_hdr(&d, 0, RTM_NEWLINK, 0, 0, 0);
    add_zero(&d, sizeof(struct ifinfomsg) + 5);
    close_msg(&d, at);
    assert_int_equal(walk(&d, 0, 0, &s), 1);
    assert_int_equal(s.calls, 2);
}

/* ---- nl_walk: bad ----------------------------------------------------------- */

static void test_walk_truncated_header(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_link(&d, 2, 0, 0);
    d.len = 10; /* less than a header */
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    assert_int_equal(s.calls, 0);
    /* a whole message, then a piece of a header */
    d.len = 0;
    add_link(&d, 2, 0, 0);
    add_hdr(&d, 40, RTM_NEWLINK, 0, 0, 0);
    d.len -= 6;
    s.calls = 0;
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    assert_int_equal(s.calls, 1);
}

static void test_walk_len_beyond_buffer(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};
    size_t at = d.len;

    add_link(&d, 2, 0, 0);
    put32(d.b + at, (uint32_t)d.len + 4); /* claims 4 bytes more than sent */
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    assert_int_equal(s.calls, 0);
    put32(d.b + at, 0xffffffffu);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    assert_int_equal(s.calls, 0);
}

static void test_walk_len_below_header(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    /* nlmsg_len 0 would never advance; 8 would put the next header inside
     * this one */
    add_hdr(&d, 0, RTM_NEWLINK, 0, 0, 0);
    add_zero(&d, 32);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    put32(d.b, 8);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    assert_int_equal(s.calls, 0);
}

static void add_error(struct dgram *d, int32_t error, uint32_t seq, uint32_t pid)
{
    size_t at = add_hdr(d, 0, NLMSG_ERROR, 0, seq, pid);

    put32(d->b + d->len, (uint32_t)error);
    d->len += 4;
    add_hdr(d, 16 + 72, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, pid); /* the request's header */
    close_msg(d, at);
}

static void test_walk_error_gives_errno(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_error(&d, -ENOENT, 3, 42);
    add_link(&d, 2, 3, 42); /* after the error: not read */
    assert_int_equal(walk(&d, 3, 42, &s), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(s.calls, 0);
    d.len = 0;
    add_error(&d, -EPERM, 3, 42);
    assert_int_equal(walk(&d, 3, 42, &s), -1);
    assert_int_equal(errno, EPERM);
    /* nonsense that cannot be negated */
    d.len = 0;
    add_error(&d, INT32_MIN, 3, 42);
    assert_int_equal(walk(&d, 3, 42, &s), -1);
    assert_int_equal(errno, EBADMSG);
}

static void test_walk_ack_completes(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_link(&d, 2, 3, 42);
    add_error(&d, 0, 3, 42);
    assert_int_equal(walk(&d, 3, 42, &s), 0);
    assert_int_equal(s.calls, 1);
}

static void test_walk_error_truncated(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};
    size_t at = add_hdr(&d, 0, NLMSG_ERROR, 0, 0, 0);

    /* the error code, but not the request's header behind it */
    put32(d.b + d.len, (uint32_t)-ENOENT);
    d.len += 4;
    close_msg(&d, at);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
    /* not even the error code */
    d.len = 0;
    add_hdr(&d, 16, NLMSG_ERROR, 0, 0, 0);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EBADMSG);
}

static void test_walk_checks_sequence_and_port(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_link(&d, 2, 7, 99);
    assert_int_equal(walk(&d, 8, 99, &s), -1);
    assert_int_equal(errno, EPROTO);
    assert_int_equal(walk(&d, 7, 100, &s), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(s.calls, 0);
    /* zero on either side is not checked: notifications carry none */
    assert_int_equal(walk(&d, 0, 0, &s), 1);
    d.len = 0;
    add_link(&d, 2, 0, 0);
    assert_int_equal(walk(&d, 8, 100, &s), 1);
    assert_int_equal(s.calls, 2);
}

static void test_walk_dump_interrupted(void **state)
{
    struct dgram d = {.len = 0};
    struct seen s = {.ret = 1};

    add_link(&d, 2, 0, 0);
    put16(d.b + 6, NLM_F_MULTI | NLM_F_DUMP_INTR);
    assert_int_equal(walk(&d, 0, 0, &s), -1);
    assert_int_equal(errno, EINTR);
    assert_int_equal(s.calls, 0);
}

/* ---- attributes ------------------------------------------------------------- */

/* An RTM_NEWROUTE with an rtmsg and the attributes appended by fn. */
static size_t route_start(struct dgram *d)
{
    struct rtmsg rtm = {.rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN,
                        .rtm_type = RTN_UNICAST};
    size_t at = add_hdr(d, 0, RTM_NEWROUTE, 0, 0, 0);

    add_bytes(d, &rtm, sizeof(rtm));
    return at;
}

static void test_attr_parse_good(void **state)
{
    struct dgram d = {.len = 0};
    const struct nlattr *tb[RTA_MAX + 1];
    const uint8_t gw[4] = {192, 0, 2, 1};
    uint32_t oif = 3, table = 254, big = 1;
    uint32_t v;
    size_t at = route_start(&d);

    add_attr(&d, 4 + 4, RTA_OIF, &oif, 4);
    add_attr(&d, 4 + 4, RTA_GATEWAY, gw, 4);
    add_attr(&d, 4 + 4, RTA_MAX + 1, &big, 4);                /* above max: skipped */
    add_attr(&d, 4 + 4, RTA_TABLE | NLA_F_NESTED, &table, 4); /* flag bits masked */
    add_attr(&d, 4, RTA_PREFSRC, NULL, 0);                    /* empty is fine */
    close_msg(&d, at);
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), 0);
    assert_non_null(tb[RTA_OIF]);
    assert_int_equal(nl_attr_len(tb[RTA_OIF]), 4);
    memcpy(&v, nl_attr_data(tb[RTA_OIF]), 4);
    assert_int_equal(v, 3);
    assert_memory_equal(nl_attr_data(tb[RTA_GATEWAY]), gw, 4);
    assert_non_null(tb[RTA_TABLE]);
    assert_int_equal(nl_attr_type(tb[RTA_TABLE]), RTA_TABLE);
    assert_non_null(tb[RTA_PREFSRC]);
    assert_int_equal(nl_attr_len(tb[RTA_PREFSRC]), 0);
    assert_null(tb[RTA_DST]);
    assert_null(tb[RTA_PRIORITY]);
}

static void test_attr_parse_no_attributes(void **state)
{
    struct dgram d = {.len = 0};
    const struct nlattr *tb[RTA_MAX + 1];
    size_t at = route_start(&d);

    close_msg(&d, at);
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), 0);
    for (int i = 0; i <= RTA_MAX; i++)
        assert_null(tb[i]);
}

static void test_attr_parse_bad_len(void **state)
{
    struct dgram d = {.len = 0};
    const struct nlattr *tb[RTA_MAX + 1];
    uint32_t oif = 3, prio = 100;
    size_t at = route_start(&d), bad;

    add_attr(&d, 4 + 4, RTA_OIF, &oif, 4);
    bad = d.len;
    add_attr(&d, 4 + 4, RTA_PRIORITY, &prio, 4);
    close_msg(&d, at);
    /* nla_len below its own header: would never advance */
    put16(d.b + bad, 2);
    errno = 0;
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), -1);
    assert_int_equal(errno, EBADMSG);
    assert_non_null(tb[RTA_OIF]); /* the one before it stays */
    assert_null(tb[RTA_PRIORITY]);
    /* nla_len past the end of the message */
    put16(d.b + bad, 4 + 4 + 4);
    errno = 0;
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), -1);
    assert_int_equal(errno, EBADMSG);
    assert_null(tb[RTA_PRIORITY]);
    /* ... and past it by the message's length even though the datagram
     * holds more bytes behind (the message's own length is the bound) */
    add_link(&d, 9, 0, 0);
    put16(d.b + bad, 4 + 4 + 16);
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), -1);
    assert_null(tb[RTA_PRIORITY]);
}

static void test_attr_parse_truncated_attr_header(void **state)
{
    struct dgram d = {.len = 0};
    const struct nlattr *tb[RTA_MAX + 1];
    uint32_t oif = 3;
    size_t at = route_start(&d);

    add_attr(&d, 4 + 4, RTA_OIF, &oif, 4);
    put16(d.b + d.len, 8); /* two bytes of a header: nla_len, no type */
    d.len += 2;
    close_msg(&d, at);
    errno = 0;
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct rtmsg), tb, RTA_MAX), -1);
    assert_int_equal(errno, EBADMSG);
    assert_non_null(tb[RTA_OIF]);
}

static void test_attr_parse_short_fixed_header(void **state)
{
    struct dgram d = {.len = 0};
    const struct nlattr *tb[INET_DIAG_MAX + 1];
    size_t at = add_hdr(&d, 0, SOCK_DIAG_BY_FAMILY, 0, 0, 0);

    add_zero(&d, sizeof(struct inet_diag_msg) - 4);
    close_msg(&d, at);
    assert_null(nl_msg_payload((const struct nlmsghdr *)d.b, sizeof(struct inet_diag_msg)));
    assert_non_null(nl_msg_payload((const struct nlmsghdr *)d.b, sizeof(struct inet_diag_msg) - 4));
    errno = 0;
    assert_int_equal(nl_attr_parse((const struct nlmsghdr *)d.b, sizeof(struct inet_diag_msg), tb,
                                   INET_DIAG_MAX),
                     -1);
    assert_int_equal(errno, EBADMSG);
}

/* ---- building --------------------------------------------------------------- */

static void test_build_and_read_back(void **state)
{
    _Alignas(NLMSG_ALIGNTO) uint8_t buf[128];
    const struct nlattr *tb[RTA_MAX + 1];
    struct nlmsghdr *nlh = nl_msg_start(buf, sizeof(buf), RTM_GETROUTE, NLM_F_REQUEST, 5);
    struct rtmsg *rtm;
    uint32_t oif = 7;

    assert_non_null(nlh);
    assert_int_equal(nlh->nlmsg_len, NLMSG_HDRLEN);
    rtm = nl_msg_put(nlh, sizeof(buf), sizeof(*rtm));
    assert_non_null(rtm);
    rtm->rtm_family = AF_INET6;
    assert_int_equal(nlh->nlmsg_len, NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(*rtm)));
    assert_int_equal(nl_msg_attr(nlh, sizeof(buf), RTA_OIF, &oif, 4), 0);
    assert_int_equal(nl_msg_attr(nlh, sizeof(buf), RTA_DST, "\x20\x01\x0d", 3), 0);
    assert_int_equal(nlh->nlmsg_len, 16 + 12 + 8 + 8);
    assert_int_equal(nl_attr_parse(nlh, sizeof(*rtm), tb, RTA_MAX), 0);
    assert_int_equal(nl_attr_len(tb[RTA_DST]), 3);
    assert_memory_equal(nl_attr_data(tb[RTA_DST]), "\x20\x01\x0d", 3);
    assert_memory_equal(nl_attr_data(tb[RTA_OIF]), &oif, 4);
}

static void test_build_respects_cap(void **state)
{
    _Alignas(NLMSG_ALIGNTO) uint8_t buf[40];
    struct nlmsghdr *nlh;

    assert_null(nl_msg_start(buf, 15, RTM_GETLINK, NLM_F_REQUEST, 1));
    nlh = nl_msg_start(buf, sizeof(buf), RTM_GETLINK, NLM_F_REQUEST, 1);
    assert_null(nl_msg_put(nlh, sizeof(buf), 25)); /* 16 + 25 > 40 */
    assert_int_equal(nlh->nlmsg_len, 16);
    assert_non_null(nl_msg_put(nlh, sizeof(buf), 16));
    assert_int_equal(nl_msg_attr(nlh, sizeof(buf), 1, "abcdefgh", 5), -1); /* 32 + 12 > 40 */
    assert_int_equal(nl_msg_attr(nlh, sizeof(buf), 1, "abcd", 4), 0);      /* 32 + 8 = 40 */
    assert_int_equal(nlh->nlmsg_len, 40);
    assert_int_equal(nl_msg_attr(nlh, sizeof(buf), 1, NULL, 0), -1);
    assert_int_equal(nl_msg_attr(nlh, 1u << 20, 1, buf, 65535), -1); /* over 16 bits */
}

/* ---- the real kernel -------------------------------------------------------- */

struct lo_find {
    int messages;
    bool lo;
};

static int lo_cb(const struct nlmsghdr *nlh, void *arg)
{
    struct lo_find *f = arg;
    const struct ifinfomsg *ifi = nl_msg_payload(nlh, sizeof(*ifi));
    const struct nlattr *tb[IFLA_MAX + 1];

    f->messages++;
    if (nlh->nlmsg_type != RTM_NEWLINK || !ifi)
        return -1;
    /* the list may end early at a malformed attribute: qemu-user for a
     * big-endian target leaves the last attribute of a link in host order
     * (its converter stops one short); the name comes long before that */
    nl_attr_parse(nlh, sizeof(*ifi), tb, IFLA_MAX);
    if (tb[IFLA_IFNAME] && nl_attr_len(tb[IFLA_IFNAME]) == 3 &&
        memcmp(nl_attr_data(tb[IFLA_IFNAME]), "lo", 3) == 0 && ifi->ifi_flags & IFF_LOOPBACK)
        f->lo = true;
    return 1;
}

static void test_kernel_link_dump(void **state)
{
    static _Alignas(NLMSG_ALIGNTO) uint8_t buf[32768];
    struct lo_find f = {0};
    struct nl_sock s;
    struct nlmsghdr *nlh;
    int rc;

    assert_int_equal(nl_open(&s, NETLINK_ROUTE, 0, 0), 0);
    assert_true(s.fd >= 0);
    assert_true(s.portid != 0);
    nlh = nl_msg_start(buf, sizeof(buf), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 77);
    nl_msg_put(nlh, sizeof(buf), sizeof(struct ifinfomsg));
    assert_int_equal(nl_send(&s, nlh), (ssize_t)nlh->nlmsg_len);
    do {
        ssize_t n = nl_recv(&s, buf, sizeof(buf));
        assert_true(n > 0);
        rc = nl_walk(buf, (size_t)n, 77, s.portid, lo_cb, &f);
    } while (rc == 1);
    assert_int_equal(rc, 0); /* NLMSG_DONE */
    assert_true(f.messages >= 1);
    assert_true(f.lo);
    nl_close(&s);
    assert_int_equal(s.fd, -1);
    nl_close(&s);
}

static void test_kernel_error_reply(void **state)
{
    _Alignas(NLMSG_ALIGNTO) uint8_t buf[8192];
    struct lo_find f = {0};
    struct nl_sock s;
    struct nlmsghdr *nlh;
    struct ifinfomsg *ifi;
    ssize_t n;

    assert_int_equal(nl_open(&s, NETLINK_ROUTE, 0, 0), 0);
    /* one link by an index nobody has: ENODEV from the kernel */
    nlh = nl_msg_start(buf, sizeof(buf), RTM_GETLINK, NLM_F_REQUEST, 5);
    ifi = nl_msg_put(nlh, sizeof(buf), sizeof(*ifi));
    ifi->ifi_index = 0x7ffffff0;
    assert_true(nl_send(&s, nlh) > 0);
    n = nl_recv(&s, buf, sizeof(buf));
    assert_true(n > 0);
    errno = 0;
    assert_int_equal(nl_walk(buf, (size_t)n, 5, s.portid, lo_cb, &f), -1);
    assert_int_equal(errno, ENODEV);
    assert_int_equal(f.messages, 0);
    nl_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_multipart_then_done),
        cmocka_unit_test(test_walk_part_without_done_wants_more),
        cmocka_unit_test(test_walk_callback_stops_and_fails),
        cmocka_unit_test(test_walk_skips_noop_and_overrun),
        cmocka_unit_test(test_walk_last_message_unpadded),
        cmocka_unit_test(test_walk_truncated_header),
        cmocka_unit_test(test_walk_len_beyond_buffer),
        cmocka_unit_test(test_walk_len_below_header),
        cmocka_unit_test(test_walk_error_gives_errno),
        cmocka_unit_test(test_walk_ack_completes),
        cmocka_unit_test(test_walk_error_truncated),
        cmocka_unit_test(test_walk_checks_sequence_and_port),
        cmocka_unit_test(test_walk_dump_interrupted),
        cmocka_unit_test(test_attr_parse_good),
        cmocka_unit_test(test_attr_parse_no_attributes),
        cmocka_unit_test(test_attr_parse_bad_len),
        cmocka_unit_test(test_attr_parse_truncated_attr_header),
        cmocka_unit_test(test_attr_parse_short_fixed_header),
        cmocka_unit_test(test_build_and_read_back),
        cmocka_unit_test(test_build_respects_cap),
        cmocka_unit_test(test_kernel_link_dump),
        cmocka_unit_test(test_kernel_error_reply),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
