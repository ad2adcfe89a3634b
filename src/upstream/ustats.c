#include "upstream/ustats.h"

#include <stddef.h>
#include <time.h>

#include "core/err.h"

struct ustats ustats_sink;

const double ustats_bounds[USTATS_NBUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
const char *const ustats_fail_names[USTATS_F_N] = {
    "timeout", "connection", "tls", "protocol", "http_status", "server_error", "other",
};
const char *const ustats_hs_names[USTATS_HS_N] = {"full", "resumed", "early_accepted",
                                                  "early_rejected"};

void ustats_sent(struct ustats *s)
{
    if (!s)
        return;
    s->sent++;
}

uint64_t ustats_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void ustats_answer(struct ustats *s, unsigned rcode, uint64_t us)
{
    if (!s)
        return;
    double sec = (double)us / 1e6;
    size_t b = 0;

    s->rcode[rcode & 15]++;
    while (b < USTATS_NBUCKETS && sec > ustats_bounds[b])
        b++;
    s->lat[b]++;
    s->lat_count++;
    s->lat_sum += sec;
}

void ustats_fail(struct ustats *s, int rc)
{
    if (!s)
        return;
    enum ustats_fail k;

    switch (rc) {
    case DV_ETIMEOUT: k = USTATS_F_TIMEOUT; break;
    case DV_ECONN: k = USTATS_F_CONN; break;
    case DV_ETLS: k = USTATS_F_TLS; break;
    case DV_EPROTO:
    case DV_EMISMATCH:
    case DV_EMALFORMED: k = USTATS_F_PROTO; break;
    case DV_EHTTP: k = USTATS_F_HTTP; break;
    case DV_ESERVFAIL: k = USTATS_F_SERVER; break;
    default: k = USTATS_F_OTHER; break;
    }
    s->fail[k]++;
}

void ustats_handshake(struct ustats *s, enum ustats_hs kind)
{
    if (!s)
        return;
    s->hs[kind]++;
}

void ustats_conn_opened(struct ustats *s)
{
    if (!s)
        return;
    s->conns_opened++;
}

void ustats_conn_closed(struct ustats *s)
{
    if (!s)
        return;
    s->conns_closed++;
}

void ustats_bytes(struct ustats *s, uint64_t in, uint64_t out)
{
    if (!s)
        return;
    s->bytes_in += in;
    s->bytes_out += out;
}

static void code_add(struct ustats_code *t, uint64_t *other, uint64_t code)
{
    for (size_t i = 0; i < USTATS_NCODES; i++) {
        if (t[i].n && t[i].code == code) {
            t[i].n++;
            return;
        }
        if (!t[i].n) {
            t[i].code = code;
            t[i].n = 1;
            return;
        }
    }
    (*other)++;
}

void ustats_http_status(struct ustats *s, unsigned status)
{
    if (!s)
        return;
    code_add(s->http, &s->http_other, status);
}

void ustats_doq_error(struct ustats *s, uint64_t code)
{
    if (!s)
        return;
    code_add(s->doq, &s->doq_other, code);
}

void ustats_migration(struct ustats *s, bool ok)
{
    if (!s)
        return;
    if (ok)
        s->migrations_ok++;
    else
        s->migrations_failed++;
}

double ustats_quantile(const struct ustats *s, double q)
{
    if (!s->lat_count)
        return 0;
    double rank = q * (double)s->lat_count, seen = 0;
    for (size_t b = 0; b <= USTATS_NBUCKETS; b++) {
        if (seen + (double)s->lat[b] >= rank && s->lat[b]) {
            if (b == USTATS_NBUCKETS)
                return ustats_bounds[USTATS_NBUCKETS - 1];
            double lo = b ? ustats_bounds[b - 1] : 0, hi = ustats_bounds[b];
            return lo + (hi - lo) * ((rank - seen) / (double)s->lat[b]);
        }
        seen += (double)s->lat[b];
    }
    return ustats_bounds[USTATS_NBUCKETS - 1];
}

uint64_t ustats_failures(const struct ustats *s)
{
    uint64_t n = 0;

    for (size_t i = 0; i < USTATS_F_N; i++)
        n += s->fail[i];
    return n;
}
