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

enum { CONTROL_LINE = 512 };

struct control {
    ev_io io;
    struct ev_loop *loop;
    int fd;
    char *path;
    control_fn fn;
    void *arg;
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

/* Reads one short line with a small timeout: the client is local and sends
 * its command at once, so a blocking read bounded by SO_RCVTIMEO is simpler
 * than a per-connection state machine and cannot stall the loop for long. */
static void control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control *c = w->data;
    char line[CONTROL_LINE], out[2048];
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    size_t n = 0;
    int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (n < sizeof(line) - 1) {
        ssize_t r = recv(fd, line + n, sizeof(line) - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (memchr(line, '\n', n))
            break;
    }
    line[n] = 0;
    line[strcspn(line, "\r\n")] = 0;
    c->fn(c->arg, line, out, sizeof(out));
    size_t len = strlen(out);
    if (len < sizeof(out) - 1)
        out[len++] = '\n';
    if (send(fd, out, len, MSG_NOSIGNAL) < 0)
        log_debug("control: send: %s", strerror(errno));
    close(fd);
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
    ev_io_start(loop, &c->io);
    return c;
}

void control_del(struct control *c)
{
    if (!c)
        return;
    ev_io_stop(c->loop, &c->io);
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
