/* dns/edns.c — EDNS(0) OPT RR: reading, writing, options, query padding. */
#include "dns/dns.h"

#include <string.h>

#include "core/err.h"

enum {
    OPT_FIXED_LEN = 11, /* root owner, type, class, TTL, RDLENGTH */
    OPT_HDR_LEN = 4,    /* option code + option length */
};

int dns_edns_parse_opts(const uint8_t *rdata, size_t rdlen, struct dns_edns *e)
{
    size_t p = 0;

    e->has_ecs = e->has_padding = e->has_cookie = e->has_keepalive = false;
    e->keepalive = 0;
    e->keepalive_len = 0;
    while (p < rdlen) {
        if (rdlen - p < OPT_HDR_LEN)
            return DV_EMALFORMED;
        uint16_t code = dns_get16(rdata + p);
        uint16_t olen = dns_get16(rdata + p + 2);
        p += OPT_HDR_LEN;
        if (olen > rdlen - p)
            return DV_EMALFORMED;
        switch (code) {
        case DNS_OPT_ECS: e->has_ecs = true; break;
        case DNS_OPT_PADDING: e->has_padding = true; break;
        case DNS_OPT_COOKIE: e->has_cookie = true; break;
        case DNS_OPT_KEEPALIVE:
            e->has_keepalive = true;
            e->keepalive_len = olen;
            e->keepalive = olen == 2 ? dns_get16(rdata + p) : 0;
            break;
        default: break;
        }
        p += olen;
    }
    return 0;
}

int dns_edns_read(const uint8_t *msg, size_t len, const struct dns_rr *rr, struct dns_edns *e)
{
    memset(e, 0, sizeof(*e));
    if (rr->type != DNS_TYPE_OPT || rr->rdata_off > len || rr->rdlen > len - rr->rdata_off ||
        rr->off > rr->rdata_off)
        return DV_EMALFORMED;
    e->present = true;
    e->udp_size = rr->rclass;
    e->ext_rcode = (uint8_t)(rr->ttl >> 24);
    e->version = (uint8_t)(rr->ttl >> 16);
    e->do_bit = (rr->ttl & 0x8000) != 0;
    e->rr_off = rr->off;
    e->rr_len = rr->rdata_off + rr->rdlen - rr->off;
    return dns_edns_parse_opts(msg + rr->rdata_off, rr->rdlen, e);
}

void dns_edns_write(struct dns_cur *c, uint16_t udp_size, bool do_bit, uint8_t ext_rcode)
{
    dns_cur_put_u8(c, 0);
    dns_cur_put_u16(c, DNS_TYPE_OPT);
    dns_cur_put_u16(c, udp_size);
    dns_cur_put_u32(c, (uint32_t)ext_rcode << 24 | (do_bit ? 0x8000u : 0));
    dns_cur_put_u16(c, 0);
}

static int names_clear_of(uint8_t *msg, size_t len, size_t from, size_t changed);

/* Checks that msg[off..len) is exactly one root-owner OPT RR. */
static bool opt_is_last(const uint8_t *msg, size_t len, size_t off)
{
    return off < len && len - off >= OPT_FIXED_LEN && msg[off] == 0 &&
           dns_get16(msg + off + 1) == DNS_TYPE_OPT &&
           dns_get16(msg + off + 9) == len - off - OPT_FIXED_LEN;
}

int dns_edns_add_opt(uint8_t *msg, size_t *len, size_t cap, size_t opt_rr_off,
                     uint16_t code, const void *data, uint16_t dlen)
{
    size_t l = *len;

    if (!opt_is_last(msg, l, opt_rr_off))
        return DV_EMALFORMED;
    size_t rdlen = l - opt_rr_off - OPT_FIXED_LEN + OPT_HDR_LEN + dlen;
    if (rdlen > UINT16_MAX || l + OPT_HDR_LEN + dlen > cap || l + OPT_HDR_LEN + dlen > DNS_MSG_MAX)
        return DV_ESPACE;
    if (names_clear_of(msg, l, opt_rr_off, opt_rr_off + 9) < 0) /* RDLENGTH changes */
        return DV_EMALFORMED;
    dns_put16(msg + l, code);
    dns_put16(msg + l + 2, dlen);
    if (dlen)
        memcpy(msg + l + OPT_HDR_LEN, data, dlen);
    dns_put16(msg + opt_rr_off + 9, (uint16_t)rdlen);
    *len = l + OPT_HDR_LEN + dlen;
    return 0;
}

