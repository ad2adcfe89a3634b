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

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
DNSVEIL=${DNSVEIL_BIN:-$REPO/build/release/dnsveil}
RUN_SECONDS=${BENCH_SECONDS:-10}
NAMES=${BENCH_NAMES:-300000}
CLIENTS=${BENCH_CLIENTS:-20}

if ! command -v stubby >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # a competitor, not a test peer: stubby is only needed here
    restore=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        restore=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends stubby >/dev/null || true
    [ "$restore" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
for b in unbound knotd dnsdist dnsperf openssl stubby; do
    command -v "$b" >/dev/null || { echo "bench/dot.sh: $b is not installed" >&2; exit 1; }
done
[ -x "$DNSVEIL" ] || { echo "bench/dot.sh: no dnsveil at $DNSVEIL (set DNSVEIL_BIN)" >&2; exit 1; }

work=$(mktemp -d /tmp/dnsveil-bench-dot.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_udp() {   # wait_udp PORT: until a plain query on PORT gets any reply
    for _ in $(seq 100); do
        if dnsperf -s 127.0.0.1 -p "$1" -d <(echo "www.test. A") -n 1 -t 1 2>/dev/null |
            grep -q "Queries completed: *1 "; then return 0; fi
        sleep 0.1
    done
    echo "bench/dot.sh: nothing answers on port $1" >&2
    tail -n 20 "$work"/*.log >&2
    return 1
}

# --- private CA and the server certificate --------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 -subj "/CN=bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/srv.key" -out "$work/srv.csr" -subj "/CN=dot.test" 2>/dev/null
printf 'subjectAltName = DNS:dot.test, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n' >"$work/srv.ext"
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/srv.ext" -out "$work/srv.pem" 2>/dev/null

# --- knotd and unbound ------------------------------------------------------
KNOT_PORT=$(free_port)
mkdir -p "$work/knot"
cp tests/integration/zones/test.zone "$work/knot/test.zone"
cat >"$work/knot/knot.conf" <<EOF
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@$KNOT_PORT
log:
  - target: stderr
    any: warning
database:
    storage: "$work/knot"
template:
  - id: default
    storage: "$work/knot"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: test.
    file: "$work/knot/test.zone"
EOF
knotd -c "$work/knot/knot.conf" >"$work/knot.log" 2>&1 &
pids+=($!)
wait_udp "$KNOT_PORT"

UB_PORT=$(free_port)
UB_TLS=$(free_port)
cat >"$work/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$UB_PORT
    interface: 127.0.0.1@$UB_TLS
    tls-port: $UB_TLS
    tls-service-key: "$work/srv.key"
    tls-service-pem: "$work/srv.pem"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: "$work/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    do-ip6: no
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    local-zone: "test." nodefault
    access-control: 127.0.0.0/8 allow
    incoming-num-tcp: 256
    msg-cache-size: 256m
    rrset-cache-size: 256m
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$KNOT_PORT
remote-control:
    control-enable: no
EOF
unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
pids+=($!)
wait_udp "$UB_PORT"

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
DV_PORT=$(free_port)
"$DNSVEIL" -l "127.0.0.1:$DV_PORT" -u "tls://127.0.0.1:$UB_TLS" --tls-ca "$work/ca.pem" \
    --timeout 5000 >"$work/dnsveil.log" 2>&1 &
dv_pid=$!
pids+=($dv_pid)
wait_udp "$DV_PORT"
perf dnsveil udp "$DV_PORT" "$dv_pid"
kill "$dv_pid"

# --- dnsdist ----------------------------------------------------------------
DD_PORT=$(free_port)
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
wait_udp "$DD_PORT"
perf dnsdist udp "$DD_PORT" "$dd_pid"
kill "$dd_pid"

# --- unbound as a DoT forwarder ---------------------------------------------
FW_PORT=$(free_port)
cat >"$work/fwd.conf" <<EOF
server:
    interface: 127.0.0.1@$FW_PORT
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: "$work/fwd.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    do-ip6: no
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    access-control: 127.0.0.0/8 allow
    # else unbound answers every .test name itself (RFC 6761 default zone)
    local-zone: "test." nodefault
    tls-cert-bundle: "$work/ca.pem"
forward-zone:
    name: "."
    forward-tls-upstream: yes
    forward-addr: 127.0.0.1@$UB_TLS#dot.test
remote-control:
    control-enable: no
EOF
unbound -d -c "$work/fwd.conf" >"$work/fwd.log" 2>&1 &
fw_pid=$!
pids+=($fw_pid)
wait_udp "$FW_PORT"
perf unbound udp "$FW_PORT" "$fw_pid"
kill "$fw_pid"

# --- stubby -----------------------------------------------------------------
ST_PORT=$(free_port)
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
wait_udp "$ST_PORT"
perf stubby udp "$ST_PORT" "$st_pid"
kill "$st_pid"

echo
echo "cache-miss queries through DoT to one unbound ($RUN_SECONDS s flat out, then 5 s at" \
     "2,000 q/s; $CLIENTS clients; $(nproc) CPUs shared by everything)"
printf '%-10s %10s %12s %14s %10s %s\n' "" "QPS" "avg lat ms" "lat@2000 ms" "lost/fail" ""
cat "$work/results"
