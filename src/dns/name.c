/* dns/name.c — domain names: reading (compression-safe), comparison, text form. */
#include "dns/dns.h"

#include <string.h>

#include "core/err.h"

enum { NAME_MAX_HOPS = 127 };

size_t dns_name_read(struct dns_cur *c, uint8_t *out)
{
    const uint8_t *m = c->base;
    size_t p, seg, olen = 0, after = 0;
    unsigned hops = 0;

    if (c->err)
        return 0;
    p = seg = c->pos;
    for (;;) {
        if (p >= c->len)
            goto bad;
        uint8_t b = m[p];
        if ((b & 0xc0) == 0xc0) {
            if (c->len - p < 2)
                goto bad;
            size_t target = (size_t)(b & 0x3f) << 8 | m[p + 1];
            if (hops == 0)
                after = p + 2;
            /* Every jump must land before the start of the run of labels it
             * ends: offsets then strictly decrease, so no loop is possible
             * whatever the hop limit. Names never live in the header. */
            if (target >= seg || target < DNS_HDR_LEN || ++hops > NAME_MAX_HOPS)
                goto bad;
            p = seg = target;
            continue;
        }
        if (b & 0xc0) /* 0x40 extended and 0x80 reserved label types */
            goto bad;
        if (olen + 1u + b > DNS_NAME_MAX || c->len - p < 1u + b)
            goto bad;
        if (out)
            memcpy(out + olen, m + p, 1u + b);
        olen += 1u + b;
        p += 1u + b;
        if (b == 0)
            break;
    }
    c->pos = hops ? after : p;
    return olen;
bad:
    c->err = DV_EMALFORMED;
    return 0;
}

static uint8_t lower(uint8_t ch)
{
    return ch >= 'A' && ch <= 'Z' ? (uint8_t)(ch + 32) : ch;
}

void dns_name_lower(uint8_t *name, size_t len)
{
    /* Length bytes are <= 63 and thus never in 'A'..'Z': no label walk needed. */
    for (size_t i = 0; i < len; i++)
        name[i] = lower(name[i]);
}

bool dns_name_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

bool dns_name_is_sub(const uint8_t *name, size_t len, const uint8_t *parent, size_t plen)
{
    size_t off = 0;

    /* Compare only at label boundaries, so "xample.com" is not under "ample.com". */
    while (off < len) {
        if (len - off == plen)
            return dns_name_eq(name + off, len - off, parent, plen);
        if (len - off < plen || name[off] == 0)
            return false;
        off += 1u + name[off];
    }
    return false;
}

static bool plain_char(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

/* Appends s[0..n) if it fits whole: a cut-off escape would mislead a reader. */
static bool out_add(char *out, size_t cap, size_t *olen, const char *s, size_t n)
{
    if (cap == 0 || *olen + n > cap - 1)
        return false;
    memcpy(out + *olen, s, n);
    *olen += n;
    return true;
}

size_t dns_name_to_str(const uint8_t *name, size_t len, char *out, size_t cap)
{
    size_t off = 0, olen = 0;

    if (cap > 0)
        out[0] = '\0';
    if (len == 0)
        return 0;
    if (name[0] == 0) {
        out_add(out, cap, &olen, ".", 1);
        goto done;
    }
    while (off < len && name[off] != 0) {
        size_t ll = name[off];
        /* Log helper: a malformed label stops the output instead of over-reading. */
        if (ll > DNS_LABEL_MAX || ll >= len - off)
            break;
        for (size_t i = 1; i <= ll; i++) {
            uint8_t ch = name[off + i];
            char esc[5];
            if (plain_char(ch)) {
                esc[0] = (char)ch;
                if (!out_add(out, cap, &olen, esc, 1))
                    goto done;
            } else {
                esc[0] = '\\';
                esc[1] = (char)('0' + ch / 100);
                esc[2] = (char)('0' + ch / 10 % 10);
                esc[3] = (char)('0' + ch % 10);
                if (!out_add(out, cap, &olen, esc, 4))
                    goto done;
            }
        }
        if (!out_add(out, cap, &olen, ".", 1))
            goto done;
        off += 1 + ll;
    }
done:
    if (cap > 0)
        out[olen] = '\0';
    return olen;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

int dns_name_from_str(const char *s, uint8_t *out)
{
    /* Every byte but the final root label must sit below DNS_NAME_MAX - 1. */
    const size_t body_max = DNS_NAME_MAX - 1;
    size_t olen = 0;

    if (!s || !*s)
        return DV_EINVAL;
    if (s[0] == '.' && s[1] == '\0') {
        out[0] = 0;
        return 1;
    }
    while (*s) {
        size_t lpos = olen, llen = 0;
        if (olen >= body_max)
            return DV_EINVAL;
        olen++;
        while (*s && *s != '.') {
            uint8_t ch;
            if (*s == '\\') {
                s++;
                if (is_digit(s[0])) {
                    if (!is_digit(s[1]) || !is_digit(s[2]))
                        return DV_EINVAL;
                    int v = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
                    if (v > 255)
                        return DV_EINVAL;
                    ch = (uint8_t)v;
                    s += 3;
                } else if (*s) {
                    ch = (uint8_t)*s++;
                } else {
                    return DV_EINVAL;
                }
            } else {
                ch = (uint8_t)*s++;
            }
            if (llen == DNS_LABEL_MAX || olen >= body_max)
                return DV_EINVAL;
            out[olen++] = ch;
            llen++;
        }
        if (llen == 0) /* "a..b", ".a" */
            return DV_EINVAL;
        out[lpos] = (uint8_t)llen;
        if (*s == '.')
            s++;
    }
    out[olen++] = 0;
    return (int)olen;
}
