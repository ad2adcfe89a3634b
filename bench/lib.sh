# bench/lib.sh — what the benchmarks share, sourced after `set -euo pipefail`:
# a work directory cleaned up on exit with every process started into
# `pids`, free loopback ports, readiness waits, a private CA and server
# certificates, knotd serving the test zone, fresh query names and the
# dnsperf summary line. Everything listens on 127.0.0.1 only.
#
# The caller sets BENCH (its name, for messages and the work directory).

bench_die() { echo "bench/$BENCH: $*" >&2; exit 1; }

bench_need() {  # bench_need PROGRAM...
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null || bench_die "$b is not installed"
  done
}

work=$(mktemp -d "/tmp/dnsveil-bench-$BENCH.XXXXXX")
pids=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap bench_cleanup EXIT

port() {  # a free loopback TCP+UDP port
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_udp() {  # wait_udp PORT NAME: until www.test gets an answer on PORT
  for _ in $(seq 100); do
    if dig +time=1 +tries=1 @127.0.0.1 -p "$1" www.test A >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$work/$2.log" >&2 || true
  bench_die "$2 did not answer on port $1"
}

wait_log() {  # wait_log FILE TEXT: until FILE contains TEXT
  for _ in $(seq 100); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$1" >&2 || true
  bench_die "no '$2' in $1"
}

bench_ca() {  # a private CA: $work/ca.pem, $work/ca.key
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=dnsveil bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    >/dev/null 2>&1
}

bench_cert() {  # bench_cert NAME HOST: $work/NAME.pem/.key for HOST and 127.0.0.1
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$2" >/dev/null 2>&1
  printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$2" > "$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/$1.ext" -out "$work/$1.pem" >/dev/null 2>&1
}

bench_knotd() {  # knotd with tests/integration/zones/test.zone on port $KNOT
  KNOT=$(port)
  cp "$root/tests/integration/zones/test.zone" "$work/test.zone"
  cat > "$work/knot.conf" <<KNOTCONF
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
KNOTCONF
  knotd -c "$work/knot.conf" >"$work/knotd.log" 2>&1 & pids+=($!)
  wait_udp "$KNOT" knotd
}

run=0
names() {  # a fresh set of never-asked names (NXDOMAIN) into $work/names
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
       END {printf "%10.0f %9.2f %9.2f %9.2f %9.2f %8s", qps, avg, mn, mx, sd, lost}'
}
