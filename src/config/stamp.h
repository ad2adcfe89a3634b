/* stamp — decodes DNS stamps (sdns://...), the format public resolver lists
 * publish, into the URL and settings of an upstream. */
#ifndef DV_CONFIG_STAMP_H
#define DV_CONFIG_STAMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum stamp_proto {
    STAMP_PLAIN = 0x00,
    STAMP_DNSCRYPT = 0x01,
    STAMP_DOH = 0x02,
    STAMP_DOT = 0x03,
    STAMP_DOQ = 0x04,
    STAMP_ODOH_TARGET = 0x05,
    STAMP_DNSCRYPT_RELAY = 0x81,
    STAMP_ODOH_RELAY = 0x85,
};

enum { STAMP_MAX_HASHES = 8, STAMP_MAX_BOOTSTRAP = 8 };

struct stamp {
    enum stamp_proto proto;
    uint64_t props;      /* bit 0 DNSSEC, bit 1 no logs, bit 2 no filter */
    char addr[64];       /* IP[:PORT] to connect to; "" = resolve hostname */
    char host[256];      /* hostname[:port] for TLS/HTTP */
    char path[256];      /* DoH/ODoH path */
    uint8_t hashes[STAMP_MAX_HASHES][32]; /* SHA-256 of a chain certificate's TBS */
    size_t n_hashes;
    char bootstrap[STAMP_MAX_BOOTSTRAP][64];
    size_t n_bootstrap;
};

/* Decodes s ("sdns://" + base64url). 0, or DV_EINVAL with a reason in err. */
int stamp_decode(const char *s, struct stamp *out, char *err, size_t errlen);

/* The upstream URL the stamp stands for (tls://, https://, quic://, udp://,
 * odoh://). 0, or DV_EINVAL (a protocol dnsveil does not speak, e.g. DNSCrypt)
 * or DV_ESPACE. */
int stamp_to_url(const struct stamp *st, char *url, size_t cap, char *err, size_t errlen);

#endif
