#include "resolve/hosts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

enum {
    HOSTS_MAX_FILE = 256 << 20,
    MAX_ADDRS = 32, /* per name and family: more would not fit a UDP answer */
};

/* One name: its addresses, or (for an address's reverse name) the PTR
 * target. Both kinds share one table keyed by lower-case wire name. */
struct hent {
    struct hent *next;
    uint64_t hash;
    uint8_t n4, n6;
    uint8_t ptr_len; /* 0: not a reverse name */
    uint8_t len;
    struct in_addr *v4;
    struct in6_addr *v6;
    uint8_t *ptr;
    uint8_t name[]; /* len bytes */
};

struct hosts {
    struct hent **buckets;
    size_t mask, count;
};

static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static struct hent *find(const struct hosts *h, const uint8_t *name, size_t len, uint64_t hv)
{
    for (struct hent *e = h->buckets[hv & h->mask]; e; e = e->next)
        if (e->hash == hv && e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

static int grow(struct hosts *h)
{
    size_t n = (h->mask + 1) * 2;
    struct hent **b = calloc(n, sizeof(*b));

    if (!b)
        return DV_ENOMEM;
    for (size_t i = 0; i <= h->mask; i++) {
        while (h->buckets[i]) {
            struct hent *e = h->buckets[i];
            h->buckets[i] = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(h->buckets);
    h->buckets = b;
    h->mask = n - 1;
    return 0;
}

static struct hent *get(struct hosts *h, const uint8_t *name, size_t len)
{
    uint64_t hv = hash(name, len);
    struct hent *e = find(h, name, len, hv);

    if (e)
        return e;
    if (h->count >= h->mask + 1 && grow(h))
        return NULL;
    if (!(e = calloc(1, sizeof(*e) + len)))
        return NULL;
    e->hash = hv;
    e->len = (uint8_t)len;
    memcpy(e->name, name, len);
    e->next = h->buckets[hv & h->mask];
    h->buckets[hv & h->mask] = e;
    h->count++;
    return e;
}

/* A host name into a lower-case wire name; 0 when it is not one. */
static size_t to_wire(const char *tok, size_t n, uint8_t *out)
{
    size_t o = 1, label = 0;

    if (n && tok[n - 1] == '.')
        n--;
    if (n == 0 || n + 2 > DNS_NAME_MAX)
        return 0;
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)tok[i];
        if (ch == '.') {
            if (o - label == 1)
                return 0;
            out[label] = (uint8_t)(o - label - 1);
            label = o++;
            out[label] = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_') || o - label - 1 == 63)
            return 0;
        out[o++] = (uint8_t)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (o - label == 1)
        return 0;
    out[label] = (uint8_t)(o - label - 1);
    out[o++] = 0;
    return o;
}

/* The in-addr.arpa / ip6.arpa name of an address, in wire form. */
static size_t reverse_name(int family, const uint8_t *a, uint8_t *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (family == AF_INET) {
        for (int i = 3; i >= 0; i--) {
            char num[4];
            int k = snprintf(num, sizeof(num), "%u", a[i]);
            out[o++] = (uint8_t)k;
            memcpy(out + o, num, (size_t)k);
            o += (size_t)k;
        }
        memcpy(out + o, "\x07in-addr\x04" "arpa", 14);
        return o + 14;
    }
    for (int i = 15; i >= 0; i--) {
        out[o++] = 1;
        out[o++] = (uint8_t)hex[a[i] & 15];
        out[o++] = 1;
        out[o++] = (uint8_t)hex[a[i] >> 4];
    }
    memcpy(out + o, "\x03ip6\x04" "arpa", 10);
    return o + 10;
}

size_t hosts_line_fields(const char *p, const char *end, const char **tok, size_t *len,
                         size_t max)
{
    size_t nt = 0;

    while (p < end && nt < max) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p == end || *p == '#')
            break;
        tok[nt] = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
            p++;
        len[nt] = (size_t)(p - tok[nt]);
        nt++;
    }
    return nt;
}

static void parse_line(struct hosts *h, const char *p, const char *end, bool *bad, bool *oom)
{
    const char *tok[64];
    size_t len[64], nt = 0;
    char addr[64];
    uint8_t a[16], wire[DNS_NAME_MAX], rev[DNS_NAME_MAX];
    int family;

    nt = hosts_line_fields(p, end, tok, len, 64);
    if (nt == 0)
        return;
    if (nt < 2 || len[0] >= sizeof(addr)) {
        *bad = true;
        return;
    }
    memcpy(addr, tok[0], len[0]);
    addr[len[0]] = 0;
    family = inet_pton(AF_INET, addr, a) == 1 ? AF_INET : inet_pton(AF_INET6, addr, a) == 1 ? AF_INET6 : 0;
    if (!family) {
        *bad = true;
        return;
    }
    for (size_t i = 1; i < nt; i++) {
        size_t wl = to_wire(tok[i], len[i], wire);
        struct hent *e;
        if (!wl) {
            *bad = true;
            continue;
        }
        if (!(e = get(h, wire, wl))) {
            *oom = true;
            return;
        }
        if (family == AF_INET && e->n4 < MAX_ADDRS) {
            struct in_addr *v = realloc(e->v4, (e->n4 + 1u) * sizeof(*v));
            if (!v) {
                *oom = true;
                return;
            }
            e->v4 = v;
            memcpy(&v[e->n4++], a, 4);
        } else if (family == AF_INET6 && e->n6 < MAX_ADDRS) {
            struct in6_addr *v = realloc(e->v6, (e->n6 + 1u) * sizeof(*v));
            if (!v) {
                *oom = true;
                return;
            }
            e->v6 = v;
            memcpy(&v[e->n6++], a, 16);
        }
        if (i == 1) {
            /* the canonical name answers the address's PTR; the first
             * line listing an address wins, as in a resolver's hosts */
            size_t rl = reverse_name(family, a, rev);
            struct hent *r = get(h, rev, rl);
            if (!r) {
                *oom = true;
                return;
            }
            if (!r->ptr_len) {
                if (!(r->ptr = malloc(wl))) {
                    *oom = true;
                    return;
                }
                r->ptr_len = (uint8_t)wl;
                memcpy(r->ptr, wire, wl);
            }
        }
    }
}

int hosts_parse(const char *text, size_t len, struct hosts **ph, struct hosts_info *info)
{
    struct hosts *h = calloc(1, sizeof(*h));
    const char *p = text, *end = text + len;
    bool oom = false;
    int line = 0;

    memset(info, 0, sizeof(*info));
    *ph = NULL;
    if (!h || !(h->buckets = calloc(64, sizeof(*h->buckets)))) {
        free(h);
        return DV_ENOMEM;
    }
    h->mask = 63;
    while (p < end && !oom) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        bool bad = false;
        if (!eol)
            eol = end;
        line++;
        parse_line(h, p, eol, &bad, &oom);
        if (bad) {
            info->skipped++;
            if (!info->first_bad)
                info->first_bad = line;
        }
        p = eol + 1;
    }
    if (oom) {
        hosts_del(h);
        return DV_ENOMEM;
    }
    for (size_t i = 0; i <= h->mask; i++)
        for (struct hent *e = h->buckets[i]; e; e = e->next)
            info->names += e->n4 || e->n6;
    *ph = h;
    return 0;
}

int hosts_load(const char *path, struct hosts **ph, struct hosts_info *info)
{
    struct stat st;
    size_t got = 0;
    char *text;
    int fd, rc;

    *ph = NULL;
    memset(info, 0, sizeof(*info));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return DV_EIO;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return DV_EIO;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > HOSTS_MAX_FILE) {
        close(fd);
        errno = S_ISDIR(st.st_mode) ? EISDIR : S_ISREG(st.st_mode) ? EFBIG : EINVAL;
        return DV_EIO;
    }
    if (!(text = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return DV_ENOMEM;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    rc = hosts_parse(text, got, ph, info);
    free(text);
    return rc;
}

void hosts_del(struct hosts *h)
{
    if (!h)
        return;
    for (size_t i = 0; h->buckets && i <= h->mask; i++) {
        while (h->buckets[i]) {
            struct hent *e = h->buckets[i];
            h->buckets[i] = e->next;
            free(e->v4);
            free(e->v6);
            free(e->ptr);
            free(e);
        }
    }
    free(h->buckets);
    free(h);
}

bool hosts_knows(const struct hosts *h, const uint8_t *name, size_t len)
{
    return len <= DNS_NAME_MAX && find(h, name, len, hash(name, len)) != NULL;
}

int hosts_answer(const struct hosts *h, const struct dns_query_info *qi, uint32_t ttl,
                 uint8_t *out, size_t cap)
{
    uint8_t lower[DNS_NAME_MAX];
    const struct hent *e;
    struct dns_cur c;
    size_t n = qi->q.name_len;
    uint16_t type = qi->q.qtype;
    struct dns_hdr hd = {
        .id = qi->hdr.id,
        .flags = DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA | (qi->hdr.flags & DNS_FLAG_RD),
        .qdcount = 1,
        .arcount = qi->edns.present ? 1 : 0,
    };

    if (n > DNS_NAME_MAX)
        return DV_ESPACE;
    memcpy(lower, qi->q.name, n);
    dns_name_lower(lower, n);
    e = find(h, lower, n, hash(lower, n));
    if (e && type == DNS_TYPE_A)
        hd.ancount = e->n4;
    else if (e && type == DNS_TYPE_AAAA)
        hd.ancount = e->n6;
    else if (e && type == DNS_TYPE_PTR)
        hd.ancount = e->ptr_len ? 1 : 0;
    dns_cur_init_w(&c, out, cap);
    dns_hdr_write(&c, &hd);
    dns_cur_put(&c, qi->q.name, n);
    dns_cur_put_u16(&c, type);
    dns_cur_put_u16(&c, qi->q.qclass);
    for (unsigned i = 0; i < hd.ancount; i++) {
        dns_cur_put_u16(&c, 0xc000 | DNS_HDR_LEN); /* the question's name */
        dns_cur_put_u16(&c, type);
        dns_cur_put_u16(&c, DNS_CLASS_IN);
        dns_cur_put_u32(&c, ttl);
        if (type == DNS_TYPE_A) {
            dns_cur_put_u16(&c, 4);
            dns_cur_put(&c, &e->v4[i], 4);
        } else if (type == DNS_TYPE_AAAA) {
            dns_cur_put_u16(&c, 16);
            dns_cur_put(&c, &e->v6[i], 16);
        } else {
            dns_cur_put_u16(&c, e->ptr_len);
            dns_cur_put(&c, e->ptr, e->ptr_len);
        }
    }
    if (qi->edns.present)
        dns_edns_write(&c, DNS_EDNS_DEFAULT, qi->edns.do_bit, 0);
    return c.err ? DV_ESPACE : (int)c.pos;
}
