#!/usr/bin/env bash
# The whole side-by-side table in one command: dnsveil and the forwarders
# that exist for each path, against the same local upstreams (knotd serving
# tests/integration/zones/test.zone; one unbound in front of it with plain
# UDP, DoT and DoH; the Go DoQ peer in front of the same knotd), fed by
# dnsperf over UDP on 127.0.0.1:
#   udp   plain udp:// miss     dnsveil, dnsdist              ceiling: unbound direct
#   dot   DoT miss              dnsveil, dnsdist, unbound forward-tls, stubby
#                                                             ceiling: dnsperf -m dot
#   doh   DoH miss              dnsveil, dnsdist              ceiling: dnsperf -m doh
#   doq   DoQ miss              dnsveil (against its own DoT)
#   hit   cache hit             dnsveil, dnsdist packet cache ceiling: knotd direct
# Columns: QPS at saturation; latency p50/p99 at a fixed rate; CPU per query
# with dnsveil and the other one loaded at once by two dnsperf runs in the
# same window (so both see the same contention), from
# /proc/PID/task/*/schedstat (ns on CPU; stat's ticks where absent); RSS
# idle and after the runs; binary size. Misses ask names nobody asked.
# A benchmark, not a test: it prints figures and asserts nothing.
#
# Usage: bench/run.sh [--quick]   (--quick: shorter runs, ~2 minutes on 2
#        cores; DNSVEIL_BIN; BENCH_SAT=8 BENCH_FIXED=5 BENCH_CPU=8 seconds;
#        BENCH_RATE overrides every path's fixed rate: udp 5000, dot 2000,
#        doh 1000, doq 2000, hit 15000 q/s)
# Needs: knot unbound dnsdist stubby dnsperf openssl dnsutils (installed when
#        missing and root, services not started); build/peers/doq for DoQ.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
SAT=${BENCH_SAT:-8}
FIXED=${BENCH_FIXED:-5}
CPUSEC=${BENCH_CPU:-8}
if [ "${1:-}" = --quick ]; then
  SAT=${BENCH_SAT:-2}; FIXED=${BENCH_FIXED:-2}; CPUSEC=${BENCH_CPU:-3}
fi
RATE=${BENCH_RATE:-}

BENCH=run
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_install knot unbound dnsdist stubby dnsperf dnsutils
bench_need knotd unbound dnsperf openssl dig
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN (cmake --preset release, or set DNSVEIL_BIN)"
chmod 755 "$work"

bench_ca
bench_cert srv dot.test
bench_knotd
bench_unbound
DOQ=""
[ -x "$root/build/peers/doq" ] && bench_doq_peer

# ---- the servers: NAME -> port, pid, binary ---------------------------------
declare -A P PID BIN
add() { P[$1]=$2; PID[$1]=$3; BIN[$1]=$4; }

bench_dnsveil dv-udp "udp://127.0.0.1:$UB"; add dv-udp "$DV" "$DV_PID" "$DNSVEIL_BIN"
bench_dnsveil dv-dot "tls://127.0.0.1:$UB_TLS"; add dv-dot "$DV" "$DV_PID" "$DNSVEIL_BIN"
bench_dnsveil dv-doh "https://127.0.0.1:$UB_DOH/dns-query"; add dv-doh "$DV" "$DV_PID" "$DNSVEIL_BIN"
if [ -n "$DOQ" ]; then
  bench_dnsveil dv-doq "quic://127.0.0.1:$DOQ"; add dv-doq "$DV" "$DV_PID" "$DNSVEIL_BIN"
fi
bench_dnsveil dv-hit "udp://127.0.0.1:$KNOT" true; add dv-hit "$DV" "$DV_PID" "$DNSVEIL_BIN"

if command -v dnsdist >/dev/null; then
  DDBIN=$(command -v dnsdist)
  for p in udp dot doh hit; do
    if [ "$p" = doh ] && ! bench_dd_has_doh; then continue; fi
    bench_dd "$p"; add "dd-$p" "$DD" "$DD_PID" "$DDBIN"
  done
fi

bench_unbound_fwd
add ub-dot "$FW" "$FW_PID" "$(command -v unbound)"

if command -v stubby >/dev/null; then
  ST=$(port)
  cat > "$work/stubby.yml" <<EOF
resolution_type: GETDNS_RESOLUTION_STUB
dns_transport_list:
  - GETDNS_TRANSPORT_TLS
tls_authentication: GETDNS_AUTHENTICATION_REQUIRED
tls_query_padding_blocksize: 128
idle_timeout: 10000
round_robin_upstreams: 0
tls_ca_file: "$work/ca.pem"
listen_addresses:
  - 127.0.0.1@$ST
upstream_recursive_servers:
  - address_data: 127.0.0.1
    tls_port: $UB_TLS
    tls_auth_name: "dot.test"
