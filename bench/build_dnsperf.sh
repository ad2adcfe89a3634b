#!/usr/bin/env bash
# Build a dnsperf >= 2.15.1 (build/peers/dnsperf) from a Debian source
# package for the DoH benchmarks: the first of trixie, sid that has one
# (on 2026-11-30 trixie has 2.14.0, still with the bug; sid 2.16.0).
#
# Why: Debian 12's dnsperf 2.10 loses DoH answers once several queries are
# in flight on a connection (its nghttp2 callbacks kept one answer buffer;
# dnsperf 2.15.1 fixed it). Against dnsdist's h2o-based DoH frontend, which
# sends answers together, that looked like a stall: its 200s were counted,
# yet nearly every query was "lost" and waited out dnsperf's timeout (with
# one query in flight, or with 2.16, every answer arrives). Nothing of
# dnsperf is committed here.
#
#   bench/build_dnsperf.sh        prints the binary's path; exit 0
#   exit 3: impossible here (no source package, no build deps), reason on stderr
#
# Environment: DV_DNSPERF_SUITES (default "trixie sid"),
#   DV_DNSPERF_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/dnsveil/dnsperf).
# The deb-src lines are the ones third_party/build.sh and
# tests/peers/build_kdig.sh add (/etc/apt/sources.list.d/dnsveil-src.list).
set -euo pipefail

readonly ME=build_dnsperf.sh RECIPE_REV=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/build/peers/dnsperf
cache=${DV_DNSPERF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dnsveil/dnsperf}
suites=${DV_DNSPERF_SUITES:-trixie sid}

impossible() { echo "$ME: cannot build here: $*" >&2; exit 3; }

devs="libck-dev libldns-dev libnghttp2-dev libssl-dev"
missing=""
for p in $devs autoconf automake libtool pkg-config make gcc dpkg-dev; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" -eq 0 ] || impossible "missing packages:$missing"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 \
    --no-install-recommends $missing >/dev/null || impossible "apt-get install$missing failed"
fi

madison=$(apt-cache madison dnsperf 2>/dev/null || true)
ver=""
for s in $suites; do
  ver=$(printf '%s\n' "$madison" | awk -F'|' -v s="$s" '
    { gsub(/ /, "", $1) } $1 == "dnsperf" && $3 ~ (" " s "/main Sources") {
      gsub(/ /, "", $2); print $2; exit }')
  if [ -n "$ver" ] && dpkg --compare-versions "$ver" ge 2.15.1; then suite=$s; break; fi
  ver=""
done
[ -n "$ver" ] || impossible "no dnsperf >= 2.15.1 source package in: $suites (deb-src lines: run third_party/build.sh first)"

dir=$cache/$ver-r$RECIPE_REV
if [ ! -x "$dir/dnsperf" ]; then
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (
    cd "$dir.tmp"
    apt-get source -q --only-source "dnsperf/$suite" >src.log 2>&1 ||
      { tail -n 20 src.log >&2; exit 3; }
    cd dnsperf-*/
    { autoreconf -fi && ./configure --quiet && make -j"$(nproc)"; } >../build.log 2>&1 ||
      { tail -n 40 ../build.log >&2; exit 1; }
    cp src/dnsperf "$dir.tmp/dnsperf.bin"
  )
  mkdir -p "$dir"
  mv "$dir.tmp/dnsperf.bin" "$dir/dnsperf"
  rm -rf "$dir.tmp"
fi
mkdir -p "$(dirname "$out")"
cmp -s "$dir/dnsperf" "$out" 2>/dev/null || cp "$dir/dnsperf" "$out"
echo "$out"
