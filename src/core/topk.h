/* topk — the most frequent strings of an unbounded stream in fixed memory
 * (the Space-Saving algorithm): k slots; a new string takes over the least
 * counted slot and inherits its count as its possible overestimate. Any
 * string seen more than n/k times of n is sure to be in the table. */
#ifndef DV_CORE_TOPK_H
#define DV_CORE_TOPK_H

#include <stddef.h>
#include <stdint.h>

enum { TOPK_KEY_MAX = 256 }; /* longer keys are cut (a DNS name fits) */

struct topk;

struct topk_item {
    const char *key; /* valid until the next topk_add */
    uint64_t count;  /* an upper bound: at most error too high */
    uint64_t error;
};

/* k slots (at most 65535), each TOPK_KEY_MAX bytes. NULL on allocation
 * failure. */
struct topk *topk_new(size_t k);
void topk_del(struct topk *t);
void topk_add(struct topk *t, const char *key, size_t len);
/* Fills out[0..n) with up to n items, the highest count first. Returns how
 * many. */
size_t topk_list(const struct topk *t, struct topk_item *out, size_t n);
/* Bytes the table holds, for the memory cap. */
size_t topk_memory(const struct topk *t);

#endif