EOF
  stubby -C "$work/stubby.yml" >"$work/stubby.log" 2>&1 & st_pid=$!; pids+=("$st_pid")
  wait_udp "$ST" stubby
  add st-dot "$ST" "$st_pid" "$(command -v stubby)"
fi

declare -A RSS0
for s in "${!PID[@]}"; do RSS0[$s]=$(rss_kb "${PID[$s]}"); done

# ---- measurements -------------------------------------------------------------
# cache hits: names with long TTLs, asked in turn (a TTL of 0..5 s would miss)
printf '%s\n' "www.test A" "www.test AAAA" "multi.test A" "mail.test A" "mail2.test A" \
  "target.test A" "ns.test A" "test MX" "test NS" "test SOA" > "$work/hit"

qfile() {  # qfile hit|miss OUT: the names to ask into OUT (fresh for a miss)
  if [ "$1" = hit ]; then cp "$work/hit" "$2"; else names; mv "$work/names" "$2"; fi
}

sat() {  # sat KIND dnsperf-args... -> QPS
  qfile "$1" "$work/qa"; shift
  dnsperf -d "$work/qa" -l "$SAT" -c 10 -q 200 -t 3 "$@" > "$work/sat.out" 2>&1 || true
  awk '/Queries per second/ { printf "%.0f", $4 }' "$work/sat.out"
}

