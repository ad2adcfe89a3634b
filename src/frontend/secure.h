/* secure — the encrypted listeners of one daemon (DoT, DoH, DoQ) and the
 * certificate they present. Applying a configuration loads the certificate
 * and key again (a SIGHUP is how a renewed certificate is picked up), keeps
 * the sockets whose address is still wanted, binds new ones and closes the
 * rest; connections already open keep the certificate they started with. */
#ifndef DV_FRONTEND_SECURE_H
#define DV_FRONTEND_SECURE_H

#include <ev.h>
#include <stddef.h>

struct buf;
struct config;
struct fe_secure;
struct query_engine;

/* NULL on ENOMEM. */
struct fe_secure *fe_secure_new(struct ev_loop *loop, struct query_engine *qe);
/* Makes the listeners match cfg. 0; DV_EINVAL when the certificate or key
 * cannot be loaded (logged) and DV_EIO when an address cannot be bound
 * (logged): in both cases nothing has changed. DV_ENOMEM. */
int fe_secure_apply(struct fe_secure *s, const struct config *cfg);
/* Open listeners of either kind. */
size_t fe_secure_count(const struct fe_secure *s);
/* Appends the DoQ listeners' counters (Prometheus text, one series per
 * listener address) to b; nothing without a DoQ listener. s may be NULL. */
void fe_secure_metrics(const struct fe_secure *s, struct buf *b);
/* Closes every listener (replies in flight are still sent) and frees s. */
void fe_secure_del(struct fe_secure *s);

#endif
