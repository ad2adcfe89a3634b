#!/usr/bin/env bash
# Cache-miss throughput through DNS over TLS, side by side:
#   ceiling   dnsperf -m dot straight at unbound's DoT port
#   dnsveil   dnsperf (UDP) -> dnsveil -> DoT -> unbound
#   dnsdist   dnsperf (UDP) -> dnsdist (newServer tls) -> DoT -> unbound
#   unbound   dnsperf (UDP) -> unbound (forward-tls-upstream) -> DoT -> unbound
#   stubby    dnsperf (UDP) -> stubby -> DoT -> unbound
# Each is measured twice: flat out (QPS), and at a fixed 2,000 q/s (average
# latency, the figure a user feels).
# unbound forwards to knotd serving tests/integration/zones/test.zone. Every
# name is asked once per run, so the proxies never answer from a cache;
# unbound is warmed with the same names first so all three measure the path
# to the same hot upstream. A benchmark, not a test: it prints figures.
#
# Usage: bench/dot.sh   (DNSVEIL_BIN=build/release/dnsveil, BENCH_SECONDS=10,
#                        BENCH_NAMES=300000, BENCH_CLIENTS=20)
# Needs: unbound knot dnsdist dnsperf openssl (Debian packages); loopback only.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DNSVEIL=${DNSVEIL_BIN:-$root/build/release/dnsveil}
RUN_SECONDS=${BENCH_SECONDS:-10}
NAMES=${BENCH_NAMES:-300000}
CLIENTS=${BENCH_CLIENTS:-20}

BENCH=dot
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_install knot unbound dnsdist dnsperf stubby
bench_need unbound knotd dnsdist dnsperf openssl stubby dig
[ -x "$DNSVEIL" ] || bench_die "no dnsveil at $DNSVEIL (set DNSVEIL_BIN)"

# --- private CA, knotd, and unbound (DoT on $UB_TLS) in front of it --------
bench_ca
bench_cert srv dot.test
bench_knotd
bench_unbound

# --- the names: unique per query, the same file for every run -------------
tag=$(printf '%06x' $((RANDOM * 32768 + RANDOM)))
seq 1 "$NAMES" | awk -v t="$tag" '{ printf "b%d-%s.test. A\n", $1, t }' >"$work/names"
seq 1 20000 | awk -v t="$tag" '{ printf "f%d-%s.test. A\n", $1, t }' >"$work/names2"

perf() {   # perf LABEL MODE PORT [PID] -> appends a result line (RSS of PID after)
    local out qps lat lost note=
    out=$(dnsperf -m "$2" -s 127.0.0.1 -p "$3" -d "$work/names" -n 1 -l "$RUN_SECONDS" \
                  -c "$CLIENTS" -t 5 2>&1)
    qps=$(awk '/Queries per second:/ { printf "%.0f", $4 }' <<<"$out")
    lat=$(awk '/Average Latency/ && !n++ { printf "%.2f", $4 * 1000 }' <<<"$out")
    lost=$(awk '/Queries lost:/ { print $3 }' <<<"$out")
    # an answer that is not NOERROR/NXDOMAIN is a failure, however fast
    bad=$(awk '/Response codes:/ { for (i = 3; i <= NF; i += 3) if ($i != "NOERROR" && $i != "NXDOMAIN") s += $(i + 1) } END { print s + 0 }' <<<"$out")
    lost="$lost/$bad"
    if [ -n "${4:-}" ]; then
        note="rss $(awk '/VmRSS/ { print $2 }' "/proc/$4/status" 2>/dev/null) KiB"
    else
        note="(dnsperf -m dot, no proxy)"
    fi
    # the same path at a fixed rate: latency without queueing
    out=$(dnsperf -m "$2" -s 127.0.0.1 -p "$3" -d "$work/names2" -n 1 -l 5 -Q 2000 \
                  -c "$CLIENTS" -t 5 2>&1)
    fixed=$(awk '/Average Latency/ && !n++ { printf "%.2f", $4 * 1000 }' <<<"$out")
    printf '%-10s %10s %12s %14s %10s %s\n' "$1" "${qps:-?}" "${lat:-?}" "${fixed:-?}" \
        "${lost:-?}" "$note" >>"$work/results"
}

echo "warming unbound with $NAMES names over DoT..."
dnsperf -m dot -s 127.0.0.1 -p "$UB_TLS" -d "$work/names" -n 1 -c "$CLIENTS" -l 300 \
    >/dev/null 2>&1 || true
dnsperf -m dot -s 127.0.0.1 -p "$UB_TLS" -d "$work/names2" -n 1 -c "$CLIENTS" -l 60 \
    >/dev/null 2>&1 || true

: >"$work/results"
perf ceiling dot "$UB_TLS"

# --- dnsveil -------------------------------------------------------------
DV_PORT=$(port)
"$DNSVEIL" -l "127.0.0.1:$DV_PORT" -u "tls://127.0.0.1:$UB_TLS" --tls-ca "$work/ca.pem" \
    --timeout 5000 >"$work/dnsveil.log" 2>&1 &
dv_pid=$!
pids+=($dv_pid)
wait_udp "$DV_PORT" dnsveil
perf dnsveil udp "$DV_PORT" "$dv_pid"
kill "$dv_pid"

# --- dnsdist ----------------------------------------------------------------
DD_PORT=$(port)
cat >"$work/dnsdist.conf" <<EOF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$DD_PORT")
setACL({"127.0.0.0/8"})
newServer({address="127.0.0.1:$UB_TLS", tls="openssl", subjectName="dot.test",
           caStore="$work/ca.pem", validateCertificates=true, checkName="www.test."})
EOF
dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
dd_pid=$!
pids+=($dd_pid)
wait_udp "$DD_PORT" dnsdist
perf dnsdist udp "$DD_PORT" "$dd_pid"
kill "$dd_pid"

# --- unbound as a DoT forwarder ---------------------------------------------
bench_unbound_fwd  # lib.sh: the same forwarder run.sh and profile.sh load
perf unbound udp "$FW" "$FW_PID"
kill "$FW_PID"

# --- stubby -----------------------------------------------------------------
ST_PORT=$(port)
cat >"$work/stubby.yml" <<EOF
resolution_type: GETDNS_RESOLUTION_STUB
dns_transport_list:
  - GETDNS_TRANSPORT_TLS
tls_authentication: GETDNS_AUTHENTICATION_REQUIRED
tls_query_padding_blocksize: 128
edns_client_subnet_private: 1
idle_timeout: 10000
round_robin_upstreams: 0
tls_ca_file: "$work/ca.pem"
listen_addresses:
  - 127.0.0.1@$ST_PORT
upstream_recursive_servers:
  - address_data: 127.0.0.1
    tls_port: $UB_TLS
    tls_auth_name: "dot.test"
EOF
stubby -C "$work/stubby.yml" >"$work/stubby.log" 2>&1 &
st_pid=$!
pids+=($st_pid)
wait_udp "$ST_PORT" stubby
perf stubby udp "$ST_PORT" "$st_pid"
kill "$st_pid"

echo
echo "cache-miss queries through DoT to one unbound ($RUN_SECONDS s flat out, then 5 s at" \
     "2,000 q/s; $CLIENTS clients; $(nproc) CPUs shared by everything)"
printf '%-10s %10s %12s %14s %10s %s\n' "" "QPS" "avg lat ms" "lat@2000 ms" "lost/fail" ""
cat "$work/results"
