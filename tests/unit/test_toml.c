/* TOML parser tests: the toml-test 1.0.0 conformance corpus (every valid file
 * must decode to the tree in the .json beside it, every invalid file must be
 * rejected), plus exact error positions/messages and the lookup API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/toml.h"
#include "core/err.h"

#define CORPUS DV_SHARED_DIR "/testdata/toml-test"

static char *read_all(const char *path, size_t *plen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    *plen = len;
    return buf;
}

/* ---- a small JSON reader, enough for toml-test's tagged form ------------- */

enum jkind { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
    enum jkind kind;
    char *str; /* J_STR (decoded, may hold NUL), J_NUM (text) */
    size_t len;
    bool b;
    struct jv **items; /* J_ARR and J_OBJ values */
    char **keys;       /* J_OBJ */
    size_t *keylens;
    size_t n;
};

struct jparser {
    const char *s;
    size_t len, pos;
    int depth;
};

static void jv_free(struct jv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        jv_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->keylens);
    free(v->str);
    free(v);
}

static void jskip(struct jparser *j)
{
    while (j->pos < j->len && strchr(" \t\r\n", j->s[j->pos]) && j->s[j->pos])
        j->pos++;
}

static int jhex4(struct jparser *j, unsigned *pcp)
{
    if (j->len - j->pos < 4)
        return -1;
    unsigned cp = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->s[j->pos++];
        cp <<= 4;
        if (c >= '0' && c <= '9')
            cp |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            cp |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            cp |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *pcp = cp;
    return 0;
}

