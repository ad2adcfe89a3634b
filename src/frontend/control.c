#include "frontend/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "frontend/accept.h"

enum {
    CONTROL_LINE = 512,
    CONTROL_OUT = 2048,
    CONTROL_MAX_CONNS = 8,
};

/* a local client sends its line at once; one that does not is closed */
static const ev_tstamp CONTROL_TIMEOUT_S = 2.0;

struct cconn {
    struct cconn *next;
    struct control *ctl;
    ev_io io;
    ev_timer timer;
    int fd;
    size_t in_len, out_len, out_off;
    bool responding;
    char in[CONTROL_LINE];
    char out[CONTROL_OUT];
};

struct control {
    ev_io io;
    struct fe_accept_guard guard;
    struct ev_loop *loop;
    int fd;
    char *path;
    control_fn fn;
    void *arg;
    struct cconn *conns;
    unsigned nconns;
};

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

static void cconn_close(struct cconn *cc)
{
    struct control *c = cc->ctl;

    ev_io_stop(c->loop, &cc->io);
    ev_timer_stop(c->loop, &cc->timer);
    close(cc->fd);
    for (struct cconn **pp = &c->conns; *pp; pp = &(*pp)->next) {
        if (*pp == cc) {
            *pp = cc->next;
            break;
        }
    }
    if (c->nconns-- == CONTROL_MAX_CONNS && !fe_accept_guard_paused(&c->guard))
        ev_io_start(c->loop, &c->io);
    free(cc);
}

/* Sends what is left of the reply; closes once it is all out. */
static void cconn_write(struct cconn *cc)
{
    while (cc->out_off < cc->out_len) {
        ssize_t n = send(cc->fd, cc->out + cc->out_off, cc->out_len - cc->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            log_debug("control: send: %s", strerror(errno));
            break;
        }
        cc->out_off += (size_t)n;
    }
    cconn_close(cc);
}

/* Runs the command once its line is complete (or the client stopped
 * sending), then switches the connection to writing the reply. */
static void cconn_respond(struct cconn *cc)
{
    struct control *c = cc->ctl;

    cc->in[cc->in_len] = 0;
    cc->in[strcspn(cc->in, "\r\n")] = 0;
    c->fn(c->arg, cc->in, cc->out, sizeof(cc->out));
    cc->out_len = strlen(cc->out);
    if (cc->out_len < sizeof(cc->out) - 1)
        cc->out[cc->out_len++] = '\n';
    cc->responding = true;
    ev_io_stop(c->loop, &cc->io);
    ev_io_set(&cc->io, cc->fd, EV_WRITE);
    ev_io_start(c->loop, &cc->io);
    cconn_write(cc);
}

static void cconn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct cconn *cc = w->data;

    if (cc->responding) {
        cconn_write(cc);
        return;
    }
    ssize_t n = recv(cc->fd, cc->in + cc->in_len, sizeof(cc->in) - 1 - cc->in_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            cconn_close(cc);
        return;
    }
    cc->in_len += (size_t)n;
    if (n == 0 || memchr(cc->in, '\n', cc->in_len) || cc->in_len == sizeof(cc->in) - 1)
        cconn_respond(cc);
}

static void cconn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    log_debug("control: client sent no command in time");
    cconn_close(w->data);
}

/* Every client connection is non-blocking with its own deadline, like every
 * other socket of the loop: a client that connects and sends nothing costs a
 * slot until its timer fires, never the loop's time. */
static void control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control *c = w->data;

    while (c->nconns < CONTROL_MAX_CONNS) {
        int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            fe_accept_guard_failed(&c->guard, errno);
            return;
        }
        struct cconn *cc = calloc(1, sizeof(*cc));
        if (!cc) {
            close(fd);
            return;
        }
        cc->ctl = c;
        cc->fd = fd;
        ev_io_init(&cc->io, cconn_io_cb, fd, EV_READ);
        cc->io.data = cc;
        ev_timer_init(&cc->timer, cconn_timer_cb, CONTROL_TIMEOUT_S, 0.);
        cc->timer.data = cc;
        ev_io_start(loop, &cc->io);
        ev_timer_start(loop, &cc->timer);
        cc->next = c->conns;
        c->conns = cc;
        c->nconns++;
    }
    /* at the cap: further clients wait in the backlog until one closes */
    ev_io_stop(loop, &c->io);
}

static void control_resume(void *arg)
{
    struct control *c = arg;

    if (c->nconns < CONTROL_MAX_CONNS)
        ev_io_start(c->loop, &c->io);
}

struct control *control_new(struct ev_loop *loop, const char *path, control_fn fn, void *arg)
{
    struct sockaddr_un sa;
    struct control *c;
    int fd;

    if (unix_addr(path, &sa) < 0)
        return NULL;
    fd = net_socket(AF_UNIX, SOCK_STREAM);
    if (fd < 0)
        return NULL;
    unlink(path); /* a socket file left by a previous run */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, 8) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        free(c);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    c->loop = loop;
    c->fd = fd;
    c->fn = fn;
    c->arg = arg;
    ev_io_init(&c->io, control_accept_cb, fd, EV_READ);
    c->io.data = c;
    fe_accept_guard_init(&c->guard, loop, &c->io, "control", control_resume, c);
    ev_io_start(loop, &c->io);
    return c;
}

void control_del(struct control *c)
{
    if (!c)
        return;
    while (c->conns)
        cconn_close(c->conns);
    ev_io_stop(c->loop, &c->io);
    fe_accept_guard_stop(&c->guard);
    close(c->fd);
    unlink(c->path); /* fails harmlessly once privileges are dropped */
    free(c->path);
    free(c);
}

int control_client(const char *path, const char *cmd)
{
    struct sockaddr_un sa;
    char reply[4096];
    size_t n = 0;
    int fd;

    if (unix_addr(path, &sa) < 0 || (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        fprintf(stderr, "dnsveil: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "dnsveil: cannot reach the daemon at %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    dprintf(fd, "%s\n", cmd);
    for (;;) {
        ssize_t r = recv(fd, reply + n, sizeof(reply) - 1 - n, 0);
        if (r <= 0 || (n += (size_t)r) == sizeof(reply) - 1)
            break;
    }
    close(fd);
    reply[n] = 0;
    fputs(reply, stdout);
    return strncmp(reply, "ok", 2) == 0 ? 0 : 1;
}
