/* libFuzzer target for the TOML parser: parse arbitrary bytes, walk every
 * node through the public accessors, format any error, free. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const struct toml_node *n)
{
    size_t sum = (size_t)toml_node_line(n) + (size_t)toml_node_col(n) +
                 (size_t)toml_node_key_line(n) + (size_t)toml_node_key_col(n);
    size_t klen;
    const char *key = toml_node_key(n, &klen);
    if (key)
        sum += klen + (unsigned char)key[klen]; /* key[klen] is the NUL */
    switch (toml_node_kind(n)) {
    case TOML_TABLE:
        for (size_t i = 0; i < toml_table_len(n); i++) {
            const struct toml_node *c = toml_table_at(n, i);
            key = toml_node_key(c, &klen);
            /* Lookup by key must find the very same entry. */
            if (toml_table_getn(n, key, klen) != c)
                __builtin_trap();
            sum += walk(c);
        }
        break;
    case TOML_ARRAY:
        for (size_t i = 0; i < toml_array_len(n); i++)
            sum += walk(toml_array_at(n, i));
        break;
    case TOML_STRING: {
        const char *s;
        size_t len;
        toml_node_string(n, &s, &len);
        if (s[len] != '\0')
            __builtin_trap();
        sum += len + (toml_node_cstr(n) != NULL);
        break;
    }
    case TOML_INT: {
        int64_t v;
        toml_node_int(n, &v);
        sum += (size_t)v;
        break;
    }
    case TOML_FLOAT: {
        double d;
        toml_node_float(n, &d);
        sum += d > 0;
        break;
    }
    case TOML_BOOL: {
        bool b;
        toml_node_bool(n, &b);
        sum += b;
        break;
    }
    case TOML_DATETIME: {
        struct toml_datetime dt;
        toml_node_datetime(n, &dt);
        if (dt.month > 12 || dt.day > 31 || dt.hour > 23 || dt.minute > 59 || dt.second > 60)
            __builtin_trap();
        sum += (size_t)dt.year;
        break;
    }
    case TOML_NONE:
        __builtin_trap();
    }
    return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct toml_doc *doc;
    struct toml_error err;
    if (toml_doc_parse((const char *)data, size, "fuzz.toml", &doc, &err) == 0) {
        volatile size_t sink = walk(toml_doc_root(doc));
        (void)sink;
        toml_doc_free(doc);
    } else {
        char buf[600];
        toml_error_format(&err, buf, sizeof(buf));
        if (strlen(err.msg) == 0 || err.line < 0 || err.col < 0)
            __builtin_trap();
    }
    return 0;
}
