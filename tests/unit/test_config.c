/* Schema layer: exact error messages and positions, defaults, the example
 * config, and DNS stamp decoding against published stamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/stamp.h"
#include "core/err.h"
#include "core/log.h"

static char errs[8192];

static int load_text(const char *text, struct config **pc)
{
    char path[] = "/tmp/dvcfgXXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    fputs(text, f);
    fclose(f);
    int rc = config_load(path, pc, errs, sizeof(errs));
    /* messages name the file: make them comparable */
    char *p;
    while ((p = strstr(errs, path)) != NULL) {
        memmove(p + 1, p + strlen(path), strlen(p + strlen(path)) + 1);
        *p = 'F';
    }
    unlink(path);
    return rc;
}

static void test_empty_is_valid(void **state)
{
    struct config *c;

    assert_int_equal(load_text("", &c), 0);
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->n_upstreams, 0);
    assert_int_equal(c->timeout_ms, 2500);
    assert_true(c->cache_enabled);
    assert_int_equal(c->cache.size, 8 << 20);
    assert_string_equal(c->user, "nobody");
    assert_int_equal(c->n_groups, 1);
    assert_string_equal(c->groups[0].name, "default");
    config_free(c);
}

static const struct {
    const char *text;
    const char *want; /* the whole error output */
} bad_configs[] = {
    {"[server]\ntimout_ms = 5\n",
     "F:2:1: error: unknown key 'timout_ms' in [server] (did you mean 'timeout_ms'?)\n"},
    {"[server]\ntimeout_ms = \"5\"\n",
     "F:2:14: error: 'timeout_ms' expects an integer, not string\n"},
    {"[server]\ntimeout_ms = 10\n",
     "F:2:14: error: 'timeout_ms' = 10 is out of range (50 to 600000)\n"},
    {"[server]\nlisten = [\"1.2.3.4:0\"]\n",
     "F:2:11: error: listen address \"1.2.3.4:0\": expected IP[:PORT] or [IPv6]:PORT\n"},
    {"[cache]\nsize = \"8XB\"\n",
     "F:2:8: error: 'size': unknown unit in \"8XB\" (expected B, KiB, MiB or GiB)\n"},
    {"[cache]\nmin_ttl = 100\nmax_ttl = 10\n",
     "F:2:11: error: 'min_ttl' (100) is larger than 'max_ttl' (10)\n"},
    {"[upstreams.a]\nurl = \"ftp://x\"\n",
     "F:2:7: error: upstream 'a': URL \"ftp://x\" must start with udp://, tcp://, tls://, "
     "https://, quic://, odoh:// or sdns://\n"},
    {"[upstreams.a]\nbootstrap = [\"1.1.1.1\"]\n", "F:1:12: error: upstream 'a' has no 'url'\n"},
    {"[upstreams.a]\nurl = \"tls://x\"\nbootstrap = [\"one\"]\n",
     "F:3:13: error: upstream 'a': bootstrap \"one\" is not an IP address\n"},
    {"[upstreams.a]\nurl = \"udp://1.1.1.1\"\n[groups.g]\nupstreams = [\"b\"]\n",
     "F:4:14: error: group 'g': no upstream named 'b'\n"},
    {"[upstreams.a]\nurl = \"udp://1.1.1.1\"\n[groups.g]\nupstreams = [\"a\"]\nstrategy = \"fast\"\n",
     "F:5:12: error: 'strategy' = \"fast\": expected \"failover\", \"round_robin\", \"random\", "
     "\"fastest\" or \"parallel\"\n"},
    {"[[rules]]\ndomains = [\"a..b\"]\naction = \"refuse\"\n",
     "F:2:12: error: domain \"a..b\" is not a valid name\n"},
    {"[[rules]]\ndomains = [\"a\"]\ngroup = \"zz\"\n", "F:3:9: error: no group named 'zz'\n"},
    {"[[rules]]\nqtypes = [\"BOGUS\"]\naction = \"refuse\"\n",
     "F:2:11: error: query type \"BOGUS\" is not known (use a name such as \"AAAA\" or "
     "\"TYPE65\")\n"},
    {"[[rules]]\nclients = [\"10.0.0.0/33\"]\naction = \"refuse\"\n",
     "F:2:12: error: client \"10.0.0.0/33\": expected an address or ADDRESS/PREFIX\n"},
    {"[[rules]]\ndomains = [\"a\"]\n", "F:1:1: error: rule needs a 'group' to forward to or an 'action'\n"},
    {"[[rules]]\naction = \"answer\"\n",
     "F:2:10: error: action \"answer\" needs 'answer' addresses\n"},
    {"[log]\nlevel = \"loud\"\n",
     "F:2:9: error: 'level' = \"loud\": expected \"error\", \"warning\", \"info\" or \"debug\"\n"},
    {"serverr = 1\n", "F:1:1: error: unknown key 'serverr' in the top level (did you mean 'server'?)\n"},
    {"server = 1\n", "F:1:10: error: [server] must be a table, not integer\n"},
    {"a = \n", "F:1:5: error: expected a value, found end of line\n"},
    {"[upstreams.t]\nurl = \"tls://1.1.1.1\"\n[upstreams.a]\nurl = \"udp://1.1.1.1\"\n"
     "[groups.default]\nupstreams = [\"t\", \"a\"]\n",
     "F:6:19: error: group 'default': upstream 'a' is plain DNS (udp://1.1.1.1) and would "
     "carry every ordinary query unencrypted; send split domains to it with a rule, or set "
     "'allow_plaintext = true' in [groups.default]\n"},
    {"[upstreams.a]\nurl = \"tcp://1.1.1.1\"\n[groups.default]\nupstreams = [\"a\"]\n"
     "allow_plaintext = \"yes\"\n",
     "F:5:19: error: 'allow_plaintext' expects true or false, not string\n"
     "F:4:14: error: group 'default': upstream 'a' is plain DNS (tcp://1.1.1.1) and would "
     "carry every ordinary query unencrypted; send split domains to it with a rule, or set "
     "'allow_plaintext = true' in [groups.default]\n"},
    {"[upstreams.a]\nurl = \"sdns://AQAAAAAAAAAADjIwOC42Ny4yMjAuMjIw\"\n",
     "F:2:7: error: upstream 'a': DNSCrypt stamps are not supported (dnsveil speaks DoH, DoT, "
     "DoQ, ODoH and plain DNS)\n"},
};

