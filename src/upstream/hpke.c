#include "upstream/hpke.h"

#include <string.h>

#include "core/err.h"

#ifdef DV_HAVE_TLS

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/curve25519.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "core/rand.h"

enum {
    LABEL_MAX = 512, /* "HPKE-v1" || suite_id || label || ikm or info */
    SUITE_KEM_LEN = 5,
    SUITE_HPKE_LEN = 10,
};

static const uint8_t suite_kem[SUITE_KEM_LEN] = {'K', 'E', 'M', 0x00, 0x20};
static const uint8_t suite_hpke[SUITE_HPKE_LEN] = {'H', 'P', 'K', 'E', 0x00, 0x20,
                                                   0x00, 0x01, 0x00, 0x01};

int hpke_kdf_extract(const uint8_t *salt, size_t saltlen, const uint8_t *ikm, size_t ikmlen,
                     uint8_t prk[HPKE_NH])
{
    /* wolfCrypt reads a NULL salt as HashLen zero bytes, RFC 5869's default */
    if (wc_HKDF_Extract(WC_SHA256, saltlen ? salt : NULL, (word32)saltlen, ikm, (word32)ikmlen,
                        prk))
        return DV_EINVAL;
    return 0;
}

int hpke_kdf_expand(const uint8_t prk[HPKE_NH], const uint8_t *info, size_t infolen,
                    uint8_t *out, size_t len)
{
    if (len > 255 * HPKE_NH ||
        wc_HKDF_Expand(WC_SHA256, prk, HPKE_NH, info, (word32)infolen, out, (word32)len))
        return DV_EINVAL;
    return 0;
}

/* LabeledExtract (RFC 9180 4). */
static int labeled_extract(const uint8_t *suite, size_t suitelen, const uint8_t *salt,
                           size_t saltlen, const char *label, const uint8_t *ikm, size_t ikmlen,
                           uint8_t prk[HPKE_NH])
{
    uint8_t in[LABEL_MAX];
    size_t n = 0, ll = strlen(label);
    int rc;

    if (7 + suitelen + ll + ikmlen > sizeof(in))
        return DV_EINVAL;
    memcpy(in, "HPKE-v1", 7);
    n = 7;
    memcpy(in + n, suite, suitelen);
    n += suitelen;
    memcpy(in + n, label, ll);
    n += ll;
    if (ikmlen)
        memcpy(in + n, ikm, ikmlen);
    n += ikmlen;
    rc = hpke_kdf_extract(salt, saltlen, in, n, prk);
    explicit_bzero(in, sizeof(in));
    return rc;
}

/* LabeledExpand (RFC 9180 4). */
static int labeled_expand(const uint8_t *suite, size_t suitelen, const uint8_t prk[HPKE_NH],
                          const char *label, const uint8_t *info, size_t infolen, uint8_t *out,
                          size_t len)
{
    uint8_t in[LABEL_MAX];
    size_t n = 0, ll = strlen(label);

    if (len > 0xffff || 9 + suitelen + ll + infolen > sizeof(in))
        return DV_EINVAL;
    in[n++] = (uint8_t)(len >> 8);
    in[n++] = (uint8_t)len;
    memcpy(in + n, "HPKE-v1", 7);
    n += 7;
    memcpy(in + n, suite, suitelen);
    n += suitelen;
    memcpy(in + n, label, ll);
    n += ll;
    if (infolen)
        memcpy(in + n, info, infolen);
    n += infolen;
    return hpke_kdf_expand(prk, in, n, out, len);
}

/* X25519(sk, pk) into dh; the all-zero output of a small-order pk is
 * refused (RFC 9180 7.1.4). */
static int x25519(const uint8_t sk[HPKE_NSK], const uint8_t pk[HPKE_NPK], uint8_t dh[32])
{
    curve25519_key priv, pub;
    word32 outlen = 32;
    uint8_t acc = 0;
    int rc = DV_EINVAL;

    if (wc_curve25519_init(&priv))
        return DV_ENOMEM;
    if (wc_curve25519_init(&pub)) {
        wc_curve25519_free(&priv);
        return DV_ENOMEM;
    }
    if (wc_curve25519_import_private_ex(sk, HPKE_NSK, &priv, EC25519_LITTLE_ENDIAN) == 0 &&
        wc_curve25519_import_public_ex(pk, HPKE_NPK, &pub, EC25519_LITTLE_ENDIAN) == 0 &&
        wc_curve25519_shared_secret_ex(&priv, &pub, dh, &outlen, EC25519_LITTLE_ENDIAN) == 0) {
        for (size_t i = 0; i < 32; i++)
            acc |= dh[i];
        rc = acc ? 0 : DV_EINVAL;
    }
    wc_curve25519_free(&priv);
    wc_curve25519_free(&pub);
    return rc;
}

/* The public key of sk. wolfCrypt wants the scalar clamped first; X25519
 * clamps it anyway, so the result is the same. */
static int x25519_pub(const uint8_t sk[HPKE_NSK], uint8_t pk[HPKE_NPK])
{
    uint8_t k[HPKE_NSK];
    int rc;

    memcpy(k, sk, sizeof(k));
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    rc = wc_curve25519_make_pub(HPKE_NPK, pk, HPKE_NSK, k) ? DV_EINVAL : 0;
    explicit_bzero(k, sizeof(k));
    return rc;
}

