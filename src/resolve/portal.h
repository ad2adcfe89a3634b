/* portal — getting through a captive portal on purpose. A hotel or airport
 * network intercepts DNS until the user logs in, so every encrypted upstream
 * fails there. With [portal] resolv_conf set:
 *   - the names operating systems and browsers probe to detect a portal
 *     ([portal] names) always go to the network's own resolver, the first
 *     non-loopback nameserver of resolv_conf, read afresh for each query
 *     (NetworkManager and systemd-networkd rewrite it on every connection);
 *   - `portal [SECONDS]` on the control socket sends every name there for a
 *     limited time, so the user can log in; then it closes by itself.
 * Never anything else in plaintext, and never automatically. Each such query
 * is logged; its answer is not cached (a portal's answers are lies that must
 * not outlive it, and a cached true answer would hide the portal). */
#ifndef DV_RESOLVE_PORTAL_H
#define DV_RESOLVE_PORTAL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/net.h"

struct portal;
struct pool;

enum portal_route {
    PORTAL_NO,   /* the usual encrypted way */
    PORTAL_NAME, /* a portal-detection name */
    PORTAL_OPEN, /* portal mode is open for every name */
};

/* NULL when cfg has no portal (resolv_conf unset) or on ENOMEM (then *err is
 * set). cfg's names are copied. */
struct portal *portal_new(struct ev_loop *loop, const struct config *cfg, int *err);
void portal_del(struct portal *p);
/* A reload made p from the same [portal]: the open window carries over. */
void portal_inherit(struct portal *p, const struct portal *old);

/* How a query for name (wire form, lower-cased) goes at now (monotonic ms). */
enum portal_route portal_match(struct portal *p, const uint8_t *name, size_t len, uint64_t now);
/* Opens portal mode for seconds (0: closes it). The seconds actually set. */
unsigned portal_open(struct portal *p, unsigned seconds, uint64_t now);
/* Seconds portal mode stays open from now; 0 when closed. */
unsigned portal_left(const struct portal *p, uint64_t now);
unsigned portal_default_seconds(const struct portal *p);

/* The pool to send a portal query to, aimed at the resolver resolv_conf
 * names now (its address into where). NULL when the file names none. */
struct pool *portal_pool(struct portal *p, struct net_addr *where);

/* The first nameserver of a resolv.conf text that is not loopback (that
 * would be ourselves, or a stub in front of us). 0, or DV_EINVAL. */
int portal_parse_resolv(const char *text, size_t len, struct net_addr *out);

/* The defaults of [portal] names (NULL-terminated). */
extern const char *const portal_default_names[];

#endif
