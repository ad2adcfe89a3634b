#include "upstream/odoh_msg.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rand.h"
#include "dns/dns.h"

static const char info_query[] = "odoh query";
static const char label_response[] = "odoh response";

int odoh_key_id(const uint8_t *contents, size_t len, uint8_t key_id[ODOH_KEY_ID_LEN])
{
    static const char label[] = "odoh key id";
    uint8_t prk[HPKE_NH];
    int rc = hpke_kdf_extract(NULL, 0, contents, len, prk);

    if (rc == 0)
        rc = hpke_kdf_expand(prk, (const uint8_t *)label, sizeof(label) - 1, key_id,
                             ODOH_KEY_ID_LEN);
    return rc;
}

int odoh_configs_parse(const uint8_t *in, size_t len, struct odoh_config *cfg)
{
    struct dns_cur c;
    size_t total, end;
    int found = 0;

    dns_cur_init(&c, in, len);
    total = dns_cur_u16(&c);
    if (c.err || total == 0 || total != dns_cur_left(&c))
        return DV_EMALFORMED;
    end = c.pos + total;
    while (c.pos < end) {
        uint16_t version = dns_cur_u16(&c);
        size_t clen = dns_cur_u16(&c), at = c.pos;
        if (c.err || clen > end - c.pos)
            return DV_EMALFORMED;
        if (version == ODOH_VERSION && !found) {
            uint16_t kem = dns_cur_u16(&c), kdf = dns_cur_u16(&c), aead = dns_cur_u16(&c);
            size_t pklen = dns_cur_u16(&c);
            /* the contents must be exactly the four fields */
            if (c.err || clen != 8 + pklen || pklen == 0)
                return DV_EMALFORMED;
            if (kem == HPKE_KEM_X25519_SHA256 && kdf == HPKE_KDF_SHA256 &&
                aead == HPKE_AEAD_AES128GCM && pklen == HPKE_NPK) {
                dns_cur_read(&c, cfg->pk, HPKE_NPK);
                if (odoh_key_id(in + at, clen, cfg->key_id))
                    return DV_EINVAL;
                found = 1;
            }
        }
        /* later versions may carry anything: skipped by their length */
        dns_cur_seek(&c, at + clen);
    }
    if (c.err)
        return DV_EMALFORMED;
    return found ? 0 : DV_ENOTIMP;
}

int odoh_msg_parse(const uint8_t *in, size_t len, struct odoh_msg *m)
{
    struct dns_cur c;

    dns_cur_init(&c, in, len);
    m->type = dns_cur_u8(&c);
    m->key_id_len = dns_cur_u16(&c);
    if (c.err || m->key_id_len > dns_cur_left(&c))
        return DV_EMALFORMED;
    m->key_id = in + c.pos;
    dns_cur_skip(&c, m->key_id_len);
    m->ct_len = dns_cur_u16(&c);
    if (c.err || m->ct_len == 0 || m->ct_len != dns_cur_left(&c))
        return DV_EMALFORMED;
    m->ct = in + c.pos;
    if (m->type != ODOH_MSG_QUERY && m->type != ODOH_MSG_RESPONSE)
        return DV_EMALFORMED;
    return 0;
}

int odoh_plain_parse(const uint8_t *in, size_t len, const uint8_t **pdns, size_t *pdnslen)
{
    struct dns_cur c;
    size_t n, pad;
    uint8_t acc = 0;

    dns_cur_init(&c, in, len);
    n = dns_cur_u16(&c);
    if (c.err || n == 0 || n > dns_cur_left(&c))
        return DV_EMALFORMED;
    *pdns = in + c.pos;
    *pdnslen = n;
    dns_cur_skip(&c, n);
    pad = dns_cur_u16(&c);
    if (c.err || pad != dns_cur_left(&c))
        return DV_EMALFORMED;
    for (size_t i = c.pos; i < len; i++)
        acc |= in[i];
    return acc ? DV_EMALFORMED : 0;
}

/* ObliviousDoHMessagePlaintext of dns, zero-padded to a multiple of block. */
static int plain_build(const uint8_t *dns, size_t len, size_t block, uint8_t **pout,
                       size_t *poutlen)
{
    size_t n = 4 + len, pad = 0;
    uint8_t *p;

    if (len == 0 || len > 0xffff)
        return DV_EINVAL;
    if (block > 1 && n % block)
        pad = block - n % block;
    if (pad > 0xffff)
        return DV_EINVAL;
    p = calloc(1, n + pad);
    if (!p)
        return DV_ENOMEM;
    dns_put16(p, (uint16_t)len);
    memcpy(p + 2, dns, len);
    dns_put16(p + 2 + len, (uint16_t)pad);
    *pout = p;
    *poutlen = n + pad;
    return 0;
}

/* message_type || key_id<0..2^16-1> as the AAD of both directions (6.3, 6.4). */
static size_t aad_build(uint8_t *aad, uint8_t type, const uint8_t *id, size_t idlen)
{
    aad[0] = type;
    dns_put16(aad + 1, (uint16_t)idlen);
    memcpy(aad + 3, id, idlen);
    return 3 + idlen;
}

