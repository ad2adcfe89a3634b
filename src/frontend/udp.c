/* UDP listener: queries arrive in recvmmsg batches; replies produced during
 * one loop iteration leave in one sendmmsg, flushed from an ev_prepare
 * watcher just before the loop blocks again. On a wildcard address the
 * destination of each query is read with IP(V6)_PKTINFO and the reply is
 * sent from it, or a multi-homed host would answer from the wrong address. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "frontend/frontend.h"
#include "resolve/query.h"

enum {
    UDP_BATCH = 32,
    UDP_RX_SLOT = 4096, /* a larger query is not one we answer over UDP */
    UDP_TX_SLOTS = 64,
    UDP_TX_SLOT = 2048, /* rarer, larger replies go out at once with sendto */
    UDP_CMSG = NET_PKTINFO_SPACE,
    UDP_SOCKBUF = 4 << 20,
};

struct fe_udp {
    ev_io io;
    ev_prepare flush;
    struct ev_loop *loop;
    struct query_engine *qe;
    const struct net_addr *local;
    int fd;
    unsigned refs;
    bool pktinfo;

    size_t ntx;
    struct mmsghdr tx_msgs[UDP_TX_SLOTS];
    struct iovec tx_iov[UDP_TX_SLOTS];
    struct net_addr tx_addr[UDP_TX_SLOTS];
    uint8_t tx_buf[UDP_TX_SLOTS][UDP_TX_SLOT];
    uint8_t tx_cmsg[UDP_TX_SLOTS][UDP_CMSG];
};

/* shared by every listener: the loop is single-threaded. The headers point
 * at the buffers for good; a read resets only what the last one changed. */
static uint8_t rx_buf[UDP_BATCH][UDP_RX_SLOT];
static uint8_t rx_cmsg[UDP_BATCH][UDP_CMSG];
static struct mmsghdr rx_msgs[UDP_BATCH];
static struct iovec rx_iov[UDP_BATCH];
static struct net_addr rx_peer[UDP_BATCH];
static int rx_dirty = -1; /* slots the last read filled; -1: none set up */
static bool rx_pktinfo;

/* Readies the receive headers for a read on a socket with or without
 * packet info. */
static void rx_ready(bool pktinfo)
{
    int n = rx_dirty;

    if (n < 0) {
        for (int i = 0; i < UDP_BATCH; i++) {
            rx_iov[i].iov_base = rx_buf[i];
            rx_iov[i].iov_len = UDP_RX_SLOT;
            rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
            rx_msgs[i].msg_hdr.msg_iovlen = 1;
            rx_msgs[i].msg_hdr.msg_name = &rx_peer[i].ss;
            rx_msgs[i].msg_hdr.msg_control = rx_cmsg[i];
        }
    }
    if (n < 0 || pktinfo != rx_pktinfo)
        n = UDP_BATCH;
    rx_pktinfo = pktinfo;
    for (int i = 0; i < n; i++) {
        rx_msgs[i].msg_hdr.msg_namelen = sizeof(rx_peer[i].ss);
        rx_msgs[i].msg_hdr.msg_controllen = pktinfo ? UDP_CMSG : 0;
    }
    rx_dirty = 0;
}

static void udp_flush(struct fe_udp *u)
{
    size_t done = 0;

    while (done < u->ntx) {
        int n = sendmmsg(u->fd, u->tx_msgs + done, (unsigned)(u->ntx - done), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* full socket buffer or an unreachable client: UDP may lose these */
            log_debug("udp sendmmsg: %s", strerror(errno));
            done++;
            continue;
        }
        done += (size_t)n;
    }
    u->ntx = 0;
}

static void udp_unref(struct fe_udp *u)
{
    if (--u->refs > 0)
        return;
    udp_flush(u);
    ev_prepare_stop(u->loop, &u->flush);
    close(u->fd);
    free(u);
}

