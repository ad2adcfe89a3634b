#include "core/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

struct pidfile {
    int fd;
    char *path;
    dev_t dev; /* what we created, so exit never removes someone else's file */
    ino_t ino;
};

/* The PID in a locked pidfile, for the message; 0 when unreadable. */
static long holder_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

int pidfile_open(const char *path, struct pidfile **pp)
{
    struct pidfile *p;
    struct stat st;
    int fd;

    *pp = NULL;
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_err("pidfile %s: %s", path,
                errno == ELOOP ? "is a symbolic link; refusing to follow it" : strerror(errno));
        return DV_EIO;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_err("pidfile %s: not a regular file", path);
        close(fd);
        return DV_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        long other = holder_pid(fd);
        close(fd);
        if (e == EWOULDBLOCK) {
            log_err("pidfile %s: locked by a running dnsveil (pid %ld); not starting", path,
                    other);
            return DV_EAGAIN;
        }
        log_err("pidfile %s: lock: %s", path, strerror(e));
        return DV_EIO;
    }
    p = calloc(1, sizeof(*p));
    if (!p || !(p->path = strdup(path))) {
        free(p);
        close(fd);
        return DV_ENOMEM;
    }
    p->fd = fd;
    p->dev = st.st_dev;
    p->ino = st.st_ino;
    *pp = p;
    return 0;
}

int pidfile_write(struct pidfile *p)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

    if (ftruncate(p->fd, 0) < 0 || pwrite(p->fd, buf, (size_t)n, 0) != n) {
        log_err("pidfile %s: write: %s", p->path, strerror(errno));
        return DV_EIO;
    }
    return 0;
}

void pidfile_close(struct pidfile *p)
{
    struct stat st;

    if (!p)
        return;
    /* remove only the file we locked, never one put at the path since */
    if (stat(p->path, &st) == 0 && st.st_dev == p->dev && st.st_ino == p->ino &&
        unlink(p->path) < 0) {
        log_info("pidfile %s: cannot remove it (%s); emptied instead. A directory owned "
                 "by the service user (/run/dnsveil/) lets it be removed",
                 p->path, strerror(errno));
        if (ftruncate(p->fd, 0) < 0)
            log_warn("pidfile %s: cannot empty it: %s", p->path, strerror(errno));
    }
    close(p->fd); /* drops the lock */
    free(p->path);
    free(p);
}
