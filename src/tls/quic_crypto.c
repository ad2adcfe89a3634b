/* quic_crypto — 1-RTT packet protection for ngtcp2 on wolfCrypt (see the
 * header for why and how it shares the work with ngtcp2's wolfSSL glue). */
#include "tls/quic_crypto.h"

#ifdef DV_HAVE_TLS

#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>

#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

/* what wolfssl.flags gives today (--enable-aesgcm, --enable-chacha,
 * --enable-poly1305; AES direct comes with the OpenSSL compatibility layer) */
#if !defined(HAVE_AESGCM) || !defined(WOLFSSL_AES_DIRECT) || !defined(HAVE_CHACHA) || \
    !defined(HAVE_POLY1305)
#error "quic_crypto needs wolfSSL with AES-GCM, AES direct, ChaCha20 and Poly1305"
#endif

enum {
    QC_TAGLEN = 16,      /* AES-GCM and Poly1305 tags alike */
    QC_NONCELEN = 12,    /* RFC 9001 5.3: the IV and so the nonce */
    QC_KEYMAX = 32,
};

enum qc_kind {
    QC_NONE,
    QC_AES_GCM,          /* AES-128-GCM, AES-256-GCM; AES-ECB header protection */
    QC_CHACHA,           /* ChaCha20-Poly1305; ChaCha20 header protection */
};

struct qc_aead {
    enum qc_kind kind;
    union {
        Aes aes;         /* with the GCM hash key: set once per key */
        uint8_t key[CHACHA20_POLY1305_AEAD_KEYSIZE];
    } u;
};

struct qc_hp {
    enum qc_kind kind;
    union {
        Aes aes;
        ChaCha chacha;   /* key set; the IV and counter come per sample */
    } u;
};

/* ---- our contexts, tagged in the handle's low bit ---------------------- */

static void *qc_tag(void *p)
{
    return (void *)((uintptr_t)p | 1u);
}

/* Ours, untagged, or NULL for a context the glue made. */
static void *qc_ours(const void *handle)
{
    uintptr_t h = (uintptr_t)handle;
    return (h & 1u) ? (void *)(h & ~(uintptr_t)1u) : NULL;
}

static enum qc_kind qc_kind_of(const ngtcp2_crypto_aead *aead)
{
    if (!aead->native_handle)
        return QC_NONE;
    switch (wolfSSL_EVP_CIPHER_nid((const WOLFSSL_EVP_CIPHER *)aead->native_handle)) {
    case NID_aes_128_gcm:
    case NID_aes_256_gcm:
        return QC_AES_GCM;
    case NID_chacha20_poly1305:
        return QC_CHACHA;
    default:
        return QC_NONE;
    }
}

static void qc_aead_del(struct qc_aead *a)
{
    if (!a)
        return;
    if (a->kind == QC_AES_GCM)
        wc_AesFree(&a->u.aes);
    explicit_bzero(a, sizeof(*a));
    free(a);
}

static void qc_hp_del(struct qc_hp *h)
{
    if (!h)
        return;
    if (h->kind == QC_AES_GCM)
        wc_AesFree(&h->u.aes);
    explicit_bzero(h, sizeof(*h));
    free(h);
}

int quic_crypto_aead_ctx_init(ngtcp2_crypto_aead_ctx *actx, const ngtcp2_crypto_aead *aead,
                              const uint8_t *key)
{
    enum qc_kind kind = qc_kind_of(aead);
    size_t keylen = ngtcp2_crypto_aead_keylen(aead);
    struct qc_aead *a;

    if (kind == QC_NONE || keylen > QC_KEYMAX || !(a = calloc(1, sizeof(*a))))
        return -1;
    a->kind = kind;
    if (kind == QC_AES_GCM) {
        if (wc_AesInit(&a->u.aes, NULL, INVALID_DEVID) != 0) {
            free(a);
            return -1;
        }
        if (wc_AesGcmSetKey(&a->u.aes, key, (word32)keylen) != 0) {
            qc_aead_del(a);
            return -1;
        }
    } else {
        if (keylen != sizeof(a->u.key)) {
            qc_aead_del(a);
            return -1;
        }
        memcpy(a->u.key, key, keylen);
    }
    actx->native_handle = qc_tag(a);
    return 0;
}

