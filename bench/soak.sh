#!/usr/bin/env bash
# Soak: dnsveil under a steady load for a long time, through each transport
# at once (plain UDP, DoT, DoH, DoQ), half cache hits and half misses, with
# the upstream killed and restarted every SOAK_RESTART seconds. The daemon's
# RSS and open descriptors are sampled every SOAK_SAMPLE seconds; at the end
# it prints each one's least-squares slope (whole run, and second half, once
# the cache has filled) and the load generators' tallies, and where the RSS
# is (bench/memmap.py: the malloc heap, other anonymous memory, wolfSSL's
# static session cache) at the first and last sample. Exit status 1 when
# any query went unanswered or was answered twice, a transport got not one
# NOERROR, or the daemon did not exit cleanly.
#
# The upstream is the Go fault peer (tests/peers/fault) serving all four
# transports from one process; the rules route plain.soak.test. to the plain
# upstream, dot.soak.test. to DoT, and so on. The load is tests/peers/loadgen,
# one per transport, which records every reply. At the end the daemon must
# exit 0 on SIGTERM (an ASan build then reports any leak). A benchmark, not
# a test.
#
# Usage: bench/soak.sh   (DNSVEIL_BIN=build/debug/dnsveil, SOAK_SECONDS=1800,
#                         SOAK_RATE=250 q/s per transport, SOAK_RESTART=300,
#                         SOAK_SAMPLE=10, SOAK_CACHE=2MiB; SOAK_OUT=DIR keeps
#                         the samples: "s rss_kib fds" and bench/memmap.py's)
# Needs: golang-go and the Go libraries of tests/peers/build.sh, openssl,
# dig, python3; loopback only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
BENCH=soak
DNSVEIL=${DNSVEIL_BIN:-$root/build/debug/dnsveil}
SECONDS_TOTAL=${SOAK_SECONDS:-1800}
RATE=${SOAK_RATE:-250}
RESTART=${SOAK_RESTART:-300}
SAMPLE=${SOAK_SAMPLE:-10}
CACHE=${SOAK_CACHE:-2MiB}  # small, so it is full early and the RSS slope shows leaks
TRANSPORTS=(plain dot doh doq)

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_need openssl dig python3
[ -x "$DNSVEIL" ] || bench_die "no dnsveil at $DNSVEIL (set DNSVEIL_BIN)"
bash "$root/tests/peers/build.sh" >/dev/null || bench_die "the Go peers did not build"
PEER=$root/build/peers/fault
LOADGEN=$root/build/peers/loadgen

bench_ca
bench_cert peer soak.test
PLAIN=$(port); DOT=$(port); DOH=$(port); DOQ=$(port); LISTEN=$(port)

peer_pid=
start_peer() {
  : > "$work/peer.log"
  "$PEER" -plain "127.0.0.1:$PLAIN" -dot "127.0.0.1:$DOT" -doh "127.0.0.1:$DOH" \
    -doq "127.0.0.1:$DOQ" -cert "$work/peer.pem" -key "$work/peer.key" \
    >>"$work/peer.log" 2>&1 &
  peer_pid=$!
  pids+=("$peer_pid")
  wait_log "$work/peer.log" ready
}

cat > "$work/soak.toml" <<CONF
[server]
max_inflight_per_client = 4096

[cache]
size = "$CACHE"

[upstreams.plain]
url = "udp://127.0.0.1:$PLAIN"
[upstreams.dot]
url = "tls://127.0.0.1:$DOT"
[upstreams.doh]
url = "https://127.0.0.1:$DOH/dns-query"
[upstreams.doq]
url = "quic://127.0.0.1:$DOQ"

[groups.default]
upstreams = ["dot"]
[groups.plain]
upstreams = ["plain"]
[groups.doh]
upstreams = ["doh"]
[groups.doq]
upstreams = ["doq"]

[[rules]]
domains = ["plain.soak.test"]
group = "plain"
[[rules]]
domains = ["doh.soak.test"]
group = "doh"
[[rules]]
domains = ["doq.soak.test"]
group = "doq"
CONF

start_peer
"$DNSVEIL" -c "$work/soak.toml" -l "127.0.0.1:$LISTEN" --tls-ca "$work/ca.pem" \
  >"$work/dnsveil.log" 2>&1 &
dv=$!
pids+=("$dv")
wait_udp "$LISTEN" dnsveil

count=$((RATE * SECONDS_TOTAL))
gens=()
for t in "${TRANSPORTS[@]}"; do
  "$LOADGEN" -server "127.0.0.1:$LISTEN" -rate "$RATE" -count "$count" -sockets 16 \
    -mix miss:1,hot:1 -hot-pool 200 -zone "$t.soak.test." -wait 8s \
    -out "$work/$t.txt" >"$work/$t.summary" 2>&1 &
  gens+=($!)
  pids+=($!)
done
echo "soak: ${SECONDS_TOTAL}s at $RATE q/s through each of ${TRANSPORTS[*]}," \
     "upstream restarted every ${RESTART}s, sampled every ${SAMPLE}s"

