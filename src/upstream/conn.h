/* conn — the plumbing the connection-oriented transports (dot, doh, doq,
 * and odoh on top of doh) share, so they behave alike where they should and
 * read alike: each has struct X_up, X_conn and X_req with the same field
 * names for the same things (up, c, state, where, link, done, wait, flight,
 * kick, scope, timer, stall), and statics named X_conn_*, X_req_*, X_up_*
 * with the same suffix for the same role (_open, _fail, _flush, _arm_timer,
 * _timer_cb, _stall_cb, _finish, _release, _destroy, _kick_cb, _settle).
 *
 *   - request lists (conn_link on core/list.h), the send prologue
 *     (conn_send_check: the one length guard), event re-arm (conn_io_watch),
 *     timer arm (conn_timer_arm), the stall timer (conn_stall_init).
 *   - conn_policy: one upstream's connection policy — how many connections
 *     (cfg max_conns), how long an unused one lives (cfg idle_timeout_ms),
 *     and the exponential backoff with jitter after failed setups, during
 *     which new queries fail fast so the caller moves on to another upstream.
 *     Which of the open connections gets the next query stays each
 *     transport's business (their limits differ: IDs, streams, bytes).
 *   - conn_connect: a non-blocking socket connecting to the upstream.
 *   - conn_pad_query: RFC 8467 padding of an outgoing query, never with a
 *     client-subnet option.
 *   - conn_scope: the guard around every libev callback of a transport. It
 *     counts how deep callbacks nest, keeps completions until the outermost
 *     one unwinds and delivers them one by one from that clean stack (done
 *     may send, cancel or close), and frees the transport's state only then
 *     when close() ran meanwhile. */
#ifndef DV_UPSTREAM_CONN_H
#define DV_UPSTREAM_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/list.h"
#include "core/net.h"
#include "upstream/happy.h"
#include "upstream/upstream.h"

enum {
    CONN_PAD_BLOCK = 128, /* RFC 8467 4.1: queries in 128-byte blocks */
    /* room a query may grow by: an OPT RR, a keepalive option, padding */
    CONN_QUERY_ROOM = 160,
    CONN_WAIT_MAX = 16384, /* requests waiting for a connection or a stream */
};

/* ---- states ------------------------------------------------------------- */

/* Where a connection is in its life; every transport's connection struct
 * has it as `state`. */
enum conn_state { CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY, CONN_DEAD };

/* Where a request is: in the upstream's wait list, sent (on a connection,
 * or an exchange in flight), or finished and queued in the scope; a
 * transport's request struct has it as `where`. */
enum conn_req_where { CONN_REQ_NONE, CONN_REQ_WAIT, CONN_REQ_SENT, CONN_REQ_DONE };

/* ---- request lists -------------------------------------------------------- */

/* The lists every transport keeps its requests on (waiting for a
 * connection, in flight on one, failed together) are core/list.h's; a
 * request's link also knows the list it is on, so it can leave it without
 * the caller naming it. Zero-initialized is a link on no list. */
struct conn_link {
    struct list_link l; /* first: a list's head and next are the conn_link */
    struct list *on;
};

/* The element that holds link l (a struct conn_link *, or the list_link of
 * one: a list's head) as its member m; NULL for a NULL l, which is
 * evaluated once. */
#define conn_elem(l, type, m) ((type *)conn_elem_at((l), offsetof(type, m)))

static inline void *conn_elem_at(const void *l, size_t off)
{
    return l ? (void *)((char *)(uintptr_t)l - off) : NULL;
}

void conn_list_push(struct list *l, struct conn_link *e);
void conn_list_push_front(struct list *l, struct conn_link *e);
/* Takes e off the list it is on; nothing when it is on none. */
void conn_list_unlink(struct conn_link *e);
/* Unlinks and returns the first element, or NULL. */
struct conn_link *conn_list_pop(struct list *l);
/* Moves all of src in front of dst, in their order (src ends empty). */
void conn_list_splice_front(struct list *dst, struct list *src);

