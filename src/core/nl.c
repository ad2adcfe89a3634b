/* nl — netlink sockets, requests and bounds-checked walkers (see nl.h). */
#include "core/nl.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- the socket ---------------------------------------------------------- */

int nl_open(struct nl_sock *s, int bus, uint32_t groups, int flags)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = groups};
    socklen_t salen = sizeof(sa);
    int e;

    s->portid = 0;
    s->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | flags, bus);
    if (s->fd < 0)
        return -1;
    /* nl_pid 0: the kernel picks a free port */
    if (bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(s->fd, (struct sockaddr *)&sa, &salen) < 0)
        goto fail;
    if (salen != sizeof(sa) || sa.nl_family != AF_NETLINK) {
        errno = EINVAL;
        goto fail;
    }
    s->portid = sa.nl_pid;
    return 0;
fail:
    e = errno;
    close(s->fd);
    s->fd = -1;
    errno = e;
    return -1;
}

void nl_close(struct nl_sock *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

ssize_t nl_send(const struct nl_sock *s, const struct nlmsghdr *nlh)
{
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};

    return sendto(s->fd, nlh, nlh->nlmsg_len, 0, (const struct sockaddr *)&kernel,
                  sizeof(kernel));
}

ssize_t nl_recv(const struct nl_sock *s, void *buf, size_t cap)
{
    struct sockaddr_nl from;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof(from),
                         .msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n = recvmsg(s->fd, &msg, 0);

    if (n < 0)
        return -1;
    if (msg.msg_flags & MSG_TRUNC) {
        errno = ENOSPC;
        return -1;
    }
    /* another process may send to our port (with CAP_NET_ADMIN): only the
     * kernel speaks here */
    if (msg.msg_namelen != sizeof(from) || from.nl_family != AF_NETLINK || from.nl_pid != 0) {
        errno = EPERM;
        return -1;
    }
    return n;
}

/* ---- building ------------------------------------------------------------ */

struct nlmsghdr *nl_msg_start(void *buf, size_t cap, uint16_t type, uint16_t flags,
                              uint32_t seq)
{
    struct nlmsghdr *nlh = buf;

    if (cap < NLMSG_HDRLEN)
        return NULL;
    memset(nlh, 0, NLMSG_HDRLEN);
    nlh->nlmsg_len = NLMSG_HDRLEN;
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    return nlh;
}

void *nl_msg_put(struct nlmsghdr *nlh, size_t cap, size_t len)
{
    size_t at = NLMSG_ALIGN(nlh->nlmsg_len);
    uint8_t *p = (uint8_t *)nlh + at;

    if (at > cap || len > cap - at || NLMSG_ALIGN(len) > cap - at)
        return NULL;
    memset(p, 0, NLMSG_ALIGN(len));
    nlh->nlmsg_len = (uint32_t)(at + NLMSG_ALIGN(len));
    return p;
}

int nl_msg_attr(struct nlmsghdr *nlh, size_t cap, uint16_t type, const void *data, size_t len)
{
    struct nlattr *a;

    if (len > UINT16_MAX - NLA_HDRLEN)
        return -1;
    a = nl_msg_put(nlh, cap, NLA_HDRLEN + len);
    if (!a)
        return -1;
    a->nla_len = (uint16_t)(NLA_HDRLEN + len);
    a->nla_type = type;
    if (len)
        memcpy((uint8_t *)a + NLA_HDRLEN, data, len);
    return 0;
}

/* ---- walking ------------------------------------------------------------- */

/* An NLMSG_ERROR: 0 for an ack, else -1 with its errno. */
static int walk_error(const struct nlmsghdr *nlh)
{
    const struct nlmsgerr *e = nl_msg_payload(nlh, sizeof(*e));

    if (!e) {
        errno = EBADMSG;
        return -1;
    }
    if (e->error == 0)
        return 0;
    /* the kernel sends -errno; a positive one is taken as it is, one past
     * the errno range (INT_MIN cannot even be negated) as a bad message */
    if (e->error > 0)
        errno = e->error;
    else
        errno = e->error > -4096 ? -e->error : EBADMSG;
    return -1;
}

int nl_walk(const void *buf, size_t len, uint32_t seq, uint32_t portid, nl_msg_fn fn,
            void *arg)
{
    const uint8_t *p = buf;
    size_t left = len;

    while (left) {
        const struct nlmsghdr *nlh = (const struct nlmsghdr *)p;
        size_t step;
        int rc;

        if (left < NLMSG_HDRLEN || nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len > left) {
            errno = EBADMSG;
            return -1;
        }
        if (nlh->nlmsg_pid && portid && nlh->nlmsg_pid != portid) {
            errno = ESRCH;
            return -1;
        }
        if (nlh->nlmsg_seq && seq && nlh->nlmsg_seq != seq) {
            errno = EPROTO;
            return -1;
        }
        if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) {
            errno = EINTR;
            return -1;
        }
        if (nlh->nlmsg_type >= NLMSG_MIN_TYPE) {
            rc = fn(nlh, arg);
            if (rc <= 0)
                return rc < 0 ? -1 : 0;
        } else if (nlh->nlmsg_type == NLMSG_ERROR) {
            return walk_error(nlh);
        } else if (nlh->nlmsg_type == NLMSG_DONE) {
            return 0;
        }
        /* NLMSG_NOOP, NLMSG_OVERRUN and unknown control types: skipped */
        step = NLMSG_ALIGN(nlh->nlmsg_len);
        if (step >= left)
            break; /* the last one, its padding perhaps not sent */
        p += step;
        left -= step;
    }
    return 1;
}

const void *nl_msg_payload(const struct nlmsghdr *nlh, size_t len)
{
    if (nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len - NLMSG_HDRLEN < len)
        return NULL;
    return (const uint8_t *)nlh + NLMSG_HDRLEN;
}

int nl_attr_parse(const struct nlmsghdr *nlh, size_t hdrlen, const struct nlattr **tb,
                  unsigned max)
{
    const uint8_t *end = (const uint8_t *)nlh + nlh->nlmsg_len;
    const uint8_t *p;

    for (unsigned i = 0; i <= max; i++)
        tb[i] = NULL;
    if (!nl_msg_payload(nlh, hdrlen)) {
        errno = EBADMSG;
        return -1;
    }
    if (NLMSG_ALIGN(hdrlen) >= nlh->nlmsg_len - NLMSG_HDRLEN)
        return 0; /* no attributes (or only the fixed header's padding) */
    p = (const uint8_t *)nlh + NLMSG_HDRLEN + NLMSG_ALIGN(hdrlen);
    while (p < end) {
        const struct nlattr *a = (const struct nlattr *)p;
        size_t left = (size_t)(end - p), step;

        if (left < NLA_HDRLEN || a->nla_len < NLA_HDRLEN || a->nla_len > left) {
            errno = EBADMSG;
            return -1;
        }
        if (nl_attr_type(a) <= max)
            tb[nl_attr_type(a)] = a;
        step = NLA_ALIGN(a->nla_len);
        if (step >= left)
            break;
        p += step;
    }
    return 0;
}
