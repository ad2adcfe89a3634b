/* hosts — answers from a hosts-format file ("ADDRESS NAME [ALIAS...]",
 * '#' comments): A and AAAA for the names, PTR for the addresses (the first
 * name listed for an address is its PTR target). Names are exact: a hosts
 * file lists hosts, not zones. Immutable once loaded; a reload loads a new
 * one. */
#ifndef DV_RESOLVE_HOSTS_H
#define DV_RESOLVE_HOSTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/dns.h"

struct hosts;

struct hosts_info {
    size_t names;     /* distinct names with addresses */
    size_t skipped;   /* lines that were not ADDRESS NAME... */
    int first_bad;    /* the first such line's number, 0 when none */
};

/* The whitespace-separated fields of one hosts-format line [p, end), up to
 * the end or a '#' comment: at most max, pointers into the line. Also what
 * domain lists (domainset.c) read, since they take hosts-file lines. */
size_t hosts_line_fields(const char *p, const char *end, const char **tok, size_t *len,
                         size_t max);

/* 0, DV_EIO (errno says why) or DV_ENOMEM. */
int hosts_load(const char *path, struct hosts **ph, struct hosts_info *info);
int hosts_parse(const char *text, size_t len, struct hosts **ph, struct hosts_info *info);
void hosts_del(struct hosts *h);

/* True when the file knows the lower-cased wire name: as a name, or as the
 * reverse name (in-addr.arpa / ip6.arpa) of one of its addresses. */
bool hosts_knows(const struct hosts *h, const uint8_t *name, size_t len);

/* The reply to a parsed query whose name hosts_knows: the addresses of its
 * type, the PTR name, or NODATA for any other type. ttl for every record.
 * Returns the length or DV_ESPACE. */
int hosts_answer(const struct hosts *h, const struct dns_query_info *qi, uint32_t ttl,
                 uint8_t *out, size_t cap);

#endif
