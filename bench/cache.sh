#!/usr/bin/env bash
# Cache-hit throughput: dnsveil against dnsdist with its packet cache, both in
# front of the same knotd, measured by dnsperf in the same run. Two working
# sets: 10 names, and 100,000 distinct names (the cost per hit must stay flat).
# A benchmark, not a test: it prints figures and asserts nothing.
#
#   bash bench/cache.sh            (needs root for the apt installs; ~2 minutes)
#   DURATION=20 bash bench/cache.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}

BENCH=cache
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_install knot dnsdist dnsperf
bench_need knotd dnsdist dnsperf dig
[ -x "$BIN" ] || bench_die "build dnsveil first (bash scripts/setup.sh, or set DNSVEIL_BIN)"
chmod 755 "$work"
KNOT=$(port); VEIL=$(port); DIST=$(port)

# a zone with 100,000 names, each with a one-hour TTL so nothing expires
{
    echo '$ORIGIN bench.'
    echo '$TTL 3600'
    echo '@ IN SOA ns.bench. hostmaster.bench. 1 7200 3600 1209600 3600'
    echo '@ IN NS ns.bench.'
    echo 'ns IN A 127.0.0.1'
    for ((i = 0; i < 100000; i++)); do echo "h$i IN A 192.0.2.$((i % 250 + 1))"; done
} >"$work/bench.zone"
cat >"$work/knot.conf" <<EOF
server:
    rundir: "$work"
    listen: 127.0.0.1@$KNOT
database:
    storage: "$work"
zone:
  - domain: bench.
    file: "$work/bench.zone"
EOF
knotd -c "$work/knot.conf" >"$work/knotd.log" 2>&1 &
pids+=($!)

# both caches sized to hold the 100,000-name set
printf '[cache]\nsize = "64MiB"\n' >"$work/dnsveil.toml"
chmod 644 "$work/dnsveil.toml"
"$BIN" -c "$work/dnsveil.toml" -l "127.0.0.1:$VEIL" -u "udp://127.0.0.1:$KNOT" >"$work/dnsveil.log" 2>&1 &
veil_pid=$!; pids+=($veil_pid)

cat >"$work/dnsdist.conf" <<EOF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$DIST")
newServer({address="127.0.0.1:$KNOT"})
pc = newPacketCache(200000, {maxTTL=86400})
getPool(""):setCache(pc)
EOF
dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
dist_pid=$!; pids+=($dist_pid)

for ((i = 0; i < 100; i++)); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$KNOT" h1.bench >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 0.5

for ((i = 0; i < 10; i++)); do echo "h$i.bench A"; done >"$work/names10"
for ((i = 0; i < 100000; i++)); do echo "h$i.bench A"; done >"$work/names100k"

qps() { # server port datafile -> queries per second
    dnsperf -s 127.0.0.1 -p "$2" -d "$3" -c "$CLIENTS" -l "$DURATION" -q 200 2>/dev/null |
        awk '/Queries per second/ {print int($4)}'
}
warm() { dnsperf -s 127.0.0.1 -p "$1" -d "$2" -n 1 -c "$CLIENTS" -q 200 >/dev/null 2>&1; }


# twice: dnsveil's S3-FIFO admits a name to its main queue on the second
# sight, as it is meant to against one-hit floods
for _ in 1 2; do
    warm "$VEIL" "$work/names100k"
    warm "$DIST" "$work/names100k"
done

printf '%-24s %14s %14s %8s\n' "working set (cache hits)" "dnsveil q/s" "dnsdist q/s" "ratio"
for set in names10 names100k; do
    v=$(qps dnsveil "$VEIL" "$work/$set")
    d=$(qps dnsdist "$DIST" "$work/$set")
    printf '%-24s %14s %14s %8s\n' "$set" "$v" "$d" "$(awk -v a="$v" -v b="$d" 'BEGIN {printf "%.2fx", (b ? a / b : 0)}')"
done
printf '\nRSS after the run: dnsveil %s KiB, dnsdist %s KiB\n' "$(rss_kb "$veil_pid")" "$(rss_kb "$dist_pid")"
printf 'dnsperf: %s clients, %s s per figure; both proxies and dnsperf share this machine (%s cores)\n' \
    "$CLIENTS" "$DURATION" "$(nproc)"
