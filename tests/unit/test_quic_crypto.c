/* Unit tests for src/tls/quic_crypto.c: its 1-RTT packet protection must be
 * byte for byte what ngtcp2's wolfSSL glue computes, for each of the three
 * TLS 1.3 cipher suites QUIC uses, and must reproduce RFC 9001's own
 * ChaCha20-Poly1305 example (A.5). A forged tag is a decryption error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#ifdef DV_HAVE_TLS

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>

#include <ngtcp2/ngtcp2_crypto.h>

#include "tls/quic_crypto.h"

struct suite {
    const char *name;
    const WOLFSSL_EVP_CIPHER *(*aead)(void);
    const WOLFSSL_EVP_CIPHER *(*hp)(void);
    size_t keylen;
};

static const struct suite suites[] = {
    {"AES-128-GCM", wolfSSL_EVP_aes_128_gcm, wolfSSL_EVP_aes_128_ecb, 16},
    {"AES-256-GCM", wolfSSL_EVP_aes_256_gcm, wolfSSL_EVP_aes_256_ecb, 32},
    {"CHACHA20-POLY1305", wolfSSL_EVP_chacha20_poly1305, wolfSSL_EVP_chacha20, 32},
};

static void fill(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 3));
}

static ngtcp2_crypto_aead aead_of(const struct suite *s)
{
    ngtcp2_crypto_aead a = {.native_handle = (void *)s->aead(), .max_overhead = 16};
    return a;
}

/* Ours against the glue's contexts, through the same callbacks (which pass
 * the glue's on to it), for payloads from empty to a full datagram. */
static void test_matches_the_glue(void **state)
{
    static const size_t lens[] = {0, 1, 15, 16, 17, 100, 1200};
    (void)state;

    for (size_t si = 0; si < sizeof(suites) / sizeof(suites[0]); si++) {
        const struct suite *s = &suites[si];
        ngtcp2_crypto_aead aead = aead_of(s);
        ngtcp2_crypto_cipher hp = {.native_handle = (void *)s->hp()};
        ngtcp2_crypto_aead_ctx ours = {0}, genc = {0}, gdec = {0};
        ngtcp2_crypto_cipher_ctx hours = {0}, hglue = {0};
        uint8_t key[32], hpkey[32], nonce[12], aad[21];

        fill(key, sizeof(key), 1 + (unsigned)si);
        fill(hpkey, sizeof(hpkey), 9 + (unsigned)si);
        assert_int_equal(quic_crypto_aead_ctx_init(&ours, &aead, key), 0);
        assert_int_equal(ngtcp2_crypto_aead_ctx_encrypt_init(&genc, &aead, key, 12), 0);
        assert_int_equal(ngtcp2_crypto_aead_ctx_decrypt_init(&gdec, &aead, key, 12), 0);
        assert_int_equal(quic_crypto_hp_ctx_init(&hours, &aead, hpkey), 0);
        /* what the glue makes for header protection (its maker is not public) */
        hglue.native_handle = wolfSSL_quic_crypt_new(s->hp(), hpkey, NULL, 1);
        assert_non_null(hglue.native_handle);

        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            size_t len = lens[li];
            uint8_t pt[1200], a[1216], b[1216], back[1200];
            uint8_t ma[16], mb[16];

            fill(pt, len, 40 + (unsigned)li);
            fill(nonce, sizeof(nonce), 70 + (unsigned)li);
            fill(aad, sizeof(aad), 90 + (unsigned)li);
            assert_int_equal(quic_crypto_encrypt_cb(a, &aead, &ours, pt, len, nonce, 12, aad,
                                                    sizeof(aad)), 0);
            assert_int_equal(quic_crypto_encrypt_cb(b, &aead, &genc, pt, len, nonce, 12, aad,
                                                    sizeof(aad)), 0);
            assert_memory_equal(a, b, len + 16);
            /* in place, as ngtcp2 seals a packet */
            memcpy(b, pt, len);
            assert_int_equal(quic_crypto_encrypt_cb(b, &aead, &ours, b, len, nonce, 12, aad,
                                                    sizeof(aad)), 0);
            assert_memory_equal(a, b, len + 16);

            /* ours opens what either sealed; the glue opens ours */
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &ours, a, len + 16, nonce, 12,
                                                    aad, sizeof(aad)), 0);
            assert_memory_equal(back, pt, len);
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &gdec, a, len + 16, nonce, 12,
                                                    aad, sizeof(aad)), 0);
            assert_memory_equal(back, pt, len);

            /* a changed bit anywhere: ciphertext, tag, header, nonce */
            a[len / 2] ^= 0x01;
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &ours, a, len + 16, nonce, 12,
                                                    aad, sizeof(aad)), NGTCP2_ERR_DECRYPT);
            a[len / 2] ^= 0x01;
            aad[0] ^= 0x40;
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &ours, a, len + 16, nonce, 12,
                                                    aad, sizeof(aad)), NGTCP2_ERR_DECRYPT);
            aad[0] ^= 0x40;
            nonce[11] ^= 0x01;
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &ours, a, len + 16, nonce, 12,
                                                    aad, sizeof(aad)), NGTCP2_ERR_DECRYPT);
            /* shorter than a tag */
            assert_int_equal(quic_crypto_decrypt_cb(back, &aead, &ours, a, 15, nonce, 12, aad,
                                                    sizeof(aad)), NGTCP2_ERR_DECRYPT);

            /* header protection: the 5 mask bytes ngtcp2 uses; an odd
             * address, as a sample inside a packet has */
            assert_int_equal(quic_crypto_hp_mask_cb(ma, &hp, &hours, a + 1), 0);
            assert_int_equal(quic_crypto_hp_mask_cb(mb, &hp, &hglue, a + 1), 0);
            assert_memory_equal(ma, mb, 5);
        }
        quic_crypto_delete_aead_ctx_cb(NULL, &ours, NULL);
        quic_crypto_delete_aead_ctx_cb(NULL, &genc, NULL);
        quic_crypto_delete_aead_ctx_cb(NULL, &gdec, NULL);
        quic_crypto_delete_cipher_ctx_cb(NULL, &hours, NULL);
        quic_crypto_delete_cipher_ctx_cb(NULL, &hglue, NULL);
        assert_null(ours.native_handle);
        assert_null(hours.native_handle);
    }
}

