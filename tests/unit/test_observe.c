/* The counting behind the metrics and the status page: the top-k table
 * (exact below k distinct keys, the heavy hitters kept past it, bounded
 * memory), the latency histogram and its quantiles, failure kinds, the
 * JSON string writer on hostile bytes, the metrics request parser, the
 * application table (its key splits back whatever the parts hold) and the
 * ring of recent queries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/topk.h"
#include "frontend/metrics.h"
#include "frontend/status.h"
#include "resolve/obs.h"
#include "resolve/policy.h"
#include "resolve/qlog.h"
#include "upstream/ustats.h"

static void test_topk_exact_below_k(void **state)
{
    struct topk *t = topk_new(8);
    struct topk_item it[8];

    for (int i = 0; i < 5; i++)
        topk_add(t, "a.", 2);
    for (int i = 0; i < 3; i++)
        topk_add(t, "b.", 2);
    topk_add(t, "c.", 2);
    size_t n = topk_list(t, it, 8);
    assert_int_equal(n, 3);
    assert_string_equal(it[0].key, "a.");
    assert_int_equal(it[0].count, 5);
    assert_int_equal(it[0].error, 0);
    assert_string_equal(it[1].key, "b.");
    assert_int_equal(it[1].count, 3);
    assert_string_equal(it[2].key, "c.");
    assert_int_equal(topk_list(t, it, 2), 2);
    topk_del(t);
}

static void test_topk_keeps_heavy_hitters(void **state)
{
    /* Space-Saving keeps every key seen more than n/k times of n */
    struct topk *t = topk_new(16);
    struct topk_item it[4];
    char key[32];
    size_t mem = topk_memory(t);

    /* 10000 one-off names around two heavy ones: memory stays the same and
     * the heavy ones stay on top with counts at least their true counts */
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "n%d.", i);
        topk_add(t, key, (size_t)n);
        if (i % 4 == 0)
            topk_add(t, "heavy.", 6);
        if (i % 8 == 0)
            topk_add(t, "second.", 7);
    }
    assert_int_equal(topk_memory(t), mem);
    assert_int_equal(topk_list(t, it, 4), 4);
    assert_string_equal(it[0].key, "heavy.");
    assert_true(it[0].count >= 2500 && it[0].count - it[0].error <= 2500);
    assert_string_equal(it[1].key, "second.");
    assert_true(it[1].count >= 1250);
    topk_del(t);
}

static void test_topk_long_key_cut(void **state)
{
    struct topk *t = topk_new(2);
    struct topk_item it[2];
    char big[600];

    memset(big, 'x', sizeof(big));
    topk_add(t, big, sizeof(big));
    topk_add(t, big, sizeof(big));
    assert_int_equal(topk_list(t, it, 2), 1);
    assert_int_equal(strlen(it[0].key), TOPK_KEY_MAX - 1);
    assert_int_equal(it[0].count, 2);
    topk_del(t);
}

static void test_topk_takeovers_keep_keys_distinct(void **state)
{
    /* keys that come back after others took their slots over are found
     * again, never counted in a second slot; counts sum to the adds */
    struct topk *t = topk_new(8);
    struct topk_item it[8];
    char key[32];
    uint64_t sum = 0;

    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "k%d.", (i * 7) % 13);
        topk_add(t, key, (size_t)n);
    }
    size_t m = topk_list(t, it, 8);
    assert_int_equal(m, 8);
    for (size_t i = 0; i < m; i++) {
        sum += it[i].count - it[i].error;
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(it[i].key, it[j].key);
    }
    assert_true(sum <= 5000);
    uint64_t total = 0;
    for (size_t i = 0; i < m; i++)
        total += it[i].count;
    assert_int_equal(total, 5000);
    topk_del(t);
}