static void put_utf8(char *out, size_t *po, unsigned cp)
{
    size_t o = *po;
    if (cp < 0x80) {
        out[o++] = (char)cp;
    } else if (cp < 0x800) {
        out[o++] = (char)(0xc0 | (cp >> 6));
        out[o++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[o++] = (char)(0xe0 | (cp >> 12));
        out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[o++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[o++] = (char)(0xf0 | (cp >> 18));
        out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[o++] = (char)(0x80 | (cp & 0x3f));
    }
    *po = o;
}

/* Decodes a JSON string at j->pos (the opening quote). */
static char *jstring(struct jparser *j, size_t *plen)
{
    j->pos++;
    /* Decoded text is never longer than the source (\uXXXX is 6 bytes in,
     * at most 4 out). */
    char *out = malloc(j->len - j->pos + 1);
    size_t o = 0;
    while (j->pos < j->len && j->s[j->pos] != '"') {
        char c = j->s[j->pos++];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        if (j->pos >= j->len)
            goto bad;
        c = j->s[j->pos++];
        unsigned cp;
        switch (c) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case '"': case '\\': case '/': out[o++] = c; break;
        case 'u':
            if (jhex4(j, &cp) < 0)
                goto bad;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (j->len - j->pos < 6 || j->s[j->pos] != '\\' || j->s[j->pos + 1] != 'u')
                    goto bad;
                j->pos += 2;
                if (jhex4(j, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    goto bad;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(out, &o, cp);
            break;
        default:
            goto bad;
        }
    }
    if (j->pos >= j->len)
        goto bad;
    j->pos++;
    out[o] = '\0';
    *plen = o;
    return out;
bad:
    free(out);
    return NULL;
}

static struct jv *jvalue(struct jparser *j);

static bool jpush(struct jv *v, struct jv *item, char *key, size_t keylen)
{
    v->items = realloc(v->items, (v->n + 1) * sizeof(*v->items));
    if (v->kind == J_OBJ) {
        v->keys = realloc(v->keys, (v->n + 1) * sizeof(*v->keys));
        v->keylens = realloc(v->keylens, (v->n + 1) * sizeof(*v->keylens));
        v->keys[v->n] = key;
        v->keylens[v->n] = keylen;
    }
    v->items[v->n++] = item;
    return true;
}

static struct jv *jcontainer(struct jparser *j, enum jkind kind)
{
    struct jv *v = calloc(1, sizeof(*v));
    v->kind = kind;
    char close = kind == J_ARR ? ']' : '}';
    j->pos++;
    jskip(j);
    if (j->pos < j->len && j->s[j->pos] == close) {
        j->pos++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        size_t keylen = 0;
        jskip(j);
        if (kind == J_OBJ) {
            if (j->pos >= j->len || j->s[j->pos] != '"' || !(key = jstring(j, &keylen)))
                goto bad;
            jskip(j);
            if (j->pos >= j->len || j->s[j->pos] != ':') {
                free(key);
                goto bad;
            }
            j->pos++;
        }
        struct jv *item = jvalue(j);
        if (!item) {
            free(key);
            goto bad;
        }
        jpush(v, item, key, keylen);
        jskip(j);
        if (j->pos < j->len && j->s[j->pos] == ',') {
            j->pos++;
            continue;
        }
        if (j->pos < j->len && j->s[j->pos] == close) {
            j->pos++;
            return v;
        }
        goto bad;
    }
bad:
    jv_free(v);
    return NULL;
}

static struct jv *jvalue(struct jparser *j)
{
    jskip(j);
    if (j->pos >= j->len || ++j->depth > 200)
        return NULL;
    struct jv *v = NULL;
    char c = j->s[j->pos];
    if (c == '{' || c == '[') {
        v = jcontainer(j, c == '{' ? J_OBJ : J_ARR);
    } else if (c == '"') {
        v = calloc(1, sizeof(*v));
        v->kind = J_STR;
        if (!(v->str = jstring(j, &v->len))) {
            free(v);
            v = NULL;
        }
    } else if (j->len - j->pos >= 4 && memcmp(j->s + j->pos, "true", 4) == 0) {
        v = calloc(1, sizeof(*v));
        v->kind = J_BOOL;
        v->b = true;
        j->pos += 4;
    } else if (j->len - j->pos >= 5 && memcmp(j->s + j->pos, "false", 5) == 0) {
        v = calloc(1, sizeof(*v));
        v->kind = J_BOOL;
        j->pos += 5;
    } else if (j->len - j->pos >= 4 && memcmp(j->s + j->pos, "null", 4) == 0) {
        v = calloc(1, sizeof(*v));
        j->pos += 4;
    } else {
        size_t start = j->pos;
        while (j->pos < j->len && strchr("+-.eE0123456789", j->s[j->pos]) && j->s[j->pos])
            j->pos++;
        if (j->pos > start) {
            v = calloc(1, sizeof(*v));
            v->kind = J_NUM;
            v->len = j->pos - start;
            v->str = strndup(j->s + start, v->len);
        }
    }
    j->depth--;
    return v;
}

static struct jv *json_parse(const char *s, size_t len)
{
    struct jparser j = {.s = s, .len = len};
    struct jv *v = jvalue(&j);
    jskip(&j);
    if (v && j.pos != len) {
        jv_free(v);
        v = NULL;
    }
    return v;
}

/* ---- comparing a TOML tree with tagged JSON ------------------------------ */

static const struct jv *jobj_get(const struct jv *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->keylens[i] == strlen(key) && memcmp(o->keys[i], key, o->keylens[i]) == 0)
            return o->items[i];
    return NULL;
}

/* A leaf is exactly {"type": "...", "value": "..."} with string members. */
static bool jleaf(const struct jv *v, const char **ptype, const struct jv **pval)
{
    if (v->kind != J_OBJ || v->n != 2)
        return false;
    const struct jv *t = jobj_get(v, "type"), *val = jobj_get(v, "value");
    if (!t || !val || t->kind != J_STR || val->kind != J_STR)
        return false;
    *ptype = t->str;
    *pval = val;
    return true;
}

/* Parses the suite's datetime text; accepts 't'/' ' separators and 'z'. */
static bool expect_dt(const char *s, struct toml_datetime *dt)
{
    memset(dt, 0, sizeof(*dt));
    int n = 0;
    const char *t = s;
    if (strlen(s) >= 10 && s[4] == '-') {
        if (sscanf(s, "%4d-%2d-%2d%n", &dt->year, &dt->month, &dt->day, &n) != 3 || n != 10)
            return false;
        if (s[10] == '\0') {
            dt->kind = TOML_DT_DATE;
            return true;
        }
        if (!strchr("Tt ", s[10]))
            return false;
        t = s + 11;
        dt->kind = TOML_DT_LOCAL;
    } else {
        dt->kind = TOML_DT_TIME;
    }
    if (sscanf(t, "%2d:%2d:%2d%n", &dt->hour, &dt->minute, &dt->second, &n) != 3 || n != 8)
        return false;
    t += 8;
    if (*t == '.') {
        int32_t scale = 100000000;
        for (t++; *t >= '0' && *t <= '9'; t++) {
            dt->nanosecond += (*t - '0') * scale;
            scale /= 10;
        }
    }
    if (*t == '\0')
        return true;
    if (dt->kind != TOML_DT_LOCAL)
        return false;
    dt->kind = TOML_DT_OFFSET;
    if ((*t == 'Z' || *t == 'z') && t[1] == '\0')
        return true;
    int oh, om;
    if ((*t != '+' && *t != '-') || sscanf(t + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || t[1 + n])
        return false;
    dt->offset_min = (*t == '-' ? -1 : 1) * (oh * 60 + om);
    return true;
}

static bool leaf_equal(const struct toml_node *n, const char *type, const struct jv *val,
                       char *why, size_t whylen)
{
    const char *vs = val->str;
    if (strcmp(type, "string") == 0) {
        const char *s;
        size_t len;
        if (toml_node_string(n, &s, &len) != DV_OK) {
            snprintf(why, whylen, "expected a string, got %s", toml_kind_name(toml_node_kind(n)));
            return false;
        }
        if (len != val->len || memcmp(s, vs, len) != 0) {
            snprintf(why, whylen, "string \"%s\" != expected \"%s\"", s, vs);
            return false;
        }
        return true;
    }
    if (strcmp(type, "integer") == 0) {
        int64_t i;
        char *end;
        long long want = strtoll(vs, &end, 10);
        if (toml_node_int(n, &i) != DV_OK || *end || i != want) {
            snprintf(why, whylen, "integer mismatch (expected %s)", vs);
            return false;
        }
        return true;
    }
    if (strcmp(type, "float") == 0) {
        double d;
        if (toml_node_float(n, &d) != DV_OK) {
            snprintf(why, whylen, "expected a float, got %s", toml_kind_name(toml_node_kind(n)));
            return false;
        }
        const char *w = vs;
        bool ok;
        if (strcmp(w + (*w == '+' || *w == '-'), "nan") == 0) {
            ok = isnan(d);
        } else {
            char *end;
            double want = strtod(w, &end);
            ok = !*end && !isnan(d) && d == want && signbit(d) == signbit(want);
        }
        if (!ok)
            snprintf(why, whylen, "float %.17g != expected %s", d, vs);
        return ok;
    }
    if (strcmp(type, "bool") == 0) {
        bool b;
        if (toml_node_bool(n, &b) != DV_OK || (strcmp(vs, "true") == 0) != b ||
            (!b && strcmp(vs, "false") != 0)) {
            snprintf(why, whylen, "bool mismatch (expected %s)", vs);
            return false;
        }
        return true;
    }
    static const struct {
        const char *name;
        enum toml_dt_kind kind;
    } dts[] = {{"datetime", TOML_DT_OFFSET},
               {"datetime-local", TOML_DT_LOCAL},
               {"date-local", TOML_DT_DATE},
               {"time-local", TOML_DT_TIME}};
    for (size_t i = 0; i < sizeof(dts) / sizeof(dts[0]); i++) {
        if (strcmp(type, dts[i].name) != 0)
            continue;
        struct toml_datetime got, want;
        if (toml_node_datetime(n, &got) != DV_OK || !expect_dt(vs, &want) ||
            want.kind != dts[i].kind || got.kind != want.kind || got.year != want.year ||
            got.month != want.month || got.day != want.day || got.hour != want.hour ||
            got.minute != want.minute || got.second != want.second ||
            got.nanosecond != want.nanosecond || got.offset_min != want.offset_min) {
            snprintf(why, whylen, "%s mismatch (expected %s)", type, vs);
            return false;
        }
        return true;
    }
    snprintf(why, whylen, "unknown type '%s' in expected JSON", type);
    return false;
}

/* Compares recursively; on mismatch writes where and why. */
static bool tree_equal(const struct toml_node *n, const struct jv *v, char *path, size_t pathlen,
                       char *why, size_t whylen)
{
    const char *type;
    const struct jv *val;
    if (jleaf(v, &type, &val))
        return leaf_equal(n, type, val, why, whylen);
    size_t plen = strlen(path);
    if (v->kind == J_ARR) {
        if (toml_node_kind(n) != TOML_ARRAY || toml_array_len(n) != v->n) {
            snprintf(why, whylen, "expected an array of %zu, got %s of %zu", v->n,
                     toml_kind_name(toml_node_kind(n)), toml_array_len(n));
            return false;
        }
        for (size_t i = 0; i < v->n; i++) {
            snprintf(path + plen, pathlen - plen, "[%zu]", i);
            if (!tree_equal(toml_array_at(n, i), v->items[i], path, pathlen, why, whylen))
                return false;
        }
        path[plen] = '\0';
        return true;
    }
    if (v->kind == J_OBJ) {
        if (toml_node_kind(n) != TOML_TABLE || toml_table_len(n) != v->n) {
            snprintf(why, whylen, "expected a table of %zu keys, got %s with %zu", v->n,
                     toml_kind_name(toml_node_kind(n)), toml_table_len(n));
            return false;
        }
        for (size_t i = 0; i < v->n; i++) {
            snprintf(path + plen, pathlen - plen, ".%s", v->keys[i]);
            const struct toml_node *c = toml_table_getn(n, v->keys[i], v->keylens[i]);
            if (!c) {
                snprintf(why, whylen, "key missing");
                return false;
            }
            if (!tree_equal(c, v->items[i], path, pathlen, why, whylen))
                return false;
        }
        path[plen] = '\0';
        return true;
    }
    snprintf(why, whylen, "unexpected bare JSON value");
    return false;
}

/* ---- the corpus ----------------------------------------------------------- */

static bool run_valid(const char *name, char *msg, size_t msglen)
{
    char path[1024];
    size_t tlen, jlen;
    snprintf(path, sizeof(path), "%s/%s", CORPUS, name);
    char *toml = read_all(path, &tlen);
    size_t n = strlen(path);
    memcpy(path + n - 5, ".json", 6);
    char *json = read_all(path, &jlen);
    bool ok = false;
    struct jv *want = json ? json_parse(json, jlen) : NULL;
    if (!toml || !want) {
        snprintf(msg, msglen, "cannot read test files");
        goto out;
    }
    struct toml_doc *doc;
    struct toml_error err;
    if (toml_doc_parse(toml, tlen, name, &doc, &err) != DV_OK) {
        toml_error_format(&err, msg, msglen);
        goto out;
    }
    char where[512] = "", why[256] = "";
    ok = tree_equal(toml_doc_root(doc), want, where, sizeof(where), why, sizeof(why));
    if (!ok)
        snprintf(msg, msglen, "at '%s': %s", where, why);
    toml_doc_free(doc);
out:
    jv_free(want);
    free(json);
    free(toml);
    return ok;
}

static bool run_invalid(const char *name, char *msg, size_t msglen)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", CORPUS, name);
    char *toml = read_all(path, &len);
    if (!toml) {
        snprintf(msg, msglen, "cannot read test file");
        return false;
    }
    struct toml_doc *doc = NULL;
    struct toml_error err;
    int rc = toml_doc_parse(toml, len, name, &doc, &err);
    free(toml);
    if (rc == DV_OK) {
        toml_doc_free(doc);
        snprintf(msg, msglen, "accepted, but must be rejected");
        return false;
    }
    /* A rejection must say where and why. */
    if (rc != DV_EINVAL || err.line < 1 || err.col < 1 || !err.msg[0]) {
        snprintf(msg, msglen, "rejected without a proper error (rc %d, %d:%d '%s')", rc,
                 err.line, err.col, err.msg);
        return false;
    }
    if (getenv("TOML_TEST_VERBOSE"))
        printf("  %s:%d:%d: %s\n", name, err.line, err.col, err.msg);
    return true;
}

static void test_conformance(void **state)
{
    (void)state;
    size_t listlen;
    char *list = read_all(CORPUS "/files-toml-1.0.0", &listlen);
    if (!list)
        fail_msg("cannot read %s/files-toml-1.0.0: the shared test data is missing "
                 "(expected ../shared beside the repository)", CORPUS);
    list = realloc(list, listlen + 1);
    list[listlen] = '\0';
    int vpass = 0, vtotal = 0, ipass = 0, itotal = 0;
    char msg[600];
    for (char *save, *line = strtok_r(list, "\r\n", &save); line;
         line = strtok_r(NULL, "\r\n", &save)) {
        size_t n = strlen(line);
        if (n < 5 || strcmp(line + n - 5, ".toml") != 0)
            continue;
        msg[0] = '\0';
        if (strncmp(line, "valid/", 6) == 0) {
            vtotal++;
            if (run_valid(line, msg, sizeof(msg)))
                vpass++;
            else
                printf("FAIL %s: %s\n", line, msg);
        } else if (strncmp(line, "invalid/", 8) == 0) {
            itotal++;
            if (run_invalid(line, msg, sizeof(msg)))
                ipass++;
            else
                printf("FAIL %s: %s\n", line, msg);
        }
    }
    free(list);
    printf("toml-test: valid %d/%d, invalid %d/%d\n", vpass, vtotal, ipass, itotal);
    assert_true(vtotal > 0 && itotal > 0);
    assert_int_equal(vpass, vtotal);
    assert_int_equal(ipass, itotal);
}

/* ---- error positions and messages ---------------------------------------- */

static void expect_error(const char *src, int line, int col, const char *msg)
{
    struct toml_doc *doc = NULL;
    struct toml_error err;
    int rc = toml_doc_parse(src, strlen(src), "t.toml", &doc, &err);
    if (rc == DV_OK)
        toml_doc_free(doc);
    assert_int_equal(rc, DV_EINVAL);
    assert_null(doc);
    if (err.line != line || err.col != col || strcmp(err.msg, msg) != 0)
        fail_msg("%s -> %d:%d '%s', want %d:%d '%s'", src, err.line, err.col, err.msg, line, col,
                 msg);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("a = 1\nb 2\n", 2, 3, "expected '=' after key, found '2'");
    expect_error("x = 1\n\n  x = 2\n", 3, 3, "duplicate key 'x' (first defined at 1:1)");
    expect_error("s = \"ab\\qc\"\n", 1, 8, "invalid escape '\\q' in string");
    expect_error("n = 9223372036854775808\n", 1, 5, "integer out of range");
    expect_error("n = -9223372036854775809\n", 1, 5, "integer out of range");
    expect_error("n = 0x8000000000000000\n", 1, 5, "integer out of range");
    expect_error("[a]\nb = 1\n[a]\n", 3, 2, "'a' is already defined as a [table] at 1:2");
    expect_error("d = 2023-02-29\n", 1, 5, "day 29 out of range for 2023-02");
    expect_error("t = 24:00:00\n", 1, 5, "hour 24 out of range (00-23)");
    expect_error("s = \"\\uD800\"\n", 1, 6,
                 "escape '\\u' is not a Unicode scalar value (U+D800)");
    expect_error("s = \"abc\n", 1, 5, "unterminated string (missing closing \")");
    expect_error("a = [1, 2\n", 1, 5, "unterminated array (missing ']')");
    expect_error("a = {x = 1\n", 1, 5, "unterminated inline table (missing '}' on the same line)");
    expect_error("a = {x = 1}\na.y = 2\n", 2, 1,
                 "cannot add keys with a dotted key to 'a': it is an inline table (defined at 1:1)");
    expect_error("a = []\n[[a]]\n", 2, 3,
                 "cannot append to 'a' with [[a]]: it is a static array (defined at 1:1)");
    expect_error("a = 1 b = 2\n", 1, 7, "expected end of line after value, found 'b'");
    expect_error("a = 00\n", 1, 5, "leading zeros are not allowed in numbers");
    expect_error("a = hello\n", 1, 5, "expected a value, found 'hello' (strings need quotes)");
    expect_error("# c\xc0\xaf\n", 1, 4, "overlong UTF-8 sequence");
    expect_error("a = 1\r\nb = \"x\ry\"\r\n", 2, 7, "carriage return not followed by a line feed");
    expect_error("a = \"\x01\"\n", 1, 6, "control character 0x01 not allowed in string");
    /* Lines keep counting through multi-line values and CRLF endings. */
    expect_error("a = \"\"\"\nx\ny\"\"\" z\n", 3, 6,
                 "expected end of line after value, found 'z'");
    expect_error("a = [\n  1,\n  2\n  3]\n", 4, 3, "expected ',' or ']' in array, found '3'");
    expect_error("a = 1\r\n[b]\r\nc = \r\n", 3, 5, "expected a value, found end of line");
    expect_error("[a.b]\n[a]\nb.c = 1\n", 3, 1,
                 "cannot add keys with a dotted key to 'b': it is a [table] (defined at 1:4)");
    expect_error("x.y = 1\n[x.y]\n", 2, 4,
                 "'y' is already defined as an integer at 1:3");
    expect_error("[t]\na.b = 1\n[t.a]\n", 3, 4,
                 "'a' is already defined as a dotted-key table at 2:1");
    expect_error("x = 1.5e400\n", 1, 5, "float out of range");
    expect_error("x = +0x10\n", 1, 5, "hexadecimal, octal and binary integers cannot have a sign");
    expect_error("x = 1__0\n", 1, 5, "invalid number: '_' must sit between digits");
    expect_error("x = 12:60:00\n", 1, 5, "minute 60 out of range (00-59)");
    expect_error("x = 2000-01-01T00:00:00+24:00\n", 1, 5, "date-time offset out of range");
    expect_error("\"a\nb\" = 1\n", 1, 1, "unterminated string (missing closing \")");
    expect_error("s = \"\"\"a\\ b\"\"\"\n", 1, 9,
                 "invalid escape in string: '\\' must be followed by one of b t n f r \" \\ u U");
    /* Columns are bytes, not counting a leading byte-order mark. */
    expect_error("\xef\xbb\xbf\xc3\xa9 = 1\n", 1, 1, "expected a key, found byte 0xc3");
    expect_error("k = \"\xc3\xa9\" x\n", 1, 10, "expected end of line after value, found 'x'");
}

static void test_error_format(void **state)
{
    (void)state;
    struct toml_doc *doc;
    struct toml_error err;
    assert_int_equal(toml_doc_parse("a = \n", 5, "conf/dnsveil.toml", &doc, &err), DV_EINVAL);
    char buf[512];
    toml_error_format(&err, buf, sizeof(buf));
    assert_string_equal(buf, "conf/dnsveil.toml:1:5: error: expected a value, found end of line");
    char small[8];
    int n = toml_error_format(&err, small, sizeof(small));
    assert_int_equal(n, (int)strlen(buf));
    assert_string_equal(small, "conf/dn");
}

/* Nesting past TOML_MAX_DEPTH fails cleanly instead of exhausting the stack. */
static void test_depth_limit(void **state)
{
    (void)state;
    size_t n = 100000;
    char *src = malloc(n * 2 + 8);
    memcpy(src, "a = ", 4);
    memset(src + 4, '[', n);
    memset(src + 4 + n, ']', n);
    struct toml_doc *doc;
    struct toml_error err;
    assert_int_equal(toml_doc_parse(src, 4 + 2 * n, "deep", &doc, &err), DV_EINVAL);
    assert_string_equal(err.msg, "values nested deeper than 128 levels");

    /* Exactly at the limit is fine: root -> a -> 127 arrays. */
    memset(src + 4, '[', 127);
    memset(src + 4 + 127, ']', 127);
    assert_int_equal(toml_doc_parse(src, 4 + 2 * 127, "deep", &doc, &err), DV_OK);
    toml_doc_free(doc);

    /* Headers and dotted keys count too. */
    size_t len = 0;
    src[len++] = '[';
    for (int i = 0; i < 200; i++) {
        src[len++] = 'k';
        src[len++] = '.';
    }
    src[len++] = 'k';
    src[len++] = ']';
    assert_int_equal(toml_doc_parse(src, len, "deep", &doc, &err), DV_EINVAL);
    assert_string_equal(err.msg, "tables nested deeper than 128 levels");
    src[0] = ' ';
    memcpy(src + len - 1, "=1", 2);
    assert_int_equal(toml_doc_parse(src, len + 1, "deep", &doc, &err), DV_EINVAL);
    assert_string_equal(err.msg, "tables nested deeper than 128 levels");
    free(src);
}

/* Floats must not depend on the process locale's decimal point. */
static void test_float_locale(void **state)
{
    (void)state;
    if (!setlocale(LC_NUMERIC, "de_DE.UTF-8") && !setlocale(LC_NUMERIC, "fr_FR.UTF-8"))
        skip();
    struct toml_doc *doc;
    struct toml_error err;
    assert_int_equal(toml_doc_parse("f = 1_000.25e1\n", 15, "loc", &doc, &err), DV_OK);
    double d = 0;
    assert_int_equal(toml_node_float(toml_table_get(toml_doc_root(doc), "f"), &d), DV_OK);
    setlocale(LC_NUMERIC, "C");
    assert_true(d == 10002.5);
    toml_doc_free(doc);
}

static void test_api(void **state)
{
    (void)state;
    static const char src[] =
        "title = \"dns\\u0000veil\"\n"          /* 1 */
        "[server]\n"                            /* 2 */
        "  port = 53\n"                         /* 3 */
        "  listen.udp = [\"127.0.0.1\", 'x']\n" /* 4 */
        "[[upstream]]\n"                        /* 5 */
        "url = 'tls://9.9.9.9'\n"               /* 6 */
        "[[upstream]]\n"                        /* 7 */
        "weight = 2.5\n"                        /* 8 */
        "when = 1979-05-27T07:32:00.5-07:30\n"; /* 9 */
    struct toml_doc *doc;
    struct toml_error err;
    assert_int_equal(toml_doc_parse(src, sizeof(src) - 1, "api", &doc, &err), DV_OK);
    const struct toml_node *root = toml_doc_root(doc);
    assert_int_equal(toml_node_kind(root), TOML_TABLE);
    assert_int_equal(toml_table_len(root), 3);

    /* Document order and keys. */
    const char *names[] = {"title", "server", "upstream"};
    for (size_t i = 0; i < 3; i++) {
        size_t klen;
        const char *k = toml_node_key(toml_table_at(root, i), &klen);
        assert_non_null(k);
        assert_int_equal(klen, strlen(names[i]));
        assert_memory_equal(k, names[i], klen);
    }
    assert_null(toml_table_at(root, 3));

    const struct toml_node *title = toml_table_get(root, "title");
    const char *s;
    size_t len;
    assert_int_equal(toml_node_string(title, &s, &len), DV_OK);
    assert_int_equal(len, 8);
    assert_memory_equal(s, "dns\0veil", 8);
    assert_null(toml_node_cstr(title));

    const struct toml_node *server = toml_table_get(root, "server");
    assert_int_equal(toml_node_line(server), 2);
    assert_int_equal(toml_node_col(server), 1);
    assert_int_equal(toml_node_key_col(server), 2);
    const struct toml_node *port = toml_table_get(server, "port");
    int64_t i64;
    assert_int_equal(toml_node_int(port, &i64), DV_OK);
    assert_int_equal(i64, 53);
    assert_int_equal(toml_node_key_line(port), 3);
    assert_int_equal(toml_node_key_col(port), 3);
    assert_int_equal(toml_node_line(port), 3);
    assert_int_equal(toml_node_col(port), 10);
    double d;
    assert_int_equal(toml_node_float(port, &d), DV_EINVAL);

    const struct toml_node *listen = toml_table_get(server, "listen");
    assert_int_equal(toml_node_kind(listen), TOML_TABLE);
    assert_int_equal(toml_node_key_col(listen), 3);
    assert_false(toml_table_is_inline(listen));
    const struct toml_node *udp = toml_table_get(listen, "udp");
    assert_int_equal(toml_node_key_col(udp), 10);
    assert_int_equal(toml_node_col(udp), 16);
    assert_int_equal(toml_array_len(udp), 2);
    assert_false(toml_array_is_tables(udp));
    assert_string_equal(toml_node_cstr(toml_array_at(udp, 1)), "x");
    assert_int_equal(toml_node_col(toml_array_at(udp, 1)), 30);
    assert_null(toml_array_at(udp, 2));

    const struct toml_node *ups = toml_table_get(root, "upstream");
    assert_true(toml_array_is_tables(ups));
    assert_int_equal(toml_array_len(ups), 2);
    assert_int_equal(toml_node_line(toml_array_at(ups, 1)), 7);
    const struct toml_node *u1 = toml_array_at(ups, 1);
    assert_int_equal(toml_node_float(toml_table_get(u1, "weight"), &d), DV_OK);
    assert_true(d == 2.5);
    struct toml_datetime dt;
    assert_int_equal(toml_node_datetime(toml_table_get(u1, "when"), &dt), DV_OK);
    assert_int_equal(dt.kind, TOML_DT_OFFSET);
    assert_int_equal(dt.year, 1979);
    assert_int_equal(dt.second, 0);
    assert_int_equal(dt.nanosecond, 500000000);
    assert_int_equal(dt.offset_min, -450);

    /* NULL-tolerant chaining. */
    assert_null(toml_table_get(toml_table_get(root, "nope"), "port"));
    assert_int_equal(toml_node_kind(NULL), TOML_NONE);
    assert_int_equal(toml_table_len(port), 0);
    assert_string_equal(toml_kind_name(toml_node_kind(port)), "integer");
    toml_doc_free(doc);
    toml_doc_free(NULL);
}

/* Many keys in one table go through the hash index; lookups must agree. */
static void test_many_keys(void **state)
{
    (void)state;
    size_t cap = 1 << 20, len = 0;
    char *src = malloc(cap);
    for (int i = 0; i < 5000; i++)
        len += (size_t)snprintf(src + len, cap - len, "k%d = %d\n", i, i);
    struct toml_doc *doc;
    struct toml_error err;
    assert_int_equal(toml_doc_parse(src, len, "many", &doc, &err), DV_OK);
    const struct toml_node *root = toml_doc_root(doc);
    assert_int_equal(toml_table_len(root), 5000);
    for (int i = 0; i < 5000; i += 7) {
        char key[16];
        int64_t v;
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(toml_node_int(toml_table_get(root, key), &v), DV_OK);
        assert_int_equal(v, i);
        assert_int_equal(toml_node_line(toml_table_get(root, key)), i + 1);
    }
    assert_null(toml_table_get(root, "k5000"));
    toml_doc_free(doc);
    len += (size_t)snprintf(src + len, cap - len, "k4321 = 0\n");
    assert_int_equal(toml_doc_parse(src, len, "many", &doc, &err), DV_EINVAL);
    assert_string_equal(err.msg, "duplicate key 'k4321' (first defined at 4322:1)");
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_format), cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_api),          cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_float_locale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
