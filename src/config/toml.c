/* TOML 1.0 parser. One recursive-descent pass over the bytes builds the tree
 * directly; the rules about defining tables and keys twice are enforced with a
 * few flags per table (see enum tab_flag). Recursion is bounded by
 * TOML_MAX_DEPTH, so neither parsing nor freeing can exhaust the stack. */
#include "config/toml.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* How a table came to exist; decides what may still be added to it. */
enum tab_flag {
    TAB_IMPLICIT = 1 << 0, /* parent named in a header, e.g. a in [a.b] */
    TAB_HEADER = 1 << 1,   /* defined by its own [header] or [[header]] */
    TAB_DOTTED = 1 << 2,   /* created or extended by a dotted key */
    TAB_INLINE = 1 << 3,   /* { ... }: sealed once closed */
    ARR_TABLES = 1 << 4,   /* array built by [[header]]s */
};

struct toml_node {
    enum toml_kind kind;
    unsigned flags;
    int depth; /* root is 0 */
    int line, col;
    int kline, kcol;
    char *key; /* NULL for root and array elements */
    size_t keylen;
    union {
        struct {
            struct toml_node **items; /* tables and arrays alike */
            size_t len, cap;
            uint32_t *index; /* hash slots holding item index + 1; big tables only */
            size_t index_cap;
        } c;
        struct {
            char *ptr;
            size_t len;
        } s;
        int64_t i;
        double f;
        bool b;
        struct toml_datetime dt;
    } u;
};

struct toml_doc {
    struct toml_node *root;
};

/* Tables with more keys than this get a hash index so that a hostile file
 * with many keys cannot make parsing quadratic. */
#define INDEX_MIN 16

struct parser {
    const char *src;
    size_t len;
    size_t pos;
    size_t bom; /* bytes of byte-order mark skipped at the start */
    struct toml_error *err;
    bool failed;
    int rc;
    /* Position cache: nodes are created in increasing offsets, so counting
     * newlines forward from the last answer keeps line lookups linear. */
    size_t lc_off, lc_line_start;
    int lc_line;
    struct toml_node *root;
    struct toml_node *cur; /* table receiving key/values */
    char *buf;             /* scratch for decoded strings */
    size_t buflen, bufcap;
};

/* ---- positions and errors ---------------------------------------------- */

static void pos_of(struct parser *p, size_t off, int *pline, int *pcol)
{
    if (off > p->len)
        off = p->len;
    if (off < p->lc_off) {
        /* Rare (key positions, errors): step back from the cache. */
        for (size_t i = off; i < p->lc_off; i++)
            if (p->src[i] == '\n')
                p->lc_line--;
        if (off < p->lc_line_start) {
            size_t start = off;
            while (start > p->bom && p->src[start - 1] != '\n')
                start--;
            p->lc_line_start = start;
        }
    }
    for (size_t i = p->lc_off < off ? p->lc_off : off; i < off; i++) {
        if (p->src[i] == '\n') {
            p->lc_line++;
            p->lc_line_start = i + 1;
        }
    }
    p->lc_off = off;
    *pline = p->lc_line;
    size_t col = off - p->lc_line_start + 1;
    *pcol = col > INT_MAX ? INT_MAX : (int)col;
}

__attribute__((format(printf, 3, 4)))
static int fail_at(struct parser *p, size_t off, const char *fmt, ...)
{
    if (p->failed)
        return p->rc;
    p->failed = true;
    p->rc = DV_EINVAL;
    if (p->err) {
        pos_of(p, off, &p->err->line, &p->err->col);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
        va_end(ap);
    }
    return DV_EINVAL;
}

static int fail_nomem(struct parser *p)
{
    if (!p->failed) {
        p->failed = true;
        p->rc = DV_ENOMEM;
        if (p->err) {
            p->err->line = p->err->col = 0;
            snprintf(p->err->msg, sizeof(p->err->msg), "out of memory");
        }
    }
    return DV_ENOMEM;
}

/* Describes the byte at off for messages, quoting printable ASCII. */
static const char *describe(const struct parser *p, size_t off, char *out, size_t outlen)
{
    if (off >= p->len)
        snprintf(out, outlen, "end of file");
    else if (p->src[off] == '\n' || (p->src[off] == '\r' && off + 1 < p->len))
        snprintf(out, outlen, "end of line");
    else if ((unsigned char)p->src[off] > 0x20 && (unsigned char)p->src[off] < 0x7f)
        snprintf(out, outlen, "'%c'", p->src[off]);
    else
        snprintf(out, outlen, "byte 0x%02x", (unsigned char)p->src[off]);
    return out;
}

static int fail_expected(struct parser *p, const char *what)
{
    char d[32];
    return fail_at(p, p->pos, "expected %s, found %s", what, describe(p, p->pos, d, sizeof(d)));
}

/* ---- nodes --------------------------------------------------------------- */

static void node_free(struct toml_node *n)
{
    if (!n)
        return;
    if (n->kind == TOML_TABLE || n->kind == TOML_ARRAY) {
        for (size_t i = 0; i < n->u.c.len; i++)
            node_free(n->u.c.items[i]);
        free(n->u.c.items);
        free(n->u.c.index);
    } else if (n->kind == TOML_STRING) {
        free(n->u.s.ptr);
    }
    free(n->key);
    free(n);
}

static struct toml_node *node_new(struct parser *p, enum toml_kind kind, size_t off)
{
    struct toml_node *n = calloc(1, sizeof(*n));
    if (!n) {
        fail_nomem(p);
        return NULL;
    }
    n->kind = kind;
    pos_of(p, off, &n->line, &n->col);
    n->kline = n->line;
    n->kcol = n->col;
    return n;
}

static uint32_t key_hash(const char *k, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)k[i];
        h *= 16777619u;
    }
    return h;
}

static void index_put(struct toml_node *t, size_t item)
{
    const struct toml_node *c = t->u.c.items[item];
    size_t mask = t->u.c.index_cap - 1;
    size_t slot = key_hash(c->key, c->keylen) & mask;
    while (t->u.c.index[slot])
        slot = (slot + 1) & mask;
    t->u.c.index[slot] = (uint32_t)item + 1;
}

