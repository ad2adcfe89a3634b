#!/usr/bin/env bash
# Inbound encrypted listeners benchmark (not a test): dnsperf as the client
# over DNS-over-TLS (-m dot) and DNS-over-HTTPS (-m doh) to
#   - dnsveil's listen_tls / listen_https,
#   - dnsdist's DoT (addTLSLocal) and DoH (addDOHLocal) frontends,
# both with their cache on and knotd (the test zone) behind them, asking a
# small fixed set of names over and over: after the first round every query
# is a cache hit, so the figure is the listener's own cost (TLS, framing,
# HTTP/2). First at full speed (QPS), then at a fixed rate (latency).
# Both run one worker thread; everything listens on 127.0.0.1 only.
# Seen with Debian 12's packages: dnsdist 1.7.3's DoH frontend answers
# kdig and dig but stalls dnsperf's DoH client after its first queries
# (POST and GET alike), so its DoH row shows ~1 QPS with every query lost.
#
# Usage: bench/listen.sh                (DNSVEIL_BIN=build/release/dnsveil)
#        SECONDS_PER_RUN=20 RATE=3000 OUTSTANDING=200 CLIENTS=4 bench/listen.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE=${RATE:-2000}
OUTSTANDING=${OUTSTANDING:-100}
CLIENTS=${CLIENTS:-4}

BENCH=listen
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_need knotd dnsdist dnsperf openssl dig
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN (cmake --preset release, or set DNSVEIL_BIN)"

bench_ca
bench_cert srv dns.test
bench_knotd
# dnsveil drops to 'nobody' and reads the certificate again on SIGHUP
chmod 755 "$work"
chmod 644 "$work/srv.key"

# the names the zone answers, asked again and again: cache hits
printf '%s\n' "www.test A" "www.test AAAA" "mail.test MX" "test SOA" "test NS" "test MX" \
  > "$work/hits"

# ---- dnsveil: plain on DV (readiness), DoT on DV_TLS, DoH on DV_DOH
DV=$(port); DV_TLS=$(port); DV_DOH=$(port)
printf '[server]\nlisten = "127.0.0.1:%s"\nlisten_tls = "127.0.0.1:%s"\nlisten_https = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\ntcp_max_connections = 1024\n' \
  "$DV" "$DV_TLS" "$DV_DOH" "$work/srv.pem" "$work/srv.key" > "$work/dnsveil.toml"
"$DNSVEIL_BIN" -c "$work/dnsveil.toml" -u "udp://127.0.0.1:$KNOT" \
  >"$work/dnsveil.log" 2>&1 & pids+=($!)
wait_udp "$DV" dnsveil

# ---- dnsdist: the same three listeners and a packet cache
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
pids+=($!)
wait_udp "$DD" dnsdist

bench() {  # bench LABEL dnsperf-args...
  local label=$1; shift
  printf '%-22s ' "$label"
  dnsperf -d "$work/hits" -l "$SECONDS_PER_RUN" -t 3 -c "$CLIENTS" "$@" >"$work/last.out" 2>&1 || true
  summ <"$work/last.out"
  echo
}
dot() { bench "$1 DoT" -m dot -s 127.0.0.1 -p "$2" "${@:3}"; }
doh() { bench "$1 DoH" -m doh -s 127.0.0.1 -p "$2" -O "doh-uri=https://127.0.0.1:$2/dns-query" \
          -O doh-method=POST "${@:3}"; }

echo
echo "Inbound DoT/DoH, cache hits, ${SECONDS_PER_RUN}s per run, $CLIENTS clients, $(nproc) cores"
printf '%-22s %10s %9s %9s %9s %9s %8s\n' "" "QPS" "avg ms" "min ms" "max ms" "sd ms" "lost"
echo "-- full speed, $OUTSTANDING outstanding"
dot dnsveil "$DV_TLS" -q "$OUTSTANDING"
dot dnsdist "$DD_TLS" -q "$OUTSTANDING"
doh dnsveil "$DV_DOH" -q "$OUTSTANDING"
doh dnsdist "$DD_DOH" -q "$OUTSTANDING"
echo "-- fixed rate, $RATE queries/s"
dot dnsveil "$DV_TLS" -q "$OUTSTANDING" -Q "$RATE"
dot dnsdist "$DD_TLS" -q "$OUTSTANDING" -Q "$RATE"
doh dnsveil "$DV_DOH" -q "$OUTSTANDING" -Q "$RATE"
doh dnsdist "$DD_DOH" -q "$OUTSTANDING" -Q "$RATE"

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status" 2>/dev/null || echo "?"; }
echo
echo "RSS after the runs: dnsveil $(rss "${pids[1]}"), dnsdist $(rss "${pids[2]}")"
