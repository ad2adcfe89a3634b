# shellcheck shell=bash
# bench/lib.sh — what the benchmarks share, sourced after `set -euo pipefail`:
# a work directory cleaned up on exit with every process started into
# `pids`, free loopback ports, readiness waits, a private CA and server
# certificates, knotd serving the test zone, fresh query names and the
# dnsperf summary line. Everything listens on 127.0.0.1 only.
#
# The caller sets BENCH (its name, for messages and the work directory) and
# root (the source tree).
# shellcheck disable=SC2154  # root and BENCH are the caller's

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

# A prefix for knotd and the readiness probe, where the servers live: a
# script that puts them in a network namespace sets it (bench/doq_latency.sh).
BENCH_IN=()

wait_udp() {  # wait_udp PORT NAME: until www.test gets an answer on PORT
  for _ in $(seq 100); do
    if "${BENCH_IN[@]}" dig +time=1 +tries=1 @127.0.0.1 -p "$1" www.test A >/dev/null 2>&1; then return 0; fi
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

bench_cert() {  # bench_cert NAME HOST [IP]: $work/NAME.pem/.key for HOST, 127.0.0.1 (and IP)
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$2" >/dev/null 2>&1
  printf 'subjectAltName=DNS:%s,IP:127.0.0.1%s\nextendedKeyUsage=serverAuth\n' "$2" "${3:+,IP:$3}" \
    > "$work/$1.ext"
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
  "${BENCH_IN[@]}" knotd -c "$work/knot.conf" >"$work/knotd.log" 2>&1 & pids+=($!)
  wait_udp "$KNOT" knotd
}

run=0
names() {  # a fresh set of never-asked names (NXDOMAIN) into $work/names
  local tag
  run=$((run + 1))
  tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  # seq, not a python loop: a --quick run asks for fresh names ~40 times
  seq -f "b%.0f-$run-$tag.test A" 0 399999 > "$work/names"
}

# dnsperf output -> "QPS avg_ms min_ms max_ms sd_ms lost" (the queries'
# latency: over TCP, DoT and DoH a second "Average Latency" follows under
# "Connection Statistics", the connection setup's)
summ() {
  awk '/Queries per second/ {qps=$4}
       /Queries lost/ {lost=$3}
       /Average Latency/ && !nl++ {avg=$4*1000; gsub(/,/,"",$6); gsub(/\)/,"",$8); mn=$6*1000; mx=$8*1000}
       /Latency StdDev/ && !ns++ {sd=$4*1000}
       END {printf "%10.0f %9.2f %9.2f %9.2f %9.2f %8s", qps, avg, mn, mx, sd, lost}'
}

# ---- shared by dot.sh, cache.sh, run.sh -----------------------------------