/* An ObliviousDoHMessage: type, key_id, then enc || ct or ct as one field. */
static int msg_build(uint8_t type, const uint8_t *id, size_t idlen, const uint8_t *pre,
                     size_t prelen, const uint8_t *ct, size_t ctlen, uint8_t **pout,
                     size_t *poutlen)
{
    size_t n = 1 + 2 + idlen + 2 + prelen + ctlen;
    uint8_t *p;

    if (prelen + ctlen > 0xffff)
        return DV_EINVAL;
    if (!(p = malloc(n)))
        return DV_ENOMEM;
    p[0] = type;
    dns_put16(p + 1, (uint16_t)idlen);
    memcpy(p + 3, id, idlen);
    dns_put16(p + 3 + idlen, (uint16_t)(prelen + ctlen));
    if (prelen)
        memcpy(p + 5 + idlen, pre, prelen);
    memcpy(p + 5 + idlen + prelen, ct, ctlen);
    *pout = p;
    *poutlen = n;
    return 0;
}

void odoh_query_free(struct odoh_query *q)
{
    explicit_bzero(q->secret, sizeof(q->secret));
    free(q->plain);
    q->plain = NULL;
    q->plain_len = 0;
}

/* The response key and nonce (6.2) from the query's exported secret, its
 * plaintext and the response nonce. */
static int response_keys(const struct odoh_query *q, const uint8_t *nonce, uint8_t key[HPKE_NK],
                         uint8_t iv[HPKE_NN])
{
    static const char lkey[] = "odoh key", lnonce[] = "odoh nonce";
    uint8_t prk[HPKE_NH], *salt;
    size_t slen = q->plain_len + 2 + ODOH_NONCE_LEN;
    int rc;

    if (!(salt = malloc(slen)))
        return DV_ENOMEM;
    memcpy(salt, q->plain, q->plain_len);
    dns_put16(salt + q->plain_len, ODOH_NONCE_LEN);
    memcpy(salt + q->plain_len + 2, nonce, ODOH_NONCE_LEN);
    rc = hpke_kdf_extract(salt, slen, q->secret, sizeof(q->secret), prk);
    free(salt);
    if (rc == 0)
        rc = hpke_kdf_expand(prk, (const uint8_t *)lkey, sizeof(lkey) - 1, key, HPKE_NK);
    if (rc == 0)
        rc = hpke_kdf_expand(prk, (const uint8_t *)lnonce, sizeof(lnonce) - 1, iv, HPKE_NN);
    explicit_bzero(prk, sizeof(prk));
    return rc;
}

int odoh_query_seal(const struct odoh_config *cfg, const uint8_t *dns, size_t len,
                    size_t pad_block, const uint8_t *skE, struct odoh_query *q, uint8_t **pout,
                    size_t *poutlen)
{
    uint8_t enc[HPKE_NPK], aad[3 + ODOH_KEY_ID_LEN], *ct = NULL;
    struct hpke_ctx ctx;
    size_t aadlen;
    int rc;

    memset(q, 0, sizeof(*q));
    rc = plain_build(dns, len, pad_block, &q->plain, &q->plain_len);
    if (rc)
        return rc;
    rc = hpke_setup_sender(cfg->pk, (const uint8_t *)info_query, sizeof(info_query) - 1, skE,
                           enc, &ctx);
    if (rc)
        goto out;
    aadlen = aad_build(aad, ODOH_MSG_QUERY, cfg->key_id, ODOH_KEY_ID_LEN);
    rc = DV_ENOMEM;
    if (!(ct = malloc(q->plain_len + HPKE_NT)))
        goto out;
    rc = hpke_seal(&ctx, aad, aadlen, q->plain, q->plain_len, ct);
    if (rc == 0)
        rc = hpke_export(&ctx, (const uint8_t *)label_response, sizeof(label_response) - 1,
                         q->secret, sizeof(q->secret));
    if (rc == 0)
        rc = msg_build(ODOH_MSG_QUERY, cfg->key_id, ODOH_KEY_ID_LEN, enc, sizeof(enc), ct,
                       q->plain_len + HPKE_NT, pout, poutlen);
out:
    hpke_ctx_wipe(&ctx);
    free(ct);
    if (rc)
        odoh_query_free(q);
    return rc;
}

/* Opens m's ciphertext with key/iv into a fresh plaintext and finds the DNS
 * message in it, copied out. */
static int open_plain(const uint8_t key[HPKE_NK], const uint8_t iv[HPKE_NN], const uint8_t *aad,
                      size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t **pdns,
                      size_t *pdnslen)
{
    const uint8_t *dns;
    uint8_t *pt;
    size_t n;
    int rc;

    if (ctlen < HPKE_NT)
        return DV_EPROTO;
    if (!(pt = malloc(ctlen - HPKE_NT + 1)))
        return DV_ENOMEM;
    rc = hpke_aead_open(key, iv, aad, aadlen, ct, ctlen, pt);
    if (rc == 0)
        rc = odoh_plain_parse(pt, ctlen - HPKE_NT, &dns, &n);
    if (rc == 0) {
        memmove(pt, dns, n);
        *pdns = pt;
        *pdnslen = n;
        return 0;
    }
    free(pt);
    return rc;
}

