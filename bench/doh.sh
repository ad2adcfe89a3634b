#!/usr/bin/env bash
# DoH benchmark (not a test): cache-miss queries over DNS-over-HTTPS to one
# local unbound (in front of knotd serving the test zone), through
#   - dnsveil (https:// upstream),
#   - dnsdist (outgoing DoH, newServer{dohPath=...}, when its build has it),
#   - dnsperf's own DoH client straight at unbound (the ceiling),
# first at full speed (QPS), then at a fixed rate (latency).
# Every query name is new (NXDOMAIN from knotd), so no cache ever answers.
# Everything listens on 127.0.0.1 only; a private CA is made for the run.
#
# Usage: bench/doh.sh                   (DNSVEIL_BIN=build/release/dnsveil)
#        SECONDS_PER_RUN=20 RATE=3000 OUTSTANDING=200 bench/doh.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE=${RATE:-2000}
OUTSTANDING=${OUTSTANDING:-100}

die() { echo "bench/doh.sh: $*" >&2; exit 1; }
for b in knotd unbound dnsperf openssl; do
  command -v "$b" >/dev/null || die "$b is not installed"
done
[ -x "$DNSVEIL_BIN" ] || die "no dnsveil at $DNSVEIL_BIN (cmake --preset release, or set DNSVEIL_BIN)"

work=$(mktemp -d /tmp/dnsveil-bench-doh.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() {  # a free loopback TCP+UDP port
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_udp() {  # wait_udp PORT NAME
  for _ in $(seq 100); do
    if dig +time=1 +tries=1 @127.0.0.1 -p "$1" www.test A >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$work/$2.log" >&2 || true
  die "$2 did not answer on port $1"
}

# ---- private CA and a server certificate for doh.test / 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=dnsveil bench CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/srv.key" -out "$work/srv.csr" -subj "/CN=doh.test" >/dev/null 2>&1
printf 'subjectAltName=DNS:doh.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/ext" -out "$work/srv.pem" >/dev/null 2>&1

# ---- knotd with the test zone
KNOT=$(port)
cp "$root/tests/integration/zones/test.zone" "$work/test.zone"
cat > "$work/knot.conf" <<EOF
server:
    rundir: "$work"
    listen: 127.0.0.1@$KNOT
database:
    storage: "$work"
template:
  - id: default
    storage: "$work"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: test.
    file: "$work/test.zone"
EOF
knotd -c "$work/knot.conf" >"$work/knotd.log" 2>&1 & pids+=($!)
wait_udp "$KNOT" knotd

# ---- unbound: DoH on UB_DOH, forwards everything to knotd
UB=$(port); UB_DOH=$(port)
cat > "$work/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$UB
    interface: 127.0.0.1@$UB_DOH
    https-port: $UB_DOH
    http-endpoint: "/dns-query"
    http-max-streams: 1000
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
    prefetch: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    local-zone: "test." nodefault
    access-control: 127.0.0.0/8 allow
    incoming-num-tcp: 256
    num-queries-per-thread: 4096
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$KNOT
remote-control:
    control-enable: no
EOF
unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 & pids+=($!)
wait_udp "$UB" unbound
URL="https://127.0.0.1:$UB_DOH/dns-query"

# ---- dnsveil: UDP in, DoH out, cache off so every query goes upstream
DV=$(port)
printf '[cache]\nenabled = false\n[upstreams.ub]\nurl = "%s"\n[groups.default]\nupstreams = ["ub"]\n' \
  "$URL" > "$work/dnsveil.toml"
"$DNSVEIL_BIN" -c "$work/dnsveil.toml" -l "127.0.0.1:$DV" --tls-ca "$work/ca.pem" \
  >"$work/dnsveil.log" 2>&1 & pids+=($!)
wait_udp "$DV" dnsveil

# ---- dnsdist: UDP in, outgoing DoH when its build has it
DD=""
if command -v dnsdist >/dev/null; then
  dnsdist_features=$(dnsdist --version 2>/dev/null || true)
  if [[ $dnsdist_features == *outgoing-dns-over-https* ]]; then
    DD=$(port)
    cat > "$work/dnsdist.conf" <<EOF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$DD")
setACL({"127.0.0.0/8"})
newServer({address="127.0.0.1:$UB_DOH", tls="openssl", subjectName="doh.test",
           dohPath="/dns-query", caStore="$work/ca.pem", validateCertificates=true,
           checkName="www.test."})
setOutgoingDoHWorkerThreads(1)
EOF
    dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
    pids+=($!)
    wait_udp "$DD" dnsdist
  else
    echo "dnsdist: this build has no outgoing DoH (dnsdist --version); skipped"
  fi
fi

run=0
names() {  # a fresh set of never-asked names for one run
  run=$((run + 1))
  python3 -c "
import random
tag = '%06x' % random.getrandbits(24)
for i in range(400000):
    print('b%d-$run-%s.test A' % (i, tag))" > "$work/names"
}

# dnsperf output -> "QPS avg_ms min_ms max_ms sd_ms lost"
summ() {
  awk '/Queries per second/ {qps=$4}
       /Queries lost/ {lost=$3}
       /Average Latency/ {avg=$4*1000; gsub(/,/,"",$6); gsub(/\)/,"",$8); mn=$6*1000; mx=$8*1000}
       /Latency StdDev/ {sd=$4*1000}
       END {printf "%10.0f %9.2f %9.2f %9.2f %9.2f %8s\n", qps, avg, mn, mx, sd, lost}'
}

bench() {  # bench LABEL dnsperf-args...
  local label=$1; shift
  names
  printf '%-28s ' "$label"
  dnsperf -d "$work/names" -l "$SECONDS_PER_RUN" -t 3 "$@" 2>&1 | tee "$work/last.out" | summ
}

echo
echo "DoH to unbound $(unbound -V | awk 'NR == 1 { print $2 }') via 127.0.0.1, ${SECONDS_PER_RUN}s per run, $(nproc) cores"
printf '%-28s %10s %9s %9s %9s %9s %8s\n' "" "QPS" "avg ms" "min ms" "max ms" "sd ms" "lost"
echo "-- full speed, $OUTSTANDING outstanding"
bench "dnsperf DoH -> unbound" -m doh -s 127.0.0.1 -p "$UB_DOH" -O "doh-uri=$URL" \
  -O doh-method=POST -q "$OUTSTANDING"
bench "dnsveil (UDP in, DoH out)" -s 127.0.0.1 -p "$DV" -q "$OUTSTANDING"
[ -n "$DD" ] && bench "dnsdist (UDP in, DoH out)" -s 127.0.0.1 -p "$DD" -q "$OUTSTANDING"
echo "-- fixed rate, $RATE queries/s"
bench "dnsperf DoH -> unbound" -m doh -s 127.0.0.1 -p "$UB_DOH" -O "doh-uri=$URL" \
  -O doh-method=POST -q "$OUTSTANDING" -Q "$RATE"
bench "dnsveil (UDP in, DoH out)" -s 127.0.0.1 -p "$DV" -q "$OUTSTANDING" -Q "$RATE"
[ -n "$DD" ] && bench "dnsdist (UDP in, DoH out)" -s 127.0.0.1 -p "$DD" -q "$OUTSTANDING" -Q "$RATE"

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status" 2>/dev/null || echo "?"; }
echo
echo "RSS after the runs: dnsveil $(rss "$(pgrep -n -f "$work/dnsveil.toml")")$( [ -n "$DD" ] && echo ", dnsdist $(rss "$(pgrep -n -f "$work/dnsdist.conf")")")"