int hpke_derive_keypair(const uint8_t *ikm, size_t len, uint8_t sk[HPKE_NSK],
                        uint8_t pk[HPKE_NPK])
{
    uint8_t prk[HPKE_NH];
    int rc = labeled_extract(suite_kem, sizeof(suite_kem), NULL, 0, "dkp_prk", ikm, len, prk);

    if (rc == 0)
        rc = labeled_expand(suite_kem, sizeof(suite_kem), prk, "sk", NULL, 0, sk, HPKE_NSK);
    if (rc == 0)
        rc = x25519_pub(sk, pk);
    explicit_bzero(prk, sizeof(prk));
    return rc;
}

/* ExtractAndExpand of the DHKEM, with kem_context = enc || pkR. */
static int kem_shared_secret(const uint8_t dh[32], const uint8_t enc[HPKE_NPK],
                             const uint8_t pkR[HPKE_NPK], uint8_t ss[HPKE_NH])
{
    uint8_t prk[HPKE_NH], kctx[2 * HPKE_NPK];
    int rc;

    memcpy(kctx, enc, HPKE_NPK);
    memcpy(kctx + HPKE_NPK, pkR, HPKE_NPK);
    rc = labeled_extract(suite_kem, sizeof(suite_kem), NULL, 0, "eae_prk", dh, 32, prk);
    if (rc == 0)
        rc = labeled_expand(suite_kem, sizeof(suite_kem), prk, "shared_secret", kctx,
                            sizeof(kctx), ss, HPKE_NH);
    explicit_bzero(prk, sizeof(prk));
    return rc;
}

/* KeySchedule for mode_base: no PSK. */
static int key_schedule(const uint8_t ss[HPKE_NH], const uint8_t *info, size_t infolen,
                        struct hpke_ctx *ctx)
{
    uint8_t ksc[1 + 2 * HPKE_NH], secret[HPKE_NH];
    int rc;

    ksc[0] = 0; /* mode_base */
    rc = labeled_extract(suite_hpke, sizeof(suite_hpke), NULL, 0, "psk_id_hash", NULL, 0,
                         ksc + 1);
    if (rc == 0)
        rc = labeled_extract(suite_hpke, sizeof(suite_hpke), NULL, 0, "info_hash", info,
                             infolen, ksc + 1 + HPKE_NH);
    if (rc == 0)
        rc = labeled_extract(suite_hpke, sizeof(suite_hpke), ss, HPKE_NH, "secret", NULL, 0,
                             secret);
    if (rc == 0)
        rc = labeled_expand(suite_hpke, sizeof(suite_hpke), secret, "key", ksc, sizeof(ksc),
                            ctx->key, HPKE_NK);
    if (rc == 0)
        rc = labeled_expand(suite_hpke, sizeof(suite_hpke), secret, "base_nonce", ksc,
                            sizeof(ksc), ctx->base_nonce, HPKE_NN);
    if (rc == 0)
        rc = labeled_expand(suite_hpke, sizeof(suite_hpke), secret, "exp", ksc, sizeof(ksc),
                            ctx->exporter_secret, HPKE_NH);
    ctx->seq = 0;
    explicit_bzero(secret, sizeof(secret));
    if (rc)
        hpke_ctx_wipe(ctx);
    return rc;
}

int hpke_setup_sender(const uint8_t pkR[HPKE_NPK], const uint8_t *info, size_t infolen,
                      const uint8_t *skE, uint8_t enc[HPKE_NPK], struct hpke_ctx *ctx)
{
    uint8_t sk[HPKE_NSK], dh[32], ss[HPKE_NH];
    int rc;

    if (skE)
        memcpy(sk, skE, sizeof(sk));
    else
        rand_bytes(sk, sizeof(sk));
    rc = x25519_pub(sk, enc);
    if (rc == 0)
        rc = x25519(sk, pkR, dh);
    if (rc == 0)
        rc = kem_shared_secret(dh, enc, pkR, ss);
    if (rc == 0)
        rc = key_schedule(ss, info, infolen, ctx);
    explicit_bzero(sk, sizeof(sk));
    explicit_bzero(dh, sizeof(dh));
    explicit_bzero(ss, sizeof(ss));
    return rc;
}

int hpke_setup_receiver(const uint8_t skR[HPKE_NSK], const uint8_t enc[HPKE_NPK],
                        const uint8_t *info, size_t infolen, struct hpke_ctx *ctx)
{
    uint8_t pkR[HPKE_NPK], dh[32], ss[HPKE_NH];
    int rc = x25519_pub(skR, pkR);

    if (rc == 0)
        rc = x25519(skR, enc, dh);
    if (rc == 0)
        rc = kem_shared_secret(dh, enc, pkR, ss);
    if (rc == 0)
        rc = key_schedule(ss, info, infolen, ctx);
    explicit_bzero(dh, sizeof(dh));
    explicit_bzero(ss, sizeof(ss));
    return rc;
}

