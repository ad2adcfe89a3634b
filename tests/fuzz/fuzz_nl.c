/* libFuzzer target for src/core/nl's walkers: the input is one datagram as
 * the kernel would send it (rtnetlink notifications, a dump, a sock_diag
 * answer). Every message handed out must lie within the datagram, every
 * attribute within its message, and every byte they claim is read (ASan
 * sees any over-read). */
#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/nl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static volatile unsigned sink; /* makes the reads count */

struct span {
    const uint8_t *start, *end;
    unsigned sum;
};

static void touch(struct span *s, const void *p, size_t len)
{
    const uint8_t *b = p;

    CHECK(b >= s->start && len <= (size_t)(s->end - b));
    for (size_t i = 0; i < len; i++)
        s->sum += b[i];
}

/* The fixed header sizes netmon and appid give nl_attr_parse. */
static const size_t hdrlens[] = {
    sizeof(struct ifinfomsg), sizeof(struct ifaddrmsg), sizeof(struct rtmsg),
    sizeof(struct inet_diag_msg), 0, 1, 3,
};

static int msg_cb(const struct nlmsghdr *nlh, void *arg)
{
    struct span *s = arg;
    const struct nlattr *tb[RTA_MAX + IFA_MAX + INET_DIAG_MAX + 1];
    unsigned max = sizeof(tb) / sizeof(tb[0]) - 1;

    CHECK(nlh->nlmsg_len >= NLMSG_HDRLEN && nlh->nlmsg_type >= NLMSG_MIN_TYPE);
    touch(s, nlh, nlh->nlmsg_len);
    for (size_t h = 0; h < sizeof(hdrlens) / sizeof(hdrlens[0]); h++) {
        const uint8_t *fixed = nl_msg_payload(nlh, hdrlens[h]);
        int rc = nl_attr_parse(nlh, hdrlens[h], tb, max);

        CHECK(rc == 0 || rc == -1);
        CHECK(!fixed == (nlh->nlmsg_len < NLMSG_HDRLEN + hdrlens[h]));
        if (!fixed)
            CHECK(rc == -1);
        else
            touch(s, fixed, hdrlens[h]);
        for (unsigned t = 0; t <= max; t++) {
            const struct nlattr *a = tb[t];
            if (!a)
                continue;
            CHECK(nl_attr_type(a) == t);
            CHECK(a->nla_len >= NLA_HDRLEN);
            /* within this message, not merely within the datagram */
            CHECK((const uint8_t *)a >= (const uint8_t *)nlh + NLMSG_HDRLEN + hdrlens[h]);
            CHECK((const uint8_t *)a + a->nla_len <= (const uint8_t *)nlh + nlh->nlmsg_len);
            touch(s, nl_attr_data(a), nl_attr_len(a));
        }
    }
    /* a few stop the walk, as a callback may */
    return nlh->nlmsg_type == 0xffff ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct span s = {data, data + size, 0};
    uint32_t seq = 0, pid = 0;
    int rc;

    rc = nl_walk(data, size, 0, 0, msg_cb, &s);
    CHECK(rc == 1 || rc == 0 || rc == -1);
    /* again as the answer to a request: the first message's numbers */
    if (size >= NLMSG_HDRLEN) {
        memcpy(&seq, data + 8, 4);
        memcpy(&pid, data + 12, 4);
    }
    rc = nl_walk(data, size, seq, pid, msg_cb, &s);
    CHECK(rc == 1 || rc == 0 || rc == -1);
    sink = s.sum;
    return 0;
}
