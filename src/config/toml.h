/* TOML 1.0 parser: a whole document in, a read-only tree out.
 *
 * Ownership: toml_doc_parse() allocates a struct toml_doc that owns every node,
 * key and string in the tree. All pointers returned by the accessors below
 * stay valid until toml_doc_free(); callers never free them.
 *
 * Positions: every node has two positions, 1-based, columns counted in BYTES
 * from the start of the line (a UTF-8 byte-order mark at the start of the file
 * is not counted):
 *   - the KEY position: where the key naming the node in its parent starts
 *     (for `a.b.c = 1` the node c is at the 'c'; for a [table] header, the
 *     header's last key segment). Array elements have no key: their key
 *     position equals their value position.
 *   - the VALUE position: where the value starts (the first byte of `1`, `"`,
 *     `[` or `{`); for a table defined by a [header] or [[header]], the '['.
 *     Tables created implicitly (by `a.b = 1` or `[a.b]` for `a`) report the
 *     key segment that first created them for both.
 * Use the key position for "unknown key" messages and the value position for
 * "bad value" messages.
 *
 * Accessors are NULL-tolerant so lookups can be chained:
 *   toml_table_get(toml_table_get(root, "server"), "port") is NULL when either
 *   is missing; toml_node_kind(NULL) is TOML_NONE.
 */
#ifndef DV_CONFIG_TOML_H
#define DV_CONFIG_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of tables/arrays accepted (headers, dotted keys, inline
 * values all count); deeper documents are rejected with an error. */
#define TOML_MAX_DEPTH 128

struct toml_doc;  /* opaque: a parsed document */
struct toml_node; /* opaque: one table, array or value, owned by its doc */

enum toml_kind {
    TOML_NONE = 0, /* only for a NULL node */
    TOML_TABLE,    /* [table], [[array]] element, inline table, root */
    TOML_ARRAY,    /* [ ... ] value or an array of tables */
    TOML_STRING,
    TOML_INT,
    TOML_FLOAT,
    TOML_BOOL,
    TOML_DATETIME,
};

enum toml_dt_kind {
    TOML_DT_OFFSET,     /* 1979-05-27T07:32:00-07:00: every field */
    TOML_DT_LOCAL,      /* 1979-05-27T07:32:00: no offset */
    TOML_DT_DATE,       /* 1979-05-27: date fields only */
    TOML_DT_TIME,       /* 07:32:00: time fields only */
};

/* Fields that a kind does not have are zero. Ranges are validated by the
 * parser (leap years included; second may be 60). Fractional seconds beyond
 * nanoseconds are truncated. */
struct toml_datetime {
    enum toml_dt_kind kind;
    int year, month, day;
    int hour, minute, second;
    int32_t nanosecond;
    int offset_min; /* minutes east of UTC, -1439..1439; "Z" is 0 */
};

/* The first error of a failed parse. file is the name given to the parser
 * (truncated to fit); line/col as for node positions (0 when unknown). */
struct toml_error {
    char file[256];
    int line, col;
    char msg[256];
};

/* Parses len bytes of data (need not be NUL-terminated; may contain anything)
 * as one TOML 1.0 document. filename is only used in error messages (NULL is
 * allowed). On success *pdoc owns the tree; on failure *pdoc is NULL and err
 * (if not NULL) describes the first problem.
 * Returns DV_OK, DV_EINVAL (the bytes are not valid TOML: see err), or
 * DV_ENOMEM. */
int toml_doc_parse(const char *data, size_t len, const char *filename,
                   struct toml_doc **pdoc, struct toml_error *err);

/* Frees the document and every node in it. NULL is a no-op. */
void toml_doc_free(struct toml_doc *doc);

/* The root table; never NULL for a parsed doc. */
const struct toml_node *toml_doc_root(const struct toml_doc *doc);

/* Writes "FILE:LINE:COL: error: MSG" (NUL-terminated, truncated to buflen).
 * Returns the length the full text needs, like snprintf. */
int toml_error_format(const struct toml_error *err, char *buf, size_t buflen);

/* Node kind and its name ("table", "array", "string", "integer", "float",
 * "boolean", "datetime"; "none" for TOML_NONE). */
enum toml_kind toml_node_kind(const struct toml_node *n);
const char *toml_kind_name(enum toml_kind kind);

/* Value position (see top of file); 0 for NULL. */
int toml_node_line(const struct toml_node *n);
int toml_node_col(const struct toml_node *n);
/* Key position (see top of file); 0 for NULL. */
int toml_node_key_line(const struct toml_node *n);
int toml_node_key_col(const struct toml_node *n);
/* The key naming n in its parent table, NUL-terminated (keys may contain NUL
 * via \u0000, so *plen is the true length; plen may be NULL). NULL for the
 * root, array elements and NULL. */
const char *toml_node_key(const struct toml_node *n, size_t *plen);

/* Tables. Entries keep document order (order of first definition).
 * toml_table_len: number of keys (0 if t is not a table).
 * toml_table_get: the entry named key (a C string), or NULL.
 * toml_table_getn: same for a key of keylen bytes (may contain NUL).
 * toml_table_at: the i-th entry (its key via toml_node_key), NULL when out of
 * range. */
size_t toml_table_len(const struct toml_node *t);
const struct toml_node *toml_table_get(const struct toml_node *t, const char *key);
const struct toml_node *toml_table_getn(const struct toml_node *t, const char *key,
                                        size_t keylen);
const struct toml_node *toml_table_at(const struct toml_node *t, size_t i);
/* True for a table written inline as { ... }. */
bool toml_table_is_inline(const struct toml_node *t);

/* Arrays: length (0 if a is not an array) and element i (NULL out of range).
 * toml_array_is_tables: true for an array built from [[header]] sections. */
size_t toml_array_len(const struct toml_node *a);
const struct toml_node *toml_array_at(const struct toml_node *a, size_t i);
bool toml_array_is_tables(const struct toml_node *a);

/* Typed accessors: each returns DV_OK and stores the value, or DV_EINVAL (and
 * leaves the output alone) when n is NULL or of another kind.
 * toml_node_string: *pstr is NUL-terminated, *plen is its length in bytes
 * (plen may be NULL; the bytes are valid UTF-8 and may contain NUL). */
int toml_node_string(const struct toml_node *n, const char **pstr, size_t *plen);
int toml_node_int(const struct toml_node *n, int64_t *pval);
int toml_node_float(const struct toml_node *n, double *pval);
int toml_node_bool(const struct toml_node *n, bool *pval);
int toml_node_datetime(const struct toml_node *n, struct toml_datetime *pval);

/* Convenience for settings that must be plain C strings: the string value, or
 * NULL when n is not a string or contains a NUL byte. */
const char *toml_node_cstr(const struct toml_node *n);

#endif
