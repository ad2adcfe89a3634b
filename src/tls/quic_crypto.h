/* quic_crypto — 1-RTT packet protection for ngtcp2 straight on wolfCrypt.
 *
 * ngtcp2's wolfSSL glue protects every packet through wolfSSL's OpenSSL
 * compatibility layer: per packet a CipherInit with the nonce, the AAD and
 * the payload copied into growing buffers, a free, and a one-block
 * CipherUpdate for the header-protection mask. Under callgrind that is about
 * 1,000 instructions of bookkeeping around ~450 of AES-GCM per packet.
 *
 * This module keeps the glue for everything it does well (Initial,
 * Handshake and 0-RTT keys, Retry, version negotiation, the TLS handshake
 * bytes) and takes over only the keys every query and answer use: when
 * wolfSSL hands over the application secrets, quic_crypto derives the 1-RTT
 * key, IV and header-protection key itself (RFC 9001 5.1, through ngtcp2's
 * public HKDF) and installs contexts of its own that hold the wolfCrypt key
 * schedule (AES-GCM, or the ChaCha20-Poly1305 key); key updates do the same.
 * Its contexts are told apart from the glue's by a tag in the low bit of the
 * native handle (both are heap pointers, so that bit is otherwise clear);
 * the callbacks below pass the glue's contexts on to ngtcp2_crypto_*_cb.
 * A cipher suite other than TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384
 * and TLS_CHACHA20_POLY1305_SHA256 stays with the glue whole.
 *
 * Use: quic_crypto_configure() on the WOLFSSL_CTX after
 * ngtcp2_crypto_wolfssl_configure_{client,server}_context(), and the
 * callbacks below in ngtcp2_callbacks in place of ngtcp2_crypto_*_cb. */
#ifndef DV_TLS_QUIC_CRYPTO_H
#define DV_TLS_QUIC_CRYPTO_H

#ifdef DV_HAVE_TLS

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ngtcp2/ngtcp2.h>

/* Points wolfssl_ctx's (a WOLFSSL_CTX already configured for QUIC by
 * ngtcp2's glue) QUIC method at ours. 0, or -1 when wolfSSL refuses. */
int quic_crypto_configure(void *wolfssl_ctx);

/* ngtcp2_callbacks members; each hands the glue's contexts to the glue. */
int quic_crypto_encrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                           const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *plaintext,
                           size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
                           const uint8_t *aad, size_t aadlen);
int quic_crypto_decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                           const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *ciphertext,
                           size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
                           const uint8_t *aad, size_t aadlen);
int quic_crypto_hp_mask_cb(uint8_t *dest, const ngtcp2_crypto_cipher *hp,
                           const ngtcp2_crypto_cipher_ctx *hp_ctx, const uint8_t *sample);
int quic_crypto_update_key_cb(ngtcp2_conn *conn, uint8_t *rx_secret, uint8_t *tx_secret,
                              ngtcp2_crypto_aead_ctx *rx_aead_ctx, uint8_t *rx_iv,
                              ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                              const uint8_t *current_rx_secret,
                              const uint8_t *current_tx_secret, size_t secretlen,
                              void *user_data);
void quic_crypto_delete_aead_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_aead_ctx *aead_ctx,
                                    void *user_data);
void quic_crypto_delete_cipher_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_cipher_ctx *cipher_ctx,
                                      void *user_data);

/* Our contexts for aead (and its header-protection cipher hp) keyed with
 * key, as the 1-RTT install makes them; for tests that check them against
 * the glue's. 0, or -1 for a cipher this module leaves to the glue or no
 * memory. Freed by the delete callbacks above. */
int quic_crypto_aead_ctx_init(ngtcp2_crypto_aead_ctx *actx, const ngtcp2_crypto_aead *aead,
                              const uint8_t *key);
int quic_crypto_hp_ctx_init(ngtcp2_crypto_cipher_ctx *hctx, const ngtcp2_crypto_aead *aead,
                            const uint8_t *key);

/* RFC 9001 5.1 (RFC 9369 3.3.2 for QUIC v2): from a traffic secret the AEAD
 * key (the length ctx's AEAD takes) and the 12-byte IV, and the header
 * protection key unless hp is NULL. 0 or -1. */
int quic_crypto_derive(uint8_t *key, uint8_t *iv, uint8_t *hp, const ngtcp2_crypto_ctx *ctx,
                       uint32_t version, const uint8_t *secret, size_t secretlen);
/* RFC 9001 6.1: the traffic secret after a key update, secretlen bytes
 * into dest. 0 or -1. */
int quic_crypto_next_secret(uint8_t *dest, const ngtcp2_crypto_ctx *ctx, uint32_t version,
                            const uint8_t *secret, size_t secretlen);

#endif /* DV_HAVE_TLS */
#endif
