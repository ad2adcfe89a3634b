#include "resolve/appid.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/nl.h"

enum {
    CG_BUCKETS = 1024,
    CG_MAX = 65536,          /* directories remembered from one walk */
    CG_DEPTH = 32,
    CG_RESCAN_MS = 100,      /* an unknown id rescans at most this often */
    PROC_SLOTS = 256,        /* socket inodes remembered */
    PROC_LIFE_MS = 5000,     /* how long a socket → process answer is trusted */
    PROC_HINTS = 64,         /* last process found per uid (hashed) */
    COMM_MAX = 16,
    EXE_MAX = 512,
};

struct cg_node {
    uint64_t id;
    struct cg_node *next;
    char path[]; /* below the mount, "/" for the root */
};

struct proc_slot {
    uint64_t inode;
    uint64_t expires;
    bool found;
    char comm[COMM_MAX];
    char exe[EXE_MAX];
};

struct appid {
    struct nl_sock nl; /* fd -1 until first use */
    unsigned seq;
    bool nl_failed;
    char cg_mount[256];
    bool cg_mount_known;
    struct cg_node *cg[CG_BUCKETS];
    size_t cg_count;
    uint64_t cg_scanned_ms; /* when the last walk ran; 0 = never */
    struct proc_slot proc[PROC_SLOTS];
    size_t proc_next;
    struct {
        uint32_t uid;
        int pid;
    } hint[PROC_HINTS];
    _Alignas(NLMSG_ALIGNTO) uint8_t nlbuf[8192];
};

struct appid *appid_new(void)
{
    struct appid *a = calloc(1, sizeof(struct appid));

    if (a)
        a->nl.fd = -1;
    return a;
}

static void cg_clear(struct appid *a)
{
    for (size_t i = 0; i < CG_BUCKETS; i++) {
        while (a->cg[i]) {
            struct cg_node *n = a->cg[i];
            a->cg[i] = n->next;
            free(n);
        }
    }
    a->cg_count = 0;
}

void appid_del(struct appid *a)
{
    if (!a)
        return;
    nl_close(&a->nl);
    cg_clear(a);
    free(a);
}

/* ---- the socket: NETLINK_SOCK_DIAG ---------------------------------------- */

struct diag_result {
    bool found;
    uint16_t sport; /* network order, as the kernel reports it */
    struct appid_info info;
};

static int diag_msg_cb(const struct nlmsghdr *nlh, void *data)
{
    struct diag_result *r = data;
    const struct inet_diag_msg *m = nl_msg_payload(nlh, sizeof(*m));
    const struct nlattr *at[INET_DIAG_MAX + 1];
    uint64_t id;

    if (!m) {
        errno = EBADMSG;
        return -1;
    }
    r->found = true;
    r->sport = m->id.idiag_sport;
    r->info.uid = m->idiag_uid;
    r->info.inode = m->idiag_inode;
    /* a malformed attribute ends the list, and costs only the cgroup id
     * when it comes first: the fixed header above is whole */
    nl_attr_parse(nlh, sizeof(*m), at, INET_DIAG_MAX);
    /* exactly a u64, or not the attribute we know */
    if (at[INET_DIAG_CGROUP_ID] && nl_attr_len(at[INET_DIAG_CGROUP_ID]) == sizeof(id)) {
        memcpy(&id, nl_attr_data(at[INET_DIAG_CGROUP_ID]), sizeof(id));
        r->info.cgroup_id = id;
    }
    return 1;
}

static int diag_open(struct appid *a)
{
    if (a->nl.fd >= 0)
        return 0;
    if (a->nl_failed)
        return DV_EIO;
    if (nl_open(&a->nl, NETLINK_SOCK_DIAG, 0, SOCK_NONBLOCK) < 0) {
        log_warn("appid: cannot open NETLINK_SOCK_DIAG: %s", strerror(errno));
        a->nl_failed = true; /* say it once */
        return DV_EIO;
    }
    return 0;
}

/* An IPv4-mapped IPv6 address as IPv4 (a dual-stack socket speaking IPv4 is
 * an IPv4 socket to the kernel's tables). */
static void unmap(const struct net_addr *in, struct sockaddr_storage *out)
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&in->ss;

    memcpy(out, &in->ss, sizeof(*out));
    if (in->ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
        memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
        memset(out, 0, sizeof(*out));
        memcpy(out, &s4, sizeof(s4));
    }
}

static void put_endpoint(const struct sockaddr_storage *ss, __be16 *port, __be32 *addr)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        *port = s->sin_port;
        memcpy(addr, &s->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        *port = s->sin6_port;
        memcpy(addr, &s->sin6_addr, 16);
    }
}

