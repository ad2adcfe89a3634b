/* conn — connection plumbing shared by dot, doh, doq and odoh (see conn.h). */
#include "upstream/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "dns/dns.h"

enum {
    CONN_BACKOFF_MIN_MS = 250,
    CONN_BACKOFF_MAX_MS = 30000,
};

/* ---- request lists -------------------------------------------------------- */

void conn_list_push(struct list *l, struct conn_link *e)
{
    e->on = l;
    list_push(l, &e->l);
}

void conn_list_push_front(struct list *l, struct conn_link *e)
{
    e->on = l;
    list_push_front(l, &e->l);
}

void conn_list_unlink(struct conn_link *e)
{
    if (!e->on)
        return;
    list_unlink(e->on, &e->l);
    e->on = NULL;
}

struct conn_link *conn_list_pop(struct list *l)
{
    struct conn_link *e = conn_elem(l->head, struct conn_link, l);

    if (e)
        conn_list_unlink(e);
    return e;
}

void conn_list_splice_front(struct list *dst, struct list *src)
{
    for (struct list_link *e = src->head; e; e = e->next)
        conn_elem(e, struct conn_link, l)->on = dst;
    list_splice_front(dst, src);
}

/* ---- the send prologue and the watchers ----------------------------------- */

int conn_send_check(const struct xfer *x, size_t waiting, const char *name)
{
    /* a query near 64 KiB is no real query, and the room keeps every frame
     * length and every buffer of x->len + CONN_QUERY_ROOM within bounds */
    if (x->len < DNS_HDR_LEN || x->len > DNS_MSG_MAX - CONN_QUERY_ROOM)
        return DV_EINVAL;
    if (waiting >= CONN_WAIT_MAX) {
        log_debug("upstream %s: too many queries waiting", name);
        return DV_ECONN; /* the server cannot keep up: do not hoard queries */
    }
    return 0;
}

void conn_io_watch(struct ev_loop *loop, ev_io *io, int fd, int events)
{
    if (ev_is_active(io) == (events != 0) && (io->events & (EV_READ | EV_WRITE)) == events &&
        io->fd == fd)
        return;
    ev_io_stop(loop, io);
    ev_io_set(io, fd, events);
    if (events)
        ev_io_start(loop, io);
}

void conn_timer_arm(struct ev_loop *loop, ev_timer *t, double after)
{
    if (after > 0.) {
        /* one adjustment in libev's heap where a stop and a start are a
         * removal and an insertion; libev reads repeat only in
         * ev_timer_again and when the timer fires, so it stays one-shot */
        t->repeat = after;
        ev_timer_again(loop, t);
        t->repeat = 0.;
        return;
    }
    ev_timer_stop(loop, t);
    ev_timer_set(t, after, 0.);
    ev_timer_start(loop, t);
}

void conn_stall_init(ev_timer *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data)
{
    ev_init(t, cb);
    t->repeat = CONN_STALL_CHECK_MS / 1000.0;
    t->data = data;
}

/* ---- policy -------------------------------------------------------------- */

void conn_policy_init(struct conn_policy *p, const struct cfg_upstream *cfg)
{
    memset(p, 0, sizeof(*p));
    p->max_conns = cfg->max_conns ? cfg->max_conns : 1;
    p->idle_ms = cfg->idle_timeout_ms;
}

bool conn_policy_backoff(const struct conn_policy *p, uint64_t now)
{
    return now < p->retry_at;
}

bool conn_policy_may_open(const struct conn_policy *p, unsigned n_open, uint64_t now)
{
    return n_open < p->max_conns && !conn_policy_backoff(p, now);
}

uint64_t conn_policy_failed(struct conn_policy *p, uint64_t now)
{
    uint64_t d = CONN_BACKOFF_MIN_MS;

    p->fails++;
    for (unsigned i = 1; i < p->fails && d < CONN_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > CONN_BACKOFF_MAX_MS)
        d = CONN_BACKOFF_MAX_MS;
    /* jitter in [d/2, d) keeps many instances from reconnecting in step */
    d = d / 2 + rand_uniform((uint32_t)(d / 2));
    p->retry_at = now + d;
    return d;
}

void conn_policy_ok(struct conn_policy *p)
{
    p->fails = 0;
    p->retry_at = 0;
}

/* ---- sockets ------------------------------------------------------------- */

int conn_connect(const struct net_addr *a, int type, const char *name)
{
    int fd = net_socket(a->ss.ss_family, type);
    int one = 1;

    if (fd < 0) {
        log_debug("upstream %s: socket: %s", name, strerror(errno));
        return DV_EIO;
    }
    /* DNS messages are small and latency is what matters */
    if (type == SOCK_STREAM) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_stream_liveness(fd);
    }
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        log_debug("upstream %s: connect: %s", name, strerror(errno));
        close(fd);
        return DV_ECONN;
    }
    return fd;
}

bool conn_has_addr(const struct upstream *u, const char *name)
{
    if (u->n_addrs)
        return true;
    log_debug("upstream %s: no address yet", name);
    return false;
}

