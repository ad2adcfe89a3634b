/* relay — the ODoH relay (RFC 9230 Oblivious Proxy) behind the DoH
 * listeners: a sealed query a client POSTs with targethost/targetpath goes
 * to that target, if it is on the allow list, over our own DoH client
 * (upstream/doh.c's pooled connections, one upstream per target), and the
 * target's answer goes back as it came. The body is never opened, the
 * client's address never leaves this host (the request the target sees is
 * ours), and nothing is cached. */
#ifndef DV_FRONTEND_RELAY_H
#define DV_FRONTEND_RELAY_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct fe_relay;

/* One forwarded request's end: the target's status and body (NULL/0 when
 * none), 502 when it could not be reached, 504 after the deadline, 403
 * for a target not on the list (then from inside fe_relay_forward). */
typedef void (*fe_relay_done_fn)(void *arg, int status, const char *ctype, const uint8_t *body,
                                 size_t len);

/* The targets of cfg ([server] odoh_relay_targets); *pr = NULL when there
 * are none. 0, DV_EINVAL (a target that cannot be made, logged) or
 * DV_ENOMEM. The caller holds the one reference. */
int fe_relay_new(struct ev_loop *loop, const struct config *cfg, struct fe_relay **pr);
void fe_relay_ref(struct fe_relay *r);
/* NULL is ignored. Requests in flight hold their own reference. */
void fe_relay_unref(struct fe_relay *r);

/* Forwards body to https://host path. done is called exactly once, maybe
 * before this returns. 0 or DV_ENOMEM (done is not called). */
int fe_relay_forward(struct fe_relay *r, const char *host, const char *path, const uint8_t *body,
                     size_t len, fe_relay_done_fn done, void *arg);

#endif