int appid_lookup(struct appid *a, bool tcp, const struct net_addr *client,
                 const struct net_addr *server, struct appid_info *out)
{
    struct sockaddr_storage c, s;
    struct nlmsghdr *nlh;
    struct inet_diag_req_v2 *req;
    struct diag_result r = {0};
    ssize_t n;
    int rc;

    if (diag_open(a))
        return DV_EIO;
    unmap(client, &c);
    unmap(server, &s);
    if (c.ss_family != s.ss_family || (c.ss_family != AF_INET && c.ss_family != AF_INET6))
        return DV_EINVAL;
    nlh = nl_msg_start(a->nlbuf, sizeof(a->nlbuf), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, ++a->seq);
    req = nl_msg_put(nlh, sizeof(a->nlbuf), sizeof(*req));
    req->sdiag_family = (uint8_t)c.ss_family;
    req->sdiag_protocol = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    req->idiag_states = ~0u;
    req->id.idiag_if = 0;
    req->id.idiag_cookie[0] = req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    /* The kernel looks the socket up as the receiver of a packet from
     * idiag_dst to idiag_src for TCP, but from idiag_src to idiag_dst for
     * UDP. Naming the client as UDP's source asks which socket receives
     * packets sent to the server: our own listener. */
    if (tcp) {
        put_endpoint(&c, &req->id.idiag_sport, req->id.idiag_src);
        put_endpoint(&s, &req->id.idiag_dport, req->id.idiag_dst);
    } else {
        put_endpoint(&s, &req->id.idiag_sport, req->id.idiag_src);
        put_endpoint(&c, &req->id.idiag_dport, req->id.idiag_dst);
    }
    if (nl_send(&a->nl, nlh) < 0)
        return DV_EIO;
    /* the kernel answers an exact lookup before sendto returns */
    n = nl_recv(&a->nl, a->nlbuf, sizeof(a->nlbuf));
    if (n < 0)
        return DV_EIO;
    rc = nl_walk(a->nlbuf, (size_t)n, a->seq, a->nl.portid, diag_msg_cb, &r);
    if (rc < 0)
        return errno == ENOENT ? DV_EINVAL : DV_EIO;
    /* the socket found must own the client's port, whichever order */
    uint16_t cport = c.ss_family == AF_INET ? ((struct sockaddr_in *)&c)->sin_port
                                            : ((struct sockaddr_in6 *)&c)->sin6_port;
    /* inode 0: an orphaned or time-wait TCP socket, its owner gone */
    if (!r.found || r.sport != cport || !r.info.inode)
        return DV_EINVAL;
    *out = r.info;
    return 0;
}

/* ---- cgroup id → path ------------------------------------------------------ */

char *appid_cgroup2_mount(const char *mountinfo, char *out, size_t cap)
{
    const char *line = mountinfo;

    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *sep = NULL;

        /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SRC SUPEROPTS" */
        for (const char *p = line; p + 3 <= line + len; p++)
            if (p[0] == ' ' && p[1] == '-' && p[2] == ' ') {
                sep = p + 3;
                break;
            }
        if (sep && (size_t)(line + len - sep) > 8 && memcmp(sep, "cgroup2 ", 8) == 0) {
            const char *f = line;
            for (int i = 0; i < 4 && f; i++) {
                f = memchr(f, ' ', (size_t)(line + len - f));
                f = f ? f + 1 : NULL;
            }
            if (f) {
                size_t o = 0;
                /* the mount point, with \040-style octal escapes undone */
                for (const char *p = f; p < line + len && *p != ' ' && o + 1 < cap; p++) {
                    if (p[0] == '\\' && p + 3 < line + len && p[1] >= '0' && p[1] <= '3') {
                        out[o++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 3;
                    } else {
                        out[o++] = *p;
                    }
                }
                out[o] = 0;
                return o ? out : NULL;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static void cg_find_mount(struct appid *a)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    FILE *f;

    a->cg_mount_known = true;
    a->cg_mount[0] = 0;
    f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *t = realloc(text, cap = cap ? cap * 2 : 16384);
            if (!t)
                break;
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (text) {
        text[len] = 0;
        if (!appid_cgroup2_mount(text, a->cg_mount, sizeof(a->cg_mount)))
            a->cg_mount[0] = 0;
    }
    free(text);
}

static size_t cg_bucket(uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 54) % CG_BUCKETS;
}

static void cg_add(struct appid *a, uint64_t id, const char *path)
{
    size_t len = strlen(path);
    struct cg_node *n;

    if (a->cg_count >= CG_MAX || !(n = malloc(sizeof(*n) + len + 1)))
        return;
    n->id = id;
    memcpy(n->path, path, len + 1);
    n->next = a->cg[cg_bucket(id)];
    a->cg[cg_bucket(id)] = n;
    a->cg_count++;
}

/* Remembers every directory below dirfd (path is its name below the mount);
 * a cgroup's id is its directory's inode number. */
static void cg_walk(struct appid *a, int dirfd, char *path, size_t plen, int depth)
{
    DIR *d = fdopendir(dirfd);
    struct dirent *e;

    if (!d) {
        close(dirfd);
        return;
    }
    while ((e = readdir(d))) {
        struct stat st;
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        size_t nlen = strlen(e->d_name);
        if (plen + 1 + nlen + 1 > 4096)
            continue;
        int fd = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (fstat(fd, &st) < 0) {
            close(fd);
            continue;
        }
        path[plen] = '/';
        memcpy(path + plen + 1, e->d_name, nlen + 1);
        cg_add(a, (uint64_t)st.st_ino, path);
        if (depth < CG_DEPTH)
            cg_walk(a, fd, path, plen + 1 + nlen, depth + 1);
        else
            close(fd);
        path[plen] = 0;
    }
    closedir(d);
}

static void cg_scan(struct appid *a, uint64_t now_ms)
{
    char path[4096] = "";
    struct stat st;
    int fd;

    a->cg_scanned_ms = now_ms ? now_ms : 1;
    if (!a->cg_mount_known)
        cg_find_mount(a);
    if (!a->cg_mount[0])
        return;
    cg_clear(a);
    fd = open(a->cg_mount, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fstat(fd, &st) == 0)
        cg_add(a, (uint64_t)st.st_ino, "/");
    cg_walk(a, fd, path, 0, 0);
}

const char *appid_cgroup_path(struct appid *a, uint64_t id, uint64_t now_ms)
{
    if (!id)
        return NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (struct cg_node *n = a->cg[cg_bucket(id)]; n; n = n->next)
            if (n->id == id)
                return n->path;
        /* a cgroup made since the last walk: walk again, but not for every
         * query that names one we cannot see */
        if (pass || (a->cg_scanned_ms && now_ms < a->cg_scanned_ms + CG_RESCAN_MS))
            return NULL;
        cg_scan(a, now_ms);
    }
    return NULL;
}

/* ---- socket → process: /proc ---------------------------------------------- */

static bool pid_holds(int procfd, const char *pid, const char *want, size_t wantlen)
{
    char fdpath[64], link[64];
    struct dirent *e;
    bool found = false;
    int fd;
    DIR *d;

    snprintf(fdpath, sizeof(fdpath), "%s/fd", pid);
    fd = openat(procfd, fdpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || !(d = fdopendir(fd))) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        ssize_t n = readlinkat(fd, e->d_name, link, sizeof(link));
        found = n == (ssize_t)wantlen && memcmp(link, want, wantlen) == 0;
    }
    closedir(d);
    return found;
}

