/* happy — Happy Eyeballs v2 (RFC 8305) connection racing for an upstream
 * host with several bootstrap addresses: the addresses are ordered IPv6
 * first with the families interleaved (4), one connection attempt starts
 * every 250 ms (5) or as soon as the previous one failed, every address is
 * tried, and the first connection that completes wins; the others are
 * closed. Each attempt's socket comes from conn_connect, so what it sets on
 * a socket applies here too. */
#ifndef DV_UPSTREAM_HAPPY_H
#define DV_UPSTREAM_HAPPY_H

#include <ev.h>
#include <stddef.h>

#include "core/net.h"

enum { HAPPY_STAGGER_MS = 250, HAPPY_MAX_ADDRS = 16 };

struct happy;

/* The race is over: fd is the connected socket (now the callee's) or -1
 * with err the last errno seen. The happy object is already gone. */
typedef void (*happy_cb)(void *arg, int fd, int err);

/* Orders addrs (n of them, at most HAPPY_MAX_ADDRS are kept) as RFC 8305
 * section 4 asks: IPv6 first, then alternating families, each family in
 * the order given. Returns the count written to out. */
size_t happy_order(const struct net_addr *addrs, size_t n, struct net_addr *out);

/* Starts racing connections of type (SOCK_STREAM) to addrs, in the order
 * given (see happy_order). cb runs later from the loop, never from inside
 * happy_start. NULL when no attempt could even start (every address
 * refused at once) or on ENOMEM; errno is set. */
struct happy *happy_start(struct ev_loop *loop, const struct net_addr *addrs, size_t n, int type,
                          unsigned stagger_ms, const char *name, happy_cb cb, void *arg);
/* Stops the race and closes its sockets; cb will not run. */
void happy_cancel(struct happy *h);

#endif
