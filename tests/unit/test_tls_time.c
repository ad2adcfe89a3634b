/* Boot without a real-time clock: the rule that decides when certificate
 * validity dates are skipped, its transitions, and the tls_time_check key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/err.h"
#include "tls/tls_time.h"

static void test_rule(void **state)
{
    const int64_t build = 1790000000; /* 2026-09 */

    assert_true(tls_time_relaxed_at(TLS_TIME_AUTO, 0, build));          /* 1970 */
    assert_true(tls_time_relaxed_at(TLS_TIME_AUTO, 946684800, build));  /* 2000 */
    assert_true(tls_time_relaxed_at(TLS_TIME_AUTO, build - 1, build));
    assert_false(tls_time_relaxed_at(TLS_TIME_AUTO, build, build));
    assert_false(tls_time_relaxed_at(TLS_TIME_AUTO, build + 86400, build));
    assert_false(tls_time_relaxed_at(TLS_TIME_STRICT, 0, build));
    assert_false(tls_time_relaxed_at(TLS_TIME_STRICT, build - 1, build));
    assert_false(tls_time_relaxed_at(TLS_TIME_STRICT, build + 1, build));
}

/* The build date is real: after 2025 (when this was written) and no later
 * than the clock of the machine running the tests, which built it. */
static void test_build_epoch(void **state)
{
    assert_true(tls_time_build_epoch() > 1735689600);
    assert_true(tls_time_build_epoch() <= (int64_t)time(NULL));
}

/* The process-wide rule follows the mode and the clock it is given, in
 * either direction, as the clock is set and a reload changes the mode. */
static void test_process_rule(void **state)
{
    int64_t build = tls_time_build_epoch();

    tls_time_set_mode(TLS_TIME_AUTO);
    assert_int_equal(tls_time_get_mode(), TLS_TIME_AUTO);
    assert_true(tls_time_relaxed(10));
    assert_true(tls_time_relaxed(build - 3600));
    assert_false(tls_time_relaxed(build));
    assert_false(tls_time_relaxed(build + 3600));
    assert_true(tls_time_relaxed(10)); /* a clock that went back (reboot) */
    tls_time_set_mode(TLS_TIME_STRICT);
    assert_false(tls_time_relaxed(10));
    assert_false(tls_time_relaxed(build + 1));
    tls_time_set_mode(TLS_TIME_AUTO);
}

static char errs[2048];

static int load_text(const char *text, struct config **pc)
{
    char path[] = "/tmp/dvtlstimeXXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    fputs(text, f);
    fclose(f);
    int rc = config_load(path, pc, errs, sizeof(errs));
    char *p = strstr(errs, path);
    if (p) {
        memmove(p + 1, p + strlen(path), strlen(p + strlen(path)) + 1);
        *p = 'F';
    }
    unlink(path);
    return rc;
}

static void test_config_key(void **state)
{
    struct config *c;

    assert_int_equal(load_text("", &c), 0);
    assert_false(c->tls_time_strict); /* default "auto" */
    config_free(c);
    assert_int_equal(load_text("[server]\ntls_time_check = \"strict\"\n", &c), 0);
    assert_true(c->tls_time_strict);
    config_free(c);
    assert_int_equal(load_text("[server]\ntls_time_check = \"auto\"\n", &c), 0);
    assert_false(c->tls_time_strict);
    config_free(c);
    assert_int_equal(load_text("[server]\ntls_time_check = \"never\"\n", &c), DV_EINVAL);
    assert_string_equal(errs, "F:2:18: error: 'tls_time_check' = \"never\": expected "
                              "\"auto\" or \"strict\"\n");
    assert_int_equal(load_text("[server]\ntls_time_check = true\n", &c), DV_EINVAL);
    assert_string_equal(errs, "F:2:18: error: 'tls_time_check' expects a string, not boolean\n");
    assert_int_equal(load_text("[server]\ntls_time_chek = \"auto\"\n", &c), DV_EINVAL);
    assert_string_equal(errs, "F:2:1: error: unknown key 'tls_time_chek' in [server] (did you "
                              "mean 'tls_time_check'?)\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule),
        cmocka_unit_test(test_build_epoch),
        cmocka_unit_test(test_process_rule),
        cmocka_unit_test(test_config_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
