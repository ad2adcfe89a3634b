/* libFuzzer target for the resolv.conf reader of portal mode: the file is
 * written from what the network's DHCP server said. Whatever it finds must
 * be a port-53 address that is not loopback. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "resolve/portal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct net_addr a;

    if (portal_parse_resolv((const char *)data, size, &a) != 0)
        return 0;
    if (net_addr_port(&a) != 53)
        abort();
    if (a.ss.ss_family == AF_INET &&
        ((const uint8_t *)&((const struct sockaddr_in *)&a.ss)->sin_addr)[0] == 127)
        abort();
    if (a.ss.ss_family != AF_INET && a.ss.ss_family != AF_INET6)
        abort();
    return 0;
}