sample() {  # seconds rss_kib fds; and where the RSS is (bench/memmap.py)
  local rss
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$dv/status")
  echo "$1 $rss $(find "/proc/$dv/fd" -mindepth 1 -maxdepth 1 | wc -l)" >> "$work/samples"
  echo "$1 $(python3 "$root/bench/memmap.py" "$dv" SessionCache 2>/dev/null)" >> "$work/memmap"
}
start=$(date +%s)
next_restart=$RESTART
next_sample=0
restarts=0
while :; do
  now=$(( $(date +%s) - start ))
  [ "$now" -ge "$SECONDS_TOTAL" ] && break
  kill -0 "$dv" 2>/dev/null || { tail -n 30 "$work/dnsveil.log" >&2; bench_die "dnsveil died"; }
  if [ "$now" -ge "$next_sample" ]; then
    sample "$now"
    next_sample=$((next_sample + SAMPLE))
  fi
  if [ "$now" -ge "$next_restart" ]; then
    kill -9 "$peer_pid"
    wait "$peer_pid" 2>/dev/null || true
    start_peer
    restarts=$((restarts + 1))
    next_restart=$((next_restart + RESTART))
  fi
  sleep 1
done
for g in "${gens[@]}"; do wait "$g" || bench_die "a load generator failed"; done
sample "$(( $(date +%s) - start ))"

bad=0
for t in "${TRANSPORTS[@]}"; do
  line=$(cat "$work/$t.summary")
  printf '%-6s %s\n' "$t" "$line"
  case "$line" in *" lost=0 duplicated=0 "*) ;; *) bad=1 ;; esac
  # every reply SERVFAIL: the upstream never served (not a soak at all)
  case "$line" in *" noerror="*) ;; *) echo "soak: $t: not one NOERROR" >&2; bad=1 ;; esac
done
python3 - "$work" "${TRANSPORTS[@]}" <<'PY'
import sys

# the longest stretch of send time in which every miss got SERVFAIL:
# how long an upstream restart cost each transport
for t in sys.argv[2:]:
    longest = 0.0
    first = last = None
    for line in open("%s/%s.txt" % (sys.argv[1], t)):
        f = line.split()
        if f[1] == "hot":  # cache hits do not reach the upstream
            continue
        sent, rcode = int(f[2]) / 1e9, int(f[4])
        if rcode == 2:
            first = sent if first is None else first
            last = sent
            longest = max(longest, last - first)
        else:
            first = None
    print("%-6s longest SERVFAIL stretch %.2f s" % (t, longest))
PY
echo "upstream restarts: $restarts"
python3 - "$work/samples" <<'PY'
import sys

rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]


def slope(pts):
    n = len(pts)
    if n < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else float("nan")


half = [r for r in rows if r[0] >= rows[-1][0] / 2]
for label, col, unit in (("RSS", 1, "KiB"), ("open fds", 2, "fds")):
    print("%-8s first %d last %d min %d max %d %s; slope %+.2f %s/min (whole run), "
          "%+.2f %s/min (second half)" % (
              label, rows[0][col], rows[-1][col], min(r[col] for r in rows),
              max(r[col] for r in rows), unit, 60 * slope([(r[0], r[col]) for r in rows]),
              unit, 60 * slope([(r[0], r[col]) for r in half]), unit))
print("samples (s RSS-KiB fds): " + ", ".join("%d %d %d" % r for r in rows))
PY
python3 - "$work/memmap" <<'PY'
import sys

# where the RSS is (bench/memmap.py): the malloc heap, other anonymous
# mappings, wolfSSL's static session cache (in the .bss, touched page by page)
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) > 1:
        rows.append((float(f[0]), dict((k, int(v)) for k, v in (x.split("=") for x in f[1:]))))


def slope(pts):
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else float("nan")


if len(rows) > 1:
    half = [r for r in rows if r[0] >= rows[-1][0] / 2]
    for k in (k for k in rows[0][1] if k != "other"):
        print("%-12s first %d last %d KiB; slope %+.2f KiB/min (whole run), "
              "%+.2f KiB/min (second half)" % (
                  k, rows[0][1][k], rows[-1][1].get(k, 0),
                  60 * slope([(t, m.get(k, 0)) for t, m in rows]),
                  60 * slope([(t, m.get(k, 0)) for t, m in half])))
PY
if [ -n "${SOAK_OUT:-}" ]; then  # the raw samples, for figures
  mkdir -p "$SOAK_OUT"
  cp "$work/samples" "$work/memmap" "$work/dnsveil.log" "$work/peer.log" "$SOAK_OUT/"
fi
# a clean exit, and with a sanitizer build no leak report
kill -TERM "$dv"
rc=0
wait "$dv" || rc=$?
reports=$(grep -c "Sanitizer" "$work/dnsveil.log" || true)
if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
  tail -n 60 "$work/dnsveil.log" >&2
  echo "soak: dnsveil exited with status $rc" >&2
  bad=1
fi
if [ "$bad" -ne 0 ]; then
  echo "soak: failed (lost, duplicated, never answered, or a bad exit)" >&2
  exit 1
fi
