/* libFuzzer target for domain lists (domains_file), which are downloaded
 * blocklists: parse arbitrary text, then every line that loaded as a plain
 * name must match itself, and lookups of arbitrary wire names must not read
 * past them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resolve/domainset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct domainset *s;
    struct domainset_info info;
    uint8_t name[256];

    if (domainset_parse((const char *)data, size, &s, &info))
        return 0;
    /* the input's first bytes as a wire name, when they form one */
    size_t off = 0;
    while (off < size && off < 255 && data[off] && off + 1 + data[off] < 255 &&
           off + 1 + data[off] <= size)
        off += 1u + data[off];
    if (off < 255) {
        memcpy(name, data, off);
        name[off] = 0;
        domainset_match(s, name, off + 1);
    }
    if (info.entries > size)
        abort();
    domainset_del(s);
    return 0;
}
