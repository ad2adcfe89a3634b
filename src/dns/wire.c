/* dns/wire.c — cursor, header, question, RR walk and whole-message helpers. */
#include "dns/dns.h"

#include <string.h>

#include "core/err.h"

/* ---- cursor ------------------------------------------------------------ */

void dns_cur_init(struct dns_cur *c, const uint8_t *msg, size_t len)
{
    /* The cast is safe: writable stays false, so no put ever stores through it. */
    c->base = (uint8_t *)(uintptr_t)msg;
    c->len = msg ? len : 0;
    c->pos = 0;
    c->err = 0;
    c->writable = false;
}

void dns_cur_init_w(struct dns_cur *c, uint8_t *buf, size_t cap)
{
    c->base = buf;
    c->len = buf ? cap : 0;
    c->pos = 0;
    c->err = 0;
    c->writable = true;
}

size_t dns_cur_left(const struct dns_cur *c)
{
    return c->err || c->pos > c->len ? 0 : c->len - c->pos;
}

/* Claims n readable bytes, or makes the error stick. Compares against the
 * remaining length rather than adding to pos, so huge n cannot wrap; a pos
 * set by hand beyond len is an error too. */
static const uint8_t *cur_take(struct dns_cur *c, size_t n)
{
    if (c->err)
        return NULL;
    if (c->pos > c->len || n > c->len - c->pos) {
        c->err = DV_EMALFORMED;
        return NULL;
    }
    const uint8_t *p = c->base + c->pos;
    c->pos += n;
    return p;
}

static uint8_t *cur_room(struct dns_cur *c, size_t n)
{
    if (c->err)
        return NULL;
    if (!c->writable || c->pos > c->len || n > c->len - c->pos) {
        c->err = DV_ESPACE;
        return NULL;
    }
    uint8_t *p = c->base + c->pos;
    c->pos += n;
    return p;
}

uint8_t dns_cur_u8(struct dns_cur *c)
{
    const uint8_t *p = cur_take(c, 1);
    return p ? p[0] : 0;
}

uint16_t dns_cur_u16(struct dns_cur *c)
{
    const uint8_t *p = cur_take(c, 2);
    return p ? dns_get16(p) : 0;
}

uint32_t dns_cur_u32(struct dns_cur *c)
{
    const uint8_t *p = cur_take(c, 4);
    return p ? (uint32_t)dns_get16(p) << 16 | dns_get16(p + 2) : 0;
}

void dns_cur_read(struct dns_cur *c, void *dst, size_t n)
{
    const uint8_t *p = cur_take(c, n);
    if (p)
        memcpy(dst, p, n);
    else if (n)
        memset(dst, 0, n);
}

void dns_cur_skip(struct dns_cur *c, size_t n)
{
    (void)cur_take(c, n);
}

void dns_cur_seek(struct dns_cur *c, size_t pos)
{
    if (c->err)
        return;
    if (pos > c->len)
        c->err = DV_EMALFORMED;
    else
        c->pos = pos;
}

void dns_cur_put_u8(struct dns_cur *c, uint8_t v)
{
    uint8_t *p = cur_room(c, 1);
    if (p)
        p[0] = v;
}

void dns_cur_put_u16(struct dns_cur *c, uint16_t v)
{
    uint8_t *p = cur_room(c, 2);
    if (p)
        dns_put16(p, v);
}

void dns_cur_put_u32(struct dns_cur *c, uint32_t v)
{
    uint8_t *p = cur_room(c, 4);
    if (p) {
        dns_put16(p, (uint16_t)(v >> 16));
        dns_put16(p + 2, (uint16_t)v);
    }
}

void dns_cur_put(struct dns_cur *c, const void *src, size_t n)
{
    uint8_t *p = cur_room(c, n);
    if (p && n)
        memcpy(p, src, n);
}

/* ---- header and question ------------------------------------------------ */

void dns_hdr_read(struct dns_cur *c, struct dns_hdr *h)
{
    h->id = dns_cur_u16(c);
    h->flags = dns_cur_u16(c);
    h->qdcount = dns_cur_u16(c);
    h->ancount = dns_cur_u16(c);
    h->nscount = dns_cur_u16(c);
    h->arcount = dns_cur_u16(c);
}

