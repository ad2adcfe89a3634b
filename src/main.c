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
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ev.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/net.h"
#include "core/notify.h"
#include "core/pidfile.h"
#include "daemon.h"
#include "frontend/control.h"

enum { SHUTDOWN_GRACE_MS = 5000 };

/* The process around the daemon: signals and the shutdown drain. */
struct app {
    struct daemon *d;
    ev_signal sig_int, sig_term, sig_usr1, sig_hup;
    ev_timer drain;
    uint64_t drain_deadline;
    ev_timer watchdog, status; /* service manager: keep-alive, STATUS= refresh */
    char last_status[256];
};

enum {
    OPT_TIMEOUT = 256,
    OPT_USER,
    OPT_PIDFILE,
    OPT_CHECK,
    OPT_TLS_CA,
    OPT_CONTROL,
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
    {"control", required_argument, NULL, OPT_CONTROL},
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
            "                        tls://HOST[:PORT] (DoT, 853), https://HOST[:PORT]/PATH\n"
            "                        (DoH), quic://HOST[:PORT] (DoQ, 853), udp://IP[:PORT]\n"
            "                        (TCP retry on truncation), tcp://IP[:PORT]; a HOST\n"
            "                        that is a name takes its addresses after '#':\n"
            "                        tls://dns.google#8.8.8.8,8.8.4.4\n"
            "      --tls-ca FILE     trust this PEM CA bundle instead of the system store\n"
            "      --timeout MS      per-query deadline before SERVFAIL (default 2500)\n"
            "      --user NAME       user to run as after binding (default nobody)\n"
            "  -v, --verbose         debug logging\n"
            "  -d, --daemon          detach and log to syslog\n"
            "      --pidfile FILE    write the daemon's PID to FILE\n"
            "      --check           validate the configuration and exit\n"
            "      --control PATH    the control socket; with a COMMAND after the options\n"
            "                        (flush [NAME], stats, netchange, portal [SECONDS|off])\n"
            "                        send it to a running daemon\n"
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

/* ---- the service manager (systemd's notify protocol; see core/notify.h) --- */

enum { STATUS_INTERVAL_S = 10 };

/* Sends state with a fresh STATUS= line appended. Quiet when no supervisor
 * listens; a socket we cannot reach is logged once. */
static void app_notify(struct app *a, const char *state)
{
    static bool warned;
    char status[256];
    int rc;

    daemon_status(a->d, status, sizeof(status));
    rc = notify_sendf("%s%sSTATUS=%s", state, *state ? "\n" : "", status);
    if (rc == 0)
        snprintf(a->last_status, sizeof(a->last_status), "%s", status);
    if (rc < 0 && !warned) {
        warned = true;
        log_warn("cannot notify the service manager at %s: %s", getenv("NOTIFY_SOCKET"),
                 rc == DV_EIO ? strerror(errno) : dv_strerror(rc));
    }
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    notify_send("WATCHDOG=1");
}

/* The counters in STATUS= change with every query: refreshed now and then,
 * and only sent when the text differs. */
static void status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct app *a = w->data;
    char status[256];

    daemon_status(a->d, status, sizeof(status));
    if (strcmp(status, a->last_status) != 0)
        app_notify(a, "");
}

/* Every listener is bound and every signal handled: tell the supervisor,
 * and keep its watchdog fed at half the interval it asked for. */
static void app_ready(struct app *a, struct ev_loop *loop)
{
    uint64_t wd = notify_watchdog_usec();

    if (!getenv("NOTIFY_SOCKET"))
        return;
    app_notify(a, "READY=1");
    ev_now_update(loop); /* binding and TLS set-up took a while */
    if (wd) {
        ev_timer_init(&a->watchdog, watchdog_cb, 0., (double)wd / 2e6);
        ev_timer_again(loop, &a->watchdog);
        log_info("watchdog: a ping every %.3f s", (double)wd / 2e6);
    }
    ev_timer_init(&a->status, status_cb, 0., STATUS_INTERVAL_S);
    a->status.data = a;
    ev_timer_again(loop, &a->status);
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct app *a = w->data;

    if (daemon_pending(a->d) == 0 || net_now_ms() >= a->drain_deadline)
        ev_break(loop, EVBREAK_ALL);
}