int hpke_aead_seal(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *out)
{
    Aes aes;
    int rc = DV_EINVAL;

    if (wc_AesInit(&aes, NULL, INVALID_DEVID))
        return DV_EINVAL;
    if (wc_AesGcmSetKey(&aes, key, HPKE_NK) == 0 &&
        wc_AesGcmEncrypt(&aes, out, pt, (word32)ptlen, nonce, HPKE_NN, out + ptlen, HPKE_NT,
                         aad, (word32)aadlen) == 0)
        rc = 0;
    wc_AesFree(&aes);
    return rc;
}

int hpke_aead_open(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *out)
{
    Aes aes;
    int rc = DV_EPROTO;

    if (ctlen < HPKE_NT || wc_AesInit(&aes, NULL, INVALID_DEVID))
        return DV_EPROTO;
    if (wc_AesGcmSetKey(&aes, key, HPKE_NK) == 0 &&
        wc_AesGcmDecrypt(&aes, out, ct, (word32)(ctlen - HPKE_NT), nonce, HPKE_NN,
                         ct + ctlen - HPKE_NT, HPKE_NT, aad, (word32)aadlen) == 0)
        rc = 0;
    else if (ctlen > HPKE_NT)
        explicit_bzero(out, ctlen - HPKE_NT);
    wc_AesFree(&aes);
    return rc;
}

/* base_nonce XOR the sequence number, big-endian in the low bytes. */
static void seq_nonce(const struct hpke_ctx *ctx, uint8_t nonce[HPKE_NN])
{
    memcpy(nonce, ctx->base_nonce, HPKE_NN);
    for (size_t i = 0; i < 8; i++)
        nonce[HPKE_NN - 1 - i] ^= (uint8_t)(ctx->seq >> (8 * i));
}

int hpke_seal(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *pt,
              size_t ptlen, uint8_t *ct)
{
    uint8_t nonce[HPKE_NN];
    int rc;

    if (ctx->seq == UINT64_MAX)
        return DV_EINVAL;
    seq_nonce(ctx, nonce);
    rc = hpke_aead_seal(ctx->key, nonce, aad, aadlen, pt, ptlen, ct);
    if (rc == 0)
        ctx->seq++;
    return rc;
}

int hpke_open(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *ct,
              size_t ctlen, uint8_t *pt)
{
    uint8_t nonce[HPKE_NN];
    int rc;

    if (ctx->seq == UINT64_MAX)
        return DV_EPROTO;
    seq_nonce(ctx, nonce);
    rc = hpke_aead_open(ctx->key, nonce, aad, aadlen, ct, ctlen, pt);
    if (rc == 0)
        ctx->seq++;
    return rc;
}

int hpke_export(const struct hpke_ctx *ctx, const uint8_t *exctx, size_t exlen, uint8_t *out,
                size_t len)
{
    return labeled_expand(suite_hpke, sizeof(suite_hpke), ctx->exporter_secret, "sec", exctx,
                          exlen, out, len);
}

void hpke_ctx_wipe(struct hpke_ctx *ctx)
{
    explicit_bzero(ctx, sizeof(*ctx));
}

#else /* no wolfSSL: every call fails */

int hpke_derive_keypair(const uint8_t *ikm, size_t len, uint8_t sk[HPKE_NSK],
                        uint8_t pk[HPKE_NPK])
{
    return DV_EINVAL;
}

int hpke_setup_sender(const uint8_t pkR[HPKE_NPK], const uint8_t *info, size_t infolen,
                      const uint8_t *skE, uint8_t enc[HPKE_NPK], struct hpke_ctx *ctx)
{
    return DV_EINVAL;
}

int hpke_setup_receiver(const uint8_t skR[HPKE_NSK], const uint8_t enc[HPKE_NPK],
                        const uint8_t *info, size_t infolen, struct hpke_ctx *ctx)
{
    return DV_EINVAL;
}

int hpke_seal(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *pt,
              size_t ptlen, uint8_t *ct)
{
    return DV_EINVAL;
}

int hpke_open(struct hpke_ctx *ctx, const uint8_t *aad, size_t aadlen, const uint8_t *ct,
              size_t ctlen, uint8_t *pt)
{
    return DV_EPROTO;
}

int hpke_export(const struct hpke_ctx *ctx, const uint8_t *exctx, size_t exlen, uint8_t *out,
                size_t len)
{
    return DV_EINVAL;
}

void hpke_ctx_wipe(struct hpke_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
}

int hpke_kdf_extract(const uint8_t *salt, size_t saltlen, const uint8_t *ikm, size_t ikmlen,
                     uint8_t prk[HPKE_NH])
{
    return DV_EINVAL;
}

int hpke_kdf_expand(const uint8_t prk[HPKE_NH], const uint8_t *info, size_t infolen,
                    uint8_t *out, size_t len)
{
    return DV_EINVAL;
}

int hpke_aead_seal(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *out)
{
    return DV_EINVAL;
}

int hpke_aead_open(const uint8_t key[HPKE_NK], const uint8_t nonce[HPKE_NN], const uint8_t *aad,
                   size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *out)
{
    return DV_EPROTO;
}

#endif