lat() {  # lat KIND dnsperf-args... -> "p50 p99" in ms at $RATE
  qfile "$1" "$work/qa"; shift
  dnsperf -d "$work/qa" -l "$FIXED" -c 10 -Q "$RATE" -t 3 -v "$@" > "$work/lat.out" 2>&1 || true
  awk '/^> / && $NF ~ /^[0-9.]+$/ { print $NF * 1000 }' "$work/lat.out" | sort -n > "$work/lat.sorted"
  # answered NOERROR/NXDOMAIN, of all sent (timeouts and SERVFAIL count against)
  OK=$(awk '/^> / { n++; if ($2 == "NOERROR" || $2 == "NXDOMAIN") ok++ }
            END { printf "%.1f", n ? 100 * ok / n : 0 }' "$work/lat.out")
  awk '{ v[NR] = $1 }
       END { if (!NR) { printf "- -"; exit }
             i = int(NR * 0.5) + 1; if (i > NR) i = NR
             j = int(NR * 0.99) + 1; if (j > NR) j = NR
             printf "%.2f %.2f", v[i], v[j] }' "$work/lat.sorted"
}

pair() {  # pair KIND A B: both loaded at once -> "µs/q of A" "µs/q of B"
  local kind=$1 a=$2 b=$3 fa="$work/qa" fb="$work/qb" ca cb na nb
  qfile "$kind" "$fa"; qfile "$kind" "$fb"
  ca=$(cpu_ns "${PID[$a]}"); cb=$(cpu_ns "${PID[$b]}")
  dnsperf -s 127.0.0.1 -p "${P[$a]}" -d "$fa" -l "$CPUSEC" -c 10 -Q "$RATE" -t 3 > "$work/pa.out" 2>&1 &
  local ja=$!
  dnsperf -s 127.0.0.1 -p "${P[$b]}" -d "$fb" -l "$CPUSEC" -c 10 -Q "$RATE" -t 3 > "$work/pb.out" 2>&1 || true
  wait "$ja" || true
  ca=$(( $(cpu_ns "${PID[$a]}") - ca )); cb=$(( $(cpu_ns "${PID[$b]}") - cb ))
  na=$(awk '/Queries completed/ { print $3 }' "$work/pa.out"); nb=$(awk '/Queries completed/ { print $3 }' "$work/pb.out")
  awk -v ca="$ca" -v cb="$cb" -v na="${na:-0}" -v nb="${nb:-0}" \
    'BEGIN { printf "%.1f %.1f", na ? ca / na / 1000 : -1, nb ? cb / nb / 1000 : -1 }'
}

# the connections up and the caches holding the hit names, untimed
for s in "${!P[@]}"; do dnsperf -s 127.0.0.1 -p "${P[$s]}" -d "$work/hit" -n 2 -t 3 >/dev/null 2>&1 || true; done

rows=()
row() {  # row PATH SERVER QPS RATE P50 P99 OK% CPU RSS0 RSS1 SIZE
  rows+=("$(printf '| %-5s | %-26s | %8s | %6s | %6s | %6s | %6s | %-26s | %7s | %7s | %7s |' "$@")")
}
size_kb() { [ -n "$1" ] && [ -e "$1" ] && echo $(( $(stat -L -c %s "$1") / 1024 )) || echo -; }

serve() {  # serve PATH KIND NAME LABEL [CPU]: one proxy's row
  local p50 p99 q
  q=$(sat "$2" -s 127.0.0.1 -p "${P[$3]}")
  lat "$2" -s 127.0.0.1 -p "${P[$3]}" > "$work/lat.res"
  read -r p50 p99 < "$work/lat.res" || true  # no newline at its end
  row "$1" "$4" "$q" "$RATE" "$p50" "$p99" "$OK" "${5:--}" "${RSS0[$3]}" "$(rss_kb "${PID[$3]}")" "$(size_kb "${BIN[$3]}")"
}

ceiling() {  # ceiling PATH KIND LABEL dnsperf-args...
  local path=$1 kind=$2 label=$3 p50 p99 q; shift 3
  q=$(sat "$kind" "$@")
  lat "$kind" "$@" > "$work/lat.res"
  read -r p50 p99 < "$work/lat.res" || true  # no newline at its end
  row "$path" "$label" "$q" "$RATE" "$p50" "$p99" "$OK" "-" "-" "-" "-"
}

cpu_cell() {  # cpu_cell KIND DV OTHER -> sets CPU_DV CPU_OTHER (strings)
  local a b
  read -r a b <<<"$(pair "$1" "$2" "$3")"
  CPU_DV=$a; CPU_OTHER="$b (dnsveil $a: $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')x)"
}

echo "bench/run.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, saturation ${SAT}s, CPU pairs ${CPUSEC}s" >&2

# udp
RATE=${BENCH_RATE:-${RATES[udp]}}
if [ -n "${P[dd-udp]:-}" ]; then cpu_cell miss dv-udp dd-udp; fi
serve udp miss dv-udp "dnsveil udp://" "${CPU_DV:-}"
[ -n "${P[dd-udp]:-}" ] && serve udp miss dd-udp "dnsdist" "$CPU_OTHER"
ceiling udp miss "(unbound direct)" -s 127.0.0.1 -p "$UB"

# dot
RATE=${BENCH_RATE:-${RATES[dot]}}
CPU_DV=""; declare -A CPUO
for c in ub-dot dd-dot st-dot; do
  [ -n "${P[$c]:-}" ] || continue
  cpu_cell miss dv-dot "$c"; CPUO[$c]=$CPU_OTHER; [ -n "$CPU_DV" ] && DVD=$CPU_DV
done
serve dot miss dv-dot "dnsveil tls://" "${DVD:-}"
[ -n "${P[ub-dot]:-}" ] && serve dot miss ub-dot "unbound forward-tls" "${CPUO[ub-dot]}"
[ -n "${P[dd-dot]:-}" ] && serve dot miss dd-dot "dnsdist" "${CPUO[dd-dot]}"
[ -n "${P[st-dot]:-}" ] && serve dot miss st-dot "stubby" "${CPUO[st-dot]}"
ceiling dot miss "(dnsperf -m dot)" -m dot -s 127.0.0.1 -p "$UB_TLS"

# doh
RATE=${BENCH_RATE:-${RATES[doh]}}
CPU_DV=""; CPU_OTHER=""
[ -n "${P[dd-doh]:-}" ] && cpu_cell miss dv-doh dd-doh
serve doh miss dv-doh "dnsveil https://" "${CPU_DV:-}"
[ -n "${P[dd-doh]:-}" ] && serve doh miss dd-doh "dnsdist" "$CPU_OTHER"
ceiling doh miss "(dnsperf -m doh)" -m doh -s 127.0.0.1 -p "$UB_DOH" \
  -O "doh-uri=https://127.0.0.1:$UB_DOH/dns-query" -O doh-method=POST

# doq: against our own DoT
RATE=${BENCH_RATE:-${RATES[doq]}}
if [ -n "${P[dv-doq]:-}" ]; then
  cpu_cell miss dv-doq dv-dot
  serve doq miss dv-doq "dnsveil quic://" "$CPU_DV"
  row doq "dnsveil tls:// (same run)" - "$RATE" - - - "$(cut -d' ' -f1 <<<"$CPU_OTHER")" - - -
fi

# hit
RATE=${BENCH_RATE:-${RATES[hit]}}
CPU_DV=""; CPU_OTHER=""
[ -n "${P[dd-hit]:-}" ] && cpu_cell hit dv-hit dd-hit
serve hit hit dv-hit "dnsveil cache" "${CPU_DV:-}"
[ -n "${P[dd-hit]:-}" ] && serve hit hit dd-hit "dnsdist packet cache" "$CPU_OTHER"
ceiling hit hit "(knotd direct)" -s 127.0.0.1 -p "$KNOT"

echo
echo "$(date -u '+%Y-%m-%d') bench/run.sh${1:+ $1}: $(nproc) CPUs shared by everything; latency, ok % (NOERROR/NXDOMAIN of all sent) and CPU at the q/s column; CPU µs per query measured with dnsveil loaded at once (ratio dnsveil/other)"
echo
printf '| %-5s | %-26s | %8s | %6s | %6s | %6s | %6s | %-26s | %7s | %7s | %7s |\n' path server "QPS max" "q/s" "p50 ms" "p99 ms" "ok %" "CPU µs/query" "RSS KiB" "loaded" "bin KiB"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