static void shutdown_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct app *a = w->data;

    if (ev_is_active(&a->drain))
        return;
    log_info("signal %d: stopping; answering %zu queries in flight", w->signum,
             daemon_pending(a->d));
    notify_sendf("STOPPING=1\nSTATUS=stopping: answering %zu queries in flight",
                 daemon_pending(a->d));
    ev_timer_stop(loop, &a->status);
    daemon_stop_listening(a->d);
    ev_signal_stop(loop, &a->sig_usr1);
    ev_signal_stop(loop, &a->sig_hup);
    a->drain_deadline = net_now_ms() + SHUTDOWN_GRACE_MS;
    ev_timer_init(&a->drain, drain_cb, 0., 0.02);
    a->drain.data = a;
    ev_timer_start(loop, &a->drain);
}

static void stats_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct app *a = w->data;

    daemon_log_stats(a->d);
    if (ev_is_active(&a->status))
        app_notify(a, "");
}

/* RELOADING=1 carries the clock reading the service manager uses to tell
 * this reload from an earlier one; READY=1 follows whether or not the new
 * file was taken (a bad one leaves the old configuration serving). */
static void reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct app *a = w->data;

    notify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                 (unsigned long long)notify_monotonic_usec());
    daemon_reload(a->d);
    if (ev_is_active(&a->status))
        app_notify(a, "READY=1");
}

/* Rules naming applications find the process that holds a client's socket
 * in /proc/PID/fd, which only the process's own user may read: keep the two
 * capabilities that allow it (and nothing else) when a rule needs them. */
static bool needs_proc_access(const struct config *c)
{
    for (size_t i = 0; i < c->n_rules; i++)
        if (c->rules[i].n_applications)
            return true;
    return false;
}

static int keep_proc_caps(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2] = {{0}};

    d[0].effective = d[0].permitted =
        (1u << CAP_SYS_PTRACE) | (1u << CAP_DAC_READ_SEARCH);
    if (syscall(SYS_capset, &h, d) < 0) {
        log_err("cannot keep CAP_SYS_PTRACE for 'applications' rules: %s", strerror(errno));
        return DV_EIO;
    }
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    return 0;
}

/* Keeps no way back to root: supplementary groups, gid, uid, and no new
 * privileges through exec. */
static int drop_privileges(const char *user, bool proc_access)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return 0;
    pw = getpwnam(user);
    if (!pw) {
        log_err("user '%s' does not exist", user);
        return DV_EINVAL;
    }
    if (proc_access && pw->pw_uid != 0)
        prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_err("cannot drop privileges to '%s': %s", user, strerror(errno));
        return DV_EIO;
    }
    if (proc_access && pw->pw_uid != 0 && keep_proc_caps())
        return DV_EIO;
    if (pw->pw_uid != 0 && setuid(0) == 0) {
        log_err("privileges could be regained after dropping them");
        return DV_EIO;
    }
    log_info("running as %s (uid %u)", user, (unsigned)pw->pw_uid);
    return 0;
}

/* No exec from here on can gain privileges (setuid binaries, file
 * capabilities), whoever we run as. */
static int no_new_privs(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
        log_err("cannot set no_new_privs: %s", strerror(errno));
        return DV_EIO;
    }
    return 0;
}