void dns_hdr_write(struct dns_cur *c, const struct dns_hdr *h)
{
    dns_cur_put_u16(c, h->id);
    dns_cur_put_u16(c, h->flags);
    dns_cur_put_u16(c, h->qdcount);
    dns_cur_put_u16(c, h->ancount);
    dns_cur_put_u16(c, h->nscount);
    dns_cur_put_u16(c, h->arcount);
}

int dns_question_read(struct dns_cur *c, struct dns_question *q)
{
    size_t n = dns_name_read(c, q->name);
    q->name_len = (uint16_t)n;
    q->qtype = dns_cur_u16(c);
    q->qclass = dns_cur_u16(c);
    if (c->err) {
        memset(q, 0, sizeof(*q));
        return DV_EMALFORMED;
    }
    return 0;
}

/* ---- resource records --------------------------------------------------- */

static void iter_start(struct dns_rr_iter *it, const struct dns_cur *c, const struct dns_hdr *h)
{
    it->cur = *c;
    it->left[DNS_SEC_ANSWER] = h->ancount;
    it->left[DNS_SEC_AUTHORITY] = h->nscount;
    it->left[DNS_SEC_ADDITIONAL] = h->arcount;
    it->section = DNS_SEC_ANSWER;
}

int dns_rr_iter_init(struct dns_rr_iter *it, const uint8_t *msg, size_t len)
{
    struct dns_cur c;
    struct dns_hdr h;

    dns_cur_init(&c, msg, len);
    dns_hdr_read(&c, &h);
    for (unsigned i = 0; i < h.qdcount && !c.err; i++) {
        dns_name_read(&c, NULL);
        dns_cur_skip(&c, 4);
    }
    iter_start(it, &c, &h);
    return c.err ? DV_EMALFORMED : 0;
}

int dns_rr_next(struct dns_rr_iter *it, struct dns_rr *rr)
{
    struct dns_cur *c = &it->cur;

    if (c->err)
        return DV_EMALFORMED;
    if (it->section < DNS_SEC_ANSWER)
        it->section = DNS_SEC_ANSWER;
    while (it->section <= DNS_SEC_ADDITIONAL && it->left[it->section] == 0)
        it->section++;
    if (it->section > DNS_SEC_ADDITIONAL)
        return 0;
    it->left[it->section]--;

    rr->section = it->section;
    rr->off = c->pos;
    dns_name_read(c, NULL);
    rr->name_end = c->pos;
    rr->type = dns_cur_u16(c);
    rr->rclass = dns_cur_u16(c);
    rr->ttl_off = c->pos;
    rr->ttl = dns_cur_u32(c);
    rr->rdlen = dns_cur_u16(c);
    rr->rdata_off = c->pos;
    dns_cur_skip(c, rr->rdlen);
    return c->err ? DV_EMALFORMED : 1;
}

/* Compressed names inside the RDATA of the classic types (RFC 3597 §4) must
 * obey the same rules as owner names: later readers of a cached answer (CNAME
 * chase, SOA minimum) rely on it. Checks that the names and fixed fields fill
 * the RDATA exactly. */
static int rdata_check(const uint8_t *msg, size_t len, const struct dns_rr *rr)
{
    struct dns_cur c;
    size_t end = rr->rdata_off + rr->rdlen;

    dns_cur_init(&c, msg, len);
    dns_cur_seek(&c, rr->rdata_off);
    switch (rr->type) {
    case DNS_TYPE_NS:
    case DNS_TYPE_CNAME:
    case DNS_TYPE_PTR:
        dns_name_read(&c, NULL);
        break;
    case DNS_TYPE_MX:
        dns_cur_skip(&c, 2);
        dns_name_read(&c, NULL);
        break;
    case DNS_TYPE_SOA:
        dns_name_read(&c, NULL);
        dns_name_read(&c, NULL);
        dns_cur_skip(&c, 20);
        break;
    default:
        return 0;
    }
    return c.err || c.pos != end ? DV_EMALFORMED : 0;
}

/* Walks the RRs after the question, enforcing the OPT rules of RFC 6891 §6.1.1
 * (including a well-formed option list), and checks that nothing trails the
 * last section. */
static int walk_rrs(struct dns_rr_iter *it, const uint8_t *msg, size_t len, bool check_rdata,
                    struct dns_rr *opt)
{
    struct dns_rr rr;
    int found = 0, rc;

