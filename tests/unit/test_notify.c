/* notify: the datagram reaches a real AF_UNIX socket at a path and in the
 * abstract namespace; bad addresses are refused; the watchdog variables are
 * read as the protocol defines them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/notify.h"

/* A receiving socket bound to name ("@..." abstract, else a path). */
static int listener(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    strcpy(sa.sun_path, name);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
    if (name[0] == '@')
        sa.sun_path[0] = 0;
    else
        len++;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[4200];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    assert_true(n >= 0);
    buf[n] = 0;
    assert_string_equal(buf, want);
}

static void test_no_socket_is_quiet(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(notify_send("READY=1"), 1);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(notify_send("READY=1"), 1);
}

static void test_abstract_socket(void **state)
{
    char name[64];
    int fd;

    snprintf(name, sizeof(name), "@dnsveil-test-notify-%ld", (long)getpid());
    fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(notify_send("READY=1\nSTATUS=up"), 0);
    expect_datagram(fd, "READY=1\nSTATUS=up");
    assert_int_equal(notify_sendf("WATCHDOG=%d", 1), 0);
    expect_datagram(fd, "WATCHDOG=1");
    close(fd);
    /* nobody bound any more: the send fails, and says so */
    assert_int_equal(notify_send("STOPPING=1"), DV_EIO);
}

static void test_path_socket(void **state)
{
    char dir[] = "/tmp/dnsveil-notify-XXXXXX", path[128];
    int fd;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/notify", dir);
    fd = listener(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(notify_send("RELOADING=1"), 0);
    expect_datagram(fd, "RELOADING=1");
    close(fd);
    unlink(path);
    rmdir(dir);
}

static void test_bad_addresses(void **state)
{
    char longname[200];

    memset(longname, 'a', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = 0;
    const char *bad[] = {"relative/path", "@", "/", longname, "vsock:2:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("NOTIFY_SOCKET", bad[i], 1);
        assert_int_equal(notify_send("READY=1"), DV_EINVAL);
    }
}

static void test_too_long_for_one_datagram(void **state)
{
    char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    setenv("NOTIFY_SOCKET", "@dnsveil-test-unused", 1);
    assert_int_equal(notify_sendf("STATUS=%s", big), DV_ESPACE);
}

static void test_watchdog_env(void **state)
{
    char pid[32];

    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_int_equal(notify_watchdog_usec(), 30000000);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(notify_watchdog_usec(), 30000000);
    /* meant for another process (ours forked, or a wrapper's) */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", "x", 1);
    assert_int_equal(notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    const char *bad[] = {"", "0", "-5", "12x", " 5", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        assert_int_equal(notify_watchdog_usec(), 0);
    }
    unsetenv("WATCHDOG_USEC");
}

static void test_monotonic(void **state)
{
    uint64_t a = notify_monotonic_usec(), b = notify_monotonic_usec();

    assert_true(a > 0 && b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_socket_is_quiet),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_too_long_for_one_datagram),
        cmocka_unit_test(test_watchdog_env),
        cmocka_unit_test(test_monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
