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

BENCH=doh
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_need knotd unbound dnsperf openssl dig
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN (cmake --preset release, or set DNSVEIL_BIN)"

# ---- private CA and a server certificate for doh.test / 127.0.0.1
bench_ca
bench_cert srv doh.test

# ---- knotd with the test zone
bench_knotd

# ---- unbound: DoH on UB_DOH, forwards everything to knotd
bench_unbound   # UDP on $UB, DoH on $UB_DOH (lib.sh)
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

bench() {  # bench LABEL dnsperf-args...
  local label=$1; shift
  names
  printf '%-28s ' "$label"
  dnsperf -d "$work/names" -l "$SECONDS_PER_RUN" -t 3 "$@" 2>&1 | tee "$work/last.out" | summ
  echo
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