    while ((rc = dns_rr_next(it, &rr)) == 1) {
        if (rr.type == DNS_TYPE_OPT) {
            struct dns_edns e;
            if (found || rr.section != DNS_SEC_ADDITIONAL || rr.name_end != rr.off + 1 ||
                dns_edns_parse_opts(msg + rr.rdata_off, rr.rdlen, &e) < 0)
                return DV_EMALFORMED;
            found = 1;
            if (opt)
                *opt = rr;
        } else if (check_rdata && rdata_check(msg, len, &rr) < 0) {
            return DV_EMALFORMED;
        }
    }
    if (rc < 0 || dns_cur_left(&it->cur) != 0)
        return DV_EMALFORMED;
    return found;
}

/* Bytes that rewrites of a cached answer change in place: every RR's
 * type/class/TTL/RDLENGTH (aged) and the OPT's RDATA (stripped). A crafted
 * answer whose compression pointers make a name read such bytes as a label
 * would see that name change, or turn invalid, after it was checked; so
 * dns_response_check refuses names that touch them. */
struct fixed_map {
    uint8_t bits[(DNS_MSG_MAX + 7) / 8];
};

/* Whole bytes of the map at once: an OPT with padding (every encrypted
 * answer) marks hundreds of bytes. */
static void map_set(struct fixed_map *m, size_t lo, size_t hi /* exclusive */)
{
    if (hi <= lo)
        return;
    for (; lo < hi && (lo & 7); lo++)
        m->bits[lo >> 3] |= (uint8_t)(1u << (lo & 7));
    if (hi - lo >= 8) {
        memset(m->bits + (lo >> 3), 0xff, (hi - lo) >> 3);
        lo += (hi - lo) & ~(size_t)7;
    }
    for (; lo < hi; lo++)
        m->bits[lo >> 3] |= (uint8_t)(1u << (lo & 7));
}

/* A byte of the map at a time: every name of every answer goes through here. */
static bool map_any(const struct fixed_map *m, size_t lo, size_t hi)
{
    if (lo >= hi)
        return false;
    size_t a = lo >> 3, z = (hi - 1) >> 3;
    uint8_t first = (uint8_t)(0xffu << (lo & 7)), last = (uint8_t)(0xffu >> (7 - ((hi - 1) & 7)));

    if (a == z)
        return (m->bits[a] & first & last) != 0;
    if (m->bits[a] & first || m->bits[z] & last)
        return true;
    for (size_t i = a + 1; i < z; i++)
        if (m->bits[i])
            return true;
    return false;
}

/* Follows the (already validated) name at p; false if a label touches the map. */
static bool name_clear(const uint8_t *msg, size_t len, size_t p, const struct fixed_map *m)
{
    for (unsigned hops = 0; hops <= 127 && p < len;) {
        uint8_t b = msg[p];
        if ((b & 0xc0) == 0xc0) {
            /* a pointer's own two bytes count too: in a TTL, aging rewrites it */
            if (len - p < 2 || map_any(m, p, p + 2))
                return false;
            p = (size_t)(b & 0x3f) << 8 | msg[p + 1];
            hops++;
            continue;
        }
        if (b > len - p - 1 || map_any(m, p, p + 1u + b))
            return false;
        if (b == 0)
            return true;
        p += 1u + b;
    }
    return false;
}

/* Second look at a message that walk_rrs accepted: no name may read the
 * bytes that later rewrites change. */
static int names_clear(const uint8_t *msg, size_t len, size_t qend, struct fixed_map *m)
{
    struct dns_rr_iter it;
    struct dns_rr rr;

    if (len > DNS_MSG_MAX)
        return DV_EMALFORMED;
    memset(m->bits, 0, (len + 7) / 8);
    if (dns_rr_iter_init(&it, msg, len) < 0)
        return DV_EMALFORMED;
    while (dns_rr_next(&it, &rr) == 1)
        map_set(m, rr.name_end, rr.type == DNS_TYPE_OPT ? rr.rdata_off + rr.rdlen : rr.rdata_off);

    /* The first question is the one restore rewrites and callers compare. */
    if (qend > DNS_HDR_LEN && !name_clear(msg, len, DNS_HDR_LEN, m))
        return DV_EMALFORMED;
    if (dns_rr_iter_init(&it, msg, len) < 0)
        return DV_EMALFORMED;
    while (dns_rr_next(&it, &rr) == 1) {
        if (!name_clear(msg, len, rr.off, m))
            return DV_EMALFORMED;
        size_t rd = rr.rdata_off;
        switch (rr.type) {
        case DNS_TYPE_NS:
        case DNS_TYPE_CNAME:
        case DNS_TYPE_PTR:
            if (!name_clear(msg, len, rd, m))
                return DV_EMALFORMED;
            break;
        case DNS_TYPE_MX:
            if (!name_clear(msg, len, rd + 2, m))
                return DV_EMALFORMED;
            break;
        case DNS_TYPE_SOA: {
            struct dns_cur c;
            dns_cur_init(&c, msg, len);
            dns_cur_seek(&c, rd);
            dns_name_read(&c, NULL);
            if (c.err || !name_clear(msg, len, rd, m) || !name_clear(msg, len, c.pos, m))
                return DV_EMALFORMED;
            break;
        }
        default:
            break;
        }
    }
    return 0;
}