static struct toml_node *table_find(const struct toml_node *t, const char *key, size_t len)
{
    if (t->u.c.index) {
        size_t mask = t->u.c.index_cap - 1;
        for (size_t slot = key_hash(key, len) & mask; t->u.c.index[slot];
             slot = (slot + 1) & mask) {
            struct toml_node *c = t->u.c.items[t->u.c.index[slot] - 1];
            if (c->keylen == len && memcmp(c->key, key, len) == 0)
                return c;
        }
        return NULL;
    }
    for (size_t i = 0; i < t->u.c.len; i++) {
        struct toml_node *c = t->u.c.items[i];
        if (c->keylen == len && memcmp(c->key, key, len) == 0)
            return c;
    }
    return NULL;
}

/* Appends child to a table or array; on failure the caller still owns child. */
static int container_add(struct parser *p, struct toml_node *t, struct toml_node *child)
{
    if (t->u.c.len == t->u.c.cap) {
        size_t cap = t->u.c.cap ? t->u.c.cap * 2 : 4;
        if (cap > UINT32_MAX / 2)
            return fail_at(p, p->pos, "too many entries");
        struct toml_node **items = realloc(t->u.c.items, cap * sizeof(*items));
        if (!items)
            return fail_nomem(p);
        t->u.c.items = items;
        t->u.c.cap = cap;
    }
    t->u.c.items[t->u.c.len++] = child;
    if (t->kind != TOML_TABLE)
        return DV_OK;
    if (t->u.c.len * 2 > t->u.c.index_cap && t->u.c.len >= INDEX_MIN) {
        size_t cap = t->u.c.index_cap ? t->u.c.index_cap * 2 : 64;
        while (cap < t->u.c.len * 2)
            cap *= 2;
        uint32_t *index = calloc(cap, sizeof(*index));
        if (!index) {
            t->u.c.len--;
            return fail_nomem(p);
        }
        free(t->u.c.index);
        t->u.c.index = index;
        t->u.c.index_cap = cap;
        for (size_t i = 0; i < t->u.c.len; i++)
            index_put(t, i);
    } else if (t->u.c.index) {
        index_put(t, t->u.c.len - 1);
    }
    return DV_OK;
}

/* Creates an empty table named key (ownership of key moves in) under t. */
static struct toml_node *table_add_table(struct parser *p, struct toml_node *t, char *key,
                                         size_t keylen, size_t keyoff, unsigned flags)
{
    if (t->depth >= TOML_MAX_DEPTH) {
        free(key);
        fail_at(p, keyoff, "tables nested deeper than %d levels", TOML_MAX_DEPTH);
        return NULL;
    }
    struct toml_node *n = node_new(p, TOML_TABLE, keyoff);
    if (!n) {
        free(key);
        return NULL;
    }
    n->key = key;
    n->keylen = keylen;
    n->flags = flags;
    n->depth = t->depth + 1;
    if (container_add(p, t, n) != DV_OK) {
        node_free(n);
        return NULL;
    }
    return n;
}

/* What a node is, with its article, for messages. */
static const char *node_what(const struct toml_node *n)
{
    switch (n->kind) {
    case TOML_TABLE:
        if (n->flags & TAB_INLINE)
            return "an inline table";
        if (n->flags & TAB_HEADER)
            return "a [table]";
        return (n->flags & TAB_DOTTED) ? "a dotted-key table" : "a table";
    case TOML_ARRAY: return (n->flags & ARR_TABLES) ? "an array of tables" : "a static array";
    case TOML_INT: return "an integer";
    case TOML_FLOAT: return "a float";
    case TOML_BOOL: return "a boolean";
    case TOML_STRING: return "a string";
    case TOML_DATETIME: return "a datetime";
    case TOML_NONE: break;
    }
    return "a value";
}

/* Copies a key for messages, escaping control bytes and shortening long keys
 * so the message stays readable. */
static const char *key_show(const char *key, size_t len, char *out, size_t outlen)
{
    size_t o = 0, i = 0;
    for (; i < len && o + 8 < outlen; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (i < len)
        o += (size_t)snprintf(out + o, outlen - o, "...");
    out[o] = '\0';
    return out;
}

/* ---- lexical helpers ------------------------------------------------------ */

static int peek(const struct parser *p)
{
    return p->pos < p->len ? (unsigned char)p->src[p->pos] : -1;
}

static int peek_at(const struct parser *p, size_t ahead)
{
    return p->pos + ahead < p->len ? (unsigned char)p->src[p->pos + ahead] : -1;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->src[p->pos] == ' ' || p->src[p->pos] == '\t'))
        p->pos++;
}

static bool at_newline(const struct parser *p)
{
    return peek(p) == '\n' || (peek(p) == '\r' && peek_at(p, 1) == '\n');
}

static void skip_newline(struct parser *p)
{
    p->pos += peek(p) == '\r' ? 2 : 1;
}

