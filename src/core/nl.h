/* nl — the little netlink that netmon (rtnetlink) and appid (sock_diag)
 * need, on the kernel's UAPI headers alone: a socket on one bus, requests
 * built in the caller's buffer, and walkers over what the kernel sends back.
 * The kernel's bytes are untrusted: every length is checked against the
 * bytes received before anything behind it is read.
 *
 * Buffers given to these functions are aligned to 4 bytes (NLMSG_ALIGNTO),
 * as the kernel's messages are. */
#ifndef DV_CORE_NL_H
#define DV_CORE_NL_H

#include <linux/netlink.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Embedded. */
struct nl_sock {
    int fd;          /* -1 when closed */
    uint32_t portid; /* ours, as the kernel bound it */
};

/* Opens a socket on bus (NETLINK_ROUTE, NETLINK_SOCK_DIAG...) with
 * SOCK_CLOEXEC plus flags (SOCK_NONBLOCK), joined to the multicast groups
 * (RTMGRP_* bits; 0 for none), the port chosen by the kernel.
 * 0, or -1 with errno (s->fd is then -1). */
int nl_open(struct nl_sock *s, int bus, uint32_t groups, int flags);
/* Closes it; harmless on a closed one. */
void nl_close(struct nl_sock *s);

/* Sends one request (a whole message) to the kernel: the bytes sent, or -1
 * with errno. */
ssize_t nl_send(const struct nl_sock *s, const struct nlmsghdr *nlh);
/* Receives one datagram: its length, or -1 with errno: the socket's own
 * (EAGAIN, ENOBUFS when the kernel dropped notifications...), ENOSPC when it
 * did not fit in cap (the rest is lost), EPERM when it came from anyone but
 * the kernel. */
ssize_t nl_recv(const struct nl_sock *s, void *buf, size_t cap);

/* ---- building a request -------------------------------------------------- */

/* Starts a request in buf (cap bytes): a zeroed header of this type, flags
 * and sequence. NULL when cap cannot hold it. */
struct nlmsghdr *nl_msg_start(void *buf, size_t cap, uint16_t type, uint16_t flags,
                              uint32_t seq);
/* Appends len zeroed bytes (the family's fixed header), padded to 4, and
 * returns them; NULL when they do not fit in cap (the message unchanged). */
void *nl_msg_put(struct nlmsghdr *nlh, size_t cap, size_t len);
/* Appends an attribute of type with len bytes of data; -1 when it does not
 * fit in cap or in an attribute's 16-bit length (the message unchanged). */
int nl_msg_attr(struct nlmsghdr *nlh, size_t cap, uint16_t type, const void *data, size_t len);

/* ---- reading what the kernel sent ---------------------------------------- */

/* Called for each data message (type >= NLMSG_MIN_TYPE); its nlmsg_len is
 * within the datagram. Returns > 0 to go on, 0 to stop, < 0 (errno set) to
 * fail. */
typedef int (*nl_msg_fn)(const struct nlmsghdr *nlh, void *arg);

/* Walks the messages of one datagram (buf, len bytes). A message whose
 * nlmsg_pid is not portid, or whose nlmsg_seq is not seq, is refused (each
 * check only when both numbers are nonzero: notifications carry none).
 * Returns
 *   1: the datagram ended (a dump goes on in the next one);
 *   0: the answer is complete: NLMSG_DONE, an NLMSG_ERROR of 0 (an ack),
 *      or fn returned 0;
 *  -1 with errno: an NLMSG_ERROR's error; EBADMSG for a message or an
 *      NLMSG_ERROR that is truncated or runs past len; ESRCH (another port),
 *      EPROTO (another sequence), EINTR (the dump was interrupted and is
 *      inconsistent: NLM_F_DUMP_INTR); or fn's failure.
 * Messages before a bad one have been handed to fn. */
int nl_walk(const void *buf, size_t len, uint32_t seq, uint32_t portid, nl_msg_fn fn,
            void *arg);

/* The message's fixed header of len bytes (ifinfomsg, rtmsg...), NULL when
 * nlmsg_len is too short for it. */
const void *nl_msg_payload(const struct nlmsghdr *nlh, size_t len);

/* Fills tb[0..max] with the attributes after the message's fixed header of
 * hdrlen bytes, by type (NLA_F_* bits masked off; a later one of a type
 * wins; types above max are skipped); the others stay NULL. Each one's
 * nla_len is within the message. 0, or -1 with EBADMSG when the message is
 * shorter than the fixed header, or an attribute is truncated or runs past
 * it (those before it are in tb). */
int nl_attr_parse(const struct nlmsghdr *nlh, size_t hdrlen, const struct nlattr **tb,
                  unsigned max);

static inline unsigned nl_attr_type(const struct nlattr *a)
{
    return a->nla_type & NLA_TYPE_MASK;
}

static inline size_t nl_attr_len(const struct nlattr *a)
{
    return (size_t)a->nla_len - NLA_HDRLEN;
}

static inline const void *nl_attr_data(const struct nlattr *a)
{
    return (const uint8_t *)a + NLA_HDRLEN;
}

#endif
