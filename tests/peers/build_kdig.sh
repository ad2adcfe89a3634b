#!/usr/bin/env bash
# Build a QUIC-capable kdig (build/peers/kdig) from Debian source packages,
# so the DoQ test peer can be cross-checked with an independent DoQ client
# (issue 8). Debian 12's knot-dnsutils is built without QUIC: its
# `kdig +quic` silently falls back to UDP/TCP.
#
#   tests/peers/build_kdig.sh [--force]
#
# Recipe (nothing from another project is committed here):
#   - knot from trixie (else sid), ngtcp2 from trixie (else sid): the first
#     suite whose source package downloads whole wins (trixie's ngtcp2 .dsc
#     has been seen to 404 on the mirror);
#   - ngtcp2 with its GnuTLS crypto backend (bookworm's GnuTLS 3.7.9; ngtcp2
#     wants >= 3.7.3), static only, lib only, into its own prefix;
#   - knot utilities only (--disable-daemon --disable-modules
#     --disable-documentation --enable-utilities --enable-quic=yes
#     --enable-xdp=no, static libknot), linked against that static ngtcp2;
#     only the kdig target is built.
#
# Environment:
#   DV_KDIG_OUT        where the binary goes (default: <repo>/build/peers/kdig)
#   DV_KDIG_CACHE_DIR  build cache (default: ${XDG_CACHE_HOME:-~/.cache}/dnsveil/kdig)
#   DV_KNOT_SUITES     suites to take knot from, in order (default: "trixie sid")
#   DV_NGTCP2_SUITES   suites to take ngtcp2 from, in order (default: "trixie sid")
#   DV_DEBIAN_MIRROR   mirror for the deb-src lines (default: the one apt already uses)
#   DV_KDIG_NO_APT     1: never run apt-get install (fail if build deps are missing)
#   DV_JOBS            parallel make jobs (default: nproc)
#
# The build lives in $DV_KDIG_CACHE_DIR/<stamp>/ (stamp = source versions,
# flags, compiler, recipe revision); when it is complete nothing is rebuilt
# and the binary is only copied if build/peers/kdig differs.
# Exit status: 0 built or current; 1 failed; 3 impossible here (a build
# dependency or source package is not available), with the reason on stderr.
set -euo pipefail

readonly RECIPE_REV=1
readonly SRC_LIST=/etc/apt/sources.list.d/dnsveil-src.list
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly ME=build_kdig.sh

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${DV_KDIG_OUT:-$root/build/peers/kdig}
cache_root=${DV_KDIG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dnsveil/kdig}
jobs=${DV_JOBS:-$(nproc)}
knot_suites=${DV_KNOT_SUITES:-trixie sid}
ngtcp2_suites=${DV_NGTCP2_SUITES:-trixie sid}
force=0

for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h|--help) sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$ME: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

die() { echo "$ME: $*" >&2; exit 1; }
impossible() { echo "$ME: cannot build here: $*" >&2; exit 3; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else impossible "need root for: $*"
  fi
}

run() {  # LOG CMD...: quiet; the log's tail on failure
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "$ME: failed: $*" >&2
    echo "--- last lines of $log ---" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

# --- 0. build dependencies (all in bookworm) ------------------------------

# tool:package pairs, then -dev packages found through dpkg
tools="apt-get:apt dpkg-source:dpkg-dev pkg-config:pkg-config autoreconf:autoconf
       automake:automake libtoolize:libtool make:make cc:gcc flock:util-linux"
devs="libgnutls28-dev libedit-dev liblmdb-dev liburcu-dev libidn2-dev libnghttp2-dev"
missing=""
for t in $tools; do
  command -v "${t%%:*}" >/dev/null || missing="$missing ${t#*:}"
done
for p in $devs; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "${DV_KDIG_NO_APT:-0}" = 1 ] && impossible "missing packages:$missing (DV_KDIG_NO_APT=1)"
  echo "$ME: installing build dependencies:$missing" >&2
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    $missing >/dev/null || impossible "apt-get install$missing failed"
fi

# --- 1. deb-src entries (source indexes only; same file as third_party) ---

debian_mirror() {
  if [ -n "${DV_DEBIAN_MIRROR:-}" ]; then echo "$DV_DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" |
          awk '!/-security/ && !n++' || true)
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    if [ ! -r "$f" ] || [ "$f" = "$SRC_LIST" ]; then continue; fi
    uri=$(sed -E -n 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]].*/\2/p' "$f" |
          awk '!/-security/ && !n++' || true)
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  impossible "cannot find the Debian mirror apt uses; set DV_DEBIAN_MIRROR"
}

# shellcheck disable=SC2086
suites=$(printf '%s\n' $knot_suites $ngtcp2_suites | awk '!seen[$0]++')
for s in $suites; do
  [[ $s =~ ^[a-z][a-z0-9-]*$ ]] || die "not a Debian suite name: '$s'"
done
listed=""
if [ -f "$SRC_LIST" ]; then
  listed=$(sed -E -n 's/^deb-src .* ([a-z0-9-]+) main$/\1/p' "$SRC_LIST")
