#include "core/rand.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"

enum { RAND_POOL = 4096 };

static uint8_t pool[RAND_POOL];
static size_t avail;

/* A forked child must not reuse its parent's bytes. glibc no longer caches
 * getpid(), so comparing pids cost a system call per call (1.7 per DoT
 * query); a fork handler that empties the child's pool costs nothing. */
static void forget_in_child(void)
{
    memset(pool, 0, sizeof(pool));
    avail = 0;
}

static void refill(void)
{
    static bool hooked;
    size_t got = 0;

    if (!hooked) {
        if (pthread_atfork(NULL, NULL, forget_in_child) != 0) {
            log_err("pthread_atfork failed");
            abort();
        }
        hooked = true;
    }

    while (got < sizeof(pool)) {
        ssize_t n = getrandom(pool + got, sizeof(pool) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* no kernel randomness means no safe IDs: refuse to go on */
            log_err("getrandom: %s", strerror(errno));
            abort();
        }
        got += (size_t)n;
    }
    avail = sizeof(pool);
}

void rand_bytes(void *buf, size_t len)
{
    uint8_t *out = buf;

    while (len > 0) {
        if (avail == 0)
            refill();
        size_t n = len < avail ? len : avail;
        /* hand out from the end and wipe what was used */
        memcpy(out, pool + avail - n, n);
        memset(pool + avail - n, 0, n);
        avail -= n;
        out += n;
        len -= n;
    }
}

uint32_t rand_u32(void)
{
    uint32_t v;

    rand_bytes(&v, sizeof(v));
    return v;
}

uint32_t rand_uniform(uint32_t n)
{
    if (n < 2)
        return 0;
    /* reject the top slice that would favour small values */
    uint32_t limit = -n % n;
    for (;;) {
        uint32_t v = rand_u32();
        if (v >= limit)
            return v % n;
    }
}
