#include "config/stamp.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"

/* base64url without padding (RFC 4648 §5); padding tolerated. */
static int b64url_decode(const char *in, uint8_t *out, size_t cap, size_t *plen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    for (; *in && *in != '='; in++) {
        int v;
        char ch = *in;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '-' || ch == '+') v = 62;
        else if (ch == '_' || ch == '/') v = 63;
        else return DV_EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return DV_ESPACE;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *plen = n;
    return 0;
}

struct rd {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
};

/* LP(x): one length byte, then x, copied as a C string. */
static void rd_lp(struct rd *r, char *dst, size_t cap)
{
    size_t n;

    if (r->pos >= r->len) {
        r->bad = true;
        return;
    }
    n = r->p[r->pos++];
    if (n >= cap || r->len - r->pos < n || memchr(r->p + r->pos, 0, n)) {
        r->bad = true;
        return;
    }
    memcpy(dst, r->p + r->pos, n);
    dst[n] = 0;
    r->pos += n;
}

/* VLP(x1..xn): each length byte has 0x80 set while more elements follow;
 * a lone zero byte is the empty set. fn receives each element. */
static void rd_vlp(struct rd *r, void (*fn)(struct rd *, const uint8_t *, size_t, void *),
                   void *arg)
{
    for (;;) {
        if (r->pos >= r->len) {
            r->bad = true;
            return;
        }
        uint8_t b = r->p[r->pos++];
        size_t n = b & 0x7f;
        if (r->len - r->pos < n) {
            r->bad = true;
            return;
        }
        if (n)
            fn(r, r->p + r->pos, n, arg);
        r->pos += n;
        if (!(b & 0x80) || r->bad)
            return;
    }
}

static void put_hash(struct rd *r, const uint8_t *p, size_t n, void *arg)
{
    struct stamp *st = arg;

    if (n != 32 || st->n_hashes == STAMP_MAX_HASHES) {
        r->bad = true;
        return;
    }
    memcpy(st->hashes[st->n_hashes++], p, 32);
}

static void put_bootstrap(struct rd *r, const uint8_t *p, size_t n, void *arg)
{
    struct stamp *st = arg;

    if (n >= sizeof(st->bootstrap[0]) || st->n_bootstrap == STAMP_MAX_BOOTSTRAP ||
        memchr(p, 0, n)) {
        r->bad = true;
        return;
    }
    memcpy(st->bootstrap[st->n_bootstrap], p, n);
    st->bootstrap[st->n_bootstrap++][n] = 0;
}

int stamp_decode(const char *s, struct stamp *out, char *err, size_t errlen)
{
    uint8_t raw[2048];
    size_t len;
    struct rd r = {.p = raw};

    memset(out, 0, sizeof(*out));
    if (strncmp(s, "sdns://", 7) != 0) {
        snprintf(err, errlen, "a DNS stamp starts with sdns://");
        return DV_EINVAL;
    }
    if (b64url_decode(s + 7, raw, sizeof(raw), &len) || len < 1) {
        snprintf(err, errlen, "DNS stamp is not valid base64url");
        return DV_EINVAL;
    }
    r.len = len;
    out->proto = raw[r.pos++];
    if (out->proto != STAMP_DNSCRYPT_RELAY) {
        if (len < 9) {
            snprintf(err, errlen, "DNS stamp is truncated");
            return DV_EINVAL;
        }
        for (int i = 0; i < 8; i++)
            out->props |= (uint64_t)raw[1 + i] << (8 * i);
        r.pos = 9;
    }
    switch (out->proto) {
    case STAMP_PLAIN:
        rd_lp(&r, out->addr, sizeof(out->addr));
        break;
    case STAMP_DOH:
    case STAMP_DOT:
    case STAMP_DOQ:
    case STAMP_ODOH_RELAY:
        rd_lp(&r, out->addr, sizeof(out->addr));
        rd_vlp(&r, put_hash, out);
        rd_lp(&r, out->host, sizeof(out->host));
        if (out->proto == STAMP_DOH || out->proto == STAMP_ODOH_RELAY)
            rd_lp(&r, out->path, sizeof(out->path));
        /* optional: resolvers for the host name over plain DNS, which we
         * record but never use (no plaintext lookups) */
        if (!r.bad && r.pos < r.len)
            rd_vlp(&r, put_bootstrap, out);
        break;
    case STAMP_ODOH_TARGET:
        rd_lp(&r, out->host, sizeof(out->host));
        rd_lp(&r, out->path, sizeof(out->path));
        break;
    case STAMP_DNSCRYPT:
    case STAMP_DNSCRYPT_RELAY:
        snprintf(err, errlen, "DNSCrypt stamps are not supported (dnsveil speaks DoH, DoT, "
                              "DoQ, ODoH and plain DNS)");
        return DV_EINVAL;
    default:
        snprintf(err, errlen, "DNS stamp has unknown protocol 0x%02x", out->proto);
        return DV_EINVAL;
    }
    if (r.bad || r.pos != r.len) {
        snprintf(err, errlen, "DNS stamp is malformed");
        return DV_EINVAL;
    }
    return 0;
}

int stamp_to_url(const struct stamp *st, char *url, size_t cap, char *err, size_t errlen)
{
    const char *scheme;
    int n;

    switch (st->proto) {
    case STAMP_PLAIN:
        n = snprintf(url, cap, "udp://%s", st->addr);
        break;
    case STAMP_DOT: scheme = "tls"; goto host;
    case STAMP_DOQ: scheme = "quic"; goto host;
    case STAMP_DOH: scheme = "https"; goto host;
    case STAMP_ODOH_TARGET: scheme = "odoh"; goto host;
    host:
        if (!st->host[0]) {
            snprintf(err, errlen, "DNS stamp has no host name");
            return DV_EINVAL;
        }
        n = snprintf(url, cap, "%s://%s%s", scheme, st->host, st->path);
        break;
    default:
        snprintf(err, errlen, "a relay stamp is not an upstream on its own");
        return DV_EINVAL;
    }
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "DNS stamp URL is too long");
        return DV_ESPACE;
    }
    return 0;
}
