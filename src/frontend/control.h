/* control — a local administration socket (AF_UNIX, stream, mode 0600, bound
 * before privileges are dropped, so only root can use it). One command per
 * connection, one line in, one line out:
 *   "flush"          empty the cache
 *   "flush NAME"     remove NAME and every name below it from the cache
 *   "stats"          the counters, as in the SIGUSR1 log lines
 *   "netchange"      the network changed: upstream connections are checked
 *   "portal [S|off]" every name through the network's resolver for S seconds
 * `dnsveil --control PATH COMMAND...` is the client. */
#ifndef DV_FRONTEND_CONTROL_H
#define DV_FRONTEND_CONTROL_H

#include <ev.h>
#include <stddef.h>

struct control;

/* Runs cmd (a NUL-terminated line without its newline) and writes the reply
 * line into out (NUL-terminated). */
typedef void (*control_fn)(void *arg, const char *cmd, char *out, size_t cap);

/* Binds path (replacing a stale socket file) and serves it. NULL with errno. */
struct control *control_new(struct ev_loop *loop, const char *path, control_fn fn, void *arg);
/* Stops serving and removes the socket file if it can. */
void control_del(struct control *c);

/* Client side: sends cmd to the daemon at path and prints the reply to
 * stdout. 0 when the daemon answered "ok ...", 1 otherwise. */
int control_client(const char *path, const char *cmd);

#endif
