/* Rewrites of whole answers on their way to a client. */
#include "dns/dns.h"

size_t dns_msg_fit_edns(uint8_t *msg, size_t len, bool client_edns, uint16_t udp_size)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    size_t opt_off = 0, opt_end = 0, opt_class = 0;
    bool have_opt = false;
    int rc;

    if (dns_rr_iter_init(&it, msg, len))
        return len;
    while ((rc = dns_rr_next(&it, &rr)) == 1) {
        if (rr.type == DNS_TYPE_OPT) {
            have_opt = true;
            opt_off = rr.off;
            opt_class = rr.name_end + 2;
            opt_end = rr.rdata_off + rr.rdlen;
        }
    }
    if (rc < 0 || !have_opt)
        return len;
    if (client_edns) {
        /* the OPT's CLASS field carries the UDP payload size */
        dns_put16(msg + opt_class, udp_size);
        return len;
    }
    /* removing a middle RR could break later compression pointers into it */
    if (opt_end != len)
        return len;
    dns_put16(msg + 10, (uint16_t)(dns_get16(msg + 10) - 1));
    return opt_off;
}
