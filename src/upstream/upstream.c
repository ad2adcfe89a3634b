#include "upstream/upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

struct scheme {
    const char *prefix;
    const struct transport_ops *ops;
    enum upstream_proto proto;
    uint16_t port;
};

static const struct scheme schemes[] = {
    {"udp://", &plain_ops, UPSTREAM_UDP, 53},
    {"tcp://", &plain_ops, UPSTREAM_TCP, 53},
};

struct upstream *upstream_new(struct ev_loop *loop, const char *name, const char *url,
                              char *err, size_t errlen)
{
    const struct scheme *sc = NULL;
    struct upstream *u;

    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0) {
            sc = &schemes[i];
            break;
        }
    }
    if (!sc) {
        snprintf(err, errlen, "unsupported upstream URL '%s' (expected udp:// or tcp://)", url);
        return NULL;
    }
    u = calloc(1, sizeof(*u));
    if (!u)
        goto fail_alloc;
    u->name = strdup(name ? name : url);
    u->url = strdup(url);
    if (!u->name || !u->url)
        goto fail_strings;
    if (net_addr_parse(url + strlen(sc->prefix), sc->port, &u->addr)) {
        snprintf(err, errlen, "upstream '%s': expected an IP address with an optional port", url);
        goto fail_strings;
    }
    u->ops = sc->ops;
    u->proto = sc->proto;
    u->loop = loop;
    u->refs = 1;
    int rc = u->ops->open(u);
    if (rc) {
        snprintf(err, errlen, "upstream '%s': %s", url, dv_strerror(rc));
        goto fail_strings;
    }
    return u;

fail_strings:
    free(u->name);
    free(u->url);
    free(u);
    return NULL;
fail_alloc:
    snprintf(err, errlen, "out of memory");
    return NULL;
}

void upstream_ref(struct upstream *u)
{
    u->refs++;
}

void upstream_unref(struct upstream *u)
{
    if (!u || --u->refs > 0)
        return;
    u->ops->close(u);
    free(u->name);
    free(u->url);
    free(u);
}
