/* Unit tests for the ODoH keys of an upstream (src/config/config.c):
 * relays normalized and kept, and a relay under the target's operator (same
 * host, same registrable domain) refused at its position unless
 * allow_same_operator is set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/err.h"

static char errs[8192];

/* Loads one upstream with url and relays = [relay]; 0 or DV_EINVAL. */
static int load(const char *url, const char *relay, bool allow, struct config **pc)
{
    char path[] = "/tmp/dvodohXXXXXX";
    int fd = mkstemp(path), rc;
    FILE *f = fdopen(fd, "w");

    fprintf(f, "[upstreams.o]\nurl = \"%s\"\nbootstrap = [\"192.0.2.1\"]\n", url);
    fprintf(f, "relays = [\"%s\"]\n", relay);
    if (allow)
        fputs("allow_same_operator = true\n", f);
    fclose(f);
    errs[0] = 0;
    rc = config_load(path, pc, errs, sizeof(errs));
    unlink(path);
    return rc;
}

static void test_same_operator_table(void **state)
{
    static const struct {
        const char *target, *relay;
        bool same;
    } rows[] = {
        {"odoh://t.example.net/dns-query", "https://r.example.net/proxy#192.0.2.2", true},
        {"odoh://T.Example.NET/dns-query", "https://r.example.net./proxy#192.0.2.2", true},
        {"odoh://t.example.net:8443/q", "https://t.example.net:443/proxy#192.0.2.2", true},
        {"odoh://a.b.example.net/q", "https://example.net/proxy#192.0.2.2", true},
        {"odoh://t.example.co.uk/q", "https://r.example.co.uk/proxy#192.0.2.2", true},
        {"odoh://t.example.co.uk/q", "https://r.other.co.uk/proxy#192.0.2.2", false},
        {"odoh://t.example.net/q", "https://r.example.org/proxy#192.0.2.2", false},
        {"odoh://t.example.net/q", "https://example.net.evil.org/proxy#192.0.2.2", false},
        {"odoh://192.0.2.10/q", "https://192.0.2.10:8443/proxy", true},
        {"odoh://192.0.2.10/q", "https://192.0.2.11/proxy", false},
        {"odoh://[2001:db8::1]/q", "https://[2001:db8::1]/proxy", true},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct config *c = NULL;
        int rc = load(rows[i].target, rows[i].relay, false, &c);
        if ((rc != 0) != rows[i].same)
            fail_msg("%s via %s: rc %d: %s", rows[i].target, rows[i].relay, rc, errs);
        if (rows[i].same) {
            /* the error names the relay's position: line 4, in the array */
            assert_non_null(strstr(errs, ":4:"));
            assert_non_null(strstr(errs, "allow_same_operator"));
            assert_int_equal(load(rows[i].target, rows[i].relay, true, &c), 0);
        }
        config_free(c);
    }
}

static void test_relays_kept(void **state)
{
    struct config *c = NULL;

    assert_int_equal(load("odoh://t.example.net/dns-query",
                          "https://r.example.org:8443/proxy?x=1#192.0.2.2,2001:db8::2", false, &c),
                     0);
    assert_int_equal(c->upstreams[0].n_relays, 1);
    assert_string_equal(c->upstreams[0].relays[0],
                        "https://r.example.org:8443/proxy?x=1#192.0.2.2,2001:db8::2");
    assert_false(c->upstreams[0].allow_same_operator);
    config_free(c);
}

static void test_relays_only_for_odoh(void **state)
{
    struct config *c = NULL;

    assert_int_equal(load("https://t.example.net/dns-query",
                          "https://r.example.org/proxy#192.0.2.2", false, &c),
                     DV_EINVAL);
    assert_non_null(strstr(errs, "'relays' is for odoh:// upstreams"));
    config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_operator_table),
        cmocka_unit_test(test_relays_kept),
        cmocka_unit_test(test_relays_only_for_odoh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
