#include "resolve/domainset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "resolve/hosts.h"

enum {
    NAME_MAX_WIRE = 255,
    FLAG_SUBTREE = 1,  /* "example.com": the name and below */
    FLAG_BELOW = 2,    /* "*.example.com": strictly below */
};

/* Names live back to back in one arena as [flags][wire length][wire name];
 * the table holds arena offsets + 1 (0 = empty slot), open addressing with
 * linear probing at most half full. About 26 bytes per name of 20
 * characters plus 8 bytes of table: a million names fit in ~34 MB. */
struct domainset {
    uint8_t *arena;
    size_t used, cap;
    uint32_t *table;
    size_t mask; /* table size - 1 */
    size_t count;
};

static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int table_resize(struct domainset *s, size_t slots)
{
    uint32_t *t = calloc(slots, sizeof(*t));

    if (!t)
        return DV_ENOMEM;
    for (size_t i = 0; s->table && i <= s->mask; i++) {
        if (!s->table[i])
            continue;
        const uint8_t *e = s->arena + s->table[i] - 1;
        size_t j = hash(e + 2, e[1]) & (slots - 1);
        while (t[j])
            j = (j + 1) & (slots - 1);
        t[j] = s->table[i];
    }
    free(s->table);
    s->table = t;
    s->mask = slots - 1;
    return 0;
}

static int insert(struct domainset *s, const uint8_t *wire, size_t len, uint8_t flags)
{
    size_t j;

    if ((s->count + 1) * 2 > s->mask + 1 && table_resize(s, (s->mask + 1) * 2))
        return DV_ENOMEM;
    j = hash(wire, len) & s->mask;
    for (; s->table[j]; j = (j + 1) & s->mask) {
        uint8_t *e = s->arena + s->table[j] - 1;
        if (e[1] == len && memcmp(e + 2, wire, len) == 0) {
            e[0] |= flags; /* listed twice, maybe once with "*." */
            return 0;
        }
    }
    if (s->used + 2 + len > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 1 << 16;
        uint8_t *a = realloc(s->arena, ncap);
        if (!a)
            return DV_ENOMEM;
        s->arena = a;
        s->cap = ncap;
    }
    if (s->used + 1 > UINT32_MAX - 2 - len)
        return DV_ENOMEM; /* offsets are 32-bit: 4 GB of names is not a list */
    s->arena[s->used] = flags;
    s->arena[s->used + 1] = (uint8_t)len;
    memcpy(s->arena + s->used + 2, wire, len);
    s->table[j] = (uint32_t)(s->used + 1);
    s->used += 2 + len;
    s->count++;
    return 0;
}

/* "Example.COM." or "*.example.com" into a lower-case wire name. Returns
 * its length, or 0 when tok is not a name. */
static size_t to_wire(const char *tok, size_t n, uint8_t *out, uint8_t *pflags)
{
    size_t o = 0, label = 0;

    *pflags = FLAG_SUBTREE;
    if (n >= 2 && tok[0] == '*' && tok[1] == '.') {
        *pflags = FLAG_BELOW;
        tok += 2;
        n -= 2;
    }
    if (n && tok[n - 1] == '.')
        n--;
    if (n == 0 || n + 2 > NAME_MAX_WIRE)
        return 0;
    out[o++] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)tok[i];
        if (ch == '.') {
            if (o - label - 1 == 0)
                return 0; /* empty label */
            out[label] = (uint8_t)(o - label - 1);
            label = o;
            out[o++] = 0;
            continue;
        }
        /* host names only: adblock syntax ("||a.com^") and the like is
         * not a name and is skipped, not half understood */
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
        if (o - label - 1 == 63)
            return 0;
        out[o++] = (uint8_t)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (o - label - 1 == 0)
        return 0;
    out[label] = (uint8_t)(o - label - 1);
    out[o++] = 0;
    return o;
}

static bool is_address(const char *tok, size_t n)
{
    char buf[64];
    uint8_t a[16];

    if (n >= sizeof(buf))
        return false;
    memcpy(buf, tok, n);
    buf[n] = 0;
    return inet_pton(AF_INET, buf, a) == 1 || inet_pton(AF_INET6, buf, a) == 1;
}

/* The names a hosts file maps to 127.0.0.1 and friends: listing them blocks
 * nothing a list means to block. */
static bool hosts_noise(const char *tok, size_t n)
{
    return !memchr(tok, '.', n) || (n == 21 && memcmp(tok, "localhost.localdomain", 21) == 0) ||
           is_address(tok, n);
}

