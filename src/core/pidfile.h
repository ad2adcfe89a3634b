/* pidfile — the daemon's PID in a file that also says, by its lock, whether
 * a dnsveil is running.
 *
 * The file is opened before privileges are dropped, so it is opened with
 * O_NOFOLLOW and must be a regular file: a symlink planted at the path
 * cannot make root write elsewhere. An exclusive flock held for the life of
 * the process refuses a second instance on the same path; the lock dies
 * with the process, so a file left behind by a crash never blocks a start.
 *
 * Removal at exit needs write permission on the directory, which the
 * unprivileged user has when the pidfile lives in a directory it owns
 * (/run/dnsveil/, made by systemd's RuntimeDirectory= or the init script).
 * Where it cannot, the file is emptied through the descriptor kept open
 * since start, so it names no process, and the log says why. */
#ifndef DV_CORE_PIDFILE_H
#define DV_CORE_PIDFILE_H

struct pidfile;

/* Opens and locks path. *pp is NULL on failure. 0, DV_EIO (cannot open: a
 * symlink, not a regular file, no permission; logged) or DV_EAGAIN
 * (another process holds the lock; logged with its PID when readable). */
int pidfile_open(const char *path, struct pidfile **pp);

/* Writes the calling process's PID (after daemonizing). 0 or DV_EIO. */
int pidfile_write(struct pidfile *p);

/* Removes the file (or empties it when its directory forbids that), drops
 * the lock and frees p. NULL is a no-op. */
void pidfile_close(struct pidfile *p);

#endif