/* Control characters TOML forbids in comments and strings (tab is fine). */
static bool is_control(int c)
{
    return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* Skips a comment if one starts here; the newline is left in place. */
static int skip_comment(struct parser *p)
{
    if (peek(p) != '#')
        return DV_OK;
    p->pos++;
    while (p->pos < p->len && !at_newline(p)) {
        int c = peek(p);
        if (is_control(c))
            return fail_at(p, p->pos, "control character 0x%02x not allowed in comment", c);
        p->pos++;
    }
    return DV_OK;
}

/* Skips whitespace, comments and newlines (inside arrays). */
static int skip_wcn(struct parser *p)
{
    for (;;) {
        skip_ws(p);
        if (skip_comment(p) != DV_OK)
            return p->rc;
        if (!at_newline(p))
            return DV_OK;
        skip_newline(p);
    }
}

/* After a key/value or header: only whitespace, a comment, then a newline. */
static int expect_eol(struct parser *p, const char *after)
{
    skip_ws(p);
    if (skip_comment(p) != DV_OK)
        return p->rc;
    if (p->pos >= p->len)
        return DV_OK;
    if (!at_newline(p)) {
        char d[32];
        return fail_at(p, p->pos, "expected end of line after %s, found %s", after,
                       describe(p, p->pos, d, sizeof(d)));
    }
    skip_newline(p);
    return DV_OK;
}

/* Whole-input checks done once up front: UTF-8 well-formedness (no overlongs,
 * surrogates or code points above U+10FFFF) and no carriage return outside a
 * CRLF pair. The grammar then only deals with code points that exist. */
static int check_encoding(struct parser *p)
{
    const unsigned char *s = (const unsigned char *)p->src;
    size_t n = p->len;
    for (size_t i = p->bom; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c == '\r' && (i + 1 >= n || s[i + 1] != '\n'))
                return fail_at(p, i, "carriage return not followed by a line feed");
            i++;
            continue;
        }
        size_t need;
        unsigned cp, min;
        /* Leads that can only start overlong (c0, c1) or too-large (f5-f7)
         * sequences are decoded anyway so the message can say which. */
        if (c >= 0xc0 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf7) {
            need = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return fail_at(p, i, "invalid UTF-8 byte 0x%02x", c);
        }
        if (n - i <= need)
            return fail_at(p, i, "truncated UTF-8 sequence");
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return fail_at(p, i, "invalid UTF-8 sequence");
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min)
            return fail_at(p, i, "overlong UTF-8 sequence");
        if (cp >= 0xd800 && cp <= 0xdfff)
            return fail_at(p, i, "UTF-8 encoded surrogate U+%04X", cp);
        if (cp > 0x10ffff)
            return fail_at(p, i, "UTF-8 code point above U+10FFFF");
        i += need + 1;
    }
    return DV_OK;
}

/* ---- strings -------------------------------------------------------------- */

static int buf_put(struct parser *p, const char *s, size_t len)
{
    if (len == 0)
        return DV_OK;
    if (len > p->bufcap - p->buflen) {
        size_t cap = p->bufcap ? p->bufcap : 64;
        while (len > cap - p->buflen) {
            if (cap > SIZE_MAX / 2)
                return fail_nomem(p);
            cap *= 2;
        }
        char *b = realloc(p->buf, cap);
        if (!b)
            return fail_nomem(p);
        p->buf = b;
        p->bufcap = cap;
    }
    memcpy(p->buf + p->buflen, s, len);
    p->buflen += len;
    return DV_OK;
}