int dns_msg_find_opt(const uint8_t *msg, size_t len, struct dns_rr *opt)
{
    struct dns_rr_iter it;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return DV_EMALFORMED;
    return walk_rrs(&it, msg, len, false, opt);
}

/* RFC 2181 §8: a TTL with the top bit set is to be read as zero. */
static uint32_t ttl_value(uint32_t ttl)
{
    return ttl > 0x7fffffffu ? 0 : ttl;
}

void dns_msg_age(uint8_t *msg, size_t len, uint32_t elapsed)
{
    struct dns_rr_iter it;
    struct dns_rr rr;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return;
    while (dns_rr_next(&it, &rr) == 1) {
        if (rr.type == DNS_TYPE_OPT)
            continue;
        uint32_t ttl = ttl_value(rr.ttl);
        ttl = ttl > elapsed ? ttl - elapsed : 0;
        dns_put16(msg + rr.ttl_off, (uint16_t)(ttl >> 16));
        dns_put16(msg + rr.ttl_off + 2, (uint16_t)ttl);
    }
}

uint32_t dns_msg_min_ttl(const uint8_t *msg, size_t len)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    uint32_t min = UINT32_MAX;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return min;
    while (dns_rr_next(&it, &rr) == 1) {
        if (rr.type != DNS_TYPE_OPT && ttl_value(rr.ttl) < min)
            min = ttl_value(rr.ttl);
    }
    return min;
}

/* ---- messages ----------------------------------------------------------- */

int dns_query_parse(const uint8_t *msg, size_t len, struct dns_query_info *qi)
{
    struct dns_cur c;
    struct dns_rr_iter it;
    struct dns_rr opt;
    int rc;

    memset(qi, 0, sizeof(*qi));
    if (!msg || len < DNS_HDR_LEN)
        return DV_ENOTQUERY;
    dns_cur_init(&c, msg, len);
    dns_hdr_read(&c, &qi->hdr);
    if (qi->hdr.flags & DNS_FLAG_QR)
        return DV_ENOTQUERY;
    if (DNS_OPCODE(qi->hdr.flags) != DNS_OPCODE_QUERY)
        return DV_ENOTIMP;
    if (qi->hdr.qdcount != 1)
        return DV_EMALFORMED;
    if (dns_question_read(&c, &qi->q) < 0)
        return DV_EMALFORMED;
    qi->question_end = c.pos;

    iter_start(&it, &c, &qi->hdr);
    rc = walk_rrs(&it, msg, len, false, &opt);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        if (dns_edns_read(msg, len, &opt, &qi->edns) < 0)
            return DV_EMALFORMED;
        if (qi->edns.version != 0)
            return DV_EBADVERS;
    }
    return 0;
}

int dns_response_check(const uint8_t *msg, size_t len, const struct dns_question *q)
{
    struct dns_cur c;
    struct dns_hdr h;
    struct dns_question got;
    struct dns_rr_iter it;

    if (!msg || len < DNS_HDR_LEN)
        return DV_EMALFORMED;
    dns_cur_init(&c, msg, len);
    dns_hdr_read(&c, &h);
    if (!(h.flags & DNS_FLAG_QR))
        return DV_EMALFORMED;
    memset(&got, 0, sizeof(got));
    for (unsigned i = 0; i < h.qdcount; i++) {
        struct dns_question tmp;
        if (dns_question_read(&c, i == 0 ? &got : &tmp) < 0)
            return DV_EMALFORMED;
    }
    size_t qend = c.pos;
    iter_start(&it, &c, &h);
    if (walk_rrs(&it, msg, len, true, NULL) < 0)
        return DV_EMALFORMED;
    struct fixed_map map;
    if (names_clear(msg, len, qend, &map) < 0)
        return DV_EMALFORMED;

    if (DNS_OPCODE(h.flags) != DNS_OPCODE_QUERY || h.qdcount != 1)
        return DV_EMISMATCH;
    if (got.qtype != q->qtype || got.qclass != q->qclass ||
        !dns_name_eq(got.name, got.name_len, q->name, q->name_len))
        return DV_EMISMATCH;
    return 0;
}