/* Compacts rdata[0..rdlen) in place, dropping options for which drop() holds.
 * The options must already be known to be well-formed. Returns the new length. */
static size_t opts_compact(uint8_t *rdata, size_t rdlen, bool (*drop)(uint16_t, uint16_t),
                           uint16_t arg)
{
    size_t p = 0, q = 0;

    while (p + OPT_HDR_LEN <= rdlen) {
        size_t n = OPT_HDR_LEN + dns_get16(rdata + p + 2);
        if (!drop(dns_get16(rdata + p), arg)) {
            memmove(rdata + q, rdata + p, n);
            q += n;
        }
        p += n;
    }
    return q;
}

/* Same walk without writing: the length opts_compact would return. */
static size_t opts_kept(const uint8_t *rdata, size_t rdlen, bool (*drop)(uint16_t, uint16_t),
                        uint16_t arg)
{
    size_t p = 0, q = 0;

    while (p + OPT_HDR_LEN <= rdlen) {
        size_t n = OPT_HDR_LEN + dns_get16(rdata + p + 2);
        if (!drop(dns_get16(rdata + p), arg))
            q += n;
        p += n;
    }
    return q;
}

static bool drop_code(uint16_t code, uint16_t arg)
{
    return code == arg;
}

/* Padding is recomputed, and a client subnet must never leave us encrypted. */
static bool drop_for_padding(uint16_t code, uint16_t arg)
{
    (void)arg;
    return code == DNS_OPT_PADDING || code == DNS_OPT_ECS;
}

/* Records after a shrinking OPT move down by `removed`, and compression
 * pointers in them that aim past the OPT (at or after `end`) must move with
 * them. Three passes over every name of the message, in place and never
 * following a pointer, so the last one works on half-rewritten bytes (padding
 * uses the check alone: its OPT is last, so nothing moves):
 *   SHIFT_COLLECT  note where the pointers to rewrite are; refuse pointers
 *                  into the OPT RR [from, end), which would dangle;
 *   SHIFT_CHECK    follow every name and refuse one that reads, as a label,
 *                  a byte that is about to change (the OPT, or a pointer we
 *                  rewrite): only crafted messages overlap names like that,
 *                  and rewriting them would silently change a name;
 *   SHIFT_APPLY    rewrite the pointers. */
enum { SHIFT_COLLECT, SHIFT_CHECK, SHIFT_APPLY };
enum { SHIFT_MAX_PTRS = 64 }; /* far above any real answer with a mid OPT */

struct shift {
    uint8_t *msg;
    size_t len, from, end, removed;
    size_t changed; /* first byte of [from, end) that changes: the RDLENGTH */
    size_t ptrs[SHIFT_MAX_PTRS];
    size_t nptrs;
    int pass;
};

static bool shift_touches(const struct shift *s, size_t lo, size_t hi /* inclusive */)
{
    if (lo < s->end && hi >= s->changed)
        return true;
    for (size_t i = 0; i < s->nptrs; i++) {
        if (lo <= s->ptrs[i] + 1 && hi >= s->ptrs[i])
            return true;
    }
    return false;
}

static bool shift_rewrites(const struct shift *s, size_t p)
{
    for (size_t i = 0; i < s->nptrs; i++) {
        if (s->ptrs[i] == p)
            return true;
    }
    return false;
}

/* SHIFT_CHECK for one name: follows it as dns_name_read would. A pointer on
 * the way that aims at bytes which move must be one we rewrite: one in RDATA
 * we do not parse (an unknown type's) or before the OPT would keep its old
 * target and silently rename the name. */
