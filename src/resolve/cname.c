#include "resolve/cname.h"

#include "core/err.h"

int cname_target_query(const struct dns_query_info *qi, const uint8_t *target,
                       size_t target_len, uint8_t *out, size_t cap)
{
    struct dns_cur c;
    struct dns_hdr h = {
        .flags = DNS_FLAG_RD | (qi->hdr.flags & DNS_FLAG_CD),
        .qdcount = 1,
        .arcount = qi->edns.present ? 1 : 0,
    };

    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, target, target_len);
    dns_cur_put_u16(&c, qi->q.qtype);
    dns_cur_put_u16(&c, qi->q.qclass);
    if (qi->edns.present)
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, 0);
    return c.err ? DV_ESPACE : (int)c.pos;
}

/* Copies one name at in's cursor, expanded (the reply's offsets differ). */
static void copy_name(struct dns_cur *in, struct dns_cur *out)
{
    uint8_t name[DNS_NAME_MAX];
    size_t n = dns_name_read(in, name);

    if (n)
        dns_cur_put(out, name, n);
}

/* RDATA of rr, with the names of the types that may be compressed (RFC
 * 3597 4: the well-known types of RFC 1035, and SRV, which some servers
 * compress anyway) expanded; other types verbatim. */
static int copy_rdata(const uint8_t *msg, size_t len, const struct dns_rr *rr,
                      struct dns_cur *out)
{
    struct dns_cur in;
    size_t fixed_before = 0, fixed_after = 0, names = 0;
    uint8_t buf[20];

    switch (rr->type) {
    case DNS_TYPE_NS:
    case DNS_TYPE_CNAME:
    case DNS_TYPE_PTR:
        names = 1;
        break;
    case DNS_TYPE_MX:
        fixed_before = 2, names = 1;
        break;
    case DNS_TYPE_SRV:
        fixed_before = 6, names = 1;
        break;
    case DNS_TYPE_SOA:
        names = 2, fixed_after = 20;
        break;
    default:
        dns_cur_put_u16(out, rr->rdlen);
        dns_cur_put(out, msg + rr->rdata_off, rr->rdlen);
        return 0;
    }
    /* a name may point anywhere before it, so read over the whole message,
     * but never past this RR's RDATA */
    dns_cur_init(&in, msg, rr->rdata_off + rr->rdlen);
    dns_cur_seek(&in, rr->rdata_off);
    size_t lenpos = out->pos;
    dns_cur_put_u16(out, 0); /* the length, once known */
    size_t start = out->pos;
    dns_cur_read(&in, buf, fixed_before);
    dns_cur_put(out, buf, fixed_before);
    for (size_t i = 0; i < names; i++)
        copy_name(&in, out);
    dns_cur_read(&in, buf, fixed_after);
    dns_cur_put(out, buf, fixed_after);
    if (in.err || in.pos != rr->rdata_off + rr->rdlen)
        return DV_EMALFORMED;
    if (out->err)
        return DV_ESPACE;
    dns_put16(out->base + lenpos, (uint16_t)(out->pos - start));
    return 0;
}

int cname_compose(const struct dns_query_info *qi, const uint8_t *target, size_t target_len,
                  uint32_t ttl, const uint8_t *ans, size_t len, uint8_t *out, size_t cap)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    struct dns_cur c, in;
    struct dns_hdr h = {
        .id = qi->hdr.id,
        .qdcount = 1,
        .ancount = 1,
    };
    int rc;

    if (len < DNS_HDR_LEN || dns_rr_iter_init(&it, ans, len) != 0)
        return DV_EMALFORMED;
    h.flags = DNS_FLAG_QR | DNS_FLAG_RA | (qi->hdr.flags & DNS_FLAG_RD) |
              DNS_RCODE(dns_get16(ans + 2));
    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &h);
    dns_cur_put(&c, qi->q.name, qi->q.name_len);
    dns_cur_put_u16(&c, qi->q.qtype);
    dns_cur_put_u16(&c, qi->q.qclass);
    dns_cur_put_u16(&c, 0xc000 | DNS_HDR_LEN); /* the question's name */
    dns_cur_put_u16(&c, DNS_TYPE_CNAME);
    dns_cur_put_u16(&c, DNS_CLASS_IN);
    dns_cur_put_u32(&c, ttl);
    dns_cur_put_u16(&c, (uint16_t)target_len);
    dns_cur_put(&c, target, target_len);
    while ((rc = dns_rr_next(&it, &rr)) == 1) {
        if (rr.section == DNS_SEC_ADDITIONAL)
            break; /* glue and OPT: ours is written below */
        if (rr.type == DNS_TYPE_OPT)
            return DV_EMALFORMED; /* only in the additional section */
        dns_cur_init(&in, ans, rr.name_end);
        dns_cur_seek(&in, rr.off);
        copy_name(&in, &c);
        if (in.err)
            return DV_EMALFORMED;
        dns_cur_put_u16(&c, rr.type);
        dns_cur_put_u16(&c, rr.rclass);
        dns_cur_put_u32(&c, rr.ttl);
        if ((rc = copy_rdata(ans, len, &rr, &c)) != 0)
            return rc;
        if (rr.section == DNS_SEC_ANSWER)
            h.ancount++;
        else
            h.nscount++;
    }
    if (rc < 0)
        return DV_EMALFORMED;
    if (qi->edns.present) {
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, 0);
        h.arcount = 1;
    }
    if (c.err)
        return DV_ESPACE;
    size_t n = c.pos;
    dns_cur_seek(&c, 0);
    dns_hdr_write(&c, &h);
    return (int)n;
}