static void test_ustats_histogram_and_kinds(void **state)
{
    struct ustats s = {0};

    assert_true(ustats_quantile(&s, 0.5) == 0);
    for (int i = 0; i < 90; i++)
        ustats_answer(&s, 0, 3000); /* 3 ms: the (2.5, 5] ms bucket */
    for (int i = 0; i < 10; i++)
        ustats_answer(&s, 3, 200000); /* (100, 250] ms */
    assert_int_equal(s.lat_count, 100);
    assert_int_equal(s.rcode[0], 90);
    assert_int_equal(s.rcode[3], 10);
    double p50 = ustats_quantile(&s, 0.5), p99 = ustats_quantile(&s, 0.99);
    assert_true(p50 > 0.0025 && p50 <= 0.005);
    assert_true(p99 > 0.1 && p99 <= 0.25);
    assert_true(s.lat_sum > 2.2 && s.lat_sum < 2.3);
    ustats_answer(&s, 0, 120000000); /* past the last bound: +Inf */
    assert_int_equal(s.lat[USTATS_NBUCKETS], 1);

    ustats_fail(&s, DV_ETIMEOUT);
    ustats_fail(&s, DV_ECONN);
    ustats_fail(&s, DV_ETLS);
    ustats_fail(&s, DV_EPROTO);
    ustats_fail(&s, DV_EHTTP);
    ustats_fail(&s, DV_ESERVFAIL);
    ustats_fail(&s, DV_ENOMEM);
    for (int k = 0; k < USTATS_F_N; k++)
        assert_int_equal(s.fail[k], 1);
    assert_int_equal(ustats_failures(&s), USTATS_F_N);

    /* codes: a bounded table, the rest counted together */
    for (unsigned c = 0; c < USTATS_NCODES + 3; c++)
        ustats_http_status(&s, 400 + c);
    ustats_http_status(&s, 400);
    assert_int_equal(s.http[0].code, 400);
    assert_int_equal(s.http[0].n, 2);
    assert_int_equal(s.http_other, 3);
    ustats_sent(NULL); /* nothing to count: no crash */
}

static void test_json_escapes_untrusted_bytes(void **state)
{
    struct buf b;
    const char in[] = "a\"b\\c\n<\x01\xff&>";

    buf_init(&b);
    status_json_str(&b, in, sizeof(in) - 1);
    buf_append(&b, "", 1);
    assert_string_equal((const char *)buf_head(&b),
                        "\"a\\\"b\\\\c\\u000a\\u003c\\u0001\\u00ff\\u0026\\u003e\"");
    buf_free(&b);
}

static void test_request_parser(void **state)
{
    struct metrics_req r;
    const char ok[] = "GET /status.json?x=1 HTTP/1.1\r\nHost: a\r\n"
                      "authorization:   Basic b3BzOng=\r\n\r\n";
    const char post[] = "POST / HTTP/1.0\r\n\r\n";

    assert_int_equal(metrics_parse_request(ok, sizeof(ok) - 1, &r), 0);
    assert_true(r.get);
    assert_int_equal(r.path_len, 12);
    assert_memory_equal(r.path, "/status.json", 12);
    assert_int_equal(r.auth_len, 14);
    assert_memory_equal(r.auth, "Basic b3BzOng=", 14);
    assert_int_equal(metrics_parse_request(post, sizeof(post) - 1, &r), 0);
    assert_false(r.get);
    assert_int_equal(metrics_parse_request("GET /", 5, &r), DV_EMALFORMED);
    assert_int_equal(metrics_parse_request("GET /\n", 6, &r), 0);
    assert_int_equal(r.path_len, 1);
    assert_null(r.auth);
}

