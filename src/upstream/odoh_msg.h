/* odoh_msg — the Oblivious DoH wire format (RFC 9230), pure: the target's
 * ObliviousDoHConfigs, the sealed query and the sealed answer. No I/O; the
 * transport (odoh.c) moves the bytes.
 *
 * Only version 0x0001 with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
 * AES-128-GCM is spoken (hpke.h); a configs list offering nothing else is
 * refused as unsupported, not as malformed. */
#ifndef DV_UPSTREAM_ODOH_MSG_H
#define DV_UPSTREAM_ODOH_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "upstream/hpke.h"

enum {
    ODOH_VERSION = 0x0001,
    ODOH_MSG_QUERY = 0x01,
    ODOH_MSG_RESPONSE = 0x02,
    ODOH_KEY_ID_LEN = HPKE_NH,
    ODOH_NONCE_LEN = HPKE_NK > HPKE_NN ? HPKE_NK : HPKE_NN, /* max(Nn, Nk), 6.2 */
    ODOH_PAD_BLOCK = 128, /* plaintext padded to a multiple of this by default */
};

/* The one target key a client uses. */
struct odoh_config {
    uint8_t pk[HPKE_NPK];
    uint8_t key_id[ODOH_KEY_ID_LEN];
};

/* Picks the first config of version 0x0001 with the supported suite from
 * ObliviousDoHConfigs in[0..len), and derives its key_id. 0, DV_EMALFORMED
 * (not a well-formed configs list: lengths disagree, empty, trailing bytes)
 * or DV_ENOTIMP (well formed, but nothing in it we can use). */
int odoh_configs_parse(const uint8_t *in, size_t len, struct odoh_config *cfg);

/* key_id (RFC 9230 6.1) of the serialized ObliviousDoHConfigContents
 * contents[0..len). 0 or DV_EINVAL. */
int odoh_key_id(const uint8_t *contents, size_t len, uint8_t key_id[ODOH_KEY_ID_LEN]);

/* An ObliviousDoHMessage split into its fields; pointers into the input. */
struct odoh_msg {
    uint8_t type;
    const uint8_t *key_id; /* for a response: the response nonce */
    size_t key_id_len;
    const uint8_t *ct;     /* encrypted_message */
    size_t ct_len;
};

/* 0 or DV_EMALFORMED (lengths disagree, empty encrypted_message, trailing
 * bytes, unknown type). */
int odoh_msg_parse(const uint8_t *in, size_t len, struct odoh_msg *m);

/* The DNS message inside an ObliviousDoHMessagePlaintext in[0..len):
 * *pdns points into in. 0 or DV_EMALFORMED (empty message, padding that is
 * not all zeros, lengths that disagree). */
int odoh_plain_parse(const uint8_t *in, size_t len, const uint8_t **pdns, size_t *pdnslen);

/* What a client keeps of one query to open its answer. Embedded; free with
 * odoh_query_free (it wipes the secret). */
struct odoh_query {
    uint8_t secret[HPKE_NK]; /* Export("odoh response", Nk) of the query's context */
    uint8_t *plain;          /* Q_plain, the padded plaintext, owned */
    size_t plain_len;
};

void odoh_query_free(struct odoh_query *q);

/* Seals dns[0..len) to cfg's key (RFC 9230 6.3): the plaintext padded with
 * zeros so its length is a multiple of pad_block (0 or 1: no padding), HPKE
 * base mode with info "odoh query", the AAD of 6.3. skE is the ephemeral key,
 * NULL for a random one. On success *pout (malloc'd, the caller's) holds the
 * ObliviousDoHMessage and q what opening the answer needs. 0, DV_EINVAL (dns
 * empty or too long, cfg's key unusable) or DV_ENOMEM. */
int odoh_query_seal(const struct odoh_config *cfg, const uint8_t *dns, size_t len,
                    size_t pad_block, const uint8_t *skE, struct odoh_query *q, uint8_t **pout,
                    size_t *poutlen);

/* Opens the answer msg[0..len) to q (RFC 9230 6.4, keys of 6.2). *pdns
 * (malloc'd, the caller's) holds the DNS message. 0, DV_EMALFORMED (not a
 * response message, or its plaintext is malformed), DV_EPROTO (fails
 * authentication: the wrong key or altered bytes) or DV_ENOMEM. */
int odoh_response_open(const struct odoh_query *q, const uint8_t *msg, size_t len,
                       uint8_t **pdns, size_t *pdnslen);

/* The target's side, for test peers and test vectors: opens the query
 * msg[0..len) with the private key skR of cfg, keeping in q what sealing its
 * answer needs. Returns as odoh_response_open, and DV_EMISMATCH when the
 * key_id is not cfg's. */
int odoh_query_open(const uint8_t skR[HPKE_NSK], const struct odoh_config *cfg,
                    const uint8_t *msg, size_t len, struct odoh_query *q, uint8_t **pdns,
                    size_t *pdnslen);

/* The target's side: seals the answer dns[0..len) to q with the response
 * nonce given (random when NULL), padded like a query. 0, DV_EINVAL or
 * DV_ENOMEM. */
int odoh_response_seal(const struct odoh_query *q, const uint8_t *nonce, const uint8_t *dns,
                       size_t len, size_t pad_block, uint8_t **pout, size_t *poutlen);

#endif
