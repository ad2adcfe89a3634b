/* net — socket addresses and small socket helpers shared by listeners and
 * transports. */
#ifndef DV_CORE_NET_H
#define DV_CORE_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parses "1.2.3.4", "1.2.3.4:53", "::1", "[::1]:53" (port defaults to
 * default_port). 0 or DV_EINVAL. */
int net_addr_parse(const char *s, uint16_t default_port, struct net_addr *out);
/* "1.2.3.4:53" / "[::1]:53" into out (always NUL-terminated). */
const char *net_addr_str(const struct net_addr *a, char *out, size_t cap);
bool net_addr_eq(const struct net_addr *a, const struct net_addr *b);
/* The same IP address, ports aside (one client's connections). */
bool net_addr_same_host(const struct net_addr *a, const struct net_addr *b);
uint16_t net_addr_port(const struct net_addr *a);
/* True for 0.0.0.0 and :: (a listener on every address). */
bool net_addr_is_any(const struct net_addr *a);

enum { NET_ADDRSTRLEN = 64 };

/* ---- packet info: datagram listeners on a wildcard address -------------- */

/* A reply from a socket bound to 0.0.0.0 or :: must leave from the address
 * the query was sent to, or the client does not recognise it: such sockets
 * read each datagram's destination (IP_PKTINFO / IPV6_RECVPKTINFO) and set
 * the source of each reply with the same control message. */
enum { NET_PKTINFO_SPACE = CMSG_SPACE(sizeof(struct in6_pktinfo)) };

/* When bound is a wildcard address, asks the kernel for each datagram's
 * destination on fd and returns true; false (nothing to do) otherwise. */
bool net_pktinfo_enable(int fd, const struct net_addr *bound);
/* The destination of a datagram received with mh (a control buffer of
 * NET_PKTINFO_SPACE), with port (host order) and, for an IPv6 link-local
 * address, the interface as its scope; *ifindex gets the interface. false
 * when mh carries no packet info. */
bool net_pktinfo_read(struct msghdr *mh, uint16_t port, struct net_addr *dst, int *ifindex);
/* Writes into cbuf (NET_PKTINFO_SPACE bytes) the control message that makes
 * a datagram leave from src, through interface ifindex when not 0 (for
 * IPv6, 0 means src's scope). Returns its length for msg_controllen. */
size_t net_pktinfo_write(uint8_t *cbuf, const struct sockaddr *src, int ifindex);

/* Non-blocking, close-on-exec socket. -1 with errno on failure. */
int net_socket(int family, int type);
/* Socket bound to a for listening (SO_REUSEADDR, IPV6_V6ONLY for v6, listen()
 * for stream sockets). The fd or DV_EIO with errno set. */
int net_listen(const struct net_addr *a, int type, int backlog);

/* Monotonic milliseconds. Called at the edges; the modules below take `now`
 * as a parameter so tests can move the clock. */
uint64_t net_now_ms(void);

#endif