bench_install() {  # bench_install PKG...: missing Debian packages, services not started
  local need=() p restore=0
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || { echo "bench/$BENCH: not root, so no ${need[*]}" >&2; return 0; }
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    restore=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 \
    --no-install-recommends "${need[@]}" >/dev/null || true
  if [ "$restore" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

bench_unbound() {  # one unbound in front of knotd: UDP $UB, DoT $UB_TLS, DoH $UB_DOH
  UB=$(port); UB_TLS=$(port); UB_DOH=$(port)
  cat > "$work/unbound.conf" <<UBCONF
server:
    interface: 127.0.0.1@$UB
    interface: 127.0.0.1@$UB_TLS
    interface: 127.0.0.1@$UB_DOH
    tls-port: $UB_TLS
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
    incoming-num-tcp: 512
    num-queries-per-thread: 4096
    msg-cache-size: 256m
    rrset-cache-size: 256m
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$KNOT
remote-control:
    control-enable: no
UBCONF
  unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 & pids+=($!)
  wait_udp "$UB" unbound
}

bench_doq_peer() {  # the Go DoQ peer (tests/peers/doq) in front of knotd on $DOQ
  DOQ=$(port)
  "$root/build/peers/doq" -listen "127.0.0.1:$DOQ" -cert "$work/srv.pem" -key "$work/srv.key" \
    -upstream "127.0.0.1:$KNOT" >"$work/doqpeer.log" 2>&1 & pids+=($!)
  sleep 0.5
}

bench_dv_conf() {  # bench_dv_conf NAME URL CACHE: $work/NAME.toml, one upstream
  local plain=
  case $2 in udp://* | tcp://*) plain='allow_plaintext = true' ;; esac
  printf '[cache]\nenabled = %s\n[upstreams.u]\nurl = "%s"\n[groups.default]\nupstreams = ["u"]\n%s\n' \
    "$3" "$2" "$plain" > "$work/$1.toml"
}

bench_dnsveil() {  # bench_dnsveil NAME URL [CACHE]: dnsveil on $DV, its pid in $DV_PID
  DV=$(port)
  bench_dv_conf "$1" "$2" "${3:-false}"
  "$DNSVEIL_BIN" -c "$work/$1.toml" -l "127.0.0.1:$DV" --tls-ca "$work/ca.pem" \
    >"$work/$1.log" 2>&1 & DV_PID=$!; pids+=("$DV_PID")
  wait_udp "$DV" "$1"
}

bench_dnsdist() {  # bench_dnsdist NAME LUA-SERVER-LINE...: dnsdist on $DD, pid $DD_PID
  local name=$1; shift
  DD=$(port)
  {
    echo 'setSecurityPollSuffix("")'
    echo "setLocal(\"127.0.0.1:$DD\")"
    echo 'setACL({"127.0.0.0/8"})'
    printf '%s\n' "$@"
  } > "$work/$name.conf"
  dnsdist --supervised --disable-syslog -C "$work/$name.conf" >"$work/$name.log" 2>&1 &
  DD_PID=$!; pids+=("$DD_PID")
  wait_udp "$DD" "$name"
}

cpu_ticks() {  # cpu_ticks PID: utime+stime of every thread, in clock ticks
  cat /proc/"$1"/task/*/stat 2>/dev/null |
    awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- the competitors and the clock, shared by run.sh and profile.sh ---------

# the fixed rate per path (the rates of issue 18's measurements)
# shellcheck disable=SC2034  # the callers read it
declare -A RATES=([udp]=5000 [dot]=2000 [doh]=1000 [doq]=2000 [hit]=15000)

bench_dd_has_doh() { [[ $(dnsdist --version 2>/dev/null) == *outgoing-dns-over-https* ]]; }

bench_dd() {  # bench_dd udp|dot|doh|hit: dnsdist for that path on $DD, pid $DD_PID
  local check='checkName="www.test."'
  local tls="tls=\"openssl\", subjectName=\"dot.test\", caStore=\"$work/ca.pem\", validateCertificates=true"
  case $1 in
    udp) bench_dnsdist dd-udp "newServer({address=\"127.0.0.1:$UB\", $check})" ;;
    dot) bench_dnsdist dd-dot "newServer({address=\"127.0.0.1:$UB_TLS\", $tls, $check})" ;;
    doh) bench_dnsdist dd-doh "newServer({address=\"127.0.0.1:$UB_DOH\", $tls, dohPath=\"/dns-query\", $check})" \
           "setOutgoingDoHWorkerThreads(1)" ;;
    hit) bench_dnsdist dd-hit "newServer({address=\"127.0.0.1:$KNOT\", $check})" \
           'getPool(""):setCache(newPacketCache(100000))' ;;
    *) bench_die "no dnsdist for $1" ;;
  esac
}

bench_unbound_fwd() {  # unbound forward-tls to the unbound's DoT on $FW, pid $FW_PID
  FW=$(port)
  cat > "$work/fwd.conf" <<FWCONF
server:
    interface: 127.0.0.1@$FW
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
    prefetch: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    access-control: 127.0.0.0/8 allow
    # else unbound answers every .test name itself (RFC 6761 default zone)
    local-zone: "test." nodefault
    tls-cert-bundle: "$work/ca.pem"
    num-queries-per-thread: 4096
forward-zone:
    name: "."
    forward-tls-upstream: yes
    forward-addr: 127.0.0.1@$UB_TLS#dot.test
remote-control:
    control-enable: no
FWCONF
  unbound -d -c "$work/fwd.conf" >"$work/fwd.log" 2>&1 & FW_PID=$!; pids+=("$FW_PID")
  wait_udp "$FW" fwd
}

cpu_ns() {  # cpu_ns PID: ns on CPU, all threads
  if [ -r "/proc/$1/schedstat" ]; then
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
  else
    echo $(( $(cpu_ticks "$1") * 1000000000 / $(getconf CLK_TCK) ))
  fi
}