static void test_bad_configs(void **state)
{
    for (size_t i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
        struct config *c = (struct config *)1;
        int rc = load_text(bad_configs[i].text, &c);
        if (rc != DV_EINVAL || strcmp(errs, bad_configs[i].want) != 0)
            fail_msg("case %zu: rc %d\n got: %s want: %s", i, rc, errs, bad_configs[i].want);
        assert_null(c);
    }
}

static void test_full_config(void **state)
{
    struct config *c;
    const char *text =
        "[server]\nlisten = [\"127.0.0.1:5353\", \"[::1]:5353\"]\ntimeout_ms = 900\n"
        "[cache]\nsize = \"1MiB\"\nmax_ttl = 3600\n"
        "[upstreams.a]\nurl = \"udp://127.0.0.1:53\"\n"
        "[upstreams.b]\nurl = \"tls://dns.example\"\nbootstrap = [\"192.0.2.1\"]\n"
        "pins = [\"AAAA\"]\n"
        "[groups.office]\nupstreams = [\"a\"]\nstrategy = \"failover\"\n"
        "[groups.default]\nupstreams = [\"b\", \"a\"]\nweights = { b = 3 }\n"
        "allow_plaintext = true\n"
        "[[rules]]\ndomains = [\"Corp.Example\"]\ngroup = \"office\"\n"
        "[[rules]]\nqtypes = [\"AAAA\"]\nclients = [\"10.0.0.0/8\"]\naction = \"nxdomain\"\n";

    assert_int_equal(load_text(text, &c), 0);
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->timeout_ms, 900);
    assert_int_equal(c->cache.size, 1 << 20);
    assert_int_equal(c->cache.max_ttl, 3600);
    assert_int_equal(c->n_upstreams, 2);
    assert_string_equal(c->upstreams[1].bootstrap[0], "192.0.2.1");
    assert_int_equal(c->n_groups, 2);
    assert_string_equal(c->groups[0].name, "default"); /* always first */
    assert_int_equal(c->groups[0].members[0], 1);
    assert_int_equal(c->groups[0].weights[0], 3);
    assert_int_equal(c->groups[0].strategy, CFG_STRATEGY_FASTEST);
    assert_true(c->groups[0].allow_plaintext);
    assert_int_equal(c->n_rules, 2);
    assert_int_equal(c->rules[0].action, CFG_ACTION_GROUP);
    assert_string_equal(c->groups[c->rules[0].group].name, "office");
    /* domains are stored lower-cased in wire form */
    assert_memory_equal(c->rules[0].domains[0], "\4corp\7example\0", 14);
    assert_int_equal(c->rules[1].action, CFG_ACTION_NXDOMAIN);
    assert_int_equal(c->rules[1].clients[0].prefix, 8);
    config_free(c);
}

/* Security review finding 6: plain DNS upstreams (udp://, tcp://, a plain
 * DNS stamp) never join the implicit default group. */