fi
# shellcheck disable=SC2086
want=$(printf '%s\n' $listed $suites | awk 'NF && !seen[$0]++')
need_update=0
backup=""
# shellcheck disable=SC2086
if [ "$(printf '%s\n' $listed)" != "$want" ]; then
  [ -r "$KEYRING" ] || impossible "missing $KEYRING (package debian-archive-keyring)"
  mirror=$(debian_mirror)
  tmp=$(mktemp)
  {
    echo "# Added by dnsveil (third_party/build.sh, tests/peers/build_kdig.sh):"
    echo "# SOURCE indexes only, so 'apt-get source' can fetch wolfssl, ngtcp2"
    echo "# and knot. Binary packages still come only from the other apt sources."
    for s in $want; do
      echo "deb-src [signed-by=$KEYRING] $mirror $s main"
    done
  } >"$tmp"
  if [ -f "$SRC_LIST" ]; then backup=$(mktemp) && cp "$SRC_LIST" "$backup"; fi
  as_root install -m 0644 "$tmp" "$SRC_LIST"
  rm -f "$tmp"
  need_update=1
fi

load_madison() { madison=$(apt-cache madison knot ngtcp2 2>/dev/null || true); }
source_version() {  # PKG SUITE
  printf '%s\n' "$madison" | awk -F'|' -v p="$1" -v s="$2" '
    { gsub(/ /, "", $1) }
    $1 == p && $3 ~ (" " s "/main Sources") { gsub(/ /, "", $2); print $2; exit }'
}
if [ "$need_update" -eq 0 ]; then
  load_madison
  for s in $knot_suites; do [ -n "$(source_version knot "$s")" ] || need_update=1; done
  for s in $ngtcp2_suites; do [ -n "$(source_version ngtcp2 "$s")" ] || need_update=1; done
fi
if [ "$need_update" -eq 1 ]; then
  log=$(mktemp)
  if ! as_root apt-get update >"$log" 2>&1; then
    grep -E '^(E|W):' "$log" >&2 || cat "$log" >&2
    rm -f "$log"
    if [ -n "$backup" ]; then as_root install -m 0644 "$backup" "$SRC_LIST"
    elif [ -z "$listed" ]; then as_root rm -f "$SRC_LIST"
    fi
    impossible "apt-get update failed with the deb-src lines (restored the previous state)"
  fi
  rm -f "$log" "$backup"
  load_madison
fi

# --- 2. versions and stamp ------------------------------------------------

# kdig speaks DoQ from knot 3.2 on; knot's configure wants libngtcp2 >= 0.17
# (knot 3.4) and GnuTLS >= 3.7.3; ngtcp2 1.x wants GnuTLS >= 3.7.3.
knot_cand=()
for s in $knot_suites; do
  v=$(source_version knot "$s")
  if [ -n "$v" ] && dpkg --compare-versions "$v" ge 3.3.0; then knot_cand+=("$s=$v"); fi
done
ngtcp2_cand=()
for s in $ngtcp2_suites; do
  v=$(source_version ngtcp2 "$s")
  if [ -n "$v" ] && dpkg --compare-versions "$v" ge 1.0.0; then ngtcp2_cand+=("$s=$v"); fi