int odoh_response_open(const struct odoh_query *q, const uint8_t *msg, size_t len,
                       uint8_t **pdns, size_t *pdnslen)
{
    uint8_t key[HPKE_NK], iv[HPKE_NN], aad[3 + ODOH_NONCE_LEN];
    struct odoh_msg m;
    int rc = odoh_msg_parse(msg, len, &m);

    if (rc)
        return rc;
    if (m.type != ODOH_MSG_RESPONSE || m.key_id_len != ODOH_NONCE_LEN)
        return DV_EMALFORMED;
    rc = response_keys(q, m.key_id, key, iv);
    if (rc == 0)
        rc = open_plain(key, iv, aad, aad_build(aad, ODOH_MSG_RESPONSE, m.key_id, m.key_id_len),
                        m.ct, m.ct_len, pdns, pdnslen);
    explicit_bzero(key, sizeof(key));
    explicit_bzero(iv, sizeof(iv));
    return rc;
}

int odoh_query_open(const uint8_t skR[HPKE_NSK], const struct odoh_config *cfg,
                    const uint8_t *msg, size_t len, struct odoh_query *q, uint8_t **pdns,
                    size_t *pdnslen)
{
    uint8_t aad[3 + ODOH_KEY_ID_LEN], *pt;
    struct hpke_ctx ctx;
    struct odoh_msg m;
    const uint8_t *dns;
    size_t ptlen, n;
    int rc = odoh_msg_parse(msg, len, &m);

    memset(q, 0, sizeof(*q));
    if (rc)
        return rc;
    if (m.type != ODOH_MSG_QUERY || m.ct_len < HPKE_NPK + HPKE_NT)
        return DV_EMALFORMED;
    if (m.key_id_len != ODOH_KEY_ID_LEN || memcmp(m.key_id, cfg->key_id, ODOH_KEY_ID_LEN))
        return DV_EMISMATCH;
    rc = hpke_setup_receiver(skR, m.ct, (const uint8_t *)info_query, sizeof(info_query) - 1,
                             &ctx);
    if (rc)
        return DV_EPROTO;
    ptlen = m.ct_len - HPKE_NPK - HPKE_NT;
    rc = DV_ENOMEM;
    if (!(pt = malloc(ptlen + 1)))
        goto out;
    rc = hpke_open(&ctx, aad, aad_build(aad, ODOH_MSG_QUERY, m.key_id, m.key_id_len),
                   m.ct + HPKE_NPK, m.ct_len - HPKE_NPK, pt);
    if (rc == 0)
        rc = odoh_plain_parse(pt, ptlen, &dns, &n);
    if (rc == 0)
        rc = hpke_export(&ctx, (const uint8_t *)label_response, sizeof(label_response) - 1,
                         q->secret, sizeof(q->secret));
    if (rc == 0 && !(*pdns = malloc(n)))
        rc = DV_ENOMEM;
    if (rc == 0) {
        memcpy(*pdns, dns, n);
        *pdnslen = n;
        q->plain = pt;
        q->plain_len = ptlen;
        pt = NULL;
    }
    free(pt);
out:
    hpke_ctx_wipe(&ctx);
    if (rc)
        odoh_query_free(q);
    return rc;
}

int odoh_response_seal(const struct odoh_query *q, const uint8_t *nonce, const uint8_t *dns,
                       size_t len, size_t pad_block, uint8_t **pout, size_t *poutlen)
{
    uint8_t key[HPKE_NK], iv[HPKE_NN], aad[3 + ODOH_NONCE_LEN], rn[ODOH_NONCE_LEN];
    uint8_t *plain = NULL, *ct = NULL;
    size_t plen;
    int rc;

    if (nonce)
        memcpy(rn, nonce, sizeof(rn));
    else
        rand_bytes(rn, sizeof(rn));
    rc = plain_build(dns, len, pad_block, &plain, &plen);
    if (rc == 0)
        rc = response_keys(q, rn, key, iv);
    if (rc == 0 && !(ct = malloc(plen + HPKE_NT)))
        rc = DV_ENOMEM;
    if (rc == 0)
        rc = hpke_aead_seal(key, iv, aad, aad_build(aad, ODOH_MSG_RESPONSE, rn, sizeof(rn)),
                            plain, plen, ct);
    if (rc == 0)
        rc = msg_build(ODOH_MSG_RESPONSE, rn, sizeof(rn), NULL, 0, ct, plen + HPKE_NT, pout,
                       poutlen);
    explicit_bzero(key, sizeof(key));
    explicit_bzero(iv, sizeof(iv));
    free(plain);
    free(ct);
    return rc;
}