static int parse_line(struct domainset *s, const char *p, const char *end, bool *bad)
{
    const char *tok[64];
    size_t len[64], nt = 0;
    uint8_t wire[NAME_MAX_WIRE + 1], flags;

    nt = hosts_line_fields(p, end, tok, len, 64);
    if (nt == 0)
        return 0;
    if (nt > 1 || is_address(tok[0], len[0])) {
        /* hosts format: ADDRESS NAME... */
        if (!is_address(tok[0], len[0]) || nt < 2) {
            *bad = true;
            return 0;
        }
        for (size_t i = 1; i < nt; i++) {
            if (hosts_noise(tok[i], len[i]))
                continue;
            size_t wl = to_wire(tok[i], len[i], wire, &flags);
            if (!wl) {
                *bad = true;
                continue;
            }
            if (insert(s, wire, wl, flags))
                return DV_ENOMEM;
        }
        return 0;
    }
    size_t wl = to_wire(tok[0], len[0], wire, &flags);
    if (!wl) {
        *bad = true;
        return 0;
    }
    return insert(s, wire, wl, flags);
}

static struct domainset *set_new(size_t textlen)
{
    struct domainset *s = calloc(1, sizeof(*s));
    size_t slots = 1024;

    /* size the table at once for lines of ~25 bytes, half full */
    while (slots < textlen / 16)
        slots *= 2;
    if (s && table_resize(s, slots)) {
        free(s);
        s = NULL;
    }
    return s;
}

/* Every line of text (the last one may lack its newline). */
static int parse_lines(struct domainset *s, const char *p, const char *end, int *line,
                       struct domainset_info *info)
{
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        bool bad = false;
        if (!eol)
            eol = end;
        ++*line;
        if (parse_line(s, p, eol, &bad))
            return DV_ENOMEM;
        if (bad) {
            info->skipped++;
            if (!info->first_bad)
                info->first_bad = *line;
        }
        p = eol + 1;
    }
    return 0;
}

static void finish(struct domainset *s, struct domainset_info *info)
{
    if (s->used && s->used < s->cap) {
        uint8_t *a = realloc(s->arena, s->used);
        if (a) {
            s->arena = a;
            s->cap = s->used;
        }
    }
    info->entries = s->count;
    info->bytes = sizeof(*s) + s->cap + (s->mask + 1) * sizeof(*s->table);
}

int domainset_parse(const char *text, size_t len, struct domainset **pset,
                    struct domainset_info *info)
{
    struct domainset *s = set_new(len);
    int line = 0;

    memset(info, 0, sizeof(*info));
    *pset = NULL;
    if (!s || parse_lines(s, text, text + len, &line, info)) {
        domainset_del(s);
        return DV_ENOMEM;
    }
    finish(s, info);
    *pset = s;
    return 0;
}

/* Read in pieces, so a list costs its set and not also its text. */
int domainset_load(const char *path, struct domainset **pset, struct domainset_info *info)
{
    enum { CHUNK = 1 << 20 };
    struct domainset *s = NULL;
    struct stat st;
    char *buf = NULL;
    size_t have = 0;
    int fd, line = 0, rc = DV_ENOMEM;

    *pset = NULL;
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
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        return DV_EIO;
    }
    if (!(buf = malloc(CHUNK)) || !(s = set_new((size_t)st.st_size)))
        goto out;
    for (;;) {
        ssize_t n = read(fd, buf + have, CHUNK - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = DV_EIO;
            goto out;
        }
        have += (size_t)n;
        /* whole lines now; the tail waits for the rest of its line (a line
         * longer than a chunk is cut, and is no name anyway) */
        char *last = n == 0 ? buf + have : memrchr(buf, '\n', have);
        if (!last && have < CHUNK)
            continue;
        if (!last)
            last = buf + have;
        if (parse_lines(s, buf, last, &line, info))
            goto out;
        size_t used = last < buf + have ? (size_t)(last + 1 - buf) : have;
        memmove(buf, buf + used, have - used);
        have -= used;
        if (n == 0)
            break;
    }
    finish(s, info);
    *pset = s;
    s = NULL;
    rc = 0;
out:
    close(fd);
    free(buf);
    domainset_del(s);
    return rc;
}

void domainset_del(struct domainset *s)
{
    if (!s)
        return;
    free(s->arena);
    free(s->table);
    free(s);
}

static uint8_t find(const struct domainset *s, const uint8_t *wire, size_t len)
{
    for (size_t j = hash(wire, len) & s->mask; s->table[j]; j = (j + 1) & s->mask) {
        const uint8_t *e = s->arena + s->table[j] - 1;
        if (e[1] == len && memcmp(e + 2, wire, len) == 0)
            return e[0];
    }
    return 0;
}

bool domainset_match(const struct domainset *s, const uint8_t *name, size_t len)
{
    /* each suffix of the name, the name itself first: one probe per label */
    for (size_t off = 0; off < len && name[off]; off += 1u + name[off]) {
        uint8_t f = find(s, name + off, len - off);
        if ((f & FLAG_SUBTREE) || (off > 0 && (f & FLAG_BELOW)))
            return true;
    }
    return false;
}