static void udp_send(void *ctx, const struct query_client *c, const uint8_t *msg, size_t len)
{
    struct fe_udp *u = ctx;

    if (len > UDP_TX_SLOT) {
        /* rare: send at once, from the right address too */
        uint8_t cbuf[UDP_CMSG];
        struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
        struct msghdr mh = {.msg_name = (void *)&c->peer.ss, .msg_namelen = c->peer.len,
                            .msg_iov = &iov, .msg_iovlen = 1};
        if (c->has_dst) {
            mh.msg_control = cbuf;
            mh.msg_controllen = net_pktinfo_write(cbuf, (const struct sockaddr *)&c->dst.ss, c->ifindex);
        }
        if (sendmsg(u->fd, &mh, 0) < 0)
            log_debug("udp sendmsg: %s", strerror(errno));
        return;
    }
    if (u->ntx == UDP_TX_SLOTS)
        udp_flush(u);
    size_t i = u->ntx++;
    memcpy(u->tx_buf[i], msg, len);
    u->tx_addr[i] = c->peer;
    u->tx_iov[i].iov_base = u->tx_buf[i];
    u->tx_iov[i].iov_len = len;
    memset(&u->tx_msgs[i], 0, sizeof(u->tx_msgs[i]));
    u->tx_msgs[i].msg_hdr.msg_name = &u->tx_addr[i].ss;
    u->tx_msgs[i].msg_hdr.msg_namelen = c->peer.len;
    u->tx_msgs[i].msg_hdr.msg_iov = &u->tx_iov[i];
    u->tx_msgs[i].msg_hdr.msg_iovlen = 1;
    if (c->has_dst) {
        u->tx_msgs[i].msg_hdr.msg_control = u->tx_cmsg[i];
        u->tx_msgs[i].msg_hdr.msg_controllen = net_pktinfo_write(u->tx_cmsg[i], (const struct sockaddr *)&c->dst.ss,
                                                                c->ifindex);
    }
    if (!ev_is_active(&u->flush))
        ev_prepare_start(u->loop, &u->flush);
}

static void udp_hold(void *ctx)
{
    ((struct fe_udp *)ctx)->refs++;
}

static void udp_release(void *ctx)
{
    udp_unref(ctx);
}

static const struct query_sink_ops udp_sink = {
    .send = udp_send,
    .hold = udp_hold,
    .release = udp_release,
};

static void udp_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct fe_udp *u = w->data;

    udp_flush(u);
    ev_prepare_stop(loop, w);
}

static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fe_udp *u = w->data;
    struct query_client c = {.ops = &udp_sink, .ctx = u, .local = u->local};

    /* bounded work per wakeup so TCP clients and timers are not starved */
    for (int round = 0; round < 4; round++) {
        rx_ready(u->pktinfo);
        int n = recvmmsg(u->fd, rx_msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            rx_dirty = 1; /* nothing is written back on failure; reset slot 0 anyway */
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                log_debug("udp recvmmsg: %s", strerror(errno));
            return;
        }
        rx_dirty = n;
        for (int i = 0; i < n; i++) {
            struct msghdr *mh = &rx_msgs[i].msg_hdr;
            if (mh->msg_flags & MSG_TRUNC) {
                query_count_drop(u->qe, &c);
                continue;
            }
            c.peer = rx_peer[i];
            c.peer.len = mh->msg_namelen;
            if (u->pktinfo)
                c.has_dst = net_pktinfo_read(mh, net_addr_port(u->local), &c.dst, &c.ifindex);
            query_submit(u->qe, rx_buf[i], rx_msgs[i].msg_len, &c);
        }
        if (n < UDP_BATCH)
            return;
    }
}

struct fe_udp *fe_udp_new(struct ev_loop *loop, const struct net_addr *a,
                          struct query_engine *qe, const struct net_addr *local)
{
    struct fe_udp *u;
    int fd = net_listen(a, SOCK_DGRAM, 0);

    if (fd < 0)
        return NULL;
    u = calloc(1, sizeof(*u));
    if (!u) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    u->loop = loop;
    u->qe = qe;
    u->local = local;
    u->fd = fd;
    /* a burst of queries must not overflow the default ~200 KiB buffer while
     * the loop is busy; as root at bind time the system maximum can be passed */
    int sz = UDP_SOCKBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    u->pktinfo = net_pktinfo_enable(fd, a);
    u->refs = 1;
    ev_io_init(&u->io, udp_read_cb, fd, EV_READ);
    u->io.data = u;
    ev_prepare_init(&u->flush, udp_flush_cb);
    u->flush.data = u;
    ev_io_start(loop, &u->io);
    return u;
}

void fe_udp_close(struct fe_udp *u)
{
    if (!u)
        return;
    ev_io_stop(u->loop, &u->io);
    udp_unref(u);
}

void fe_udp_set_local(struct fe_udp *u, const struct net_addr *local)
{
    u->local = local;
}
