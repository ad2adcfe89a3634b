/* tls_time — see tls_time.h. */
#include "tls/tls_time.h"

#include <stdio.h>
#include <time.h>

#include "core/log.h"

#ifndef DV_BUILD_EPOCH
#error "DV_BUILD_EPOCH must be defined by the build (CMakeLists.txt)"
#endif

static enum tls_time_mode mode = TLS_TIME_AUTO;
static bool said_relaxed;  /* the "dates not checked" line was logged */
static bool said_strict;   /* the "clock looks unset, still strict" line was logged */

void tls_time_set_mode(enum tls_time_mode m)
{
    mode = m;
}

enum tls_time_mode tls_time_get_mode(void)
{
    return mode;
}

int64_t tls_time_build_epoch(void)
{
    return (int64_t)DV_BUILD_EPOCH;
}

bool tls_time_relaxed_at(enum tls_time_mode m, int64_t now, int64_t build)
{
    return m == TLS_TIME_AUTO && now < build;
}

static void day(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(out, cap, "%Y-%m-%d", &tm))
        snprintf(out, cap, "%lld", (long long)t);
}

bool tls_time_relaxed(int64_t now)
{
    int64_t build = tls_time_build_epoch();
    bool relaxed = tls_time_relaxed_at(mode, now, build);
    char clock[32], built[32];

    day(now, clock, sizeof(clock));
    day(build, built, sizeof(built));
    if (relaxed && !said_relaxed) {
        said_relaxed = true;
        log_warn("tls: the system clock (%s) is earlier than this build (%s), so it is not "
                 "set yet: certificate validity dates are not checked until it is "
                 "(chain, name, pins and signatures still are; tls_time_check = \"auto\")",
                 clock, built);
    } else if (!relaxed && said_relaxed && now >= build) {
        said_relaxed = false;
        log_info("tls: the system clock (%s) is past this build's date: certificate "
                 "validity dates are checked again", clock);
    } else if (mode == TLS_TIME_STRICT && now < build && !said_strict) {
        said_strict = true;
        log_warn("tls: the system clock (%s) is earlier than this build (%s); with "
                 "tls_time_check = \"strict\" certificates will fail their validity dates "
                 "until it is set", clock, built);
    }
    return relaxed;
}
