/* libFuzzer target for src/dns: every parser over the input, every rewrite on
 * a copy, and the invariants that tie them together (a rewrite of a valid
 * message stays valid; padding is block-aligned and idempotent; names print
 * and parse back to themselves). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "dns/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static uint8_t work[DNS_MSG_MAX + 1024];
static uint8_t work2[DNS_MSG_MAX + 1024];

static void fuzz_name_text(const uint8_t *name, size_t len)
{
    char text[4 * DNS_NAME_MAX + 2];
    uint8_t back[DNS_NAME_MAX];

    size_t tl = dns_name_to_str(name, len, text, sizeof(text));
    CHECK(tl < sizeof(text) && text[tl] == '\0');
    int n = dns_name_from_str(text, back);
    CHECK(n == (int)len && memcmp(back, name, len) == 0);
}

static void fuzz_walk(const uint8_t *msg, size_t len)
{
    struct dns_rr_iter it;
    struct dns_rr rr;
    unsigned n = 0;

    if (dns_rr_iter_init(&it, msg, len) < 0)
        return;
    while (dns_rr_next(&it, &rr) == 1) {
        CHECK(rr.rdata_off + rr.rdlen <= len && rr.off < rr.name_end);
        n++;
    }
    CHECK(n <= 3u * 65535u);
}

static void fuzz_query(const uint8_t *data, size_t size)
{
    struct dns_query_info qi;
    uint8_t reply[600];
    int rc = dns_query_parse(data, size, &qi);

    if (rc == 0)
        fuzz_name_text(qi.q.name, qi.q.name_len);
    if (rc == DV_ENOTQUERY)
        return;
    int rcode = rc == DV_EBADVERS ? DNS_RCODE_BADVERS : rc == DV_ENOTIMP ? DNS_RCODE_NOTIMP
                                                                        : DNS_RCODE_FORMERR;
    bool have_q = qi.q.name_len > 0;
    int n = dns_reply_error(&qi, have_q, rcode, reply, sizeof(reply));
    CHECK(n >= DNS_HDR_LEN);
    /* Our own error replies must pass our own answer check. */
    if (have_q && DNS_OPCODE(qi.hdr.flags) == DNS_OPCODE_QUERY)
        CHECK(dns_response_check(reply, (size_t)n, &qi.q) == 0);

    if (rc == 0 && size <= DNS_MSG_MAX) {
        /* Pad a copy; then padding again must change nothing. */
        size_t block = 16u << (data[size - 1] % 5);
        size_t len = size;
        memcpy(work, data, size);
        if (dns_edns_pad_query(work, &len, sizeof(work), block) == 0) {
            CHECK(len % block == 0);
            CHECK(dns_query_parse(work, len, &qi) == 0 && qi.edns.has_padding && !qi.edns.has_ecs);
            size_t len2 = len;
            memcpy(work2, work, len);
            CHECK(dns_edns_pad_query(work2, &len2, sizeof(work2), block) == 0);
            CHECK(len2 == len && memcmp(work, work2, len) == 0);
        }
    }
}

/* Records moved by a rewrite must still name the same owners. */
static void same_owners(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    struct dns_rr_iter ia, ib;
    struct dns_rr ra, rb;
    struct dns_cur ca, cb;
    uint8_t na[DNS_NAME_MAX], nb[DNS_NAME_MAX];
    int rca, rcb;

    CHECK(dns_rr_iter_init(&ia, a, alen) == 0 && dns_rr_iter_init(&ib, b, blen) == 0);
    while ((rca = dns_rr_next(&ia, &ra)) == 1) {
        rcb = dns_rr_next(&ib, &rb);
        CHECK(rcb == 1 && ra.type == rb.type && ra.section == rb.section);
        dns_cur_init(&ca, a, alen);
        dns_cur_seek(&ca, ra.off);
        dns_cur_init(&cb, b, blen);
        dns_cur_seek(&cb, rb.off);
        size_t la = dns_name_read(&ca, na), lb = dns_name_read(&cb, nb);
        CHECK(la == lb && memcmp(na, nb, la) == 0);
    }
    CHECK(rca == 0 && dns_rr_next(&ib, &rb) == 0);
}

static void fuzz_response(const uint8_t *data, size_t size)
{
    struct dns_question q;
    struct dns_cur c;

    if (size > DNS_MSG_MAX)
        return;
    dns_cur_init(&c, data, size);
    dns_cur_seek(&c, DNS_HDR_LEN);
    if (dns_question_read(&c, &q) < 0)
        return;
    int rc = dns_response_check(data, size, &q);
    CHECK(rc == 0 || rc == DV_EMALFORMED || rc == DV_EMISMATCH);

    memcpy(work, data, size);
    dns_msg_age(work, size, data[size - 1]);
    uint32_t min = dns_msg_min_ttl(work, size);
    (void)min;
    if (rc != 0) {
        (void)dns_msg_truncate(work, size, size / 2);
        return;
    }
    CHECK(dns_response_check(work, size, &q) == 0);
    same_owners(data, size, work, size); /* aging never renames */
    dns_msg_restore(work, size, 0x1234, &q);
    CHECK(dns_response_check(work, size, &q) == 0);
    size_t n = dns_msg_truncate(work, size, size / 2 > 512 ? size / 2 : 512);
    CHECK(n <= size);
    CHECK(dns_response_check(work, n, &q) == 0);

    size_t len = size;
    memcpy(work, data, size);
    rc = dns_edns_strip_opt(work, &len, data[size - 1] & 0x0f);
    CHECK(rc == 0 || rc == DV_EMALFORMED);
    CHECK(len <= size);
    if (rc == 0) {
        CHECK(dns_response_check(work, len, &q) == 0);
        same_owners(data, size, work, len);
    } else {
        CHECK(len == size && memcmp(work, data, size) == 0);
    }

    /* Adding an option to a last OPT (the TCP listener's keepalive) keeps
     * the answer valid and its names, or refuses and changes nothing. */
    struct dns_rr opt;
    static const uint8_t ka[2] = { 0, 100 };
    len = size;
    memcpy(work, data, size);
    if (dns_msg_find_opt(work, len, &opt) == 1) {
        rc = dns_edns_add_opt(work, &len, sizeof(work), opt.off, DNS_OPT_KEEPALIVE, ka, sizeof(ka));
        if (rc == 0) {
            CHECK(len == size + 6);
            CHECK(dns_response_check(work, len, &q) == 0);
            same_owners(data, size, work, len);
        } else {
            CHECK(len == size && memcmp(work, data, size) == 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_query(data, size);
    fuzz_response(data, size);
    fuzz_walk(data, size);

    /* Names at every offset of a short input, as pointers would reach them. */
    if (size <= 512) {
        struct dns_cur c;
        uint8_t name[DNS_NAME_MAX];
        for (size_t off = 0; off < size; off++) {
            dns_cur_init(&c, data, size);
            dns_cur_seek(&c, off);
            size_t n = dns_name_read(&c, name);
            if (n > 0) {
                CHECK(n <= DNS_NAME_MAX && c.pos <= size);
                fuzz_name_text(name, n);
            }
        }
    }
    return 0;
}