static void unhex(uint8_t *out, const char *hex)
{
    for (size_t i = 0; hex[2 * i]; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

/* RFC 9001 A.5: a short-header packet with payload 01, packet number
 * 654360564, under the keys derived there. */
static void test_rfc9001_chacha20_example(void **state)
{
    ngtcp2_crypto_aead aead = aead_of(&suites[2]);
    ngtcp2_crypto_cipher hp = {.native_handle = (void *)wolfSSL_EVP_chacha20()};
    ngtcp2_crypto_aead_ctx actx = {0};
    ngtcp2_crypto_cipher_ctx hctx = {0};
    uint8_t key[32], hpkey[32], iv[12], want[17], got[17], mask[16], wmask[5], pt[1];
    const uint8_t hdr[] = {0x42, 0x00, 0xbf, 0xf4};
    const uint64_t pn = 654360564;
    (void)state;

    unhex(key, "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8");
    unhex(iv, "e0459b3474bdd0e44a41c144");
    unhex(hpkey, "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4");
    unhex(want, "655e5cd55c41f69080575d7999c25a5bfb");
    unhex(wmask, "aefefe7d03");
    for (int i = 0; i < 8; i++) /* the nonce: the IV xor the packet number */
        iv[11 - i] ^= (uint8_t)(pn >> (8 * i));
    assert_int_equal(quic_crypto_aead_ctx_init(&actx, &aead, key), 0);
    assert_int_equal(quic_crypto_hp_ctx_init(&hctx, &aead, hpkey), 0);
    pt[0] = 0x01;
    assert_int_equal(quic_crypto_encrypt_cb(got, &aead, &actx, pt, 1, iv, 12, hdr, sizeof(hdr)),
                     0);
    assert_memory_equal(got, want, sizeof(want));
    /* the sample starts 4 bytes after the packet number's first byte:
     * here, the ciphertext's second byte */
    assert_int_equal(quic_crypto_hp_mask_cb(mask, &hp, &hctx, got + 1), 0);
    assert_memory_equal(mask, wmask, sizeof(wmask));
    quic_crypto_delete_aead_ctx_cb(NULL, &actx, NULL);
    quic_crypto_delete_cipher_ctx_cb(NULL, &hctx, NULL);
}

/* RFC 9001 A.5 again: the key, IV, header-protection key and next secret
 * derived from its 1-RTT secret (HKDF-SHA256, QUIC v1 labels). */
static void test_rfc9001_chacha20_keys(void **state)
{
    ngtcp2_crypto_ctx ctx = {.aead = aead_of(&suites[2]),
                             .md = {.native_handle = (void *)wolfSSL_EVP_sha256()}};
    uint8_t secret[32], key[32], iv[12], hp[32], ku[32], want[32];
    (void)state;

    unhex(secret, "9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b");
    assert_int_equal(quic_crypto_derive(key, iv, hp, &ctx, NGTCP2_PROTO_VER_V1, secret, 32), 0);
    unhex(want, "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8");
    assert_memory_equal(key, want, 32);
    unhex(want, "e0459b3474bdd0e44a41c144");
    assert_memory_equal(iv, want, 12);
    unhex(want, "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4");
    assert_memory_equal(hp, want, 32);
    assert_int_equal(quic_crypto_next_secret(ku, &ctx, NGTCP2_PROTO_VER_V1, secret, 32), 0);
    unhex(want, "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9");
    assert_memory_equal(ku, want, 32);
}

/* A cipher the module leaves to the glue gets no context of ours. */
static void test_other_ciphers_are_refused(void **state)
{
    ngtcp2_crypto_aead aead = {.native_handle = (void *)wolfSSL_EVP_aes_128_cbc()};
    ngtcp2_crypto_aead_ctx actx = {0};
    ngtcp2_crypto_cipher_ctx hctx = {0};
    uint8_t key[32] = {0};
    (void)state;

    assert_int_equal(quic_crypto_aead_ctx_init(&actx, &aead, key), -1);
    assert_int_equal(quic_crypto_hp_ctx_init(&hctx, &aead, key), -1);
    assert_null(actx.native_handle);
    assert_null(hctx.native_handle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_glue),
        cmocka_unit_test(test_rfc9001_chacha20_example),
        cmocka_unit_test(test_rfc9001_chacha20_keys),
        cmocka_unit_test(test_other_ciphers_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

static void test_no_tls(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_tls)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
