/* libFuzzer target for the ODoH parsers (src/upstream/odoh_msg.h): the
 * target's ObliviousDoHConfigs (fetched over the network), the message and
 * plaintext framing, and the two openers, which must fail cleanly on
 * anything that is not what a real peer sealed.
 *
 * The first byte picks the parser; the rest is its input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "upstream/odoh_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed target key and a client query to it, made once. */
static struct odoh_config cfg;
static struct odoh_query query;
static uint8_t sk[HPKE_NSK];

static void setup(void)
{
    static const uint8_t seed[32] = {7};
    static const uint8_t q[] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1};
    uint8_t configs[46] = {0, 44, 0, 1, 0, 40, 0, 0x20, 0, 1, 0, 1, 0, 32}, *msg;
    size_t mlen;

    if (hpke_derive_keypair(seed, sizeof(seed), sk, configs + 14) ||
        odoh_configs_parse(configs, sizeof(configs), &cfg) ||
        odoh_query_seal(&cfg, q, sizeof(q), 128, NULL, &query, &msg, &mlen))
        abort();
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct odoh_config c;
    struct odoh_msg m;
    struct odoh_query tq;
    const uint8_t *dns;
    uint8_t *out, *in;
    size_t n, olen;
    int rc;

#ifndef DV_HAVE_TLS
    return 0; /* HPKE needs wolfCrypt */
#endif
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    /* a copy of exactly the input, so a read past it is caught */
    n = size - 1;
    if (!(in = malloc(n ? n : 1)))
        return 0;
    memcpy(in, data + 1, n);
    switch (data[0] % 5) {
    case 0:
        rc = odoh_configs_parse(in, n, &c);
        if (rc != 0 && rc != DV_EMALFORMED && rc != DV_ENOTIMP)
            abort();
        break;
    case 1:
        if (odoh_msg_parse(in, n, &m) == 0 &&
            (m.key_id + m.key_id_len > in + n || m.ct + m.ct_len != in + n))
            abort();
        break;
    case 2:
        if (odoh_plain_parse(in, n, &dns, &olen) == 0 && (olen == 0 || dns + olen > in + n))
            abort();
        break;
    case 3:
        rc = odoh_response_open(&query, in, n, &out, &olen);
        if (rc == 0)
            free(out); /* only a forgery of AES-GCM gets here */
        else if (rc != DV_EMALFORMED && rc != DV_EPROTO && rc != DV_ENOMEM)
            abort();
        break;
    default:
        /* the key_id is put right so the input reaches HPKE */
        if (n >= 3 + ODOH_KEY_ID_LEN && in[0] == ODOH_MSG_QUERY)
            memcpy(in + 3, cfg.key_id, ODOH_KEY_ID_LEN);
        rc = odoh_query_open(sk, &cfg, in, n, &tq, &out, &olen);
        if (rc == 0) {
            free(out);
            odoh_query_free(&tq);
        }
        break;
    }
    free(in);
    return 0;
}
