/* hpke — Hybrid Public Key Encryption (RFC 9180), base mode, for the one
 * suite ODoH needs: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
 *
 * Built on wolfCrypt's X25519, HKDF and AES-GCM. wolfSSL's own wc_Hpke*
 * calls seal and open in one shot and keep the key schedule to themselves,
 * but ODoH answers are sealed with a key exported from the query's context
 * (RFC 9230 6.2), so the schedule is done here and its exporter secret kept.
 *
 * Pure: no I/O, no state beyond the caller's hpke_ctx. */
#ifndef DV_UPSTREAM_HPKE_H
#define DV_UPSTREAM_HPKE_H

#include <stddef.h>
#include <stdint.h>

enum {
    HPKE_KEM_X25519_SHA256 = 0x0020,
    HPKE_KDF_SHA256 = 0x0001,
    HPKE_AEAD_AES128GCM = 0x0001,

    HPKE_NPK = 32,  /* serialized public key, also enc */
    HPKE_NSK = 32,  /* private key */
    HPKE_NH = 32,   /* KDF output */
    HPKE_NK = 16,   /* AEAD key */
    HPKE_NN = 12,   /* AEAD nonce */
    HPKE_NT = 16,   /* AEAD tag */
};

/* One encryption context (RFC 9180 5.1), embedded in its owner; nothing to
 * free, but it holds secrets: hpke_ctx_wipe when done. */
struct hpke_ctx {
    uint8_t key[HPKE_NK];
    uint8_t base_nonce[HPKE_NN];
    uint8_t exporter_secret[HPKE_NH];
    uint64_t seq; /* the next message's sequence number */
};

/* DeriveKeyPair (RFC 9180 7.1.3) from ikm[0..len). 0 or DV_EINVAL. */
int hpke_derive_keypair(const uint8_t *ikm, size_t len, uint8_t sk[HPKE_NSK],
                        uint8_t pk[HPKE_NPK]);

/* SetupBaseS: encapsulates to pkR and derives ctx from info. skE is the
 * ephemeral private key, NULL for a fresh random one (a given one is for
 * reproducing test vectors). Writes enc. 0, DV_EINVAL (pkR is not a usable
 * X25519 key, or the shared secret is zero) or DV_ENOMEM. */
int hpke_setup_sender(const uint8_t pkR[HPKE_NPK], const uint8_t *info, size_t infolen,
                      const uint8_t *skE, uint8_t enc[HPKE_NPK], struct hpke_ctx *ctx);

/* SetupBaseR: decapsulates enc with skR and derives ctx. Same returns. */
int hpke_setup_receiver(const uint8_t skR[HPKE_NSK], const uint8_t enc[HPKE_NPK],
                        const uint8_t *info, size_t infolen, struct hpke_ctx *ctx);

/* Seals pt[0..ptlen) into ct[0..ptlen + HPKE_NT) under aad and the next
 * nonce. 0 or DV_EINVAL. */
int hpke_seal(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *pt,
              size_t ptlen, uint8_t *ct);

/* Opens ct[0..ctlen) into pt[0..ctlen - HPKE_NT). 0, or DV_EPROTO when ct is
 * shorter than a tag or fails authentication (pt is then zeroed). */
int hpke_open(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *ct,
              size_t ctlen, uint8_t *pt);

/* Export (RFC 9180 5.3): len (at most 255 * HPKE_NH) bytes bound to
 * exctx[0..exlen). 0 or DV_EINVAL. */
int hpke_export(const struct hpke_ctx *ctx, const uint8_t *exctx, size_t exlen, uint8_t *out,
                size_t len);

void hpke_ctx_wipe(struct hpke_ctx *ctx);

/* The KDF and AEAD of the suite, unlabelled, for protocols on top of HPKE
 * (ODoH's key_id and response keys). 0 or DV_EINVAL. */
int hpke_kdf_extract(const uint8_t *salt, size_t saltlen, const uint8_t *ikm, size_t ikmlen,
                     uint8_t prk[HPKE_NH]);
int hpke_kdf_expand(const uint8_t prk[HPKE_NH], const uint8_t *info, size_t infolen,
                    uint8_t *out, size_t len);
/* AES-128-GCM with an explicit key and nonce; out has ptlen + HPKE_NT bytes,
 * or ctlen - HPKE_NT. Seal: 0 or DV_EINVAL; open: 0 or DV_EPROTO. */
int hpke_aead_seal(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *out);
int hpke_aead_open(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *out);

#endif
