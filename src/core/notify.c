#include "core/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

enum { NOTIFY_MAX = 4096 };

/* "/path" or "@abstract" (Linux's abstract namespace: a leading NUL byte and
 * a length that counts the name exactly, with no terminator). */
static int notify_addr(const char *s, struct sockaddr_un *sa, socklen_t *plen)
{
    size_t n = strlen(s);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if ((s[0] != '/' && s[0] != '@') || n < 2 || n >= sizeof(sa->sun_path))
        return DV_EINVAL;
    memcpy(sa->sun_path, s, n);
    if (s[0] == '@')
        sa->sun_path[0] = 0;
    *plen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (s[0] == '/'));
    return 0;
}

int notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t salen;
    ssize_t r;
    int fd, e;

    if (!path || !*path)
        return 1;
    if (notify_addr(path, &sa, &salen))
        return DV_EINVAL;
    /* a socket per message: a few a minute at most, and nothing to keep
     * valid across fork or reload */
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return DV_EIO;
    r = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
               (struct sockaddr *)&sa, salen);
    e = errno;
    close(fd);
    errno = e;
    return r < 0 ? DV_EIO : 0;
}

int notify_sendf(const char *fmt, ...)
{
    char buf[NOTIFY_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return DV_ESPACE;
    return notify_send(buf);
}

/* A whole positive decimal number, or 0. */
static unsigned long long env_number(const char *name)
{
    const char *s = getenv(name);
    unsigned long long v;
    char *end;

    if (!s || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    return errno || *end ? 0 : v;
}

uint64_t notify_watchdog_usec(void)
{
    unsigned long long pid;

    if (getenv("WATCHDOG_PID")) {
        pid = env_number("WATCHDOG_PID");
        if (pid == 0 || pid != (unsigned long long)getpid())
            return 0;
    }
    return env_number("WATCHDOG_USEC");
}

uint64_t notify_monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
