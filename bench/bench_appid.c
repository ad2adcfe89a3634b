/* bench_appid — what finding a query's sender costs: the NETLINK_SOCK_DIAG
 * lookup per query (UDP and TCP, IPv4 and IPv6, unconnected UDP senders),
 * the cgroup path from the cache, and the /proc walk for comm/exe (cold and
 * cached). It checks every answer against the client socket's own inode and
 * uid, so a lookup that finds the wrong socket fails instead of looking fast.
 *   build/release/bench_appid [ITERATIONS]   */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/net.h"
#include "resolve/appid.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static struct net_addr local_of(int fd)
{
    struct net_addr a = {.len = sizeof(a.ss)};
    if (getsockname(fd, (struct sockaddr *)&a.ss, &a.len) < 0)
        die("getsockname");
    return a;
}

/* A listener, a client that reaches it, and the two endpoints as the
 * listener sees them. */
static int pair(int family, bool tcp, int *pserver, int *pclient, struct net_addr *pc,
                struct net_addr *ps)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int srv, cli, acc = -1;

    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        s->sin_family = AF_INET;
        s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        s->sin6_family = AF_INET6;
        s->sin6_addr = in6addr_loopback;
        len = sizeof(*s);
    }
    srv = socket(family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (srv < 0)
        return -1;
    if (bind(srv, (struct sockaddr *)&ss, len) < 0 || (tcp && listen(srv, 4) < 0))
        die("bind");
    *ps = local_of(srv);
    cli = socket(family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (tcp) {
        if (connect(cli, (struct sockaddr *)&ps->ss, ps->len) < 0)
            die("connect");
        acc = accept(srv, NULL, NULL);
        *pc = local_of(cli);
        close(srv);
        srv = acc;
    } else {
        /* unconnected, as dig and most resolver libraries' sendto() */
        char b = 0;
        if (sendto(cli, &b, 1, 0, (struct sockaddr *)&ps->ss, ps->len) != 1)
            die("sendto");
        pc->len = sizeof(pc->ss);
        if (recvfrom(srv, &b, 1, 0, (struct sockaddr *)&pc->ss, &pc->len) != 1)
            die("recvfrom");
    }
    *pserver = srv;
    *pclient = cli;
    return 0;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    struct appid *a = appid_new();
    int failures = 0;

    static const struct {
        const char *name;
        int family;
        bool tcp;
    } cases[] = {{"udp4", AF_INET, false}, {"tcp4", AF_INET, true},
                 {"udp6", AF_INET6, false}, {"tcp6", AF_INET6, true}};

    printf("%-6s %12s %10s\n", "case", "lookups", "us/lookup");
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct net_addr c, s;
        struct appid_info info;
        struct stat st;
        int srv, cli;

        if (pair(cases[k].family, cases[k].tcp, &srv, &cli, &c, &s) < 0) {
            printf("%-6s skipped (no %s)\n", cases[k].name, cases[k].family == AF_INET6 ? "IPv6" : "IPv4");
            continue;
        }
        fstat(cli, &st);
        if (appid_lookup(a, cases[k].tcp, &c, &s, &info) || info.inode != (uint64_t)st.st_ino ||
            info.uid != getuid()) {
            printf("%-6s WRONG SOCKET (inode %llu, want %llu)\n", cases[k].name,
                   (unsigned long long)info.inode, (unsigned long long)st.st_ino);
            failures++;
            continue;
        }
        double t0 = now_us();
        for (int i = 0; i < iters; i++)
            if (appid_lookup(a, cases[k].tcp, &c, &s, &info))
                failures++;
        double t1 = now_us();
        printf("%-6s %12d %10.2f\n", cases[k].name, iters, (t1 - t0) / iters);

        if (k == 0) {
            const char *path, *comm, *exe;
            double c0 = now_us();
            path = appid_cgroup_path(a, info.cgroup_id, 1);
            double c1 = now_us();
            for (int i = 0; i < iters; i++)
                path = appid_cgroup_path(a, info.cgroup_id, 2);
            double c2 = now_us();
            printf("cgroup %s (id %llu): first walk %.0f us, cached %.3f us\n",
                   path ? path : "(unknown)", (unsigned long long)info.cgroup_id, c1 - c0,
                   (c2 - c1) / iters);
            double p0 = now_us();
            int rc = appid_process(a, &info, 1, &comm, &exe);
            double p1 = now_us();
            for (int i = 0; i < iters; i++)
                appid_process(a, &info, 2, &comm, &exe);
            double p2 = now_us();
            if (rc || !comm || strcmp(comm, "bench_appid") != 0) {
                printf("process WRONG: rc %d comm %s\n", rc, rc ? "-" : comm);
                failures++;
            } else {
                printf("process %s (%s): /proc walk %.0f us, cached %.3f us\n", comm,
                       exe ? exe : "?", p1 - p0, (p2 - p1) / iters);
            }
        }
        close(srv);
        close(cli);
    }
    appid_del(a);
    return failures ? 1 : 0;
}
