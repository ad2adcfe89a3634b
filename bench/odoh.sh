#!/usr/bin/env bash
# ODoH benchmark (not a test): cache-miss queries from dnsperf to dnsveil,
# which forwards them to one Go ODoH target (tests/peers/odoh, in front of
# knotd serving the test zone) in three ways, in the same run:
#   - DoH    (https:// upstream: POST application/dns-message to the target),
#   - ODoH   straight to the target (odoh:// without relays),
#   - ODoH   through the Go relay (odoh:// with relays = [...]),
# first at full speed (QPS), then at a fixed rate (latency). The target
# answers DoH and ODoH on the same path from the same process, so the
# difference is the sealing, the relay hop and their HTTP/2 exchanges.
# Every query name is new (NXDOMAIN from knotd), so no cache ever answers.
# Everything listens on 127.0.0.1 only; a private CA is made for the run.
#
# Usage: bench/odoh.sh                   (DNSVEIL_BIN=build/release/dnsveil)
#        SECONDS_PER_RUN=20 RATE=2000 OUTSTANDING=100 bench/odoh.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
PEER=${PEER:-$root/build/peers/odoh}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE=${RATE:-1000}
OUTSTANDING=${OUTSTANDING:-100}

BENCH=odoh
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_need knotd dnsperf openssl dig
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN (cmake --preset release, or set DNSVEIL_BIN)"
if [ ! -x "$PEER" ]; then
  bash "$root/tests/peers/build.sh" >/dev/null || bench_die "building the Go ODoH peer failed"
fi

bench_ca
bench_cert target target.odoh-a.test
bench_cert relay relay.odoh-b.test
bench_knotd

# ---- the ODoH target (DoH too) and a relay in front of it
TGT=$(port); REL=$(port)
"$PEER" -mode target -listen "127.0.0.1:$TGT" -cert "$work/target.pem" -key "$work/target.key" \
  -upstream "127.0.0.1:$KNOT" >"$work/target.log" 2>&1 & pids+=($!)
TGT_PID=$!
"$PEER" -mode relay -listen "127.0.0.1:$REL" -cert "$work/relay.pem" -key "$work/relay.key" \
  -ca "$work/ca.pem" -resolve "target.odoh-a.test:$TGT=127.0.0.1:$TGT" \
  >"$work/relay.log" 2>&1 & pids+=($!)
REL_PID=$!
wait_log "$work/target.log" "serving https"
wait_log "$work/relay.log" "serving https"

# ---- one dnsveil per way out, cache off so every query goes upstream
# (not in a $(...) subshell: the pids must reach cleanup)
daemon() {  # daemon NAME PORT URL [RELAY]
  {
    printf '[cache]\nenabled = false\n[upstreams.t]\nurl = "%s"\n' "$3"
    printf 'bootstrap = ["127.0.0.1"]\ntls_ca = "%s"\n' "$work/ca.pem"
    if [ -n "${4:-}" ]; then printf 'relays = ["%s"]\n' "$4"; fi
  } > "$work/$1.toml"
  "$DNSVEIL_BIN" -c "$work/$1.toml" -l "127.0.0.1:$2" >"$work/$1.log" 2>&1 & pids+=($!)
  wait_udp "$2" "$1"
}
DOH=$(port); ODIRECT=$(port); ORELAY=$(port)
daemon doh "$DOH" "https://target.odoh-a.test:$TGT/dns-query"
DOH_PID=$!
daemon odoh-direct "$ODIRECT" "odoh://target.odoh-a.test:$TGT/dns-query"
ODIRECT_PID=$!
daemon odoh-relay "$ORELAY" "odoh://target.odoh-a.test:$TGT/dns-query" \
  "https://relay.odoh-b.test:$REL/proxy#127.0.0.1"
ORELAY_PID=$!

cpu() {  # cpu PID: CPU seconds used so far (user + system)
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}

bench() {  # bench LABEL DNSVEIL-PID dnsperf-args...: also the CPU seconds
  local label=$1 pid=$2 c0 t0 r0; shift 2
  names
  c0=$(cpu "$pid"); t0=$(cpu "$TGT_PID"); r0=$(cpu "$REL_PID")
  printf '%-32s ' "$label"
  dnsperf -d "$work/names" -l "$SECONDS_PER_RUN" -t 3 "$@" 2>&1 | tee "$work/last.out" | summ
  awk -v a="$c0" -v b="$(cpu "$pid")" -v c="$t0" -v d="$(cpu "$TGT_PID")" \
      -v e="$r0" -v f="$(cpu "$REL_PID")" \
      'BEGIN {printf " %8.1f %8.1f %8.1f\n", b - a, d - c, f - e}'
}

echo
echo "dnsveil to one Go ODoH/DoH target (tests/peers/odoh) via 127.0.0.1, ${SECONDS_PER_RUN}s per run, $(nproc) cores"
echo "(CPU s: seconds of CPU the run cost dnsveil, the Go target and the Go relay)"
printf '%-32s %10s %9s %9s %9s %9s %8s %8s %8s %8s\n' "" "QPS" "avg ms" "min ms" "max ms" \
  "sd ms" "lost" "dnsveil" "target" "relay"
echo "-- full speed, $OUTSTANDING outstanding"
bench "DoH  (https://)" "$DOH_PID" -s 127.0.0.1 -p "$DOH" -q "$OUTSTANDING"
bench "ODoH straight to the target" "$ODIRECT_PID" -s 127.0.0.1 -p "$ODIRECT" -q "$OUTSTANDING"
bench "ODoH through the relay" "$ORELAY_PID" -s 127.0.0.1 -p "$ORELAY" -q "$OUTSTANDING"
echo "-- fixed rate, $RATE queries/s"
bench "DoH  (https://)" "$DOH_PID" -s 127.0.0.1 -p "$DOH" -q "$OUTSTANDING" -Q "$RATE"
bench "ODoH straight to the target" "$ODIRECT_PID" -s 127.0.0.1 -p "$ODIRECT" \
  -q "$OUTSTANDING" -Q "$RATE"
bench "ODoH through the relay" "$ORELAY_PID" -s 127.0.0.1 -p "$ORELAY" -q "$OUTSTANDING" \
  -Q "$RATE"
