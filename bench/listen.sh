#!/usr/bin/env bash
# Inbound encrypted listeners benchmark (not a test): dnsperf as the client
# over DNS-over-TLS (-m dot) and DNS-over-HTTPS (-m doh, GET and POST) to
#   - dnsveil's listen_tls / listen_https,
#   - dnsdist's DoT (addTLSLocal) and DoH (addDOHLocal) frontends,
# both with their cache on and knotd (the test zone) behind them, asking a
# small fixed set of names over and over: after the warm-up every query is
# a cache hit, so the figure is the listener's own cost (TLS, framing,
# HTTP/2). Each row loads BOTH servers at once, one dnsperf each with the
# same options, first at full speed (QPS), then at a fixed rate (latency);
# the CPU each server used for its queries comes from /proc (utime+stime of
# all its threads), so a server that merely got less of the shared CPU is
# told apart from one that costs more per query.
#
# The client is dnsperf >= 2.15.1, built from Debian's source (sid's 2.16
# today) by bench/build_dnsperf.sh (or DNSPERF=...). Debian 12's dnsperf
# 2.10 loses DoH answers once several queries are in flight on a
# connection: with it dnsdist's DoH row showed ~1 QPS with nearly every
# query "lost" although its 200s were counted. dnsdist itself was fine
# (curl, and Python's h2 with several streams on one connection, get every
# answer with the right ID; 2.10 with one query in flight, and 2.16 at
# any depth, lose none). dnsperf's POST writes the HEADERS and DATA
# frames in two writes without TCP_NODELAY, so at a low rate the DATA
# waits for the server's delayed ACK of the HEADERS (p50 ~26 ms for both
# servers at 500 q/s) whoever the server is; GET is one frame and the
# cleaner figure.
#
# Usage: bench/listen.sh                (DNSVEIL_BIN=build/release/dnsveil)
#        SECONDS_PER_RUN=20 RATE=3000 OUTSTANDING=200 CLIENTS=4 bench/listen.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE=${RATE:-500}
OUTSTANDING=${OUTSTANDING:-100}
CLIENTS=${CLIENTS:-4}

BENCH=listen
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_need knotd dnsdist openssl dig
[ -x "$DNSVEIL_BIN" ] ||
  bench_die "no dnsveil at $DNSVEIL_BIN (cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release && cmake --build build/release, or set DNSVEIL_BIN)"
if [ -z "${DNSPERF:-}" ]; then
  DNSPERF=$(bash "$root/bench/build_dnsperf.sh") ||
    bench_die "no dnsperf >= 2.15.1 (bench/build_dnsperf.sh failed; DNSPERF=... to pick one)"
fi
clk=$(getconf CLK_TCK)

bench_ca
bench_cert srv dns.test
bench_knotd
# dnsveil drops to 'nobody' and reads the certificate again on SIGHUP
chmod 755 "$work"
chmod 644 "$work/srv.key"

# the names the zone answers, asked again and again: cache hits
printf '%s\n' "www.test A" "www.test AAAA" "mail.test A" "test SOA" "test NS" "test MX" \
  > "$work/hits"

# ---- dnsveil: plain on DV (readiness), DoT on DV_TLS, DoH on DV_DOH
DV=$(port); DV_TLS=$(port); DV_DOH=$(port)
printf '[server]\nlisten = "127.0.0.1:%s"\nlisten_tls = "127.0.0.1:%s"\nlisten_https = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\ntcp_max_connections = 1024\n' \
  "$DV" "$DV_TLS" "$DV_DOH" "$work/srv.pem" "$work/srv.key" > "$work/dnsveil.toml"
"$DNSVEIL_BIN" -c "$work/dnsveil.toml" -u "udp://127.0.0.1:$KNOT" \
  >"$work/dnsveil.log" 2>&1 & DV_PID=$!; pids+=("$DV_PID")
wait_udp "$DV" dnsveil

# ---- dnsdist: the same listeners and a packet cache
DD=$(port); DD_TLS=$(port); DD_DOH=$(port)
cat > "$work/dnsdist.conf" <<DDCONF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$DD")
addTLSLocal("127.0.0.1:$DD_TLS", "$work/srv.pem", "$work/srv.key", {provider="openssl"})
addDOHLocal("127.0.0.1:$DD_DOH", "$work/srv.pem", "$work/srv.key", "/dns-query")
setACL({"127.0.0.0/8"})
newServer({address="127.0.0.1:$KNOT", checkName="www.test."})
pc = newPacketCache(100000)
getPool(""):setCache(pc)
DDCONF
dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
DD_PID=$!; pids+=("$DD_PID")
wait_udp "$DD" dnsdist

# dnsperf's options per transport; $1 = port
opts_dot() { echo "-m dot -s 127.0.0.1 -p $1"; }
opts_doh_get() { echo "-m doh -s 127.0.0.1 -p $1 -O doh-uri=https://127.0.0.1:$1/dns-query -O doh-method=GET"; }
opts_doh_post() { echo "-m doh -s 127.0.0.1 -p $1 -O doh-uri=https://127.0.0.1:$1/dns-query -O doh-method=POST"; }

