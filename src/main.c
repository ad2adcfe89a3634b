/* dnsveil — command line, start-up (bind, then drop privileges), signals and
 * ordered shutdown. Everything else lives in the modules. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "frontend/frontend.h"
#include "resolve/query.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

enum { SHUTDOWN_GRACE_MS = 5000 };

struct daemon {
    struct ev_loop *loop;
    struct config *cfg;
    struct query_engine *qe;
    struct fe_udp **udp;
    struct fe_tcp **tcp;
    size_t nlisten;
    ev_signal sig_int, sig_term, sig_usr1;
    ev_timer drain;
    uint64_t drain_deadline;
};

enum {
    OPT_TIMEOUT = 256,
    OPT_USER,
    OPT_PIDFILE,
    OPT_CHECK,
    OPT_TLS_CA,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"listen", required_argument, NULL, 'l'},
    {"upstream", required_argument, NULL, 'u'},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"user", required_argument, NULL, OPT_USER},
    {"verbose", no_argument, NULL, 'v'},
    {"daemon", no_argument, NULL, 'd'},
    {"pidfile", required_argument, NULL, OPT_PIDFILE},
    {"check", no_argument, NULL, OPT_CHECK},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dnsveil [options]\n"
            "  -c, --config FILE     configuration file (TOML)\n"
            "  -l, --listen ADDR     listen on ADDR[:PORT] over UDP and TCP (repeatable;\n"
            "                        default 127.0.0.53:53); [::1]:53 for IPv6\n"
            "  -u, --upstream URL    upstream server, tried in the order given (repeatable):\n"
            "                        udp://IP[:PORT] (TCP retry on truncation), tcp://IP[:PORT]\n"
            "      --tls-ca FILE     trust this PEM CA bundle instead of the system store\n"
            "      --timeout MS      per-query deadline before SERVFAIL (default 2500)\n"
            "      --user NAME       user to run as after binding (default nobody)\n"
            "  -v, --verbose         debug logging\n"
            "  -d, --daemon          detach and log to syslog\n"
            "      --pidfile FILE    write the daemon's PID to FILE\n"
            "      --check           validate the configuration and exit\n"
            "  -h, --help            this help\n"
            "  -V, --version         print the version\n"
            "Signals: SIGTERM/SIGINT drain and exit; SIGUSR1 logs statistics.\n");
}

static int parse_ms(const char *s, unsigned *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 600000)
        return DV_EINVAL;
    *out = (unsigned)v;
    return 0;
}

static void stop_listeners(struct daemon *d)
{
    for (size_t i = 0; i < d->nlisten; i++) {
        fe_udp_close(d->udp[i]);
        fe_tcp_close(d->tcp[i]);
        d->udp[i] = NULL;
        d->tcp[i] = NULL;
    }
    d->nlisten = 0;
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;

    if (query_pending(d->qe) == 0 || net_now_ms() >= d->drain_deadline)
        ev_break(loop, EVBREAK_ALL);
}

static void shutdown_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;

    if (ev_is_active(&d->drain))
        return;
    log_info("signal %d: stopping; answering %zu queries in flight", w->signum,
             query_pending(d->qe));
    stop_listeners(d);
    ev_signal_stop(loop, &d->sig_usr1);
    d->drain_deadline = net_now_ms() + SHUTDOWN_GRACE_MS;
    ev_timer_init(&d->drain, drain_cb, 0., 0.02);
    d->drain.data = d;
    ev_timer_start(loop, &d->drain);
}

static void stats_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;

    query_stats_log(d->qe);
}

static int bind_listeners(struct daemon *d)
{
    const struct config *c = d->cfg;
    struct fe_tcp_opts to = {.idle_timeout_ms = c->tcp_idle_ms, .max_conns = c->tcp_max_conns};
    char a[NET_ADDRSTRLEN];

    d->udp = calloc(c->n_listeners, sizeof(*d->udp));
    d->tcp = calloc(c->n_listeners, sizeof(*d->tcp));
    if (!d->udp || !d->tcp)
        return DV_ENOMEM;
    for (size_t i = 0; i < c->n_listeners; i++) {
        const struct cfg_listener *l = &c->listeners[i];
        net_addr_str(&l->addr, a, sizeof(a));
        d->nlisten = i + 1;
        if (l->udp && !(d->udp[i] = fe_udp_new(d->loop, &l->addr, d->qe))) {
            log_err("cannot listen on %s/udp: %s", a, strerror(errno));
            return DV_EIO;
        }
        if (l->tcp && !(d->tcp[i] = fe_tcp_new(d->loop, &l->addr, d->qe, &to))) {
            log_err("cannot listen on %s/tcp: %s", a, strerror(errno));
            return DV_EIO;
        }
        log_info("listening on %s", a);
    }
    return 0;
}

static struct pool *build_pool(struct daemon *d)
{
    const struct config *c = d->cfg;
    struct upstream **ups = calloc(c->n_upstreams ? c->n_upstreams : 1, sizeof(*ups));
    struct pool *p = NULL;
    char err[256];
    size_t n = 0;

    if (!ups)
        return NULL;
    for (; n < c->n_upstreams; n++) {
        ups[n] = upstream_new(d->loop, &c->upstreams[n], c, err, sizeof(err));
        if (!ups[n]) {
            log_err("%s", err);
            goto out;
        }
    }
    p = pool_new("default", ups, n);
out:
    for (size_t i = 0; i < n; i++)
        upstream_unref(ups[i]);
    free(ups);
    return p;
}

/* Keeps no way back to root: supplementary groups, gid, uid, and no new
 * privileges through exec. */
