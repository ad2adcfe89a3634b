/* portal — captive portals on purpose (see portal.h). */
#include "resolve/portal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "dns/dns.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

enum {
    PORTAL_FILE_MAX = 65536,
    PORTAL_MAX_S = 3600, /* an open portal is for logging in, not for living in */
};

/* What Android and ChromeOS, Apple, Windows, Firefox, NetworkManager
 * (GNOME, Ubuntu, Debian) and KDE probe to find a portal. */
const char *const portal_default_names[] = {
    "connectivitycheck.gstatic.com",
    "connectivitycheck.android.com",
    "clients3.google.com",
    "captive.apple.com",
    "www.msftconnecttest.com",
    "ipv6.msftconnecttest.com",
    "www.msftncsi.com",
    "dns.msftncsi.com",
    "detectportal.firefox.com",
    "nmcheck.gnome.org",
    "connectivity-check.ubuntu.com",
    "network-test.debian.org",
    "networkcheck.kde.org",
    NULL,
};

struct portal {
    struct ev_loop *loop;
    char *resolv_conf;
    uint8_t (*names)[DNS_NAME_MAX]; /* wire form, lower case */
    uint8_t *name_lens;
    size_t n_names;
    unsigned default_s;
    uint64_t open_until; /* monotonic ms; 0 = closed */
    ev_timer closer;
    struct upstream *u;  /* plain UDP, aimed anew before each query */
    struct pool *pool;
};

/* ---- resolv.conf --------------------------------------------------------- */

/* An address literal (resolv.conf has no ports) that is not loopback. */
static bool resolver_addr(const char *p, struct net_addr *out)
{
    static const uint8_t v6_loop[16] = {[15] = 1};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;

    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, p, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(53);
        out->len = sizeof(*v4);
        return (ntohl(v4->sin_addr.s_addr) >> 24) != 127;
    }
    /* a scoped fe80::1%eth0 does not parse here: skipped */
    if (inet_pton(AF_INET6, p, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(53);
        out->len = sizeof(*v6);
        return memcmp(&v6->sin6_addr, v6_loop, 16) != 0;
    }
    return false;
}

int portal_parse_resolv(const char *text, size_t len, struct net_addr *out)
{
    size_t i = 0;

    while (i < len) {
        char line[256];
        size_t n = 0;

        while (i < len && text[i] != '\n') {
            if (n < sizeof(line) - 1)
                line[n++] = text[i];
            i++;
        }
        i++;
        line[n] = 0;
        /* "nameserver ADDR" and nothing else counts; '#' or ';' starts a comment */
        char *p = line + strspn(line, " \t");
        if (strncmp(p, "nameserver", 10) != 0 || (p[10] != ' ' && p[10] != '\t'))
            continue;
        p += 10 + strspn(p + 10, " \t");
        p[strcspn(p, " \t\r#;")] = 0;
        if (resolver_addr(p, out))
            return 0;
    }
    return DV_EINVAL;
}

static int read_resolver(const struct portal *p, struct net_addr *out)
{
    static char text[PORTAL_FILE_MAX];
    FILE *f = fopen(p->resolv_conf, "r");
    size_t n;

    if (!f) {
        log_warn("portal: cannot read %s: %s", p->resolv_conf, strerror(errno));
        return DV_EIO;
    }
    n = fread(text, 1, sizeof(text), f);
    fclose(f);
    if (portal_parse_resolv(text, n, out)) {
        log_warn("portal: %s names no nameserver (other than loopback)", p->resolv_conf);
        return DV_EINVAL;
    }
    return 0;
}

/* ---- the window ---------------------------------------------------------- */

static void closer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct portal *p = w->data;

    if (!p->open_until)
        return;
    p->open_until = 0;
    log_info("portal: closed (time is up); names go the encrypted way again");
}