static int shift_check_name(const struct shift *s, size_t p)
{
    for (unsigned hops = 0; hops <= 127 && p < s->len;) {
        uint8_t b = s->msg[p];
        if ((b & 0xc0) == 0xc0) {
            if (s->len - p < 2)
                return DV_EMALFORMED;
            size_t t = (size_t)(b & 0x3f) << 8 | s->msg[p + 1];
            if (t >= s->end && !shift_rewrites(s, p))
                return DV_EMALFORMED;
            p = t;
            hops++;
            continue;
        }
        if (shift_touches(s, p, p + b))
            return DV_EMALFORMED;
        if (b == 0)
            return 0;
        p += 1u + b;
    }
    return DV_EMALFORMED;
}

/* One name in place at *p (within [.., lim)): advances *p past it. */
static int shift_name(struct shift *s, size_t lim, size_t *p)
{
    if (s->pass == SHIFT_CHECK && shift_check_name(s, *p) < 0)
        return DV_EMALFORMED;
    while (*p < lim) {
        uint8_t b = s->msg[*p];
        if ((b & 0xc0) == 0xc0) {
            if (lim - *p < 2)
                return DV_EMALFORMED;
            size_t t = (size_t)(b & 0x3f) << 8 | s->msg[*p + 1];
            if (t >= s->end) {
                if (s->pass == SHIFT_COLLECT) {
                    if (s->nptrs == SHIFT_MAX_PTRS)
                        return DV_EMALFORMED;
                    s->ptrs[s->nptrs++] = *p;
                } else if (s->pass == SHIFT_APPLY) {
                    dns_put16(s->msg + *p, (uint16_t)(0xc000 | (t - s->removed)));
                }
            } else if (t >= s->from) {
                return DV_EMALFORMED;
            }
            *p += 2;
            return 0;
        }
        *p += 1u + b;
        if (b == 0)
            return 0;
    }
    return DV_EMALFORMED;
}

/* Every name in the message, question and records alike: a crafted name
 * anywhere may read the bytes that change as a label. */
static int shift_rrs(struct shift *s)
{
    size_t p = DNS_HDR_LEN, len = s->len;

    if (len < DNS_HDR_LEN)
        return DV_EMALFORMED;
    for (unsigned n = dns_get16(s->msg + 4); n > 0; n--) {
        if (shift_name(s, len, &p) < 0 || len - p < 4)
            return DV_EMALFORMED;
        p += 4;
    }
    while (p < len) {
        if (shift_name(s, len, &p) < 0 || len - p < 10)
            return DV_EMALFORMED;
        uint16_t type = dns_get16(s->msg + p);
        size_t rd = p + 10, rdend = rd + dns_get16(s->msg + p + 8);
        if (rdend > len)
            return DV_EMALFORMED;
        /* The types whose RDATA names may be compressed (RFC 3597 §4). */
        size_t q = rd;
        int rc = 0;
        switch (type) {
        case DNS_TYPE_NS:
        case DNS_TYPE_CNAME:
        case DNS_TYPE_PTR:
            rc = shift_name(s, rdend, &q);
            break;
        case DNS_TYPE_MX:
            q += 2;
            rc = shift_name(s, rdend, &q);
            break;
        case DNS_TYPE_SOA:
            rc = shift_name(s, rdend, &q);
            if (rc == 0)
                rc = shift_name(s, rdend, &q);
            break;
        default:
            break;
        }
        if (rc < 0)
            return rc;
        p = rdend;
    }
    return 0;
}

