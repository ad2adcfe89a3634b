/* rand — unpredictable numbers for message IDs, connection IDs, hash seeds
 * and jitter. Kernel randomness (getrandom) read a block at a time: glibc's
 * arc4random costs a system call per call, which the per-query path cannot
 * afford. */
#ifndef DV_CORE_RAND_H
#define DV_CORE_RAND_H

#include <stddef.h>
#include <stdint.h>

void rand_bytes(void *buf, size_t len);
uint32_t rand_u32(void);
/* Uniform in [0, n) without modulo bias; 0 when n is 0. */
uint32_t rand_uniform(uint32_t n);

#endif
