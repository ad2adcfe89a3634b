#!/usr/bin/env bash
# From a fresh clone to a running resolver: install the build dependencies,
# build the Release binary in build/release, then (re)start dnsveil as a
# daemon on config.example.toml and check that it serves 127.0.0.53:53.
#
# Environment: DV_CONFIG (default config.example.toml), DV_PIDFILE (default
# /run/dnsveil.pid), DV_CHECK_ADDR / DV_CHECK_PORT (default 127.0.0.53 / 53).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=build/release
bin=$root/$build_dir/dnsveil
config=${DV_CONFIG:-config.example.toml}
pidfile=${DV_PIDFILE:-/run/dnsveil.pid}
addr=${DV_CHECK_ADDR:-127.0.0.53}
port=${DV_CHECK_PORT:-53}

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"
  fi
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run CMD...: quiet on success, the output's tail on failure.
run() {
  : >"$log"
  if ! "$@" >"$log" 2>&1; then
    echo "setup: failed: $*" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

# --- dependencies and build -------------------------------------------------

"$root/scripts/deps.sh"

run cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
run cmake --build "$build_dir" -j"$(nproc)"
[ -x "$bin" ] || die "the build finished but $bin is missing"

stripped=$(mktemp)
strip -o "$stripped" "$bin"
say "built $build_dir/dnsveil: $(stat -c %s "$bin") bytes, $(stat -c %s "$stripped") stripped"
rm -f "$stripped"

# --- (re)start the daemon ---------------------------------------------------

[ -f "$config" ] || die "no configuration file '$config'"
if ! "$bin" --check -c "$config" >"$log" 2>&1; then
  cat "$log" >&2
  die "'$config' does not validate"
fi

# The process the pidfile names, if it is alive: "PID EXE" (a rebuilt binary
# shows as "<path> (deleted)").
pidfile_process() {
  local pid exe
  [ -r "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  echo "$pid ${exe% (deleted)}"
}
our_pid() {
  local p
  p=$(pidfile_process) || return 1
  [ "${p#* }" = "$bin" ] || return 1
  echo "${p%% *}"
}

if p=$(pidfile_process); then
  pid=${p%% *} exe=${p#* }
  if [ "$exe" = "$bin" ]; then
    as_root kill -TERM "$pid"
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then
      echo "setup: dnsveil ($pid) ignored SIGTERM for 5 s; killing it" >&2
      as_root kill -KILL "$pid"
      for _ in $(seq 20); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    say "stopped the previous dnsveil ($pid)"
  elif [ "$(basename "$exe")" = dnsveil ]; then
    die "$pidfile belongs to another dnsveil ($exe, pid $pid); stop it or set DV_PIDFILE"
  fi
fi
# Whatever is left names a dead process (or a reused pid): stale.
[ ! -e "$pidfile" ] || as_root rm -f "$pidfile"

udp_bound() {  # true when something listens on $addr:$port/udp
  if command -v ss >/dev/null; then
    local bound
    bound=$(ss -Hulpn "src $addr:$port" 2>/dev/null || true)
    [ -n "$bound" ]
  else
    # /proc/net/udp: local address as little-endian hex IPv4 : hex port.
    local hex
    hex=$(awk -v a="$addr" -v p="$port" \
          'BEGIN { split(a, o, "."); printf "%02X%02X%02X%02X:%04X", o[4], o[3], o[2], o[1], p }')
    awk -v a="$hex" '$2 == a { found = 1 } END { exit !found }' /proc/net/udp
  fi
}

if udp_bound; then
  echo "setup: $addr:$port/udp is already taken:" >&2
  ss -Hulpn "src $addr:$port" >&2 2>/dev/null || true
  die "stop whatever holds it (e.g. systemd-resolved's stub listener) and rerun"
fi

if ! as_root "$bin" -c "$config" --daemon --pidfile "$pidfile" >"$log" 2>&1; then
  cat "$log" >&2
  die "dnsveil did not start"
fi

# The daemon writes its pidfile after detaching: give it a moment.
pid=""
for _ in $(seq 50); do
  if pid=$(our_pid) && udp_bound; then break; fi
  pid=""
  sleep 0.1
done
if [ -z "$pid" ]; then
  die "dnsveil detached but is not running with $pidfile and $addr:$port/udp bound;" \
      "run '$build_dir/dnsveil -c $config' in the foreground to see why"
fi

answer=""
if command -v dig >/dev/null; then
  status=$(dig +time=4 +tries=1 @"$addr" -p "$port" localhost A 2>/dev/null |
           sed -n 's/.*status: \([A-Z]*\),.*/\1/p' || true)
  if [ -n "$status" ]; then answer=", answers ($status for localhost)"
  else answer=", but gave no answer to dig within 4 s"
  fi
fi
say "dnsveil running (pid $pid) on $addr:$port$answer; stop it with: kill \$(cat $pidfile)"