static int drop_privileges(const char *user)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return 0;
    pw = getpwnam(user);
    if (!pw) {
        log_err("user '%s' does not exist", user);
        return DV_EINVAL;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_err("cannot drop privileges to '%s': %s", user, strerror(errno));
        return DV_EIO;
    }
    if (pw->pw_uid != 0 && setuid(0) == 0) {
        log_err("privileges could be regained after dropping them");
        return DV_EIO;
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    log_info("running as %s (uid %u)", user, (unsigned)pw->pw_uid);
    return 0;
}

static int daemonize(struct ev_loop *loop)
{
    pid_t pid = fork();

    if (pid < 0)
        return DV_EIO;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return DV_EIO;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    if (chdir("/") < 0)
        return DV_EIO;
    ev_loop_fork(loop);
    return 0;
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        log_err("cannot write pidfile %s: %s", path, strerror(errno));
        return DV_EIO;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    struct daemon d = {0};
    const char *config_file = NULL, *pidfile = NULL;
    bool daemon_mode = false, check = false;
    int verbose = 0, opt, rc = 1;
    struct pool *pool = NULL;

    d.cfg = config_new();
    if (!d.cfg)
        return 1;
    log_init(DV_LOG_INFO, false);
    while ((opt = getopt_long(argc, argv, "c:l:u:vdhV", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case 'l':
            if (config_add_listener(d.cfg, optarg, true, true)) {
                fprintf(stderr, "dnsveil: -l %s: expected ADDR[:PORT] or [IPv6]:PORT\n", optarg);
                goto out;
            }
            break;
        case 'u':
            if (config_add_upstream(d.cfg, NULL, optarg))
                goto out;
            break;
        case OPT_TIMEOUT:
            if (parse_ms(optarg, &d.cfg->timeout_ms)) {
                fprintf(stderr, "dnsveil: --timeout %s: expected milliseconds (1-600000)\n",
                        optarg);
                goto out;
            }
            break;
        case OPT_USER:
            free(d.cfg->user);
            d.cfg->user = strdup(optarg);
            break;
        case 'v': verbose++; break;
        case 'd': daemon_mode = true; break;
        case OPT_PIDFILE: pidfile = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_TLS_CA:
            free(d.cfg->ca_file);
            d.cfg->ca_file = strdup(optarg);
            break;
        case 'h': usage(stdout); rc = 0; goto out;
        case 'V': printf("dnsveil %s\n", DV_VERSION); rc = 0; goto out;
        default: usage(stderr); goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dnsveil: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        goto out;
    }
    if (config_file) {
        fprintf(stderr, "dnsveil: %s: configuration files are not supported by this build\n",
                config_file);
        goto out;
    }
    if (d.cfg->n_listeners == 0 && config_add_listener(d.cfg, "127.0.0.53:53", true, true))
        goto out;
    if (verbose)
        d.cfg->log_level = DV_LOG_DEBUG;
    if (check) {
        printf("configuration ok: %zu listeners, %zu upstreams\n", d.cfg->n_listeners,
               d.cfg->n_upstreams);
        rc = 0;
        goto out;
    }
    if (d.cfg->n_upstreams == 0) {
        fprintf(stderr, "dnsveil: no upstream configured (-u URL)\n");
        goto out;
    }
    log_init(d.cfg->log_level, false);
    signal(SIGPIPE, SIG_IGN);

    d.loop = ev_default_loop(EVFLAG_AUTO);
    pool = build_pool(&d);
    if (!pool)
        goto out;
    struct query_opts qo = {.timeout_ms = d.cfg->timeout_ms};
    d.qe = query_engine_new(d.loop, &qo, pool);
    if (!d.qe || bind_listeners(&d))
        goto out;
    if (daemon_mode) {
        if (daemonize(d.loop))
            goto out;
        log_init(d.cfg->log_level, true);
    }
    if (pidfile && write_pidfile(pidfile))
        goto out;
    if (drop_privileges(d.cfg->user))
        goto out;

    ev_signal_init(&d.sig_int, shutdown_cb, SIGINT);
    ev_signal_init(&d.sig_term, shutdown_cb, SIGTERM);
    ev_signal_init(&d.sig_usr1, stats_cb, SIGUSR1);
    d.sig_int.data = d.sig_term.data = d.sig_usr1.data = &d;
    ev_signal_start(d.loop, &d.sig_int);
    ev_signal_start(d.loop, &d.sig_term);
    ev_signal_start(d.loop, &d.sig_usr1);
    log_info("dnsveil %s started: %zu upstreams, timeout %u ms", DV_VERSION,
             d.cfg->n_upstreams, d.cfg->timeout_ms);

    ev_run(d.loop, 0);

    query_stats_log(d.qe);
    log_info("stopped");
    rc = 0;
out:
    stop_listeners(&d);
    query_engine_del(d.qe);
    pool_unref(pool);
    free(d.udp);
    free(d.tcp);
    config_free(d.cfg);
    if (d.loop) {
        ev_timer_stop(d.loop, &d.drain);
        ev_loop_destroy(d.loop);
    }
    return rc;
}
