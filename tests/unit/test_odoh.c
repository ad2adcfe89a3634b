/* Unit tests for HPKE (src/upstream/hpke.h) and the ODoH wire format
 * (src/upstream/odoh_msg.h) against the published vectors in shared/testdata:
 * RFC 9180 A.1.1 (the key schedule, every encryption and export) and the
 * RFC 9230 suite (every query and response opened, each key_id reproduced),
 * then round trips and tables of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "upstream/hpke.h"
#include "upstream/odoh_msg.h"

#define HPKE_VECTORS DV_SHARED_DIR "/testdata/hpke-rfc9180-a11-base.json"
#define ODOH_VECTORS DV_SHARED_DIR "/testdata/odoh-test-vectors.json"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        fail_msg("cannot open test data %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* The flat JSON of the vector files is read by key: the value of the first
 * "key" at or after *pos, which moves past it. Hex strings and integers only. */
static const char *find_key(const char *s, const char **pos, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\"", key);
    p = strstr(*pos, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    *pos = p;
    (void)s;
    return p;
}

static size_t hex_at(const char *p, uint8_t *out, size_t cap)
{
    size_t n = 0;

    assert_int_equal(*p, '"');
    for (p++; *p != '"'; p += 2) {
        unsigned v;
        assert_true(n < cap);
        assert_int_equal(sscanf(p, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static size_t hex(const char *s, const char **pos, const char *key, uint8_t *out, size_t cap)
{
    const char *p = find_key(s, pos, key);

    if (!p)
        fail_msg("no \"%s\" in the test data", key);
    return hex_at(p, out, cap);
}

static long num(const char *s, const char **pos, const char *key)
{
    const char *p = find_key(s, pos, key);

    if (!p)
        fail_msg("no \"%s\" in the test data", key);
    return strtol(p, NULL, 10);
}

/* ---------------------------------------------------------- RFC 9180 A.1.1 */

static void test_hpke_rfc9180_a11(void **state)
{
    char *js = read_file(HPKE_VECTORS);
    const char *pos = js;
    uint8_t info[64], skEm[32], pkEm[32], skRm[32], pkRm[32], ikmE[32], ikmR[32];
    uint8_t enc[32], key[16], nonce[12], exp[32], sk[32], pk[32];
    size_t infolen;
    struct hpke_ctx s, r;

    infolen = hex(js, &pos, "info", info, sizeof(info));
    hex(js, &pos, "ikmE", ikmE, sizeof(ikmE));
    hex(js, &pos, "pkEm", pkEm, sizeof(pkEm));
    hex(js, &pos, "skEm", skEm, sizeof(skEm));
    hex(js, &pos, "ikmR", ikmR, sizeof(ikmR));
    hex(js, &pos, "pkRm", pkRm, sizeof(pkRm));
    hex(js, &pos, "skRm", skRm, sizeof(skRm));

    /* DeriveKeyPair reproduces both key pairs */
    assert_int_equal(hpke_derive_keypair(ikmE, sizeof(ikmE), sk, pk), 0);
    assert_memory_equal(sk, skEm, 32);
    assert_memory_equal(pk, pkEm, 32);
    assert_int_equal(hpke_derive_keypair(ikmR, sizeof(ikmR), sk, pk), 0);
    assert_memory_equal(sk, skRm, 32);
    assert_memory_equal(pk, pkRm, 32);

    assert_int_equal(hpke_setup_sender(pkRm, info, infolen, skEm, enc, &s), 0);
    assert_int_equal(hpke_setup_receiver(skRm, enc, info, infolen, &r), 0);
    hex(js, &pos, "enc", pk, sizeof(pk));
    assert_memory_equal(enc, pk, 32);
    hex(js, &pos, "key", key, sizeof(key));
    assert_memory_equal(s.key, key, 16);
    assert_memory_equal(r.key, key, 16);
    hex(js, &pos, "base_nonce", nonce, sizeof(nonce));
    assert_memory_equal(s.base_nonce, nonce, 12);
    hex(js, &pos, "exporter_secret", exp, sizeof(exp));
    assert_memory_equal(s.exporter_secret, exp, 32);
    assert_memory_equal(r.exporter_secret, exp, 32);

    /* every encryption, at its sequence number, both ways */
    const char *enc_end = strstr(pos, "\"exports\"");
    unsigned n_enc = 0;
    assert_non_null(enc_end);
    for (const char *p = pos; (p = strstr(p, "\"seq\"")) && p < enc_end; n_enc++) {
        uint8_t pt[128], aad[64], ct[160], out[160];
        size_t ptlen, aadlen, ctlen;
        s.seq = r.seq = (uint64_t)num(js, &p, "seq");
        ptlen = hex(js, &p, "pt", pt, sizeof(pt));
        aadlen = hex(js, &p, "aad", aad, sizeof(aad));
        ctlen = hex(js, &p, "ct", ct, sizeof(ct));
        assert_int_equal(ctlen, ptlen + HPKE_NT);
        assert_int_equal(hpke_seal(&s, aad, aadlen, pt, ptlen, out), 0);
        assert_memory_equal(out, ct, ctlen);
        assert_int_equal(hpke_open(&r, aad, aadlen, ct, ctlen, out), 0);
        assert_memory_equal(out, pt, ptlen);
        /* one flipped bit anywhere fails authentication */
        ct[ctlen / 2] ^= 1;
        r.seq--;
        assert_int_equal(hpke_open(&r, aad, aadlen, ct, ctlen, out), DV_EPROTO);
    }
    assert_int_equal(n_enc, 5);

    /* every export */
    unsigned n_exp = 0;
    for (const char *p = enc_end; strstr(p, "\"exporter_context\""); n_exp++) {
        uint8_t ectx[64], want[64], got[64];
        size_t elen = hex(js, &p, "exporter_context", ectx, sizeof(ectx));
        size_t L = (size_t)num(js, &p, "L");
        assert_int_equal(hex(js, &p, "exported_value", want, sizeof(want)), L);
        assert_int_equal(hpke_export(&s, ectx, elen, got, L), 0);
        assert_memory_equal(got, want, L);
        assert_int_equal(hpke_export(&r, ectx, elen, got, L), 0);
        assert_memory_equal(got, want, L);
    }
    assert_int_equal(n_exp, 3);
    free(js);
}

/* A public key of all zeros is a small-order point: the shared secret would
 * be zero, which RFC 9180 7.1.4 refuses. */
static void test_hpke_small_order_key(void **state)
{
    uint8_t zero[32] = {0}, enc[32];
    struct hpke_ctx s;

    assert_int_equal(hpke_setup_sender(zero, NULL, 0, NULL, enc, &s), DV_EINVAL);
}

/* ---------------------------------------------------------- RFC 9230 suite */

static void test_odoh_vectors(void **state)
{
    char *js = read_file(ODOH_VECTORS);
    const char *pos = js;
    unsigned n_suites = 0, n_tx = 0;

    while (strstr(pos, "\"odohconfigs\"")) {
        uint8_t configs[512], seed[64], key_id[32], sk[32], pk[32];
        size_t clen, slen;
        struct odoh_config cfg;
        const char *next;

        assert_int_equal(num(js, &pos, "kem_id"), HPKE_KEM_X25519_SHA256);
        assert_int_equal(num(js, &pos, "kdf_id"), HPKE_KDF_SHA256);
        assert_int_equal(num(js, &pos, "aead_id"), HPKE_AEAD_AES128GCM);
        clen = hex(js, &pos, "odohconfigs", configs, sizeof(configs));
        slen = hex(js, &pos, "public_key_seed", seed, sizeof(seed));
        hex(js, &pos, "key_id", key_id, sizeof(key_id));
        assert_int_equal(odoh_configs_parse(configs, clen, &cfg), 0);
        assert_memory_equal(cfg.key_id, key_id, 32);
        assert_int_equal(hpke_derive_keypair(seed, slen, sk, pk), 0);
        assert_memory_equal(pk, cfg.pk, 32);

        next = strstr(pos, "\"odohconfigs\"");
        for (const char *p = pos; (p = strstr(p, "\"query\"")) && (!next || p < next); n_tx++) {
            uint8_t q[1024], r[1024], oq[2048], orsp[2048], *dns, *ans;
            size_t qlen, rlen, oqlen, orlen, dlen, alen;
            long qpad, rpad;
            struct odoh_query st;

            qlen = hex(js, &p, "query", q, sizeof(q));
            qpad = num(js, &p, "queryPaddingLength");
            rlen = hex(js, &p, "response", r, sizeof(r));
            rpad = num(js, &p, "responsePaddingLength");
            oqlen = hex(js, &p, "obliviousQuery", oq, sizeof(oq));
            orlen = hex(js, &p, "obliviousResponse", orsp, sizeof(orsp));

            /* the target opens the query ... */
            assert_int_equal(odoh_query_open(sk, &cfg, oq, oqlen, &st, &dns, &dlen), 0);
            assert_int_equal(dlen, qlen);
            assert_memory_equal(dns, q, qlen);
            assert_int_equal(st.plain_len, 4 + qlen + (size_t)qpad);
            free(dns);
            /* ... and the client opens the answer with the keys of 6.2 */
            assert_int_equal(odoh_response_open(&st, orsp, orlen, &ans, &alen), 0);
            assert_int_equal(alen, rlen);
            assert_memory_equal(ans, r, rlen);
            assert_int_equal(orlen, 1 + 2 + 16 + 2 + 4 + rlen + (size_t)rpad + 16);
            free(ans);
            /* a flipped bit in the ciphertext: authentication fails, cleanly */
            orsp[orlen - 20] ^= 0x80;
            assert_int_equal(odoh_response_open(&st, orsp, orlen, &ans, &alen), DV_EPROTO);
            orsp[orlen - 20] ^= 0x80;
            /* a flipped bit in the response nonce changes key and AAD */
            orsp[5] ^= 1;
            assert_int_equal(odoh_response_open(&st, orsp, orlen, &ans, &alen), DV_EPROTO);
            odoh_query_free(&st);
            /* a flipped bit in the query's sealed part */
            oq[oqlen - 1] ^= 1;
            assert_int_equal(odoh_query_open(sk, &cfg, oq, oqlen, &st, &dns, &dlen), DV_EPROTO);
        }
        n_suites++;
        if (!next)
            break;
        pos = next;
    }
    assert_int_equal(n_suites, 1);
    assert_int_equal(n_tx, 16);
    free(js);
}

/* Our sealing, opened by the target side, answered and opened again; the
 * plaintext padded to the block. */
static void test_odoh_round_trip(void **state)
{
    static const uint8_t seed[32] = {1, 2, 3};
    static const uint8_t q[] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w', 'w',
                                4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    static const uint8_t a[] = {0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0};
    uint8_t configs[46] = {0, 44, 0, 1, 0, 40, 0, 0x20, 0, 1, 0, 1, 0, 32}, sk[32];
    uint8_t *msg, *dns, *rmsg, *ans;
    size_t mlen, dlen, rlen, alen;
    struct odoh_config cfg;
    struct odoh_query cq, tq;

    assert_int_equal(hpke_derive_keypair(seed, sizeof(seed), sk, configs + 14), 0);
    assert_int_equal(odoh_configs_parse(configs, sizeof(configs), &cfg), 0);
    for (size_t block = 0; block <= 256; block += 128) {
        assert_int_equal(odoh_query_seal(&cfg, q, sizeof(q), block, NULL, &cq, &msg, &mlen), 0);
        assert_int_equal(cq.plain_len % (block ? block : 1), 0);
        assert_int_equal(mlen, 1 + 2 + 32 + 2 + 32 + cq.plain_len + 16);
        assert_int_equal(odoh_query_open(sk, &cfg, msg, mlen, &tq, &dns, &dlen), 0);
        assert_int_equal(dlen, sizeof(q));
        assert_memory_equal(dns, q, sizeof(q));
        assert_memory_equal(tq.secret, cq.secret, sizeof(cq.secret));
        assert_int_equal(odoh_response_seal(&tq, NULL, a, sizeof(a), block, &rmsg, &rlen), 0);
        assert_int_equal(odoh_response_open(&cq, rmsg, rlen, &ans, &alen), 0);
        assert_int_equal(alen, sizeof(a));
        assert_memory_equal(ans, a, sizeof(a));
        free(rmsg);
        free(ans);
        free(dns);
        odoh_query_free(&cq);
        odoh_query_free(&tq);
        /* a key_id that is not the config's is a mismatch (the target says 401) */
        msg[3] ^= 1;
        assert_int_equal(odoh_query_open(sk, &cfg, msg, mlen, &tq, &dns, &dlen), DV_EMISMATCH);
        free(msg);
    }
}

/* ObliviousDoHConfigs: the first usable config wins; others are skipped by
 * their length; malformed lists are told apart from unsupported ones. */
static void test_odoh_configs_table(void **state)
{
    static const struct {
        const char *what;
        const char *hex;
        int rc;
    } cases[] = {
        {"empty", "", DV_EMALFORMED},
        {"zero-length list", "0000", DV_EMALFORMED},
        {"list longer than input", "0030000100280020000100010020", DV_EMALFORMED},
        {"list shorter than input", "0004000200000000", DV_EMALFORMED},
        {"config longer than list", "0008000100100020000100010000", DV_EMALFORMED},
        {"unknown version only", "0006 00ff 0002 abcd", DV_ENOTIMP},
        {"P-256 suite only", "000d 0001 0009 0010 0001 0001 0001 04", DV_ENOTIMP},
        {"AES-256 suite only", "000d 0001 0009 0020 0001 0002 0001 04", DV_ENOTIMP},
        {"contents length disagrees", "000e 0001 000a 0020 0001 0001 0001 04 00", DV_EMALFORMED},
        {"empty public key", "000c 0001 0008 0020 0001 0001 0000", DV_EMALFORMED},
        {"short X25519 key", "000d 0001 0009 0020 0001 0001 0001 04", DV_ENOTIMP},
    };
    struct odoh_config cfg;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t b[64];
        size_t n = 0;
        for (const char *p = cases[i].hex; *p;) {
            unsigned v;
            if (*p == ' ') {
                p++;
                continue;
            }
            assert_int_equal(sscanf(p, "%2x", &v), 1);
            b[n++] = (uint8_t)v;
            p += 2;
        }
        int rc = odoh_configs_parse(b, n, &cfg);
        if (rc != cases[i].rc)
            fail_msg("%s: got %d, want %d", cases[i].what, rc, cases[i].rc);
    }
}

/* A config of an unknown version first, then ours: ours is picked. */
static void test_odoh_configs_skip_unknown(void **state)
{
    uint8_t b[64] = {0, 6 + 44, 0x00, 0xff, 0, 2, 0xab, 0xcd, 0, 1, 0, 40, 0, 0x20, 0, 1, 0, 1,
                     0, 32};
    struct odoh_config cfg;

    for (int i = 0; i < 32; i++)
        b[20 + i] = (uint8_t)(i + 9);
    assert_int_equal(odoh_configs_parse(b, 52, &cfg), 0);
    assert_memory_equal(cfg.pk, b + 20, 32);
}

/* A table row: bytes, and what the parser under test must say of them. */
struct bytes_case {
    const char *what;
    uint8_t b[12];
    size_t n;
    int rc;
};

static void run_cases(const struct bytes_case *c, size_t n,
                      int (*parse)(const uint8_t *, size_t))
{
    for (size_t i = 0; i < n; i++) {
        int rc = parse(c[i].b, c[i].n);
        if (rc != c[i].rc)
            fail_msg("%s: got %d, want %d", c[i].what, rc, c[i].rc);
    }
}

static int plain_parse(const uint8_t *b, size_t n)
{
    const uint8_t *dns;
    size_t dlen;
    int rc = odoh_plain_parse(b, n, &dns, &dlen);

    if (rc == 0 && !(dlen == 1 && dns[0] == 0xaa))
        fail_msg("the message is not the one byte 0xaa");
    return rc;
}

static int msg_parse(const uint8_t *b, size_t n)
{
    struct odoh_msg m;

    return odoh_msg_parse(b, n, &m);
}

static void test_odoh_plain_table(void **state)
{
    static const struct bytes_case cases[] = {
        {"ok, no padding", {0, 1, 0xaa, 0, 0}, 5, 0},
        {"ok, padded", {0, 1, 0xaa, 0, 3, 0, 0, 0}, 8, 0},
        {"nonzero padding", {0, 1, 0xaa, 0, 3, 0, 1, 0}, 8, DV_EMALFORMED},
        {"empty message", {0, 0, 0, 0}, 4, DV_EMALFORMED},
        {"no padding length", {0, 1, 0xaa}, 3, DV_EMALFORMED},
        {"padding short", {0, 1, 0xaa, 0, 3, 0, 0}, 7, DV_EMALFORMED},
        {"trailing byte", {0, 1, 0xaa, 0, 0, 0}, 6, DV_EMALFORMED},
        {"message past end", {0, 9, 0xaa}, 3, DV_EMALFORMED},
    };

    run_cases(cases, sizeof(cases) / sizeof(cases[0]), plain_parse);
}

static void test_odoh_msg_table(void **state)
{
    static const struct bytes_case cases[] = {
        {"query", {1, 0, 1, 0xaa, 0, 1, 0xbb}, 7, 0},
        {"response", {2, 0, 0, 0, 2, 0xbb, 0xcc}, 7, 0},
        {"unknown type", {3, 0, 0, 0, 1, 0xbb}, 6, DV_EMALFORMED},
        {"empty ciphertext", {1, 0, 0, 0, 0}, 5, DV_EMALFORMED},
        {"key_id past end", {1, 0, 9, 0xaa}, 4, DV_EMALFORMED},
        {"ciphertext short", {1, 0, 0, 0, 3, 0xbb}, 6, DV_EMALFORMED},
        {"trailing byte", {1, 0, 0, 0, 1, 0xbb, 0}, 7, DV_EMALFORMED},
        {"truncated header", {1, 0}, 2, DV_EMALFORMED},
    };

    run_cases(cases, sizeof(cases) / sizeof(cases[0]), msg_parse);
}

int main(void)
{
#ifndef DV_HAVE_TLS
    /* HPKE needs wolfCrypt: without it there is nothing to test */
    return 0;
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hpke_rfc9180_a11),
        cmocka_unit_test(test_hpke_small_order_key),
        cmocka_unit_test(test_odoh_vectors),
        cmocka_unit_test(test_odoh_round_trip),
        cmocka_unit_test(test_odoh_configs_table),
        cmocka_unit_test(test_odoh_configs_skip_unknown),
        cmocka_unit_test(test_odoh_plain_table),
        cmocka_unit_test(test_odoh_msg_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