int dns_edns_strip_opt(uint8_t *msg, size_t *len, uint16_t code)
{
    struct dns_rr opt;
    struct dns_edns e;
    size_t l = *len;
    int rc = dns_msg_find_opt(msg, l, &opt);

    if (rc <= 0)
        return rc;
    if (dns_edns_parse_opts(msg + opt.rdata_off, opt.rdlen, &e) < 0)
        return DV_EMALFORMED;
    size_t end = opt.rdata_off + opt.rdlen;
    size_t kept = opts_kept(msg + opt.rdata_off, opt.rdlen, drop_code, code);
    size_t removed = opt.rdlen - kept;
    if (removed == 0)
        return 0;
    struct shift sh = { .msg = msg, .len = l, .from = opt.off, .end = end, .removed = removed,
                        .changed = opt.rdata_off - 2 };
    for (sh.pass = SHIFT_COLLECT; sh.pass <= SHIFT_APPLY; sh.pass++) {
        if (shift_rrs(&sh) < 0)
            return DV_EMALFORMED; /* never in SHIFT_APPLY: the checks came first */
    }
    opts_compact(msg + opt.rdata_off, opt.rdlen, drop_code, code);
    memmove(msg + opt.rdata_off + kept, msg + end, l - end);
    dns_put16(msg + opt.rdata_off - 2, (uint16_t)kept);
    *len = l - removed;
    return 0;
}

/* Padding and adding an option rewrite a last OPT's RDLENGTH and RDATA in
 * place, from `changed` on, and move nothing. A crafted name that reads those
 * bytes as a label would come out renamed: refuse the message, and one whose
 * names we cannot all follow. Pointers into the OPT RR [from, len) count too. */
static int names_clear_of(uint8_t *msg, size_t len, size_t from, size_t changed)
{
    struct shift sh = { .msg = msg, .len = len, .from = from, .end = len, .changed = changed,
                        .pass = SHIFT_CHECK };
    return shift_rrs(&sh);
}

int dns_edns_pad_query(uint8_t *msg, size_t *len, size_t cap, size_t block)
{
    struct dns_rr opt;
    struct dns_edns e;
    size_t l = *len, rdata_off, kept = 0;
    int rc;

    if (block == 0 || block > DNS_MSG_MAX)
        return DV_EINVAL;
    rc = dns_msg_find_opt(msg, l, &opt);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        if (opt.rdata_off + opt.rdlen != l || dns_edns_parse_opts(msg + opt.rdata_off, opt.rdlen, &e) < 0)
            return DV_EMALFORMED;
        rdata_off = opt.rdata_off;
        kept = opts_kept(msg + rdata_off, opt.rdlen, drop_for_padding, 0);
    } else {
        if (dns_get16(msg + 10) == UINT16_MAX)
            return DV_EMALFORMED;
        rdata_off = l + OPT_FIXED_LEN;
    }

    /* Work out the final size before touching anything, so a failure leaves
     * the query as it was. */
    size_t unpadded = rdata_off + kept + OPT_HDR_LEN;
    size_t padded = (unpadded + block - 1) / block * block;
    if (padded > cap || padded > DNS_MSG_MAX)
        return DV_ESPACE;
    /* Checked whether there is an OPT yet or not, so that padding a padded
     * query still changes nothing. */
    if (names_clear_of(msg, l, rc == 1 ? opt.off : l, rc == 1 ? rdata_off - 2 : l) < 0)
        return DV_EMALFORMED;

    if (rc == 0) {
        struct dns_cur c;
        dns_cur_init_w(&c, msg, cap);
        dns_cur_seek(&c, l);
        dns_edns_write(&c, DNS_EDNS_DEFAULT, false, 0);
        dns_put16(msg + 10, (uint16_t)(dns_get16(msg + 10) + 1));
    } else {
        opts_compact(msg + rdata_off, opt.rdlen, drop_for_padding, 0);
    }
    size_t pad_off = rdata_off + kept;
    size_t pad_len = padded - unpadded;
    dns_put16(msg + pad_off, DNS_OPT_PADDING);
    dns_put16(msg + pad_off + 2, (uint16_t)pad_len);
    memset(msg + pad_off + OPT_HDR_LEN, 0, pad_len); /* RFC 7830: SHOULD be zeros */
    dns_put16(msg + rdata_off - 2, (uint16_t)(padded - rdata_off));
    *len = padded;
    return 0;
}