/* Every client connection costs a descriptor: take all the hard limit
 * allows, so the soft default (often 1024) is not what an attacker exhausts
 * first. The accept loops back off when even that runs out. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_warn("cannot raise the open file limit to %llu: %s", (unsigned long long)want,
                 strerror(errno));
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

static int push_arg(char ***v, size_t *n, char *arg)
{
    char **p = realloc(*v, (*n + 1) * sizeof(*p));

    if (!p)
        return DV_ENOMEM;
    *v = p;
    p[(*n)++] = arg;
    return 0;
}

int main(int argc, char **argv)
{
    struct app app = {0};
    struct daemon_cli cli_store = {0}, *cli = &cli_store;
    struct ev_loop *loop = NULL;
    const char *pidfile = NULL;
    struct pidfile *pf = NULL;
    bool daemon_mode = false, check = false;
    int opt, rc = 1;
    struct config *cfg;

    log_init(DV_LOG_INFO, false);
    while ((opt = getopt_long(argc, argv, "c:l:u:vdhV", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c': cli->config_file = optarg; break;
        case 'l': {
            struct net_addr a;
            if (net_addr_parse(optarg, 53, &a)) {
                fprintf(stderr, "dnsveil: -l %s: expected ADDR[:PORT] or [IPv6]:PORT\n", optarg);
                goto out;
            }
            if (push_arg(&cli->listen, &cli->n_listen, optarg))
                goto out;
            break;
        }
        case 'u':
            if (push_arg(&cli->upstreams, &cli->n_upstreams, optarg))
                goto out;
            break;
        case OPT_TIMEOUT:
            if (parse_ms(optarg, &cli->timeout_ms)) {
                fprintf(stderr, "dnsveil: --timeout %s: expected milliseconds (1-600000)\n",
                        optarg);
                goto out;
            }
            break;
        case OPT_USER: cli->user = optarg; break;
        case OPT_TLS_CA: cli->tls_ca = optarg; break;
        case OPT_CONTROL: cli->control = optarg; break;
        case 'v': cli->verbose++; break;
        case 'd': daemon_mode = true; break;
        case OPT_PIDFILE: pidfile = optarg; break;
        case OPT_CHECK: check = true; break;
        case 'h': usage(stdout); rc = 0; goto out;
        case 'V': printf("dnsveil %s\n", DV_VERSION); rc = 0; goto out;
        default: usage(stderr); goto out;
        }
    }
    if (optind < argc && cli->control) {
        char cmd[512] = "";
        for (int i = optind; i < argc; i++) {
            if (strlen(cmd) + strlen(argv[i]) + 2 > sizeof(cmd))
                goto out;
            if (i > optind)
                strcat(cmd, " ");
            strcat(cmd, argv[i]);
        }
        rc = control_client(cli->control, cmd);
        goto out;
    }
    if (optind < argc) {
        fprintf(stderr, "dnsveil: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        goto out;
    }
    cfg = daemon_load_config(cli, true);
    if (!cfg)
        goto out;
    if (check) {
        printf("%s: ok: %zu listeners, %zu upstreams, %zu groups, %zu rules, cache %s\n",
               cfg->file ? cfg->file : "(command line)", cfg->n_listeners, cfg->n_upstreams,
               cfg->n_groups, cfg->n_rules, cfg->cache_enabled ? "on" : "off");
        config_free(cfg);
        rc = 0;
        goto out;
    }
    if (cfg->n_upstreams == 0) {
        fprintf(stderr, "dnsveil: no upstream configured (-u URL or [upstreams] in the file)\n");
        config_free(cfg);
        goto out;
    }
    log_init(cfg->log_level, false);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    /* before binding: a second instance on the same pidfile stops here */
    if (pidfile && pidfile_open(pidfile, &pf)) {
        config_free(cfg);
        goto out;
    }
    loop = ev_default_loop(EVFLAG_AUTO);
    app.d = daemon_new(loop, cli, cfg);
    if (!app.d)
        goto out;
    const struct config *run = daemon_config(app.d);
    if (daemon_mode && daemonize(loop))
        goto out;
    log_init(run->log_level, daemon_mode || run->log_syslog);
    if (pf && pidfile_write(pf))
        goto out;
    if (drop_privileges(run->user, needs_proc_access(run)) || no_new_privs())
        goto out;

    ev_signal_init(&app.sig_int, shutdown_cb, SIGINT);
    ev_signal_init(&app.sig_term, shutdown_cb, SIGTERM);
    ev_signal_init(&app.sig_usr1, stats_cb, SIGUSR1);
    ev_signal_init(&app.sig_hup, reload_cb, SIGHUP);
    app.sig_int.data = app.sig_term.data = app.sig_usr1.data = app.sig_hup.data = &app;
    ev_signal_start(loop, &app.sig_int);
    ev_signal_start(loop, &app.sig_term);
    ev_signal_start(loop, &app.sig_usr1);
    ev_signal_start(loop, &app.sig_hup);
    log_info("dnsveil %s started: %zu upstreams, %zu rules, timeout %u ms, cache %s",
             DV_VERSION, run->n_upstreams, run->n_rules, run->timeout_ms,
             daemon_has_cache(app.d) ? "on" : "off");
    app_ready(&app, loop);

    ev_run(loop, 0);

    daemon_log_stats(app.d);
    log_info("stopped");
    rc = 0;
out:
    daemon_free(app.d);
    pidfile_close(pf);
    free(cli->listen);
    free(cli->upstreams);
    if (loop) {
        ev_timer_stop(loop, &app.drain);
        ev_timer_stop(loop, &app.watchdog);
        ev_timer_stop(loop, &app.status);
        ev_loop_destroy(loop);
    }
    return rc;
}