static void test_implicit_default_group(void **state)
{
    struct config *c;
    const char *text = "[upstreams.a]\nurl = \"tls://127.0.0.1\"\n"
                       "[upstreams.b]\nurl = \"udp://127.0.0.2\"\n"
                       "[upstreams.c]\nurl = \"tcp://127.0.0.3\"\n"
                       "[upstreams.d]\nurl = \"sdns://AAAAAAAAAAAACTEyNy4wLjAuOQ\"\n"
                       "[upstreams.e]\nurl = \"quic://127.0.0.5\"\n"
                       "[groups.g]\nupstreams = [\"b\"]\n"
                       "[[rules]]\ndomains = [\"x\"]\ngroup = \"g\"\n"
                       "[[rules]]\ndomains = [\"y\"]\ngroup = \"default\"\n";

    assert_int_equal(load_text(text, &c), 0);
    assert_int_equal(c->n_groups, 2);
    assert_string_equal(c->groups[0].name, "default");
    assert_int_equal(c->groups[0].n_members, 2);
    assert_int_equal(c->groups[0].members[0], 0);
    assert_int_equal(c->groups[0].members[1], 4);
    assert_true(config_upstream_plaintext(&c->upstreams[3])); /* the stamp */
    assert_int_equal(c->groups[0].strategy, CFG_STRATEGY_FASTEST);
    assert_string_equal(c->groups[c->rules[0].group].name, "g");
    assert_int_equal(c->rules[1].group, 0);
    config_free(c);
}

static void test_example_config(void **state)
{
    struct config *c;

    assert_int_equal(config_load("config.example.toml", &c, errs, sizeof(errs)), 0);
    assert_int_equal(c->n_listeners, 1);
    assert_true(c->n_upstreams >= 3);
    assert_int_equal(c->groups[0].strategy, CFG_STRATEGY_FASTEST);
    assert_true(c->cache_enabled);
    config_free(c);
}

/* Stamps as published in public resolver lists. */
static void test_stamps(void **state)
{
    struct stamp st;
    char url[600], err[200];

    assert_int_equal(
        stamp_decode("sdns://AgcAAAAAAAAABzEuMC4wLjEAEmRucy5jbG91ZGZsYXJlLmNvbQovZG5zLXF1ZXJ5",
                     &st, err, sizeof(err)),
        0);
    assert_int_equal(st.proto, STAMP_DOH);
    assert_int_equal(st.props, 7);
    assert_string_equal(st.addr, "1.0.0.1");
    assert_string_equal(st.host, "dns.cloudflare.com");
    assert_string_equal(st.path, "/dns-query");
    assert_int_equal(st.n_hashes, 0);
    assert_int_equal(stamp_to_url(&st, url, sizeof(url), err, sizeof(err)), 0);
    assert_string_equal(url, "https://dns.cloudflare.com/dns-query");

    /* DoH with no address: the host is an IPv6 literal */
    assert_int_equal(stamp_decode("sdns://AgMAAAAAAAAAAAAWWzI2MDY6NDcwMDo0NzAwOjoxMTEzXQovZG5zLXF1ZXJ5",
                                  &st, err, sizeof(err)),
                     0);
    assert_string_equal(st.addr, "");
    assert_string_equal(st.host, "[2606:4700:4700::1113]");
    assert_int_equal(st.props, 3);

    /* DoT with an address and port and two certificate hashes of the wrong
     * length (15 and 16 bytes): a malformed stamp */
    assert_int_equal(stamp_decode("sdns://AwcAAAAAAAAACzEuMS4xLjE6ODUzj6qqqqqqqqqqqqqqqqqqqhC7u7u7u7u7u7u7u7u7u7u7FmNsb3VkZmxhcmUtZG5zLmNvbTo4NTMA",
                                  &st, err, sizeof(err)),
                     DV_EINVAL);

    /* DNSCrypt is refused with a reason */
    assert_int_equal(stamp_decode("sdns://AQAAAAAAAAAADjIwOC42Ny4yMjAuMjIwILc1EUAgbyJdPivYItf9aR6hwzzI1maNDL4Ev6vKQ_t5GzIuZG5zY3J5cHQtY2VydC5vcGVuZG5zLmNvbQ",
                                  &st, err, sizeof(err)),
                     DV_EINVAL);
    assert_non_null(strstr(err, "DNSCrypt"));

    /* garbage */
    assert_int_equal(stamp_decode("sdns://!!", &st, err, sizeof(err)), DV_EINVAL);
    assert_int_equal(stamp_decode("sdns://Ag", &st, err, sizeof(err)), DV_EINVAL);
    assert_int_equal(stamp_decode("https://x", &st, err, sizeof(err)), DV_EINVAL);
}

static void test_stamp_upstream(void **state)
{
    struct config *c;
    const char *text = "[upstreams.cf]\n"
                       "url = \"sdns://AgcAAAAAAAAABzEuMC4wLjEAEmRucy5jbG91ZGZsYXJlLmNvbQovZG5zLXF1ZXJ5\"\n";

    assert_int_equal(load_text(text, &c), 0);
    assert_string_equal(c->upstreams[0].url, "https://dns.cloudflare.com/dns-query");
    assert_int_equal(c->upstreams[0].n_bootstrap, 1);
    assert_string_equal(c->upstreams[0].bootstrap[0], "1.0.0.1");
    config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_is_valid),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_implicit_default_group),
        cmocka_unit_test(test_example_config),
        cmocka_unit_test(test_stamps),
        cmocka_unit_test(test_stamp_upstream),
    };

    log_init(DV_LOG_ERR, false);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