int quic_crypto_hp_ctx_init(ngtcp2_crypto_cipher_ctx *hctx, const ngtcp2_crypto_aead *aead,
                            const uint8_t *key)
{
    enum qc_kind kind = qc_kind_of(aead);
    size_t keylen = ngtcp2_crypto_aead_keylen(aead);
    struct qc_hp *h;

    if (kind == QC_NONE || keylen > QC_KEYMAX || !(h = calloc(1, sizeof(*h))))
        return -1;
    h->kind = kind;
    if (kind == QC_AES_GCM) {
        if (wc_AesInit(&h->u.aes, NULL, INVALID_DEVID) != 0) {
            free(h);
            return -1;
        }
        if (wc_AesSetKey(&h->u.aes, key, (word32)keylen, NULL, AES_ENCRYPTION) != 0) {
            qc_hp_del(h);
            return -1;
        }
    } else if (keylen != CHACHA_MAX_KEY_SZ ||
               wc_Chacha_SetKey(&h->u.chacha, key, (word32)keylen) != 0) {
        qc_hp_del(h);
        return -1;
    }
    hctx->native_handle = qc_tag(h);
    return 0;
}

/* ---- the packet callbacks ------------------------------------------------ */

int quic_crypto_encrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                           const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *plaintext,
                           size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
                           const uint8_t *aad, size_t aadlen)
{
    struct qc_aead *a = qc_ours(aead_ctx->native_handle);
    int rc;

    if (!a)
        return ngtcp2_crypto_encrypt_cb(dest, aead, aead_ctx, plaintext, plaintextlen, nonce,
                                        noncelen, aad, aadlen);
    if (noncelen != QC_NONCELEN)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    /* the tag follows the ciphertext; dest may be plaintext itself */
    if (a->kind == QC_AES_GCM)
        rc = wc_AesGcmEncrypt(&a->u.aes, dest, plaintext, (word32)plaintextlen, nonce,
                              QC_NONCELEN, dest + plaintextlen, QC_TAGLEN, aad, (word32)aadlen);
    else
        rc = wc_ChaCha20Poly1305_Encrypt(a->u.key, nonce, aad, (word32)aadlen, plaintext,
                                         (word32)plaintextlen, dest, dest + plaintextlen);
    return rc ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

int quic_crypto_decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                           const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *ciphertext,
                           size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
                           const uint8_t *aad, size_t aadlen)
{
    struct qc_aead *a = qc_ours(aead_ctx->native_handle);
    const uint8_t *tag;
    size_t len;
    int rc;

    if (!a)
        return ngtcp2_crypto_decrypt_cb(dest, aead, aead_ctx, ciphertext, ciphertextlen, nonce,
                                        noncelen, aad, aadlen);
    if (noncelen != QC_NONCELEN || ciphertextlen < QC_TAGLEN)
        return NGTCP2_ERR_DECRYPT;
    len = ciphertextlen - QC_TAGLEN;
    tag = ciphertext + len;
    if (a->kind == QC_AES_GCM)
        rc = wc_AesGcmDecrypt(&a->u.aes, dest, ciphertext, (word32)len, nonce, QC_NONCELEN, tag,
                              QC_TAGLEN, aad, (word32)aadlen);
    else
        rc = wc_ChaCha20Poly1305_Decrypt(a->u.key, nonce, aad, (word32)aadlen, ciphertext,
                                         (word32)len, tag, dest);
    return rc ? NGTCP2_ERR_DECRYPT : 0;
}

