/* cname — the answer to a name a rule answers with a CNAME (answer =
 * "target."): the CNAME record, then what the target's own lookup found.
 * A stub resolver (glibc) does not chase a CNAME, so dnsveil looks the
 * target up (resolve/query.c: policy, cache, upstream) and this module
 * joins the two answers. Pure: the target's answer is parsed as untrusted
 * bytes (tests/fuzz/fuzz_cname.c). */
#ifndef DV_RESOLVE_CNAME_H
#define DV_RESOLVE_CNAME_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns.h"

/* How many CNAME rules one query may pass through before it gives up with
 * SERVFAIL (a loop among rules, or a chain too long). */
enum { CNAME_MAX_DEPTH = 8 };

/* Builds the query for the target: target (wire, lower-case) with qi's
 * type and class, RD, qi's CD, and EDNS with qi's DO bit when qi has EDNS.
 * Returns the length or DV_ESPACE. */
int cname_target_query(const struct dns_query_info *qi, const uint8_t *target,
                       size_t target_len, uint8_t *out, size_t cap);

/* Writes the reply to qi: header (qi's ID and RD, RA, the target answer's
 * rcode), qi's question, "qi's name CNAME target" with ttl, then the answer
 * and authority records of the target's answer ans (names expanded, their
 * own TTLs), and an OPT record when qi has EDNS. Returns the length,
 * DV_EMALFORMED when ans does not parse, or DV_ESPACE. */
int cname_compose(const struct dns_query_info *qi, const uint8_t *target, size_t target_len,
                  uint32_t ttl, const uint8_t *ans, size_t len, uint8_t *out, size_t cap);

#endif
