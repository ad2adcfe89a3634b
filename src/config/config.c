#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

struct config *config_new(void)
{
    struct config *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->timeout_ms = 2500;
    c->tcp_idle_ms = 10000;
    c->tcp_max_conns = 256;
    c->log_level = DV_LOG_INFO;
    c->user = strdup("nobody");
    if (!c->user) {
        free(c);
        return NULL;
    }
    return c;
}

void config_free(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_upstreams; i++) {
        free(c->upstreams[i].name);
        free(c->upstreams[i].url);
    }
    free(c->upstreams);
    free(c->listeners);
    free(c->user);
    free(c);
}

int config_add_listener(struct config *c, const char *addr, bool udp, bool tcp)
{
    struct cfg_listener l = {.udp = udp, .tcp = tcp};
    struct cfg_listener *p;

    if (net_addr_parse(addr, 53, &l.addr))
        return DV_EINVAL;
    p = realloc(c->listeners, (c->n_listeners + 1) * sizeof(*p));
    if (!p)
        return DV_ENOMEM;
    c->listeners = p;
    c->listeners[c->n_listeners++] = l;
    return 0;
}

int config_add_upstream(struct config *c, const char *name, const char *url)
{
    struct cfg_upstream *p = realloc(c->upstreams, (c->n_upstreams + 1) * sizeof(*p));

    if (!p)
        return DV_ENOMEM;
    c->upstreams = p;
    p = &c->upstreams[c->n_upstreams];
    p->name = strdup(name ? name : url);
    p->url = strdup(url);
    if (!p->name || !p->url) {
        free(p->name);
        free(p->url);
        return DV_ENOMEM;
    }
    c->n_upstreams++;
    return 0;
}