int conn_stream_open(struct ev_loop *loop, const struct upstream *u, const char *name,
                     void (*cb)(void *arg, int fd, int err), void *arg, int *pfd,
                     struct happy **ph)
{
    int fd;

    *pfd = -1;
    *ph = NULL;
    if (u->n_addrs > 1) {
        *ph = happy_start(loop, u->addrs, u->n_addrs, SOCK_STREAM, HAPPY_STAGGER_MS, name, cb,
                          arg);
        return *ph ? 0 : DV_ECONN;
    }
    if ((fd = conn_connect(&u->addrs[0], SOCK_STREAM, name)) < 0)
        return fd;
    *pfd = fd;
    return 0;
}

void conn_quickack(int fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

int conn_connect_error(int fd)
{
    int soerr = 0;
    socklen_t sl = sizeof(soerr);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        soerr = errno;
    return soerr;
}

/* ---- network changes and dead paths ------------------------------------- */

bool conn_local_gone(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    bool gone = false;
    int probe;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return false;
    /* binding a fresh socket to it fails with EADDRNOTAVAIL once it is gone */
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
    probe = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return false;
    if (bind(probe, (struct sockaddr *)&ss, len) < 0 && errno == EADDRNOTAVAIL)
        gone = true;
    close(probe);
    return gone;
}

void conn_stream_liveness(int fd)
{
    int on = 1, idle = 15, intvl = 5, cnt = 3;
    unsigned timeout = CONN_USER_TIMEOUT_MS;

    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
}

bool conn_stream_stalled(int fd, unsigned stall_ms)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return false;
    return ti.tcpi_unacked > 0 && ti.tcpi_retransmits > 0 && ti.tcpi_last_ack_recv >= stall_ms;
}

/* ---- queries ------------------------------------------------------------- */

int conn_pad_query(uint8_t *msg, size_t *len, size_t cap)
{
    if (cap > DNS_MSG_MAX)
        cap = DNS_MSG_MAX;
    /* padding also drops any client-subnet option; a failure leaves msg as it was */
    if (dns_edns_pad_query(msg, len, cap, CONN_PAD_BLOCK) == 0)
        return 0;
    return dns_edns_strip_opt(msg, len, DNS_OPT_ECS);
}

/* ---- completion scope ---------------------------------------------------- */

void conn_scope_init(struct conn_scope *s, void (*settle)(void *), void (*release)(struct conn_done *),
                     void (*destroy)(void *), void *arg)
{
    memset(s, 0, sizeof(*s));
    s->tail = &s->head;
    s->settle = settle;
    s->release = release;
    s->destroy = destroy;
    s->arg = arg;
}

void conn_scope_enter(struct conn_scope *s)
{
    s->depth++;
}

struct conn_done *conn_scope_pop(struct conn_scope *s)
{
    struct conn_done *d = s->head;

    if (!d)
        return NULL;
    s->head = d->next;
    if (!s->head)
        s->tail = &s->head;
    d->next = NULL;
    d->queued = false;
    return d;
}

/* Calls done for the first queued completion. false when none was queued. */
static bool deliver_one(struct conn_scope *s)
{
    struct conn_done *d = conn_scope_pop(s);
    struct xfer *x;

    if (!d)
        return false;
    x = d->x;
    d->x = NULL;
    x->tpriv = NULL;
    if (d->rc || d->raw) {
        x->done(x, d->rc, d->ans, d->len);
    } else {
        /* the wire carried another ID (remapped, or 0): the caller's goes back */
        dns_put16(d->ans, dns_get16(x->msg));
        x->done(x, 0, d->ans, d->len);
    }
    s->release(d);
    return true;
}

void conn_scope_leave(struct conn_scope *s)
{
    if (s->depth == 1) {
        while (!s->closed) {
            if (s->settle)
                s->settle(s->arg);
            if (!deliver_one(s))
                break;
        }
    }
    if (--s->depth == 0 && s->closed)
        s->destroy(s->arg);
}

void conn_scope_complete(struct conn_scope *s, struct conn_done *d, int rc, uint8_t *ans,
                         size_t len)
{
    d->rc = rc;
    d->ans = rc ? NULL : ans;
    d->len = rc ? 0 : len;
    d->next = NULL;
    d->queued = true;
    *s->tail = d;
    s->tail = &d->next;
}

void conn_scope_remove(struct conn_scope *s, struct conn_done *d)
{
    struct conn_done **pp = &s->head;

    while (*pp && *pp != d)
        pp = &(*pp)->next;
    if (!*pp)
        return;
    *pp = d->next;
    if (s->tail == &d->next)
        s->tail = pp;
    d->next = NULL;
    d->queued = false;
}

void conn_scope_close(struct conn_scope *s)
{
    s->closed = true;
    if (!s->depth)
        s->destroy(s->arg);
}

void conn_req_detach(struct conn_scope *s, struct conn_link *link, struct conn_done *d)
{
    conn_list_unlink(link);
    if (d->queued)
        conn_scope_remove(s, d);
}