unsigned portal_open(struct portal *p, unsigned seconds, uint64_t now)
{
    if (seconds > PORTAL_MAX_S)
        seconds = PORTAL_MAX_S;
    ev_timer_stop(p->loop, &p->closer);
    if (!seconds) {
        if (p->open_until)
            log_info("portal: closed by request");
        p->open_until = 0;
        return 0;
    }
    p->open_until = now + (uint64_t)seconds * 1000;
    ev_timer_set(&p->closer, (double)seconds, 0.);
    ev_timer_start(p->loop, &p->closer);
    log_info("portal: open for %u s: every name goes to the network's resolver (%s), "
             "unencrypted, to let you log in", seconds, p->resolv_conf);
    return seconds;
}

unsigned portal_left(const struct portal *p, uint64_t now)
{
    return p->open_until > now ? (unsigned)((p->open_until - now + 999) / 1000) : 0;
}

unsigned portal_default_seconds(const struct portal *p)
{
    return p->default_s;
}

void portal_inherit(struct portal *p, const struct portal *old)
{
    uint64_t now = net_now_ms();

    if (old && portal_left(old, now))
        portal_open(p, portal_left(old, now), now);
}

enum portal_route portal_match(struct portal *p, const uint8_t *name, size_t len, uint64_t now)
{
    for (size_t i = 0; i < p->n_names; i++)
        if (p->name_lens[i] == len && !memcmp(p->names[i], name, len))
            return PORTAL_NAME;
    if (p->open_until && now >= p->open_until)
        closer_cb(p->loop, &p->closer, 0); /* the timer has not run yet */
    return p->open_until ? PORTAL_OPEN : PORTAL_NO;
}

struct pool *portal_pool(struct portal *p, struct net_addr *where)
{
    if (read_resolver(p, where))
        return NULL;
    /* plain.c connects each query's socket to u->addr when it starts */
    p->u->addr = *where;
    return p->pool;
}

/* ---- lifetime ------------------------------------------------------------ */

static int add_name(struct portal *p, const char *s)
{
    int n = dns_name_from_str(s, p->names[p->n_names]);

    if (n < 0)
        return DV_EINVAL; /* config.c checked the configured ones */
    dns_name_lower(p->names[p->n_names], (size_t)n);
    p->name_lens[p->n_names++] = (uint8_t)n;
    return 0;
}

struct portal *portal_new(struct ev_loop *loop, const struct config *cfg, int *err)
{
    struct cfg_upstream uc = {.name = "portal", .url = "udp://0.0.0.0:53"};
    char why[256];
    size_t n = 0;
    struct portal *p;

    *err = 0;
    if (!cfg->portal_resolv_conf)
        return NULL;
    if (cfg->portal_names_set)
        n = cfg->n_portal_names;
    else
        while (portal_default_names[n])
            n++;
    p = calloc(1, sizeof(*p));
    if (!p || !(p->resolv_conf = strdup(cfg->portal_resolv_conf)) ||
        !(p->names = calloc(n + 1, sizeof(*p->names))) ||
        !(p->name_lens = calloc(n + 1, sizeof(*p->name_lens))))
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (add_name(p, cfg->portal_names_set ? cfg->portal_names[i] : portal_default_names[i]))
            goto fail;
    p->loop = loop;
    p->default_s = cfg->portal_open_s;
    ev_init(&p->closer, closer_cb);
    p->closer.data = p;
    p->u = upstream_new(loop, &uc, cfg, why, sizeof(why));
    if (!p->u)
        goto fail;
    p->pool = pool_new("portal", &p->u, NULL, 1, CFG_STRATEGY_FAILOVER, 0);
    if (!p->pool)
        goto fail;
    return p;
fail:
    *err = DV_ENOMEM;
    portal_del(p);
    return NULL;
}

void portal_del(struct portal *p)
{
    if (!p)
        return;
    if (p->loop)
        ev_timer_stop(p->loop, &p->closer);
    pool_unref(p->pool);
    upstream_unref(p->u);
    free(p->names);
    free(p->name_lens);
    free(p->resolv_conf);
    free(p);
}
