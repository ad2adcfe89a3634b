/* net — socket addresses and small socket helpers shared by listeners and
 * transports. */
#ifndef DV_CORE_NET_H
#define DV_CORE_NET_H

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

/* Non-blocking, close-on-exec socket. -1 with errno on failure. */
int net_socket(int family, int type);
/* Socket bound to a for listening (SO_REUSEADDR, IPV6_V6ONLY for v6, listen()
 * for stream sockets). The fd or DV_EIO with errno set. */
int net_listen(const struct net_addr *a, int type, int backlog);

/* Monotonic milliseconds. Called at the edges; the modules below take `now`
 * as a parameter so tests can move the clock. */
uint64_t net_now_ms(void);

#endif