done
[ ${#knot_cand[@]} -gt 0 ] || impossible "no knot >= 3.3 source package in: $knot_suites"
[ ${#ngtcp2_cand[@]} -gt 0 ] || impossible "no ngtcp2 >= 1.0 source package in: $ngtcp2_suites"
gnutls_ver=$(pkg-config --modversion gnutls 2>/dev/null || echo none)
dpkg --compare-versions "$gnutls_ver" ge 3.7.3 ||
  impossible "GnuTLS $gnutls_ver < 3.7.3 (ngtcp2_crypto_gnutls and knot's QUIC need it)"

opt_cflags="-O2 -g0"
ngtcp2_flags=(
  --enable-lib-only --enable-static --disable-shared --with-pic
  --with-gnutls --without-openssl --without-wolfssl --without-boringssl
  --without-picotls --without-libnghttp3 --without-libev --without-jemalloc
  --without-libbrotlienc --without-libbrotlidec --disable-dependency-tracking
)
knot_flags=(
  --disable-daemon --disable-modules --disable-documentation --enable-utilities
  --enable-quic=yes --enable-xdp=no --disable-shared --enable-static --with-pic
  --disable-fastparser --disable-systemd --disable-dbus --disable-cap-ng
  --enable-dnstap=no --enable-maxminddb=no --disable-dependency-tracking
)

cc_id=$(cc --version | sed -n 1p)
stamp_text=$(
  printf 'recipe=%s\narch=%s\ncc=%s\ncflags=%s\ngnutls=%s\n' \
    "$RECIPE_REV" "$(uname -m)" "$cc_id" "$opt_cflags" "$gnutls_ver"
  printf 'knot=%s\n' "${knot_cand[@]}"
  printf 'knot_flags=%s\n' "${knot_flags[*]}"
  printf 'ngtcp2=%s\n' "${ngtcp2_cand[@]}"
  printf 'ngtcp2_flags=%s\n' "${ngtcp2_flags[*]}"
)
stamp=$(printf '%s\n' "$stamp_text" | sha256sum | cut -c1-16)
slot=$cache_root/$stamp
built=$slot/kdig

# --- 3. build, under a lock ------------------------------------------------

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

if [ "$force" -eq 1 ] || [ ! -f "$slot/.complete" ]; then
  start=$(date +%s)
  rm -rf "$slot"
  mkdir -p "$slot/work"
  printf '%s\n' "$stamp_text" >"$slot/STAMP"
  work=$slot/work
  ngprefix=$slot/ngtcp2
  log=$slot/build.log
  : >"$log"
  trap 'echo "$ME: build log: $log" >&2' ERR
  echo "kdig: building knot's kdig with QUIC into $slot (log: $log)" >&2

  fetch() {  # PKG SUITE=VER...: first candidate the mirror serves whole
    local pkg=$1; shift
    local c suite ver dir
    for c in "$@"; do
      suite=${c%%=*}; ver=${c#*=}
      rm -rf "${work:?}/$pkg.dl" && mkdir -p "$work/$pkg.dl"
      echo "== apt-get source $pkg=$ver ($suite)" >>"$log"
      if (cd "$work/$pkg.dl" && apt-get source -q "$pkg=$ver") >>"$log" 2>&1; then
        dir=$(find "$work/$pkg.dl" -mindepth 1 -maxdepth 1 -type d -print -quit)
        [ -n "$dir" ] || continue
        mv "$dir" "$work/$pkg"
        echo "$ver"
        return 0
      fi
      echo "== $pkg $ver ($suite) not fetchable, trying the next suite" >>"$log"
    done
    echo "$ME: could not fetch $pkg (tried: $*)" >&2
    tail -n 20 "$log" >&2
    return 1
  }
  knot_ver=$(fetch knot "${knot_cand[@]}") || impossible "no knot source package could be fetched"
  ngtcp2_ver=$(fetch ngtcp2 "${ngtcp2_cand[@]}") || impossible "no ngtcp2 source package could be fetched"

  (
    cd "$work/ngtcp2"
    [ -x configure ] || run "$log" autoreconf -fi
    run "$log" ./configure --prefix="$ngprefix" "${ngtcp2_flags[@]}" CFLAGS="$opt_cflags -fPIC"
    run "$log" make -j"$jobs"
    run "$log" make install
  )

  (
    cd "$work/knot"
    [ -x configure ] || run "$log" autoreconf -fi
    # Explicit flags: crypto backend before the core. The prefix holds only
    # the .a files, so the linker takes ngtcp2 statically.
    run "$log" ./configure --prefix="$slot/unused" "${knot_flags[@]}" CFLAGS="$opt_cflags" \
      PKG_CONFIG_PATH="$ngprefix/lib/pkgconfig" \
      libngtcp2_CFLAGS="-I$ngprefix/include" \
      libngtcp2_LIBS="-L$ngprefix/lib -lngtcp2_crypto_gnutls -lngtcp2"
    grep -q '^#define ENABLE_QUIC 1' src/config.h ||
      die "knot's configure did not enable QUIC (see $log)"
    grep -q '^S\["EMBEDDED_LIBNGTCP2_TRUE"\]="#"' config.status ||
      die "knot's configure chose its embedded ngtcp2, not ours (see $log)"
    run "$log" make -j"$jobs" -C src kdig
    cp src/kdig "$built"
  )

  # QUIC must really be in: ngtcp2's client and its GnuTLS glue are linked.
  # (nm's output goes to a file first: `nm | grep -q` under pipefail fails
  # whenever grep exits at its first match and nm dies of SIGPIPE.)
  nm "$built" >"$work/kdig.nm" || die "nm could not read $built"
  grep -q ' T ngtcp2_conn_client_new' "$work/kdig.nm" || die "kdig has no ngtcp2 in it"
  grep -q ' T ngtcp2_crypto_gnutls_configure_client_session' "$work/kdig.nm" ||
    die "kdig has no ngtcp2_crypto_gnutls in it"
  "$built" -V >>"$log" 2>&1 || die "the built kdig does not run"

  {
    echo "knot $knot_ver"
    echo "ngtcp2 $ngtcp2_ver"
    echo "gnutls $gnutls_ver"
  } >"$slot/VERSIONS"
  rm -rf "$work" "$ngprefix"
  trap - ERR
  touch "$slot/.complete"
  echo "kdig: built in $(( $(date +%s) - start )) s" >&2
fi

# --- 4. install the binary ----------------------------------------------

mkdir -p "$(dirname "$out")"
if ! cmp -s "$built" "$out"; then
  cp "$built" "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
fi
echo "kdig: $(paste -sd ' ' "$slot/VERSIONS" | sed 's/ ngtcp2/, ngtcp2/; s/ gnutls/, gnutls/') -> $out"
