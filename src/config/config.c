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
    for (size_t i = 0; i < c->n_upstreams; i++)
        config_upstream_clear(&c->upstreams[i]);
    free(c->upstreams);
    free(c->listeners);
    free(c->user);
    free(c->ca_file);
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

void config_upstream_clear(struct cfg_upstream *u)
{
    free(u->name);
    free(u->url);
    free(u->tls_name);
    free(u->ca_file);
    for (size_t i = 0; i < u->n_pins; i++)
        free(u->pins[i]);
    free(u->pins);
    for (size_t i = 0; i < u->n_bootstrap; i++)
        free(u->bootstrap[i]);
    free(u->bootstrap);
    memset(u, 0, sizeof(*u));
}

int config_add_upstream(struct config *c, const char *name, const char *url)
{
    struct cfg_upstream *p = realloc(c->upstreams, (c->n_upstreams + 1) * sizeof(*p));

    if (!p)
        return DV_ENOMEM;
    c->upstreams = p;
    p = &c->upstreams[c->n_upstreams];
    memset(p, 0, sizeof(*p));
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
