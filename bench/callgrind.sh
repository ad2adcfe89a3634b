#!/usr/bin/env bash
# Instructions per query on each upstream path, from callgrind: repeatable
# where CPU time on a shared machine is not. dnsveil runs under
# valgrind --tool=callgrind against local upstreams (knotd, unbound with DoT
# and DoH, the Go DoQ peer); after a warm-up the counters are zeroed, N
# queries with fresh names go through at a steady rate, and the total is
# divided by N. The dumps stay in $BENCH_OUT (default /tmp/dnsveil-callgrind)
# for callgrind_annotate.
#
# Usage: bench/callgrind.sh [PATH...]  (PATH: udp dot doh doq hit; default all;
#        valgrind and the servers are installed when missing and root)
#        BENCH_QUERIES=2000 BENCH_RATE=500 DNSVEIL_BIN=build/release/dnsveil
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
N=${BENCH_QUERIES:-2000}
RATE=${BENCH_RATE:-500}
OUT=${BENCH_OUT:-/tmp/dnsveil-callgrind}
BENCH=callgrind
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_install knot unbound dnsperf dnsutils valgrind
bench_need knotd unbound dnsperf openssl dig valgrind callgrind_control
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN"
mkdir -p "$OUT"
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(udp dot doh doq hit)

bench_ca
bench_cert srv dot.test
bench_knotd
bench_unbound
[ -x "$root/build/peers/doq" ] && bench_doq_peer

one() {  # one PATH URL CACHE
  local p=$1 dv as=
  # callgrind_control reaches a process it may trace: one that kept our user
  [ "$(id -u)" -eq 0 ] && as="--user root"
  DV=$(port)
  bench_dv_conf "$p" "$2" "$3"
  rm -f "$OUT/$p".*
  valgrind --tool=callgrind --vgdb=yes --callgrind-out-file="$OUT/$p.%p" \
    "$DNSVEIL_BIN" -c "$work/$p.toml" -l "127.0.0.1:$DV" --tls-ca "$work/ca.pem" $as \
    >"$work/$p.log" 2>&1 & dv=$!; pids+=($dv)
  wait_udp "$DV" "$p"
  names
  head -n "$N" "$work/names" > "$work/q"
  if [ "$p" = hit ]; then  # the same 100 names, asked once first
    head -n 100 "$work/names" > "$work/q"
    dnsperf -s 127.0.0.1 -p "$DV" -d "$work/q" -n 1 -t 5 >/dev/null 2>&1
  else  # warm-up: the connection is up and every buffer has grown
    sed -n "$((N + 1)),$((N + 200))p" "$work/names" > "$work/w"
    dnsperf -s 127.0.0.1 -p "$DV" -d "$work/w" -n 1 -t 5 -Q "$RATE" >/dev/null 2>&1
  fi
  callgrind_control -z "$dv" >/dev/null
  local reps=1
  [ "$p" = hit ] && reps=$((N / 100))
  dnsperf -s 127.0.0.1 -p "$DV" -d "$work/q" -n "$reps" -t 5 -Q "$RATE" > "$work/$p.perf" 2>&1
  callgrind_control -d "$dv" >/dev/null
  local done ir
  done=$(awk '/Queries completed:/ { print $3 }' "$work/$p.perf")
  ir=$(cat "$OUT/$p.$dv".* | awk '/^summary:/ { s += $2 } END { print s + 0 }')
  printf '%-5s %8s queries %14s Ir %10.0f Ir/query\n' "$p" "$done" "$ir" "$((ir / done))"
  kill "$dv"; wait "$dv" 2>/dev/null || true
}

for p in "${paths[@]}"; do
  case $p in
    udp) one udp "udp://127.0.0.1:$UB" false ;;
    dot) one dot "tls://127.0.0.1:$UB_TLS" false ;;
    doh) one doh "https://127.0.0.1:$UB_DOH/dns-query" false ;;
    doq) [ -n "${DOQ:-}" ] && one doq "quic://127.0.0.1:$DOQ" false ;;
    hit) one hit "udp://127.0.0.1:$UB" true ;;
    *) bench_die "unknown path $p" ;;
  esac
done