static int buf_put_utf8(struct parser *p, uint32_t cp)
{
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        out[0] = (char)(0xf0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_put(p, out, n);
}

/* Copies the scratch buffer out as an owned, NUL-terminated string. */
static char *buf_take(struct parser *p, size_t *plen)
{
    char *s = malloc(p->buflen + 1);
    if (!s) {
        fail_nomem(p);
        return NULL;
    }
    if (p->buflen)
        memcpy(s, p->buf, p->buflen);
    s[p->buflen] = '\0';
    *plen = p->buflen;
    return s;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes one escape; p->pos is at the backslash. */
static int parse_escape(struct parser *p)
{
    size_t start = p->pos;
    int c = peek_at(p, 1);
    char out;
    switch (c) {
    case 'b': out = '\b'; break;
    case 't': out = '\t'; break;
    case 'n': out = '\n'; break;
    case 'f': out = '\f'; break;
    case 'r': out = '\r'; break;
    case '"': out = '"'; break;
    case '\\': out = '\\'; break;
    case 'u':
    case 'U': {
        size_t digits = c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t i = 0; i < digits; i++) {
            int h = hexval(peek_at(p, 2 + i));
            if (h < 0)
                return fail_at(p, start, "escape '\\%c' needs %zu hex digits", c, digits);
            cp = (cp << 4) | (uint32_t)h;
        }
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return fail_at(p, start, "escape '\\%c' is not a Unicode scalar value (U+%04X)", c,
                           cp);
        p->pos += 2 + digits;
        return buf_put_utf8(p, cp);
    }
    default:
        if (c > 0x20 && c < 0x7f)
            return fail_at(p, start, "invalid escape '\\%c' in string", c);
        return fail_at(p, start, "invalid escape in string: '\\' must be followed by one of "
                                 "b t n f r \" \\ u U");
    }
    p->pos += 2;
    return buf_put(p, &out, 1);
}

/* Appends the run of ordinary characters starting at p->pos, stopping at stop
 * (the quote), a backslash (when escapes apply), a newline or a control
 * character; the caller decides what those mean. */
static int take_run(struct parser *p, int stop, bool escapes)
{
    size_t start = p->pos;
    while (p->pos < p->len) {
        int c = (unsigned char)p->src[p->pos];
        if (c == stop || (escapes && c == '\\') || is_control(c))
            break;
        p->pos++;
    }
    return buf_put(p, p->src + start, p->pos - start);
}

/* Single-line basic ("...") or literal ('...') string into p->buf. */
static int parse_line_string(struct parser *p)
{
    size_t start = p->pos;
    int q = peek(p);
    bool basic = q == '"';
    p->pos++;
    p->buflen = 0;
    for (;;) {
        if (take_run(p, q, basic) != DV_OK)
            return p->rc;
        int c = peek(p);
        if (c == q) {
            p->pos++;
            return DV_OK;
        }
        if (c < 0 || at_newline(p))
            return fail_at(p, start, "unterminated string (missing closing %c)", q);
        if (c == '\\') {
            if (parse_escape(p) != DV_OK)
                return p->rc;
            continue;
        }
        return fail_at(p, p->pos, "control character 0x%02x not allowed in string", c);
    }
}

/* Multi-line basic ("""...""") or literal ('''...''') string into p->buf. */
static int parse_ml_string(struct parser *p)
{
    size_t start = p->pos;
    int q = peek(p);
    bool basic = q == '"';
    p->pos += 3;
    p->buflen = 0;
    if (at_newline(p)) /* a newline right after the opening quotes is trimmed */
        skip_newline(p);
    for (;;) {
        if (take_run(p, q, basic) != DV_OK)
            return p->rc;
        int c = peek(p);
        if (c < 0)
            return fail_at(p, start, "unterminated multi-line string (missing closing %c%c%c)",
                           q, q, q);
        if (c == q) {
            size_t run = 0;
            while (peek_at(p, run) == q)
                run++;
            if (run < 3) {
                if (buf_put(p, p->src + p->pos, run) != DV_OK)
                    return p->rc;
                p->pos += run;
                continue;
            }
            /* Up to two quotes may sit right before the closing three. */
            if (run > 5)
                return fail_at(p, p->pos + 5, "too many quotes in a row in multi-line string");
            if (buf_put(p, p->src + p->pos, run - 3) != DV_OK)
                return p->rc;
            p->pos += run;
            return DV_OK;
        }
        if (at_newline(p)) {
            skip_newline(p);
            if (buf_put(p, "\n", 1) != DV_OK)
                return p->rc;
            continue;
        }
        if (c == '\\') {
            /* A backslash ending a line swallows all whitespace and newlines
             * up to the next visible character. */
            size_t save = p->pos++;
            skip_ws(p);
            if (at_newline(p)) {
                while (at_newline(p) || peek(p) == ' ' || peek(p) == '\t') {
                    if (at_newline(p))
                        skip_newline(p);
                    else
                        p->pos++;
                }
                continue;
            }
            p->pos = save;
            if (parse_escape(p) != DV_OK)
                return p->rc;
            continue;
        }
        return fail_at(p, p->pos, "control character 0x%02x not allowed in string", c);
    }
}

/* ---- keys ----------------------------------------------------------------- */

static bool is_bare_key_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* One simple key (bare or quoted) at p->pos; *pkey is owned by the caller. */
static int parse_simple_key(struct parser *p, char **pkey, size_t *plen)
{
    int c = peek(p);
    if (c == '"' || c == '\'') {
        if (peek_at(p, 1) == c && peek_at(p, 2) == c)
            return fail_at(p, p->pos, "multi-line strings cannot be keys");
        if (parse_line_string(p) != DV_OK)
            return p->rc;
    } else {
        size_t start = p->pos;
        while (p->pos < p->len && is_bare_key_char(peek(p)))
            p->pos++;
        if (p->pos == start)
            return fail_expected(p, "a key");
        p->buflen = 0;
        if (buf_put(p, p->src + start, p->pos - start) != DV_OK)
            return p->rc;
    }
    *pkey = buf_take(p, plen);
    return *pkey ? DV_OK : p->rc;
}

/* ---- values --------------------------------------------------------------- */

static int parse_value(struct parser *p, int depth, struct toml_node **pn);
static int parse_keyval(struct parser *p, struct toml_node *table);

/* Scans a run of digits of the given base with single underscores between
 * digits; *pend receives the end. Returns false on a malformed run. */
static bool scan_digits(const char *s, size_t len, size_t i, int base, size_t *pend)
{
    size_t start = i;
    while (i < len) {
        int d = hexval((unsigned char)s[i]);
        if (d >= 0 && d < base) {
            i++;
            continue;
        }
        if (s[i] == '_') {
            if (i == start || i + 1 >= len)
                return false;
            int nd = hexval((unsigned char)s[i + 1]);
            if (nd < 0 || nd >= base)
                return false;
            i++;
            continue;
        }
        break;
    }
    *pend = i;
    return i > start;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int parse_int_radix(struct parser *p, size_t off, const char *s, size_t len, int base,
                           int64_t *pv)
{
    size_t end;
    if (!scan_digits(s, len, 2, base, &end) || end != len)
        return fail_at(p, off, "invalid %s integer",
                       base == 16 ? "hexadecimal" : base == 8 ? "octal" : "binary");
    uint64_t v = 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] == '_')
            continue;
        uint64_t d = (uint64_t)hexval((unsigned char)s[i]);
        if (v > ((uint64_t)INT64_MAX - d) / (uint64_t)base)
            return fail_at(p, off, "integer out of range");
        v = v * (uint64_t)base + d;
    }
    *pv = (int64_t)v;
    return DV_OK;
}

