/* appid — which local program sent a query (Linux). The client's socket is
 * found with a NETLINK_SOCK_DIAG exact lookup on the query's two endpoints,
 * which gives its owner's uid, its cgroup v2 id and its inode; the cgroup id
 * maps to a path through the cgroup2 directory inodes, and the process name
 * and executable come from /proc, filtered by uid, only when asked for.
 * Every answer is cached; nothing here runs unless a rule needs it. */
#ifndef DV_RESOLVE_APPID_H
#define DV_RESOLVE_APPID_H

#include <stdbool.h>
#include <stdint.h>

#include "core/net.h"

struct appid;

struct appid_info {
    uint32_t uid;
    uint64_t cgroup_id; /* 0 when the kernel does not report it */
    uint64_t inode;     /* the client socket's inode */
};

/* The netlink socket opens on first use. NULL on ENOMEM. */
struct appid *appid_new(void);
void appid_del(struct appid *a);

/* Finds the socket that sent a query from client to server (the address and
 * port it was sent to) over UDP or TCP. IPv4-mapped IPv6 addresses are
 * looked up as IPv4. 0, DV_EINVAL (no such socket: gone, or in another
 * network namespace), DV_EIO (netlink failed). */
int appid_lookup(struct appid *a, bool tcp, const struct net_addr *client,
                 const struct net_addr *server, struct appid_info *out);

/* The cgroup's path below the cgroup2 mount ("/user.slice/..."), or NULL
 * when unknown. Valid until the next appid call. */
const char *appid_cgroup_path(struct appid *a, uint64_t cgroup_id, uint64_t now_ms);

/* The process holding the socket: its comm and executable path (either may
 * be NULL when unreadable). 0 or DV_EINVAL (not found). The strings are
 * valid until the next appid call. */
int appid_process(struct appid *a, const struct appid_info *info, uint64_t now_ms,
                  const char **pcomm, const char **pexe);

/* The cgroup2 mount point from a /proc/self/mountinfo text (NULL when none):
 * exposed for tests. Returns out or NULL. */
char *appid_cgroup2_mount(const char *mountinfo, char *out, size_t cap);

#endif
