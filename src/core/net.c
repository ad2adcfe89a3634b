#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    long v;

    if (!*s)
        return DV_EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return DV_EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int net_addr_parse(const char *s, uint16_t default_port, struct net_addr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    uint16_t p = default_port;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return DV_EINVAL;
        n = (size_t)(end - s - 1);
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            return DV_EINVAL;
        s++;
    } else {
        const char *colon = strchr(s, ':');
        /* a second colon means a bare IPv6 address without a port */
        if (colon && !strchr(colon + 1, ':')) {
            n = (size_t)(colon - s);
            port = colon + 1;
        } else {
            n = strlen(s);
        }
    }
    if (n == 0 || n >= sizeof(host))
        return DV_EINVAL;
    memcpy(host, s, n);
    host[n] = 0;
    if (port && parse_port(port, &p))
        return DV_EINVAL;

    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(p);
        out->len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(p);
        out->len = sizeof(*sin6);
        return 0;
    }
    return DV_EINVAL;
}

const char *net_addr_str(const struct net_addr *a, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];

    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, ntohs(sin->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, ntohs(sin6->sin6_port));
    } else {
        snprintf(out, cap, "?");
    }
    return out;
}

bool net_addr_eq(const struct net_addr *a, const struct net_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

bool net_addr_same_host(const struct net_addr *a, const struct net_addr *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)&b->ss)->sin_addr.s_addr;
    if (a->ss.ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr,
                       &((const struct sockaddr_in6 *)&b->ss)->sin6_addr,
                       sizeof(struct in6_addr));
    return false;
}

uint16_t net_addr_port(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

bool net_addr_is_any(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (a->ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
    return false;
}

int net_socket(int family, int type)
{
    return socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

int net_listen(const struct net_addr *a, int type, int backlog)
{
    int one = 1;
    int fd = net_socket(a->ss.ss_family, type);

    if (fd < 0)
        return DV_EIO;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
        (type == SOCK_STREAM && listen(fd, backlog) < 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return DV_EIO;
    }
    return fd;
}

uint64_t net_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- packet info --------------------------------------------------------- */

bool net_pktinfo_enable(int fd, const struct net_addr *bound)
{
    int one = 1;

    if (!net_addr_is_any(bound))
        return false;
    if (bound->ss.ss_family == AF_INET)
        setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    else
        setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
    return true;
}

bool net_pktinfo_read(struct msghdr *mh, uint16_t port, struct net_addr *dst, int *ifindex)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            struct sockaddr_in *sin = (struct sockaddr_in *)&dst->ss;
            memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
            memset(dst, 0, sizeof(*dst));
            sin->sin_family = AF_INET;
            sin->sin_addr = pi.ipi_addr;
            sin->sin_port = htons(port);
            dst->len = sizeof(*sin);
            *ifindex = pi.ipi_ifindex;
            return true;
        }
        if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&dst->ss;
            memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
            memset(dst, 0, sizeof(*dst));
            sin6->sin6_family = AF_INET6;
            sin6->sin6_addr = pi.ipi6_addr;
            sin6->sin6_port = htons(port);
            if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
                sin6->sin6_scope_id = pi.ipi6_ifindex;
            dst->len = sizeof(*sin6);
            *ifindex = (int)pi.ipi6_ifindex;
            return true;
        }
    }
    return false;
}

size_t net_pktinfo_write(uint8_t *cbuf, const struct sockaddr *src, int ifindex)
{
    struct msghdr mh = {.msg_control = cbuf, .msg_controllen = NET_PKTINFO_SPACE};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    memset(cbuf, 0, NET_PKTINFO_SPACE);
    if (src->sa_family == AF_INET) {
        struct in_pktinfo pi = {.ipi_ifindex = ifindex};
        pi.ipi_spec_dst = ((const struct sockaddr_in *)src)->sin_addr;
        cm->cmsg_level = IPPROTO_IP;
        cm->cmsg_type = IP_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof(pi));
        memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
        return CMSG_SPACE(sizeof(pi));
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)src;
    struct in6_pktinfo pi6 = {.ipi6_addr = sin6->sin6_addr,
                              .ipi6_ifindex = ifindex ? (unsigned)ifindex : sin6->sin6_scope_id};
    cm->cmsg_level = IPPROTO_IPV6;
    cm->cmsg_type = IPV6_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi6));
    memcpy(CMSG_DATA(cm), &pi6, sizeof(pi6));
    return CMSG_SPACE(sizeof(pi6));
}