/* Integer or float from the token s[0..len) found at off. */
static int parse_number(struct parser *p, size_t off, const char *s, size_t len,
                        struct toml_node *n)
{
    size_t i = 0;
    bool neg = false, sign = false;
    if (len && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        sign = true;
        i = 1;
    }
    if (len - i == 3 && (memcmp(s + i, "inf", 3) == 0 || memcmp(s + i, "nan", 3) == 0)) {
        n->kind = TOML_FLOAT;
        if (s[i] == 'i')
            n->u.f = neg ? -INFINITY : INFINITY;
        else
            n->u.f = neg ? -NAN : NAN;
        return DV_OK;
    }
    if (len - i >= 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'o' || s[i + 1] == 'b')) {
        if (sign)
            return fail_at(p, off, "hexadecimal, octal and binary integers cannot have a sign");
        n->kind = TOML_INT;
        int base = s[i + 1] == 'x' ? 16 : s[i + 1] == 'o' ? 8 : 2;
        return parse_int_radix(p, off, s, len, base, &n->u.i);
    }
    size_t end;
    if (i >= len || !is_digit((unsigned char)s[i]))
        return fail_at(p, off, "invalid number");
    if (!scan_digits(s, len, i, 10, &end))
        return fail_at(p, off, "invalid number: '_' must sit between digits");
    if (s[i] == '0' && end - i > 1)
        return fail_at(p, off, "leading zeros are not allowed in numbers");
    size_t int_end = end;
    bool is_float = false;
    if (end < len && s[end] == '.') {
        if (!scan_digits(s, len, end + 1, 10, &end))
            return fail_at(p, off, "invalid float: expected digits after '.'");
        is_float = true;
    }
    if (end < len && (s[end] == 'e' || s[end] == 'E')) {
        size_t j = end + 1;
        if (j < len && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j >= len || !is_digit((unsigned char)s[j]) || !scan_digits(s, len, j, 10, &end))
            return fail_at(p, off, "invalid float: expected digits in exponent");
        is_float = true;
    }
    if (end != len)
        return fail_at(p, off, "invalid number");

    if (!is_float) {
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (size_t k = i; k < int_end; k++) {
            if (s[k] == '_')
                continue;
            uint64_t d = (uint64_t)(s[k] - '0');
            if (v > (limit - d) / 10)
                return fail_at(p, off, "integer out of range");
            v = v * 10 + d;
        }
        n->kind = TOML_INT;
        /* Negate in unsigned arithmetic: -2^63 has no positive int64. */
        n->u.i = neg ? (int64_t)(0 - v) : (int64_t)v;
        return DV_OK;
    }

    /* strtod wants no underscores and reads the decimal point of the current
     * locale; the grammar is already checked, so rewriting '.' is safe. The
     * token is short enough for the stack in any real file, the heap
     * otherwise. */
    const char *dp = localeconv()->decimal_point;
    char point = dp && dp[0] && !dp[1] ? dp[0] : '.';
    char small[128];
    char *clean = len < sizeof(small) ? small : malloc(len + 1);
    if (!clean)
        return fail_nomem(p);
    size_t o = 0;
    for (size_t k = 0; k < len; k++)
        if (s[k] != '_')
            clean[o++] = s[k] == '.' ? point : s[k];
    clean[o] = '\0';
    errno = 0;
    char *stop;
    double d = strtod(clean, &stop);
    bool ok = *stop == '\0';
    if (clean != small)
        free(clean);
    if (!ok)
        return fail_at(p, off, "invalid float");
    if (errno == ERANGE && isinf(d))
        return fail_at(p, off, "float out of range");
    n->kind = TOML_FLOAT;
    n->u.f = d;
    return DV_OK;
}

static bool digits_at(const char *s, size_t len, size_t i, size_t count, int *pv)
{
    if (i + count > len)
        return false;
    int v = 0;
    for (size_t k = 0; k < count; k++) {
        if (!is_digit((unsigned char)s[i + k]))
            return false;
        v = v * 10 + (s[i + k] - '0');
    }
    *pv = v;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* partial-time at s[i..]: HH:MM:SS[.frac]; *pend receives the end. */
static int parse_time(struct parser *p, size_t off, const char *s, size_t len, size_t i,
                      struct toml_datetime *dt, size_t *pend)
{
    if (!digits_at(s, len, i, 2, &dt->hour) || i + 2 >= len || s[i + 2] != ':' ||
        !digits_at(s, len, i + 3, 2, &dt->minute) || i + 5 >= len || s[i + 5] != ':' ||
        !digits_at(s, len, i + 6, 2, &dt->second))
        return fail_at(p, off, "invalid time: expected HH:MM:SS");
    if (dt->hour > 23)
        return fail_at(p, off, "hour %d out of range (00-23)", dt->hour);
    if (dt->minute > 59)
        return fail_at(p, off, "minute %d out of range (00-59)", dt->minute);
    if (dt->second > 60)
        return fail_at(p, off, "second %d out of range (00-60)", dt->second);
    i += 8;
    if (i < len && s[i] == '.') {
        size_t k = ++i;
        int32_t ns = 0, scale = 100000000;
        while (k < len && is_digit((unsigned char)s[k])) {
            ns += (s[k] - '0') * scale;
            scale /= 10;
            k++;
        }
        if (k == i)
            return fail_at(p, off, "invalid time: expected digits after '.'");
        dt->nanosecond = ns;
        i = k;
    }
    *pend = i;
    return DV_OK;
}

/* Any of the four date/time forms; the token is s[0..len) at off. */
static int parse_datetime(struct parser *p, size_t off, const char *s, size_t len,
                          struct toml_node *n)
{
    struct toml_datetime *dt = &n->u.dt;
    memset(dt, 0, sizeof(*dt));
    n->kind = TOML_DATETIME;
    size_t i = 0;
    if (len > 2 && s[2] == ':') {
        if (parse_time(p, off, s, len, 0, dt, &i) != DV_OK)
            return p->rc;
        if (i != len)
            return fail_at(p, off, "invalid local time");
        dt->kind = TOML_DT_TIME;
        return DV_OK;
    }
    if (!digits_at(s, len, 0, 4, &dt->year) || len < 10 || s[4] != '-' ||
        !digits_at(s, len, 5, 2, &dt->month) || s[7] != '-' ||
        !digits_at(s, len, 8, 2, &dt->day))
        return fail_at(p, off, "invalid date: expected YYYY-MM-DD");
    if (dt->month < 1 || dt->month > 12)
        return fail_at(p, off, "month %d out of range (01-12)", dt->month);
    if (dt->day < 1 || dt->day > days_in_month(dt->year, dt->month))
        return fail_at(p, off, "day %d out of range for %04d-%02d", dt->day, dt->year,
                       dt->month);
    if (len == 10) {
        dt->kind = TOML_DT_DATE;
        return DV_OK;
    }
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        return fail_at(p, off, "invalid date-time: expected 'T' after the date");
    if (parse_time(p, off, s, len, 11, dt, &i) != DV_OK)
        return p->rc;
    if (i == len) {
        dt->kind = TOML_DT_LOCAL;
        return DV_OK;
    }
    dt->kind = TOML_DT_OFFSET;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len)
        return DV_OK;
    int oh, om;
    if ((s[i] != '+' && s[i] != '-') || len - i != 6 || !digits_at(s, len, i + 1, 2, &oh) ||
        s[i + 3] != ':' || !digits_at(s, len, i + 4, 2, &om))
        return fail_at(p, off, "invalid date-time offset: expected Z or +HH:MM");
    if (oh > 23 || om > 59)
        return fail_at(p, off, "date-time offset out of range");
    dt->offset_min = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
    return DV_OK;
}

static bool is_token_char(int c)
{
    return is_bare_key_char(c) || c == '+' || c == '.' || c == ':';
}