int dns_upstream_answer_check(const uint8_t *msg, size_t len, const struct dns_question *q)
{
    int rc = dns_response_check(msg, len, q);

    if (rc == 0 && (dns_get16(msg + 2) & DNS_FLAG_TC))
        return DV_EPROTO;
    return rc;
}

int dns_reply_error(const struct dns_query_info *qi, bool have_question, int rcode,
                    uint8_t *out, size_t cap)
{
    struct dns_cur c;
    struct dns_hdr h;
    bool edns = qi->edns.present;
    bool echo = have_question && qi->q.name_len > 0 && qi->q.name_len <= DNS_NAME_MAX;

    if (rcode < 0 || rcode > 0xfff || (rcode > 0xf && !edns))
        return DV_EINVAL;

    /* RFC 4035 §3.2.2 wants CD copied along with the opcode and RD. */
    h.id = qi->hdr.id;
    h.flags = (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RA | (rcode & 0xf) |
                         (qi->hdr.flags & (0x7800 | DNS_FLAG_RD | DNS_FLAG_CD)));
    h.qdcount = echo ? 1 : 0;
    h.ancount = 0;
    h.nscount = 0;
    h.arcount = edns ? 1 : 0;

    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &h);
    if (echo) {
        dns_cur_put(&c, qi->q.name, qi->q.name_len);
        dns_cur_put_u16(&c, qi->q.qtype);
        dns_cur_put_u16(&c, qi->q.qclass);
    }
    if (edns)
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, (uint8_t)(rcode >> 4));
    if (c.err)
        return DV_ESPACE;
    return (int)c.pos;
}

size_t dns_msg_truncate(uint8_t *msg, size_t len, size_t limit)
{
    struct dns_rr_iter it;
    struct dns_rr rr, opt;
    bool have_opt = false;
    uint16_t qdcount;
    size_t qend, optlen = 0;

    if (len <= limit || len < DNS_HDR_LEN)
        return len;
    qdcount = dns_get16(msg + 4);
    if (dns_rr_iter_init(&it, msg, len) < 0) {
        qdcount = 0;
        qend = DNS_HDR_LEN;
    } else {
        qend = it.cur.pos;
        /* A broken RR later on only costs us the OPT if it had not been seen. */
        while (dns_rr_next(&it, &rr) == 1) {
            /* Only a root-owner OPT can move: a pointer would dangle. */
            if (!have_opt && rr.type == DNS_TYPE_OPT && rr.section == DNS_SEC_ADDITIONAL &&
                rr.name_end == rr.off + 1) {
                opt = rr;
                have_opt = true;
                optlen = rr.rdata_off + rr.rdlen - rr.off;
            }
        }
    }
    /* The caller's limit is normally >= 512, so this only matters for absurd
     * limits: shed the OPT, then the question, never the header. */
    if (have_opt && qend + optlen > limit) {
        have_opt = false;
        optlen = 0;
    }
    if (qend > limit) {
        qdcount = 0;
        qend = DNS_HDR_LEN;
    }
    if (have_opt)
        memmove(msg + qend, msg + opt.off, optlen);
    dns_put16(msg + 2, (uint16_t)(dns_get16(msg + 2) | DNS_FLAG_TC));
    dns_put16(msg + 4, qdcount);
    dns_put16(msg + 6, 0);
    dns_put16(msg + 8, 0);
    dns_put16(msg + 10, have_opt ? 1 : 0);
    return qend + optlen;
}

void dns_msg_restore(uint8_t *msg, size_t len, uint16_t id, const struct dns_question *q)
{
    if (len < DNS_HDR_LEN)
        return;
    dns_put16(msg, id);
    /* Defensive re-check: only overwrite bytes that are the same name. */
    if (dns_get16(msg + 4) >= 1 && q->name_len <= len - DNS_HDR_LEN &&
        dns_name_eq(msg + DNS_HDR_LEN, q->name_len, q->name, q->name_len))
        memcpy(msg + DNS_HDR_LEN, q->name, q->name_len);
}