int quic_crypto_hp_mask_cb(uint8_t *dest, const ngtcp2_crypto_cipher *hp,
                           const ngtcp2_crypto_cipher_ctx *hp_ctx, const uint8_t *sample)
{
    static const uint8_t zero[NGTCP2_HP_SAMPLELEN];
    struct qc_hp *h = qc_ours(hp_ctx->native_handle);
    word32 counter;

    if (!h)
        return ngtcp2_crypto_hp_mask_cb(dest, hp, hp_ctx, sample);
    if (h->kind == QC_AES_GCM) {
        /* RFC 9001 5.4.3: one AES block of the sample. Aligned: wolfSSL's
         * AES-NI path mallocs a bounce buffer for an unaligned input block */
        _Alignas(16) uint8_t blk[NGTCP2_HP_SAMPLELEN];

        memcpy(blk, sample, sizeof(blk));
        if (wc_AesEncryptDirect(&h->u.aes, blk, blk) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        memcpy(dest, blk, sizeof(blk));
        return 0;
    }
    /* 5.4.4: the sample's first 4 bytes are the block counter (little
     * endian), the other 12 the nonce; the mask is the keystream */
    counter = (word32)sample[0] | (word32)sample[1] << 8 | (word32)sample[2] << 16 |
              (word32)sample[3] << 24;
    if (wc_Chacha_SetIV(&h->u.chacha, sample + 4, counter) != 0 ||
        wc_Chacha_Process(&h->u.chacha, dest, zero, NGTCP2_HP_SAMPLELEN) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

void quic_crypto_delete_aead_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_aead_ctx *aead_ctx,
                                    void *user_data)
{
    struct qc_aead *a = qc_ours(aead_ctx->native_handle);

    if (!a) {
        ngtcp2_crypto_delete_crypto_aead_ctx_cb(conn, aead_ctx, user_data);
        return;
    }
    qc_aead_del(a);
    aead_ctx->native_handle = NULL;
}

void quic_crypto_delete_cipher_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_cipher_ctx *cipher_ctx,
                                      void *user_data)
{
    struct qc_hp *h = qc_ours(cipher_ctx->native_handle);

    if (!h) {
        ngtcp2_crypto_delete_crypto_cipher_ctx_cb(conn, cipher_ctx, user_data);
        return;
    }
    qc_hp_del(h);
    cipher_ctx->native_handle = NULL;
}

/* ---- key derivation (RFC 9001 5.1, 6.1; RFC 9369 3.3.2 for v2) ---------- */

/* HKDF-Expand-Label(secret, label, "", len) of TLS 1.3 (RFC 8446 7.1). */
static int qc_expand_label(uint8_t *dest, size_t len, const ngtcp2_crypto_md *md,
                           const uint8_t *secret, size_t secretlen, const char *label)
{
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t llen = strlen(label), n = 0;

    if (llen > 32 || len > 0xffff)
        return -1;
    info[n++] = (uint8_t)(len >> 8);
    info[n++] = (uint8_t)len;
    info[n++] = (uint8_t)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = 0; /* no context */
    return ngtcp2_crypto_hkdf_expand(dest, len, md, secret, secretlen, info, n);
}

int quic_crypto_derive(uint8_t *key, uint8_t *iv, uint8_t *hp, const ngtcp2_crypto_ctx *ctx,
                       uint32_t version, const uint8_t *secret, size_t secretlen)
{
    bool v2 = version == NGTCP2_PROTO_VER_V2;
    size_t keylen = ngtcp2_crypto_aead_keylen(&ctx->aead);

    if (keylen > QC_KEYMAX || ngtcp2_crypto_packet_protection_ivlen(&ctx->aead) != QC_NONCELEN)
        return -1;
    if (qc_expand_label(key, keylen, &ctx->md, secret, secretlen, v2 ? "quicv2 key" : "quic key") ||
        qc_expand_label(iv, QC_NONCELEN, &ctx->md, secret, secretlen, v2 ? "quicv2 iv" : "quic iv") ||
        (hp && qc_expand_label(hp, keylen, &ctx->md, secret, secretlen,
                               v2 ? "quicv2 hp" : "quic hp")))
        return -1;
    return 0;
}

int quic_crypto_next_secret(uint8_t *dest, const ngtcp2_crypto_ctx *ctx, uint32_t version,
                            const uint8_t *secret, size_t secretlen)
{
    return qc_expand_label(dest, secretlen, &ctx->md, secret, secretlen,
                           version == NGTCP2_PROTO_VER_V2 ? "quicv2 ku" : "quic ku");
}

/* The client learns the server's transport parameters with its 1-RTT read
 * key, as the glue does it. */
static int qc_remote_params(ngtcp2_conn *conn, WOLFSSL *ssl)
{
    const uint8_t *tp;
    size_t tplen;
    int rv;

    wolfSSL_get_peer_quic_transport_params(ssl, &tp, &tplen);
    rv = ngtcp2_conn_decode_and_set_remote_transport_params(conn, tp, tplen);
    if (rv) {
        ngtcp2_conn_set_tls_error(conn, rv);
        return -1;
    }
    return 0;
}

/* Derives and installs one direction's 1-RTT keys as our contexts. */
static int qc_install(ngtcp2_conn *conn, WOLFSSL *ssl, bool rx, const uint8_t *secret,
                      size_t secretlen)
{
    const ngtcp2_crypto_ctx *ctx = ngtcp2_conn_get_crypto_ctx(conn);
    ngtcp2_crypto_aead_ctx actx = {0};
    ngtcp2_crypto_cipher_ctx hctx = {0};
    uint8_t key[QC_KEYMAX], iv[QC_NONCELEN], hp[QC_KEYMAX];
    int rv = -1;

    if (rx && !ngtcp2_conn_is_server(conn) && qc_remote_params(conn, ssl))
        return -1;
    if (quic_crypto_derive(key, iv, hp, ctx, ngtcp2_conn_get_negotiated_version(conn), secret, secretlen) ||
        quic_crypto_aead_ctx_init(&actx, &ctx->aead, key) ||
        quic_crypto_hp_ctx_init(&hctx, &ctx->aead, hp))
        goto out;
    /* on success conn owns both contexts */
    if (rx)
        rv = ngtcp2_conn_install_rx_key(conn, secret, secretlen, &actx, iv, sizeof(iv), &hctx);
    else
        rv = ngtcp2_conn_install_tx_key(conn, secret, secretlen, &actx, iv, sizeof(iv), &hctx);
out:
    if (rv) {
        qc_aead_del(qc_ours(actx.native_handle));
        qc_hp_del(qc_ours(hctx.native_handle));
    }
    explicit_bzero(key, sizeof(key));
    explicit_bzero(hp, sizeof(hp));
    return rv ? -1 : 0;
}

int quic_crypto_update_key_cb(ngtcp2_conn *conn, uint8_t *rx_secret, uint8_t *tx_secret,
                              ngtcp2_crypto_aead_ctx *rx_aead_ctx, uint8_t *rx_iv,
                              ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                              const uint8_t *current_rx_secret,
                              const uint8_t *current_tx_secret, size_t secretlen,
                              void *user_data)
{
    const ngtcp2_crypto_ctx *ctx = ngtcp2_conn_get_crypto_ctx(conn);
    uint32_t version = ngtcp2_conn_get_negotiated_version(conn);
    uint8_t rx_key[QC_KEYMAX], tx_key[QC_KEYMAX];
    int rv = NGTCP2_ERR_CALLBACK_FAILURE;

    /* the same choice the 1-RTT install made: the glue's keys stay its own */
    if (qc_kind_of(&ctx->aead) == QC_NONE)
        return ngtcp2_crypto_update_key_cb(conn, rx_secret, tx_secret, rx_aead_ctx, rx_iv,
                                           tx_aead_ctx, tx_iv, current_rx_secret,
                                           current_tx_secret, secretlen, user_data);
    if (quic_crypto_next_secret(rx_secret, ctx, version, current_rx_secret, secretlen) ||
        quic_crypto_next_secret(tx_secret, ctx, version, current_tx_secret, secretlen) ||
        quic_crypto_derive(rx_key, rx_iv, NULL, ctx, version, rx_secret, secretlen) ||
        quic_crypto_derive(tx_key, tx_iv, NULL, ctx, version, tx_secret, secretlen))
        goto out;
    if (quic_crypto_aead_ctx_init(rx_aead_ctx, &ctx->aead, rx_key))
        goto out;
    if (quic_crypto_aead_ctx_init(tx_aead_ctx, &ctx->aead, tx_key)) {
        qc_aead_del(qc_ours(rx_aead_ctx->native_handle));
        rx_aead_ctx->native_handle = NULL;
        goto out;
    }
    rv = 0;
out:
    explicit_bzero(rx_key, sizeof(rx_key));
    explicit_bzero(tx_key, sizeof(tx_key));
    return rv;
}

/* ---- wolfSSL's QUIC method ------------------------------------------------
 * The glue's, but for the 1-RTT secrets: those become our contexts. */

static ngtcp2_conn *qc_conn(WOLFSSL *ssl)
{
    ngtcp2_crypto_conn_ref *ref = wolfSSL_get_app_data(ssl);
    return ref->get_conn(ref);
}

static int qc_set_secrets(WOLFSSL *ssl, WOLFSSL_ENCRYPTION_LEVEL wlevel, const uint8_t *rx_secret,
                          const uint8_t *tx_secret, size_t secretlen)
{
    ngtcp2_conn *conn = qc_conn(ssl);
    ngtcp2_encryption_level level = ngtcp2_crypto_wolfssl_from_wolfssl_encryption_level(wlevel);

    /* the Handshake keys came first and set the crypto context we read */
    if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT ||
        qc_kind_of(&ngtcp2_conn_get_crypto_ctx(conn)->aead) == QC_NONE) {
        if (rx_secret && ngtcp2_crypto_derive_and_install_rx_key(conn, NULL, NULL, NULL, level,
                                                                 rx_secret, secretlen) != 0)
            return 0;
        if (tx_secret && ngtcp2_crypto_derive_and_install_tx_key(conn, NULL, NULL, NULL, level,
                                                                 tx_secret, secretlen) != 0)
            return 0;
        return 1;
    }
    if (rx_secret && qc_install(conn, ssl, true, rx_secret, secretlen))
        return 0;
    if (tx_secret && qc_install(conn, ssl, false, tx_secret, secretlen))
        return 0;
    return 1;
}