/* Numbers, dates, times, booleans, inf and nan: scan the whole token first,
 * then decide, so that "1979-05-27x" or "truex" fail as a unit. */
static int parse_scalar(struct parser *p, struct toml_node *n)
{
    size_t start = p->pos;
    while (p->pos < p->len && is_token_char(peek(p)))
        p->pos++;
    /* A date may be followed by a space and a time: "1979-05-27 07:32:00". */
    int tmp;
    if (p->pos - start == 10 && p->src[start + 4] == '-' && p->src[start + 7] == '-' &&
        digits_at(p->src, p->len, start, 4, &tmp) && peek(p) == ' ' &&
        is_digit(peek_at(p, 1)) && is_digit(peek_at(p, 2)) && peek_at(p, 3) == ':') {
        p->pos++;
        while (p->pos < p->len && is_token_char(peek(p)))
            p->pos++;
    }
    const char *s = p->src + start;
    size_t len = p->pos - start;
    if (len == 0)
        return fail_expected(p, "a value");
    if ((len == 4 && memcmp(s, "true", 4) == 0) || (len == 5 && memcmp(s, "false", 5) == 0)) {
        n->kind = TOML_BOOL;
        n->u.b = len == 4;
        return DV_OK;
    }
    bool date = len >= 5 && digits_at(s, len, 0, 4, &tmp) && s[4] == '-';
    bool time = len >= 3 && digits_at(s, len, 0, 2, &tmp) && s[2] == ':';
    if (date || time)
        return parse_datetime(p, start, s, len, n);
    if (!is_digit((unsigned char)s[0]) && s[0] != '+' && s[0] != '-' &&
        memcmp(s, "inf", len < 3 ? len : 3) != 0 && memcmp(s, "nan", len < 3 ? len : 3) != 0) {
        char show[64];
        return fail_at(p, start, "expected a value, found '%s' (strings need quotes)",
                       key_show(s, len, show, sizeof(show)));
    }
    return parse_number(p, start, s, len, n);
}

static int parse_array(struct parser *p, struct toml_node *a)
{
    size_t open = p->pos++;
    a->kind = TOML_ARRAY;
    for (;;) {
        if (skip_wcn(p) != DV_OK)
            return p->rc;
        if (peek(p) == ']') {
            p->pos++;
            return DV_OK;
        }
        if (peek(p) < 0)
            return fail_at(p, open, "unterminated array (missing ']')");
        struct toml_node *v;
        if (parse_value(p, a->depth + 1, &v) != DV_OK)
            return p->rc;
        if (container_add(p, a, v) != DV_OK) {
            node_free(v);
            return p->rc;
        }
        if (skip_wcn(p) != DV_OK)
            return p->rc;
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']') {
            p->pos++;
            return DV_OK;
        }
        if (peek(p) < 0)
            return fail_at(p, open, "unterminated array (missing ']')");
        return fail_expected(p, "',' or ']' in array");
    }
}

static int parse_inline_table(struct parser *p, struct toml_node *t)
{
    size_t open = p->pos++;
    t->kind = TOML_TABLE;
    /* Not yet TAB_INLINE: keys inside may still build sub-tables; the flag is
     * set on return, which seals the table against later additions. */
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        t->flags |= TAB_INLINE;
        return DV_OK;
    }
    for (;;) {
        skip_ws(p);
        if (peek(p) < 0 || at_newline(p))
            return fail_at(p, open, "unterminated inline table (missing '}' on the same line)");
        if (parse_keyval(p, t) != DV_OK)
            return p->rc;
        skip_ws(p);
        if (peek(p) == ',') {
            p->pos++;
            skip_ws(p);
            if (peek(p) == '}')
                return fail_at(p, p->pos, "trailing comma not allowed in inline table");
            continue;
        }
        if (peek(p) == '}') {
            p->pos++;
            t->flags |= TAB_INLINE;
            return DV_OK;
        }
        if (peek(p) < 0 || at_newline(p))
            return fail_at(p, open, "unterminated inline table (missing '}' on the same line)");
        return fail_expected(p, "',' or '}' in inline table");
    }
}

/* Parses the value at p->pos into a new node at the given tree depth. */
static int parse_value(struct parser *p, int depth, struct toml_node **pn)
{
    *pn = NULL;
    if (depth > TOML_MAX_DEPTH)
        return fail_at(p, p->pos, "values nested deeper than %d levels", TOML_MAX_DEPTH);
    struct toml_node *n = node_new(p, TOML_NONE, p->pos);
    if (!n)
        return p->rc;
    n->depth = depth;
    int c = peek(p), rc;
    if (c == '"' || c == '\'') {
        bool ml = peek_at(p, 1) == c && peek_at(p, 2) == c;
        rc = ml ? parse_ml_string(p) : parse_line_string(p);
        if (rc == DV_OK) {
            n->u.s.ptr = buf_take(p, &n->u.s.len);
            rc = n->u.s.ptr ? DV_OK : p->rc;
            n->kind = TOML_STRING;
        }
    } else if (c == '[') {
        rc = parse_array(p, n);
    } else if (c == '{') {
        rc = parse_inline_table(p, n);
    } else if (c < 0 || at_newline(p) || c == '#' || c == ',' || c == ']' || c == '}') {
        rc = fail_expected(p, "a value");
    } else {
        rc = parse_scalar(p, n);
    }
    if (rc != DV_OK) {
        node_free(n);
        return p->rc;
    }
    *pn = n;
    return DV_OK;
}

/* ---- key/values and headers ---------------------------------------------- */

/* key = value into table. Dotted keys walk or create sub-tables that may not
 * be [header] tables, inline tables or arrays (TOML 1.0 forbids extending
 * those this way). */
