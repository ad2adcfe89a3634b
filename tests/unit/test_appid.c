/* appid: the cgroup2 mount from mountinfo text, and the socket lookup on
 * real loopback sockets — the client's own socket (its inode), never the
 * listener, for connected and unconnected UDP and for TCP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "resolve/appid.h"

static void test_mountinfo(void **state)
{
    char out[256];
    static const char unified[] =
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    static const char plain[] =
        "25 1 0:22 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate";
    static const char escaped[] = "7 1 0:5 / /mnt/my\\040cg rw - cgroup2 none rw\n";
    static const char none[] = "22 1 0:21 / /proc rw - proc proc rw\n"
                               "23 1 0:22 / /x rw - cgroup2x y rw\n";

    (void)state;
    assert_string_equal(appid_cgroup2_mount(unified, out, sizeof(out)), "/sys/fs/cgroup/unified");
    assert_string_equal(appid_cgroup2_mount(plain, out, sizeof(out)), "/sys/fs/cgroup");
    assert_string_equal(appid_cgroup2_mount(escaped, out, sizeof(out)), "/mnt/my cg");
    assert_null(appid_cgroup2_mount(none, out, sizeof(out)));
    assert_null(appid_cgroup2_mount("", out, sizeof(out)));
}

static struct net_addr name_of(int fd, bool peer)
{
    struct net_addr a = {.len = sizeof(a.ss)};
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a.ss, &a.len)
                  : getsockname(fd, (struct sockaddr *)&a.ss, &a.len);
    assert_int_equal(rc, 0);
    return a;
}

static void lookup_case(int type, bool connect_udp)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct appid *a = appid_new();
    struct appid_info info;
    struct net_addr srv_addr, cli_addr;
    struct stat cst, sst;
    int srv = socket(AF_INET, type, 0), cli = socket(AF_INET, type, 0), conn = -1;
    char b = 'x';
    int probe = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

    /* qemu-user (scripts/cross.sh) emulates no NETLINK_SOCK_DIAG socket */
    if (probe < 0 && errno == EPROTONOSUPPORT) {
        appid_del(a);
        close(srv);
        close(cli);
        skip();
    }
    if (probe >= 0)
        close(probe);
    assert_non_null(a);
    assert_int_equal(bind(srv, (struct sockaddr *)&sin, sizeof(sin)), 0);
    srv_addr = name_of(srv, false);
    if (type == SOCK_STREAM) {
        assert_int_equal(listen(srv, 1), 0);
        assert_int_equal(connect(cli, (struct sockaddr *)&srv_addr.ss, srv_addr.len), 0);
        conn = accept(srv, NULL, NULL);
        cli_addr = name_of(conn, true);
    } else {
        if (connect_udp)
            assert_int_equal(connect(cli, (struct sockaddr *)&srv_addr.ss, srv_addr.len), 0);
        assert_int_equal(sendto(cli, &b, 1, 0, (struct sockaddr *)&srv_addr.ss, srv_addr.len), 1);
        cli_addr.len = sizeof(cli_addr.ss);
        assert_int_equal(recvfrom(srv, &b, 1, 0, (struct sockaddr *)&cli_addr.ss, &cli_addr.len), 1);
    }
    fstat(cli, &cst);
    fstat(srv, &sst);
    assert_int_equal(appid_lookup(a, type == SOCK_STREAM, &cli_addr, &srv_addr, &info), 0);
    assert_int_equal(info.inode, (uint64_t)cst.st_ino);
    assert_int_not_equal(info.inode, (uint64_t)sst.st_ino);
    assert_int_equal(info.uid, getuid());

    /* the client gone: no socket, not the listener */
    close(cli);
    assert_int_equal(appid_lookup(a, type == SOCK_STREAM, &cli_addr, &srv_addr, &info),
                     DV_EINVAL);
    if (conn >= 0)
        close(conn);
    close(srv);
    appid_del(a);
}

static void test_lookup_udp_unconnected(void **state)
{
    (void)state;
    lookup_case(SOCK_DGRAM, false);
}

static void test_lookup_udp_connected(void **state)
{
    (void)state;
    lookup_case(SOCK_DGRAM, true);
}

static void test_lookup_tcp(void **state)
{
    (void)state;
    lookup_case(SOCK_STREAM, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mountinfo),
        cmocka_unit_test(test_lookup_udp_unconnected),
        cmocka_unit_test(test_lookup_udp_connected),
        cmocka_unit_test(test_lookup_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