# warm both caches (one cache per server, whatever the transport)
# shellcheck disable=SC2046
{ "$DNSPERF" -d "$work/hits" -n 20 -t 3 $(opts_dot "$DV_TLS") >"$work/warm.out" 2>&1 || true; }
# shellcheck disable=SC2046
{ "$DNSPERF" -d "$work/hits" -n 20 -t 3 $(opts_dot "$DD_TLS") >/dev/null 2>&1 || true; }

completed() { awk '/Queries completed/ {print $3; exit}' "$1"; }

# p50 and p99 in ms from dnsperf's latency histogram (the queries' one,
# the first; buckets "lo - hi: count", a bucket's upper edge counts)
pcts() {
  awk '/Latency bucket/ && !h++ {on = 1; next}
       on && /^ *[0-9.]+ - [0-9.]+: *[0-9]+/ {
         gsub(/:/, ""); hi[n] = $3; c[n] = $4; tot += $4; n++; next }
       on && n {on = 0}
       END {
         if (!tot) { printf "%8s %8s", "-", "-"; exit }
         for (i = 0; i < n; i++) {
           cum += c[i]
           if (!p50 && cum >= tot * 0.50) p50 = hi[i]
           if (!p99 && cum >= tot * 0.99) p99 = hi[i]
         }
         printf "%8.2f %8.2f", p50 * 1000, p99 * 1000 }' "$1"
}

row() {  # row LABEL OUTFILE TICKS: one table line
  local n us
  n=$(completed "$2"); n=${n:-0}
  if [ "$n" -gt 0 ]; then
    us=$(awk -v t="$3" -v c="$clk" -v n="$n" 'BEGIN { printf "%.1f", t / c * 1e6 / n }')
  else us="-"; fi
  printf '%-18s %8.0f %s %8.2f %8.2f %6s %9s\n' "$1" \
    "$(awk '/Queries per second/ {print $4; exit}' "$2")" "$(pcts "$2")" \
    "$(awk '/Average Latency/ {print $4 * 1000; exit}' "$2")" \
    "$(awk '/Average Latency/ {gsub(/\)/, "", $8); print $8 * 1000; exit}' "$2")" \
    "$(awk '/Queries lost/ {print $3; exit}' "$2")" "$us"
}

pair() {  # pair TRANSPORT LABEL dnsperf-args...: both servers loaded at once
  local t=$1 label=$2; shift 2
  local dv0 dd0 dv1 dd1 p1 p2
  local dvport ddport
  case $t in dot) dvport=$DV_TLS ddport=$DD_TLS ;; *) dvport=$DV_DOH ddport=$DD_DOH ;; esac
  dv0=$(cpu_ticks "$DV_PID"); dd0=$(cpu_ticks "$DD_PID")
  # shellcheck disable=SC2046
  "$DNSPERF" -d "$work/hits" -l "$SECONDS_PER_RUN" -t 3 -c "$CLIENTS" -O latency-histogram \
    $(opts_"$t" "$dvport") "$@" \
    >"$work/dv.out" 2>&1 & p1=$!
  # shellcheck disable=SC2046
  "$DNSPERF" -d "$work/hits" -l "$SECONDS_PER_RUN" -t 3 -c "$CLIENTS" -O latency-histogram \
    $(opts_"$t" "$ddport") "$@" \
    >"$work/dd.out" 2>&1 & p2=$!
  wait "$p1" || true
  wait "$p2" || true
  dv1=$(cpu_ticks "$DV_PID"); dd1=$(cpu_ticks "$DD_PID")
  row "dnsveil $label" "$work/dv.out" $((dv1 - dv0))
  row "dnsdist $label" "$work/dd.out" $((dd1 - dd0))
}

echo
echo "Inbound DoT/DoH, cache hits, $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS_PER_RUN}s per run,"
echo "$CLIENTS connections per server, both servers loaded at once, $(nproc) cores shared with the clients"
echo "$("$DNSVEIL_BIN" --version 2>/dev/null | awk 'NR == 1' || echo '?'), $(dnsdist --version 2>/dev/null | awk 'NR == 1'), dnsperf $(awk '/^Version/ {print $2; exit}' "$work/warm.out")"
printf '%-18s %8s %8s %8s %8s %8s %6s %9s\n' "" "QPS" "p50 ms" "p99 ms" "avg ms" "max ms" "lost" "cpu us/q"
echo "-- full speed, $OUTSTANDING outstanding per dnsperf"
pair dot "DoT" -q "$OUTSTANDING"
pair doh_get "DoH GET" -q "$OUTSTANDING"
pair doh_post "DoH POST" -q "$OUTSTANDING"
echo "-- fixed rate, $RATE queries/s each"
pair dot "DoT" -q "$OUTSTANDING" -Q "$RATE"
pair doh_get "DoH GET" -q "$OUTSTANDING" -Q "$RATE"
pair doh_post "DoH POST" -q "$OUTSTANDING" -Q "$RATE"

echo
echo "RSS after the runs: dnsveil $(rss_kb "$DV_PID") kB, dnsdist $(rss_kb "$DD_PID") kB"