static int parse_keyval(struct parser *p, struct toml_node *table)
{
    struct toml_node *t = table;
    char show[96];
    for (;;) {
        size_t keyoff = p->pos;
        char *key;
        size_t keylen;
        if (parse_simple_key(p, &key, &keylen) != DV_OK)
            return p->rc;
        skip_ws(p);
        struct toml_node *child = table_find(t, key, keylen);
        if (peek(p) == '.') {
            p->pos++;
            skip_ws(p);
            if (!child) {
                if (!table_add_table(p, t, key, keylen, keyoff, TAB_DOTTED))
                    return p->rc;
                t = t->u.c.items[t->u.c.len - 1];
                continue;
            }
            key_show(key, keylen, show, sizeof(show));
            free(key);
            if (child->kind != TOML_TABLE || (child->flags & (TAB_INLINE | TAB_HEADER)))
                return fail_at(p, keyoff,
                               "cannot add keys with a dotted key to '%s': it is %s (defined at "
                               "%d:%d)",
                               show, node_what(child), child->kline, child->kcol);
            child->flags |= TAB_DOTTED;
            t = child;
            continue;
        }
        if (child) {
            key_show(key, keylen, show, sizeof(show));
            free(key);
            return fail_at(p, keyoff, "duplicate key '%s' (first defined at %d:%d)", show,
                           child->kline, child->kcol);
        }
        if (peek(p) != '=') {
            free(key);
            return fail_expected(p, "'=' after key");
        }
        p->pos++;
        skip_ws(p);
        /* Key position first: positions are cheapest asked in file order. */
        int kline, kcol;
        pos_of(p, keyoff, &kline, &kcol);
        struct toml_node *v;
        if (parse_value(p, t->depth + 1, &v) != DV_OK) {
            free(key);
            return p->rc;
        }
        v->key = key;
        v->keylen = keylen;
        v->kline = kline;
        v->kcol = kcol;
        if (container_add(p, t, v) != DV_OK) {
            node_free(v);
            return p->rc;
        }
        return DV_OK;
    }
}

/* [a.b.c] or [[a.b.c]]: finds or creates the table and makes it current. */
static int parse_header(struct parser *p)
{
    size_t open = p->pos;
    bool aot = peek_at(p, 1) == '[';
    p->pos += aot ? 2 : 1;
    skip_ws(p);
    struct toml_node *t = p->root;
    char show[96];
    for (;;) {
        size_t keyoff = p->pos;
        char *key;
        size_t keylen;
        if (parse_simple_key(p, &key, &keylen) != DV_OK)
            return p->rc;
        skip_ws(p);
        struct toml_node *child = table_find(t, key, keylen);
        if (peek(p) == '.') {
            p->pos++;
            skip_ws(p);
            if (!child) {
                if (!table_add_table(p, t, key, keylen, keyoff, TAB_IMPLICIT))
                    return p->rc;
                t = t->u.c.items[t->u.c.len - 1];
                continue;
            }
            key_show(key, keylen, show, sizeof(show));
            free(key);
            if (child->kind == TOML_ARRAY && (child->flags & ARR_TABLES)) {
                t = child->u.c.items[child->u.c.len - 1];
                continue;
            }
            if (child->kind != TOML_TABLE || (child->flags & TAB_INLINE))
                return fail_at(p, keyoff,
                               "cannot define a table inside '%s': it is %s (defined at %d:%d)",
                               show, node_what(child), child->kline, child->kcol);
            t = child;
            continue;
        }
        const char *close = aot ? "]]" : "]";
        if (peek(p) != ']' || (aot && peek_at(p, 1) != ']')) {
            free(key);
            return fail_expected(p, aot ? "']]' to close the [[table]] header"
                                        : "']' to close the [table] header");
        }
        p->pos += strlen(close);
        if (aot) {
            if (!child) {
                if (t->depth >= TOML_MAX_DEPTH) {
                    free(key);
                    return fail_at(p, keyoff, "tables nested deeper than %d levels",
                                   TOML_MAX_DEPTH);
                }
                child = node_new(p, TOML_ARRAY, open);
                if (!child) {
                    free(key);
                    return p->rc;
                }
                child->key = key;
                child->keylen = keylen;
                child->flags = ARR_TABLES;
                child->depth = t->depth + 1;
                pos_of(p, keyoff, &child->kline, &child->kcol);
                if (container_add(p, t, child) != DV_OK) {
                    node_free(child);
                    return p->rc;
                }
            } else {
                key_show(key, keylen, show, sizeof(show));
                free(key);
                if (child->kind != TOML_ARRAY || !(child->flags & ARR_TABLES))
                    return fail_at(p, keyoff,
                                   "cannot append to '%s' with [[%s]]: it is %s (defined at "
                                   "%d:%d)",
                                   show, show, node_what(child), child->kline, child->kcol);
            }
            struct toml_node *elem = table_add_table(p, child, NULL, 0, open, TAB_HEADER);
            if (!elem)
                return p->rc;
            p->cur = elem;
        } else {
            if (!child) {
                child = table_add_table(p, t, key, keylen, keyoff, TAB_HEADER);
                if (!child)
                    return p->rc;
            } else {
                key_show(key, keylen, show, sizeof(show));
                free(key);
                if (child->kind != TOML_TABLE || child->flags != TAB_IMPLICIT)
                    return fail_at(p, keyoff, "'%s' is already defined as %s at %d:%d", show,
                                   node_what(child), child->kline, child->kcol);
                child->flags = TAB_HEADER;
            }
            pos_of(p, open, &child->line, &child->col);
            pos_of(p, keyoff, &child->kline, &child->kcol);
            p->cur = child;
        }
        return expect_eol(p, aot ? "[[table]] header" : "[table] header");
    }
}

static int parse_document(struct parser *p)
{
    p->root = node_new(p, TOML_TABLE, p->pos);
    if (!p->root)
        return p->rc;
    p->root->flags = TAB_HEADER;
    p->cur = p->root;
    if (check_encoding(p) != DV_OK)
        return p->rc;
    while (p->pos < p->len) {
        skip_ws(p);
        int c = peek(p);
        if (c < 0)
            break;
        if (c == '#' || at_newline(p)) {
            if (expect_eol(p, "comment") != DV_OK)
                return p->rc;
            continue;
        }
        if (c == '[') {
            if (parse_header(p) != DV_OK)
                return p->rc;
            continue;
        }
        if (parse_keyval(p, p->cur) != DV_OK)
            return p->rc;
        if (expect_eol(p, "value") != DV_OK)
            return p->rc;
    }
    return DV_OK;
}