/* ---- the send prologue and the watchers ----------------------------------- */

/* What every transport's send checks first: x is a DNS message that still
 * fits one (DNS_MSG_MAX, a 16-bit frame) after growing by CONN_QUERY_ROOM,
 * and waiting (the requests already queued) is below CONN_WAIT_MAX. 0,
 * DV_EINVAL, or DV_ECONN (so the query moves to another upstream). */
int conn_send_check(const struct xfer *x, size_t waiting, const char *name);
/* Points io at fd for events (EV_READ, EV_WRITE or both; 0 stops it),
 * touching libev only when they change. */
void conn_io_watch(struct ev_loop *loop, ev_io *io, int fd, int events);
/* (Re)starts t to fire once after `after` seconds. */
void conn_timer_arm(struct ev_loop *loop, ev_timer *t, double after);
/* Sets up (not starting) the stall check of a connection: cb every
 * CONN_STALL_CHECK_MS with data in w->data. */
void conn_stall_init(ev_timer *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data);

/* ---- policy -------------------------------------------------------------- */

/* Embedded per upstream: conn_policy_init; nothing to free. */
struct conn_policy {
    unsigned max_conns;  /* open connections at the most */
    uint64_t idle_ms;    /* an unused connection closes after this */
    unsigned fails;      /* consecutive failed setups */
    uint64_t retry_at;   /* monotonic ms: no new connection before this */
};

void conn_policy_init(struct conn_policy *p, const struct cfg_upstream *cfg);
/* True while the backoff after a failed setup runs. */
bool conn_policy_backoff(const struct conn_policy *p, uint64_t now);
/* True when one more connection may open next to n_open (connecting or
 * working ones): below max_conns and not backing off. The caller asks only
 * when every open connection is saturated. */
bool conn_policy_may_open(const struct conn_policy *p, unsigned n_open, uint64_t now);
/* A setup failed: the next may start after the delay returned (ms), which
 * doubles per consecutive failure, with jitter in its upper half. */
uint64_t conn_policy_failed(struct conn_policy *p, uint64_t now);
/* A connection is up: the backoff is over. */
void conn_policy_ok(struct conn_policy *p);

/* ---- sockets ------------------------------------------------------------- */

/* A non-blocking socket of type (SOCK_STREAM with TCP_NODELAY, or
 * SOCK_DGRAM) connecting, or connected, to a. The fd, DV_EIO (no socket) or
 * DV_ECONN (refused at once; logged at debug with name). */
int conn_connect(const struct net_addr *a, int type, const char *name);
/* True when u has an address to connect to; false (logged at debug) while
 * its bootstrap upstream has not answered yet, which is no failure: no
 * backoff for that. */
bool conn_has_addr(const struct upstream *u, const char *name);
/* Starts a stream connection to u's addresses (u has one at least): a
 * connect when it has one, *pfd the socket; a happy-eyeballs race when it
 * has several (happy.h), *pfd -1 and *ph the race, whose winner cb gets.
 * 0, or DV_E* (nothing left open). */
int conn_stream_open(struct ev_loop *loop, const struct upstream *u, const char *name,
                     void (*cb)(void *arg, int fd, int err), void *arg, int *pfd,
                     struct happy **ph);
/* Acknowledges what a stream socket received now instead of after the
 * delayed-ACK timer (Linux re-enters delayed ACKs by itself, so call it after
 * every read that got data). A server that leaves Nagle on holds its next
 * small write until our ACK: without this, DoT through unbound waits ~40 ms
 * for the answer that follows its session tickets. */
void conn_quickack(int fd);
/* The outcome of a stream connect once the socket is writable: 0, or the
 * errno it failed with. */
int conn_connect_error(int fd);

/* ---- network changes and dead paths ------------------------------------- */

/* True when the local address fd is bound to no longer exists on this host
 * (a connection from there can never be answered again). */
