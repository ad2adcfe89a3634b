/* domainset — a rule's domain list read from a file, at blocklist scale
 * (a million names). One name per line, or hosts-file lines ("0.0.0.0 a.com
 * b.com"), '#' comments. "example.com" matches the name and everything
 * below it, "*.example.com" only what is below it. A lookup costs one hash
 * probe per label of the query name, whatever the size of the list.
 * Immutable once loaded; a reload loads a new one. */
#ifndef DV_RESOLVE_DOMAINSET_H
#define DV_RESOLVE_DOMAINSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct domainset;

struct domainset_info {
    size_t entries;   /* distinct names kept */
    size_t skipped;   /* lines that were not names (counted, not fatal) */
    int first_bad;    /* the first such line's number, 0 when none */
    size_t bytes;     /* memory held */
};

/* Reads the file at path. 0, DV_EIO (cannot read: errno says why) or
 * DV_ENOMEM. */
int domainset_load(const char *path, struct domainset **pset, struct domainset_info *info);
/* Builds a set from text in memory, as domainset_load does from a file. */
int domainset_parse(const char *text, size_t len, struct domainset **pset,
                    struct domainset_info *info);
void domainset_del(struct domainset *s);

/* name: a lower-cased wire name of len bytes (with its root label). */
bool domainset_match(const struct domainset *s, const uint8_t *name, size_t len);

#endif
