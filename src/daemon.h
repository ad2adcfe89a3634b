/* daemon — the running service built from one configuration, and its
 * reload. See daemon.c. */
#ifndef DV_DAEMON_H
#define DV_DAEMON_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

/* What the command line says; applied over the file at start and again on
 * every reload. The strings are borrowed from argv. */
struct daemon_cli {
    const char *config_file;
    char **listen, **upstreams;
    size_t n_listen, n_upstreams;
    unsigned timeout_ms;
    const char *user, *tls_ca, *control;
    int verbose;
};

struct daemon;

/* The file (if any) with the command line on top. NULL when invalid; the
 * problems went to stderr (to_stderr, for start-up and --check) or the log. */
struct config *daemon_load_config(const struct daemon_cli *cli, bool to_stderr);

/* Builds everything cfg asks for and binds every socket (takes cfg; cli must
 * outlive the daemon). NULL on failure, with the reason logged. */
struct daemon *daemon_new(struct ev_loop *loop, const struct daemon_cli *cli, struct config *cfg);
void daemon_free(struct daemon *d);

const struct config *daemon_config(const struct daemon *d);
bool daemon_has_cache(const struct daemon *d);

/* SIGHUP: reads the configuration again and swaps it in, or logs why not and
 * keeps running the old one. */
void daemon_reload(struct daemon *d);
/* Shutdown: closes every listener; replies in flight are still sent. */
void daemon_stop_listening(struct daemon *d);
size_t daemon_pending(const struct daemon *d);
/* SIGUSR1: the "stats:" log lines. */
void daemon_log_stats(const struct daemon *d);
/* One line for the service manager (systemctl status): listeners, upstreams
 * up, queries served. Always NUL-terminated. */
void daemon_status(const struct daemon *d, char *out, size_t cap);

#endif