bool conn_local_gone(int fd);

enum {
    CONN_STALL_CHECK_MS = 250, /* how often a connection with queries out is checked */
    CONN_STALL_MS = 200,       /* no ACK for this long, through a retransmission: stalled */
    CONN_USER_TIMEOUT_MS = 10000, /* unacknowledged data this old: the kernel gives up */
};

/* TCP keepalive (idle connections probed every few seconds after 15 s) and
 * TCP_USER_TIMEOUT (CONN_USER_TIMEOUT_MS) on a stream socket, so the kernel
 * ends a connection whose path went silent in seconds, not the ~15 minutes
 * of its default retransmissions. Best effort. */
void conn_stream_liveness(int fd);
/* True when data we sent on fd has waited through at least one
 * retransmission timeout with no ACK for stall_ms: the path has most likely
 * died under the connection (an answer that is merely slow was still ACKed
 * by the server's kernel). */
bool conn_stream_stalled(int fd, unsigned stall_ms);

/* ---- queries ------------------------------------------------------------- */

/* Pads msg[0..*len) in place to CONN_PAD_BLOCK (cap bytes available; dropping
 * any client-subnet option). A query that cannot be padded goes unpadded,
 * still without client subnet. 0, or DV_E* when msg cannot be sent at all. */
int conn_pad_query(uint8_t *msg, size_t *len, size_t cap);

/* ---- completion scope ---------------------------------------------------- */

/* Embedded in a transport's request. Owned by the request; the scope only
 * links it while queued. ans (set with rc 0) must stay valid until release. */
struct conn_done {
    struct conn_done *next;
    struct xfer *x;      /* the caller's; NULL once done ran or it was cancelled */
    int rc;
    uint8_t *ans;        /* the answer; its ID is set to the caller's on delivery */
    size_t len;
    bool queued;
    bool raw;            /* ans is not a DNS message (an ODoH body): no ID to set */
};

struct conn_scope {
    unsigned depth;      /* transport callbacks on the stack */
    bool closed;         /* close() ran: destroy once depth is 0 */
    struct conn_done *head, **tail;
    /* at the outermost level, before each delivery: hand out work, flush,
     * free dead connections; may be NULL */
    void (*settle)(void *arg);
    /* after done ran for d (d->x is NULL by then): the request may go */
    void (*release)(struct conn_done *d);
    /* frees the transport's state */
    void (*destroy)(void *arg);
    void *arg;
};

void conn_scope_init(struct conn_scope *s, void (*settle)(void *), void (*release)(struct conn_done *),
                     void (*destroy)(void *), void *arg);
void conn_scope_enter(struct conn_scope *s);
/* Leaves one level. The outermost settles and delivers every completion,
 * one at a time, until none is left or close() ran; then destroys the state
 * if close() ran. Nothing may touch the transport's state afterwards. */
void conn_scope_leave(struct conn_scope *s);
/* Queues d's outcome (d->x set, not yet queued) for delivery on the way out. */
void conn_scope_complete(struct conn_scope *s, struct conn_done *d, int rc, uint8_t *ans,
                         size_t len);
/* Takes a queued d back (its xfer was cancelled). */
void conn_scope_remove(struct conn_scope *s, struct conn_done *d);
/* close() ran: destroys now when no callback is on the stack, else when the
 * outermost leaves. Queued completions are never delivered; the caller frees
 * them (conn_scope_pop) as close() must. */
void conn_scope_close(struct conn_scope *s);
/* Unlinks and returns the first queued completion, or NULL. */
struct conn_done *conn_scope_pop(struct conn_scope *s);
/* Takes a request out of the places every transport has: off the list its
 * link is on (a wait list, a connection's), and out of s's queue when its
 * outcome waits there. What the transport itself holds (a stream, an ID)
 * stays its business. */
void conn_req_detach(struct conn_scope *s, struct conn_link *link, struct conn_done *d);

#endif