static void read_small(int procfd, const char *pid, const char *what, char *out, size_t cap)
{
    char path[64];
    ssize_t n;
    int fd;

    out[0] = 0;
    snprintf(path, sizeof(path), "%s/%s", pid, what);
    fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, out, cap - 1);
    close(fd);
    if (n <= 0)
        return;
    out[n] = 0;
    out[strcspn(out, "\n")] = 0;
}

static void fill_slot(int procfd, const char *pid, struct proc_slot *s)
{
    char path[64];
    ssize_t n;

    s->found = true;
    read_small(procfd, pid, "comm", s->comm, sizeof(s->comm));
    snprintf(path, sizeof(path), "%s/exe", pid);
    n = readlinkat(procfd, path, s->exe, sizeof(s->exe) - 1);
    s->exe[n > 0 ? n : 0] = 0;
}

/* One /proc walk: the processes of the socket's uid, first the one that held
 * this uid's last socket (a long-lived program asks again and again). */
static void proc_find(struct appid *a, const struct appid_info *info, struct proc_slot *s)
{
    char want[48], pidname[16];
    size_t wantlen = (size_t)snprintf(want, sizeof(want), "socket:[%llu]",
                                      (unsigned long long)info->inode);
    size_t h = info->uid % PROC_HINTS;
    struct dirent *e;
    struct stat st;
    int procfd;
    DIR *d;

    procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0)
        return;
    if (a->hint[h].pid && a->hint[h].uid == info->uid) {
        snprintf(pidname, sizeof(pidname), "%d", a->hint[h].pid);
        if (pid_holds(procfd, pidname, want, wantlen)) {
            fill_slot(procfd, pidname, s);
            close(procfd);
            return;
        }
    }
    d = fdopendir(dup(procfd));
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        if (fstatat(procfd, e->d_name, &st, 0) < 0 || st.st_uid != info->uid)
            continue;
        if (pid_holds(procfd, e->d_name, want, wantlen)) {
            fill_slot(procfd, e->d_name, s);
            a->hint[h].uid = info->uid;
            a->hint[h].pid = atoi(e->d_name);
            break;
        }
    }
    if (d)
        closedir(d);
    close(procfd);
}

int appid_process(struct appid *a, const struct appid_info *info, uint64_t now_ms,
                  const char **pcomm, const char **pexe)
{
    struct proc_slot *s = NULL;

    for (size_t i = 0; i < PROC_SLOTS; i++)
        if (a->proc[i].inode == info->inode && a->proc[i].expires > now_ms) {
            s = &a->proc[i];
            break;
        }
    if (!s) {
        s = &a->proc[a->proc_next];
        a->proc_next = (a->proc_next + 1) % PROC_SLOTS;
        memset(s, 0, sizeof(*s));
        s->inode = info->inode;
        s->expires = now_ms + PROC_LIFE_MS;
        proc_find(a, info, s);
    }
    if (!s->found)
        return DV_EINVAL;
    *pcomm = s->comm[0] ? s->comm : NULL;
    *pexe = s->exe[0] ? s->exe : NULL;
    return 0;
}