static int qc_add_handshake_data(WOLFSSL *ssl, WOLFSSL_ENCRYPTION_LEVEL wlevel,
                                 const uint8_t *data, size_t len)
{
    ngtcp2_conn *conn = qc_conn(ssl);
    int rv = ngtcp2_conn_submit_crypto_data(
        conn, ngtcp2_crypto_wolfssl_from_wolfssl_encryption_level(wlevel), data, len);

    if (rv) {
        ngtcp2_conn_set_tls_error(conn, rv);
        return 0;
    }
    return 1;
}

static int qc_flush_flight(WOLFSSL *ssl)
{
    (void)ssl;
    return 1; /* ngtcp2 sends when we call its writer */
}

static int qc_send_alert(WOLFSSL *ssl, WOLFSSL_ENCRYPTION_LEVEL wlevel, uint8_t alert)
{
    (void)wlevel;
    ngtcp2_conn_set_tls_alert(qc_conn(ssl), alert);
    return 1;
}

static WOLFSSL_QUIC_METHOD qc_method = {
    qc_set_secrets,
    qc_add_handshake_data,
    qc_flush_flight,
    qc_send_alert,
};

int quic_crypto_configure(void *wolfssl_ctx)
{
    return wolfSSL_CTX_set_quic_method(wolfssl_ctx, &qc_method) == WOLFSSL_SUCCESS ? 0 : -1;
}

#endif /* DV_HAVE_TLS */
