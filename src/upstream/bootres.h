/* bootres — an upstream whose host is a name, resolved through another
 * upstream (bootstrap_upstream = "NAME": encrypted and given by IP), never
 * through the system resolver. A and AAAA are asked at once; the addresses
 * replace the upstream's (upstream_set_addrs) and are asked again when the
 * shortest TTL runs out (at least 5 s, at most a day). A failed round keeps
 * the addresses it had and tries again after 5 s, doubling to 5 minutes. */
#ifndef DV_UPSTREAM_BOOTRES_H
#define DV_UPSTREAM_BOOTRES_H

#include <ev.h>

struct upstream;
struct bootres;

/* Starts resolving target->host through via; takes a reference on both.
 * NULL on ENOMEM. */
struct bootres *bootres_new(struct ev_loop *loop, struct upstream *target, struct upstream *via);
/* Cancels what is in flight and drops the references. */
void bootres_del(struct bootres *b);

#endif