/* ---- public API ----------------------------------------------------------- */

int toml_doc_parse(const char *data, size_t len, const char *filename,
                   struct toml_doc **pdoc, struct toml_error *err)
{
    if (pdoc)
        *pdoc = NULL;
    if (err) {
        memset(err, 0, sizeof(*err));
        snprintf(err->file, sizeof(err->file), "%s", filename ? filename : "<input>");
    }
    if (!pdoc || (!data && len)) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "invalid arguments");
        return DV_EINVAL;
    }
    struct parser p = {
        .src = data ? data : "",
        .len = len,
        .err = err,
        .lc_line = 1,
    };
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        p.bom = p.pos = p.lc_off = p.lc_line_start = 3;
    int rc = parse_document(&p);
    free(p.buf);
    if (rc != DV_OK || p.failed) {
        node_free(p.root);
        return p.failed ? p.rc : rc;
    }
    struct toml_doc *doc = malloc(sizeof(*doc));
    if (!doc) {
        node_free(p.root);
        if (err)
            snprintf(err->msg, sizeof(err->msg), "out of memory");
        return DV_ENOMEM;
    }
    doc->root = p.root;
    *pdoc = doc;
    return DV_OK;
}

void toml_doc_free(struct toml_doc *doc)
{
    if (!doc)
        return;
    node_free(doc->root);
    free(doc);
}

const struct toml_node *toml_doc_root(const struct toml_doc *doc)
{
    return doc ? doc->root : NULL;
}

int toml_error_format(const struct toml_error *err, char *buf, size_t buflen)
{
    if (!err)
        return snprintf(buf, buflen, "error");
    return snprintf(buf, buflen, "%s:%d:%d: error: %s", err->file[0] ? err->file : "<input>",
                    err->line, err->col, err->msg);
}

enum toml_kind toml_node_kind(const struct toml_node *n)
{
    return n ? n->kind : TOML_NONE;
}

const char *toml_kind_name(enum toml_kind kind)
{
    switch (kind) {
    case TOML_TABLE: return "table";
    case TOML_ARRAY: return "array";
    case TOML_STRING: return "string";
    case TOML_INT: return "integer";
    case TOML_FLOAT: return "float";
    case TOML_BOOL: return "boolean";
    case TOML_DATETIME: return "datetime";
    case TOML_NONE: break;
    }
    return "none";
}

int toml_node_line(const struct toml_node *n)
{
    return n ? n->line : 0;
}

int toml_node_col(const struct toml_node *n)
{
    return n ? n->col : 0;
}

int toml_node_key_line(const struct toml_node *n)
{
    return n ? n->kline : 0;
}

int toml_node_key_col(const struct toml_node *n)
{
    return n ? n->kcol : 0;
}

const char *toml_node_key(const struct toml_node *n, size_t *plen)
{
    if (!n || !n->key)
        return NULL;
    if (plen)
        *plen = n->keylen;
    return n->key;
}

size_t toml_table_len(const struct toml_node *t)
{
    return t && t->kind == TOML_TABLE ? t->u.c.len : 0;
}

const struct toml_node *toml_table_getn(const struct toml_node *t, const char *key,
                                        size_t keylen)
{
    if (!t || t->kind != TOML_TABLE || !key)
        return NULL;
    return table_find(t, key, keylen);
}

const struct toml_node *toml_table_get(const struct toml_node *t, const char *key)
{
    return key ? toml_table_getn(t, key, strlen(key)) : NULL;
}

const struct toml_node *toml_table_at(const struct toml_node *t, size_t i)
{
    return t && t->kind == TOML_TABLE && i < t->u.c.len ? t->u.c.items[i] : NULL;
}

bool toml_table_is_inline(const struct toml_node *t)
{
    return t && t->kind == TOML_TABLE && (t->flags & TAB_INLINE);
}

size_t toml_array_len(const struct toml_node *a)
{
    return a && a->kind == TOML_ARRAY ? a->u.c.len : 0;
}

const struct toml_node *toml_array_at(const struct toml_node *a, size_t i)
{
    return a && a->kind == TOML_ARRAY && i < a->u.c.len ? a->u.c.items[i] : NULL;
}

bool toml_array_is_tables(const struct toml_node *a)
{
    return a && a->kind == TOML_ARRAY && (a->flags & ARR_TABLES);
}

int toml_node_string(const struct toml_node *n, const char **pstr, size_t *plen)
{
    if (!n || n->kind != TOML_STRING)
        return DV_EINVAL;
    if (pstr)
        *pstr = n->u.s.ptr;
    if (plen)
        *plen = n->u.s.len;
    return DV_OK;
}

int toml_node_int(const struct toml_node *n, int64_t *pval)
{
    if (!n || n->kind != TOML_INT)
        return DV_EINVAL;
    if (pval)
        *pval = n->u.i;
    return DV_OK;
}

int toml_node_float(const struct toml_node *n, double *pval)
{
    if (!n || n->kind != TOML_FLOAT)
        return DV_EINVAL;
    if (pval)
        *pval = n->u.f;
    return DV_OK;
}

int toml_node_bool(const struct toml_node *n, bool *pval)
{
    if (!n || n->kind != TOML_BOOL)
        return DV_EINVAL;
    if (pval)
        *pval = n->u.b;
    return DV_OK;
}

int toml_node_datetime(const struct toml_node *n, struct toml_datetime *pval)
{
    if (!n || n->kind != TOML_DATETIME)
        return DV_EINVAL;
    if (pval)
        *pval = n->u.dt;
    return DV_OK;
}

const char *toml_node_cstr(const struct toml_node *n)
{
    if (!n || n->kind != TOML_STRING || memchr(n->u.s.ptr, '\0', n->u.s.len))
        return NULL;
    return n->u.s.ptr;
}