static void test_obs_apps_split_back(void **state)
{
    struct obs *o = obs_new(false);
    struct policy_client a = {.app_ok = true, .uid = 1001, .comm = "we\x1f" "ird",
                              .cgroup = "/user.slice/x\x1fy"};
    struct policy_client b = {.app_ok = true, .uid = 0, .comm = NULL, .cgroup = NULL};
    struct policy_client none = {.app_tried = true};
    char longcg[400];
    struct obs_app out[4];
    uint64_t found, unknown;

    (void)state;
    memset(longcg, 'c', sizeof(longcg) - 1);
    longcg[sizeof(longcg) - 1] = 0;
    obs_app(o, &a); /* off: counted, not kept */
    assert_int_equal(obs_top_apps(o, out, 4), 0);
    obs_set_apps(o, true);
    for (int i = 0; i < 3; i++)
        obs_app(o, &a);
    obs_app(o, &b);
    obs_app(o, &none);
    assert_int_equal(obs_top_apps(o, out, 4), 2);
    assert_int_equal(out[0].uid, 1001);
    assert_int_equal(out[0].count, 3);
    assert_string_equal(out[0].comm, "we?ird");
    assert_string_equal(out[0].cgroup, "/user.slice/x?y");
    assert_int_equal(out[1].uid, 0);
    assert_string_equal(out[1].comm, "");
    assert_string_equal(out[1].cgroup, "");
    obs_app_totals(o, &found, &unknown);
    assert_int_equal(found, 5);
    assert_int_equal(unknown, 1);
    /* a long cgroup path is cut, never the uid or comm */
    struct policy_client l = {.app_ok = true, .uid = 7, .comm = "prog", .cgroup = longcg};
    for (int i = 0; i < 5; i++)
        obs_app(o, &l);
    assert_int_equal(obs_top_apps(o, out, 1), 1);
    assert_int_equal(out[0].uid, 7);
    assert_string_equal(out[0].comm, "prog");
    assert_true(strlen(out[0].cgroup) > 200 && strlen(out[0].cgroup) < sizeof(out[0].cgroup));
    obs_set_apps(o, false);
    assert_int_equal(obs_top_apps(o, out, 4), 0);
    obs_del(o);
}

static void test_obs_recent_ring(void **state)
{
    struct obs *o = obs_new(false);
    struct net_addr c;
    static struct obs_recent out[OBS_RECENT + 5];
    uint8_t name[] = {1, 'a', 0};

    (void)state;
    assert_int_equal(net_addr_parse("[::1]:5353", 53, &c), 0);
    struct qlog_entry e = {.client = &c, .name = name, .name_len = sizeof(name), .qtype = 28,
                           .source = "a-source-too-long-for-its-field", .upstream = "u"};
    obs_recent(o, &e); /* off: nothing kept */
    assert_int_equal(obs_recent_list(o, out, OBS_RECENT), 0);
    obs_set_recent(o, true);
    for (int i = 0; i < OBS_RECENT + 7; i++) {
        name[1] = (uint8_t)('a' + i % 26);
        e.rcode = i;
        obs_recent(o, &e);
    }
    assert_int_equal(obs_recent_list(o, out, OBS_RECENT + 5), OBS_RECENT);
    assert_int_equal(out[0].rcode, OBS_RECENT + 6); /* the newest first */
    assert_int_equal(out[OBS_RECENT - 1].rcode, 7);
    assert_string_equal(out[0].client, "::1");
    assert_int_equal(out[0].name_len, 3);
    assert_string_equal(out[0].source, "a-source-");
    assert_string_equal(out[0].upstream, "u");
    assert_string_equal(out[0].transport, "");
    obs_set_recent(o, true); /* a reload with the log still on keeps them */
    assert_int_equal(obs_recent_list(o, out, 3), 3);
    obs_set_recent(o, false);
    assert_int_equal(obs_recent_list(o, out, 3), 0);
    obs_del(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_exact_below_k),
        cmocka_unit_test(test_topk_keeps_heavy_hitters),
        cmocka_unit_test(test_topk_long_key_cut),
        cmocka_unit_test(test_topk_takeovers_keep_keys_distinct),
        cmocka_unit_test(test_ustats_histogram_and_kinds),
        cmocka_unit_test(test_json_escapes_untrusted_bytes),
        cmocka_unit_test(test_request_parser),
        cmocka_unit_test(test_obs_apps_split_back),
        cmocka_unit_test(test_obs_recent_ring),
    };
    return cmocka_run_group_tests_name("observe", tests, NULL, NULL);
}
