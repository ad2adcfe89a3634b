#!/usr/bin/env bash
# Build static wolfSSL and ngtcp2 (with its wolfSSL crypto backend) from
# Debian source packages into a prefix that CMake finds through pkg-config.
#
#   third_party/build.sh [--force] [--host TRIPLET]
#
# --host TRIPLET cross-compiles with Debian's TRIPLET-gcc (gcc-mips-linux-gnu,
# gcc-aarch64-linux-gnu, ...) and also builds what the host gets from Debian's
# -dev packages: libev, nghttp2, and cmocka for the unit tests. The cache is
# then ${XDG_CACHE_HOME:-~/.cache}/dnsveil/cross/TRIPLET, the prefix
# <repo>/build/cross/TRIPLET/prefix (scripts/cross.sh drives this).
#
# Environment:
#   DV_PREFIX          where the prefix appears (default: <repo>/build/third_party/prefix)
#   DV_PREFIX_MODE     "link" (default: symlink to the cache) or "copy"
#   DV_CACHE_DIR       build cache (default: ${XDG_CACHE_HOME:-~/.cache}/dnsveil/third_party)
#   DV_DEBIAN_MIRROR   mirror for the deb-src lines (default: the one apt already uses)
#   DV_WOLFSSL_SUITES  suites to take wolfssl from, in order (default: "trixie")
#   DV_NGTCP2_SUITES   suites to take ngtcp2 from, in order (default: "trixie sid")
#   DV_CROSS_SUITES    --host only: suites for libev, nghttp2, cmocka (default: "trixie sid")
#   DV_JOBS            parallel make jobs (default: nproc)
#
# A build lives in $DV_CACHE_DIR/<stamp>/prefix, where <stamp> hashes the
# source versions, the configure flags, the compiler and this recipe's
# revision; when that directory is complete the build is skipped.
set -euo pipefail

# Bump when the recipe changes in a way that must invalidate cached builds.
readonly RECIPE_REV=3
readonly SRC_LIST=/etc/apt/sources.list.d/dnsveil-src.list
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
jobs=${DV_JOBS:-$(nproc)}
wolfssl_suites=${DV_WOLFSSL_SUITES:-trixie}
ngtcp2_suites=${DV_NGTCP2_SUITES:-trixie sid}
force=0
host=""

while [ $# -gt 0 ]; do
  case $1 in
    --force) force=1 ;;
    --host) [ $# -ge 2 ] || { echo "third_party/build.sh: --host needs a triplet" >&2; exit 2; }
            host=$2; shift ;;
    --host=*) host=${1#--host=} ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "third_party/build.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "third_party/build.sh: $*" >&2; exit 1; }

# Cross builds: the target's compiler, and the libraries a native build takes
# from Debian's -dev packages, built from their Debian sources too.
cc=cc
cross_suites=""
cross_pkgs=()
if [ -n "$host" ]; then
  [[ $host =~ ^[a-z0-9_]+(-[a-z0-9_]+)+$ ]] || die "not a target triplet: '$host'"
  cc=$host-gcc
  command -v "$cc" >/dev/null || die "missing $cc; install Debian's gcc-$host"
  cross_suites=${DV_CROSS_SUITES:-trixie sid}
  cross_pkgs=(libev nghttp2 cmocka)
  prefix_link=${DV_PREFIX:-$root/build/cross/$host/prefix}
  cache_root=${DV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dnsveil/cross/$host}
else
  prefix_link=${DV_PREFIX:-$root/build/third_party/prefix}
  cache_root=${DV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dnsveil/third_party}
fi
prefix_mode=${DV_PREFIX_MODE:-link}

case $prefix_mode in link|copy) ;; *) die "DV_PREFIX_MODE must be link or copy, not '$prefix_mode'" ;; esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"
  fi
}

# run LOG CMD...: run quietly, show the log's tail if the command fails.
run() {
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "third_party/build.sh: failed: $*" >&2
    echo "--- last lines of $log ---" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

for tool in apt-get apt-cache dpkg-source pkg-config autoreconf libtoolize make "$cc" flock; do
  command -v "$tool" >/dev/null ||
    die "missing '$tool'; run scripts/deps.sh (or install dpkg-dev autoconf automake libtool pkg-config build-essential)"
done

# --- 1. deb-src entries for trixie and sid (source indexes only) ----------

debian_mirror() {
  if [ -n "${DV_DEBIAN_MIRROR:-}" ]; then echo "$DV_DEBIAN_MIRROR"; return; fi
  local f uri
  # deb822 files: the first URI that is not the security archive.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" |
          awk '!/-security/ && !n++' || true)
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  # One-line format.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    if [ ! -r "$f" ] || [ "$f" = "$SRC_LIST" ]; then continue; fi
    uri=$(sed -E -n 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]].*/\2/p' "$f" |
          awk '!/-security/ && !n++' || true)
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  die "cannot find the Debian mirror apt uses; set DV_DEBIAN_MIRROR"
}

need_update=0
# shellcheck disable=SC2086 # the suite lists are space-separated words
suites=$(printf '%s\n' $wolfssl_suites $ngtcp2_suites $cross_suites | awk '!seen[$0]++')
for s in $suites; do
  [[ $s =~ ^[a-z][a-z0-9-]*$ ]] || die "not a Debian suite name: '$s'"
done
# Keep the suites already listed, add the requested ones.
listed=""
if [ -f "$SRC_LIST" ]; then
  listed=$(sed -E -n 's/^deb-src .* ([a-z0-9-]+) main$/\1/p' "$SRC_LIST")
fi
# shellcheck disable=SC2086
want=$(printf '%s\n' $listed $suites | awk 'NF && !seen[$0]++')
# shellcheck disable=SC2086
if [ "$(printf '%s\n' $listed)" != "$want" ]; then
  [ -r "$KEYRING" ] || die "missing $KEYRING (package debian-archive-keyring)"
  mirror=$(debian_mirror)
  tmp=$(mktemp)
  {
    echo "# Added by dnsveil third_party/build.sh: SOURCE indexes only, so"
    echo "# 'apt-get source' can fetch wolfssl and ngtcp2. Binary packages"
    echo "# still come only from the suites in the other apt sources."
    for s in $want; do
      echo "deb-src [signed-by=$KEYRING] $mirror $s main"
    done
  } >"$tmp"
  backup=""
  if [ -f "$SRC_LIST" ]; then backup=$(mktemp) && cp "$SRC_LIST" "$backup"; fi
  as_root install -m 0644 "$tmp" "$SRC_LIST"
  rm -f "$tmp"
  need_update=1
fi

# madison prints "pkg | version | URI suite/main Sources", newest first.
# One call for both packages: each one reads every index.
load_madison() { madison=$(apt-cache madison wolfssl ngtcp2 "${cross_pkgs[@]}" 2>/dev/null || true); }
source_version() {  # PKG SUITE
  printf '%s\n' "$madison" | awk -F'|' -v p="$1" -v s="$2" '
    { gsub(/ /, "", $1) }
    $1 == p && $3 ~ (" " s "/main Sources") { gsub(/ /, "", $2); print $2; exit }'
}

if [ "$need_update" -eq 0 ]; then
  load_madison
  for s in $wolfssl_suites; do [ -n "$(source_version wolfssl "$s")" ] || need_update=1; done
  for s in $ngtcp2_suites; do [ -n "$(source_version ngtcp2 "$s")" ] || need_update=1; done
  for p in "${cross_pkgs[@]}"; do
    for s in $cross_suites; do [ -n "$(source_version "$p" "$s")" ] || need_update=1; done
  done
fi
if [ "$need_update" -eq 1 ]; then
  log=$(mktemp)
  if ! as_root apt-get update >"$log" 2>&1; then
    grep -E '^(E|W):' "$log" >&2 || cat "$log" >&2
    rm -f "$log"
    # Do not leave a source list behind that breaks apt-get update for all.
    if [ -n "${backup:-}" ]; then as_root install -m 0644 "$backup" "$SRC_LIST"
    elif [ -n "${want:-}" ]; then as_root rm -f "$SRC_LIST"
    fi
    die "apt-get update failed (with $SRC_LIST as this script wrote it; restored the previous state)"
  fi
  rm -f "$log" "${backup:-}"
fi
if [ "$need_update" -eq 1 ]; then
  load_madison
fi

# --- 2. which versions, and the stamp -------------------------------------

wolfssl_cand=()   # "suite=version" in order of preference
for s in $wolfssl_suites; do
  v=$(source_version wolfssl "$s")
  if [ -n "$v" ] && dpkg --compare-versions "$v" ge 5.7.0; then wolfssl_cand+=("$s=$v"); fi
done
ngtcp2_cand=()
for s in $ngtcp2_suites; do
  v=$(source_version ngtcp2 "$s")
  if [ -n "$v" ] && dpkg --compare-versions "$v" ge 1.11.0; then ngtcp2_cand+=("$s=$v"); fi
done
[ ${#wolfssl_cand[@]} -gt 0 ] || die "no wolfssl >= 5.7 source package in: $wolfssl_suites"
[ ${#ngtcp2_cand[@]} -gt 0 ] || die "no ngtcp2 >= 1.11 source package in: $ngtcp2_suites"
# cross only: "pkg=suite=version ..." for libev, nghttp2, cmocka
declare -A cross_cand=()
for p in "${cross_pkgs[@]}"; do
  c=""
  for s in $cross_suites; do
    v=$(source_version "$p" "$s")
    if [ -n "$v" ]; then c="$c $s=$v"; fi
  done
  [ -n "$c" ] || die "no $p source package in: $cross_suites"
  cross_cand[$p]=${c# }
done

# Sections per function and datum, so a static link keeps only what is used.
opt_cflags="-O2 -fPIC -g0 -ffunction-sections -fdata-sections"
# configure arguments that make a cross build (none for the host)
cross_conf=()
if [ -n "$host" ]; then
  cross_conf=(--host="$host" CC="$cc" AR="$host-ar" RANLIB="$host-ranlib")
fi

# The configure flags live in wolfssl.flags and ngtcp2.flags (why each one
# is there is said there), shared with packaging/openwrt/Makefile.
read_flags() {  # FILE: its words, comment lines skipped
  awk '!/^[[:space:]]*#/ { for (i = 1; i <= NF; i++) print $i }' "$1"
}
mapfile -t wolfssl_flags < <(read_flags "$here/wolfssl.flags")
# and the target's own (wolfssl-x86_64.flags: its AES-NI code)
target_arch=${host%%-*}
[ -n "$target_arch" ] || target_arch=$(uname -m)
if [ -f "$here/wolfssl-$target_arch.flags" ]; then
  mapfile -t -O "${#wolfssl_flags[@]}" wolfssl_flags < <(read_flags "$here/wolfssl-$target_arch.flags")
fi
mapfile -t ngtcp2_flags < <(read_flags "$here/ngtcp2.flags")
if [ ${#wolfssl_flags[@]} -eq 0 ] || [ ${#ngtcp2_flags[@]} -eq 0 ]; then
  die "empty flags files in $here"
fi
# ngtcp2 uses the AES-ECB EVP ciphers for header protection.
wolfssl_cppflags="-DHAVE_AES_ECB"

cc_id=$("$cc" --version | sed -n 1p)
stamp_text=$(
  printf 'recipe=%s\narch=%s\ncc=%s\ncflags=%s\n' "$RECIPE_REV" "${host:-$(uname -m)}" "$cc_id" "$opt_cflags"
  for p in "${cross_pkgs[@]}"; do printf '%s=%s\n' "$p" "${cross_cand[$p]}"; done
  printf 'wolfssl=%s\n' "${wolfssl_cand[@]}"
  printf 'wolfssl_flags=%s\nwolfssl_cppflags=%s\n' "${wolfssl_flags[*]}" "$wolfssl_cppflags"
  printf 'ngtcp2=%s\n' "${ngtcp2_cand[@]}"
  printf 'ngtcp2_flags=%s\n' "${ngtcp2_flags[*]}"
)
stamp=$(printf '%s\n' "$stamp_text" | sha256sum | cut -c1-16)
slot=$cache_root/$stamp
built=$slot/prefix

# qemu_for TRIPLET: the qemu-user emulator for a Debian cross triplet.
qemu_for() {
  local cpu=${1%%-*}
  case $cpu in
    arm|mips|mipsel|aarch64|mips64|mips64el|riscv64) ;;
    *) return 1 ;;
  esac
  command -v "qemu-$cpu" || command -v "qemu-$cpu-static"
}

# --- 3. build (under a lock, so parallel runs share one build) ------------

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

if [ "$force" -eq 1 ] || [ ! -f "$built/.complete" ]; then
  rm -rf "$slot"
  mkdir -p "$slot/work"
  printf '%s\n' "$stamp_text" >"$slot/STAMP"
  work=$slot/work
  log=$slot/build.log
  : >"$log"
  trap 'echo "third_party/build.sh: build log: $log" >&2' ERR
  echo "third_party: building wolfSSL and ngtcp2 into $built (log: $log)" >&2

  # fetch PKG: try each candidate; the first one the mirror serves whole wins.
  fetch() {
    local pkg=$1; shift
    local c suite ver
    for c in "$@"; do
      suite=${c%%=*}; ver=${c#*=}
      rm -rf "${work:?}/$pkg.dl" && mkdir -p "$work/$pkg.dl"
      echo "== apt-get source $pkg=$ver ($suite)" >>"$log"
      if (cd "$work/$pkg.dl" && apt-get source -q "$pkg=$ver") >>"$log" 2>&1; then
        local dir
        dir=$(find "$work/$pkg.dl" -mindepth 1 -maxdepth 1 -type d -print -quit)
        [ -n "$dir" ] || continue
        mv "$dir" "$work/$pkg"
        echo "$ver"
        return 0
      fi
      echo "== $pkg $ver ($suite) not fetchable, trying the next suite" >>"$log"
    done
    # Cross-only libraries: a mirror that serves a package's upstream
    # tarball but not its .dsc still gives the source Debian ships (apt
    # checks it against the signed Sources index), without Debian's patches.
    # The newest version first, since no Debian fixes come with it.
    if [[ " ${cross_pkgs[*]} " == *" $pkg "* ]]; then
      local i orig
      for ((i = $# ; i >= 1; i--)); do
        c=${!i}; suite=${c%%=*}; ver=${c#*=}
        rm -rf "${work:?}/$pkg.dl" && mkdir -p "$work/$pkg.dl"
        echo "== apt-get source --download-only $pkg=$ver ($suite), for its upstream tarball" >>"$log"
        (cd "$work/$pkg.dl" && apt-get source -q --download-only "$pkg=$ver") >>"$log" 2>&1 || true
        orig=$(find "$work/$pkg.dl" -maxdepth 1 -name "${pkg}_*.orig.tar.*" ! -name '*.asc' -print -quit)
        [ -n "$orig" ] || continue
        mkdir -p "$work/$pkg.dl/x"
        tar -xf "$orig" -C "$work/$pkg.dl/x" >>"$log" 2>&1 || continue
        local dir
        dir=$(find "$work/$pkg.dl/x" -mindepth 1 -maxdepth 1 -type d -print -quit)
        [ -n "$dir" ] || continue
        mv "$dir" "$work/$pkg"
        echo "third_party: $pkg $ver ($suite): the mirror has only its upstream tarball; built without Debian's patches" >&2
        echo "${ver} (upstream tarball only)"
        return 0
      done
    fi
    echo "third_party/build.sh: could not fetch $pkg (tried: $*)" >&2
    tail -n 20 "$log" >&2
    return 1
  }

  wolfssl_ver=$(fetch wolfssl "${wolfssl_cand[@]}")
  ngtcp2_ver=$(fetch ngtcp2 "${ngtcp2_cand[@]}")
  declare -A cross_ver=()
  for p in "${cross_pkgs[@]}"; do
    # shellcheck disable=SC2086 # space-separated suite=version words
    cross_ver[$p]=$(fetch "$p" ${cross_cand[$p]})
  done

  # wolfSSL: the Debian tarball has no configure script.
  (
    cd "$work/wolfssl"
    run "$log" ./autogen.sh
    run "$log" ./configure --prefix="$built" "${wolfssl_flags[@]}" "${cross_conf[@]}" \
      CFLAGS="$opt_cflags" CPPFLAGS="$wolfssl_cppflags"
    run "$log" make -j"$jobs"
    run "$log" make install
  )

  (
    cd "$work/ngtcp2"
    [ -x configure ] || run "$log" autoreconf -fi
    # PKG_CONFIG_LIBDIR: only our prefix, never the build machine's .pc files
    run "$log" ./configure --prefix="$built" "${ngtcp2_flags[@]}" "${cross_conf[@]}" \
      CFLAGS="$opt_cflags" PKG_CONFIG="pkg-config --static" \
      PKG_CONFIG_PATH="$built/lib/pkgconfig" PKG_CONFIG_LIBDIR="$built/lib/pkgconfig"
    run "$log" make -j"$jobs"
    run "$log" make install
  )

  # Cross only: what Debian's libev-dev, libnghttp2-dev and libcmocka-dev
  # give a native build, for the target.
  if [ -n "$host" ]; then
    (
      cd "$work/libev"
      [ -x configure ] || run "$log" autoreconf -fi
      run "$log" ./configure --prefix="$built" --enable-static --disable-shared \
        --disable-dependency-tracking "${cross_conf[@]}" CFLAGS="$opt_cflags"
      run "$log" make -j"$jobs"
      run "$log" make install
    )
    (
      cd "$work/nghttp2"
      [ -x configure ] || run "$log" autoreconf -fi
      run "$log" ./configure --prefix="$built" --enable-lib-only --enable-static \
        --disable-shared --disable-dependency-tracking --without-systemd --without-jemalloc \
        "${cross_conf[@]}" CFLAGS="$opt_cflags" PKG_CONFIG_LIBDIR="$built/lib/pkgconfig"
      run "$log" make -j"$jobs"
      run "$log" make install
    )
    (
      cd "$work/cmocka"
      run "$log" cmake -S . -B build -DCMAKE_INSTALL_PREFIX="$built" \
        -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF \
        -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_C_FLAGS="$opt_cflags"
      run "$log" cmake --build build -j"$jobs"
      run "$log" cmake --install build
    )
  fi

  # Static libraries only: libtool archives and docs are of no use here.
  find "$built" -name '*.la' -delete
  # Relocatable .pc files: paths follow wherever the prefix is seen from
  # (the symlink or a copy), so CMake's cached paths survive a rebuild.
  # shellcheck disable=SC2016 # ${pcfiledir} is for pkg-config, not the shell
  sed -i 's|^prefix=.*|prefix=${pcfiledir}/../..|' "$built"/lib/pkgconfig/*.pc
  rm -rf "$built/share/doc" "$built/share/man"

  {
    echo "wolfssl $wolfssl_ver"
    echo "ngtcp2 $ngtcp2_ver"
    for p in "${cross_pkgs[@]}"; do echo "$p ${cross_ver[$p]}"; done
  } >"$built/VERSIONS"
  cp "$slot/STAMP" "$built/STAMP"

  # The prefix must link: a TLS 1.3 client context and ngtcp2's wolfSSL glue.
  cat >"$work/check.c" <<'EOF'
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>
int main(void) {
  if (wolfSSL_Init() != WOLFSSL_SUCCESS) return 1;
  WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
  if (ctx == NULL) return 2;
  if (ngtcp2_version(0) == NULL) return 3;
  if (ngtcp2_crypto_wolfssl_configure_client_context(ctx) != 0) return 4;
  wolfSSL_CTX_free(ctx);
  wolfSSL_Cleanup();
  return 0;
}
EOF
  (
    export PKG_CONFIG_PATH="$built/lib/pkgconfig" PKG_CONFIG_LIBDIR="$built/lib/pkgconfig"
    # shellcheck disable=SC2046
    run "$log" "$cc" -o "$work/check" "$work/check.c" \
      $(pkg-config --static --cflags --libs libngtcp2_crypto_wolfssl libngtcp2 wolfssl)
    if [ -z "$host" ]; then
      run "$log" "$work/check"
    elif qemu=$(qemu_for "$host"); then
      run "$log" "$qemu" -L "/usr/$host" "$work/check"
    fi
  )

  rm -rf "$work"
  trap - ERR
  touch "$built/.complete"
fi

# --- 4. make the prefix appear where CMake looks --------------------------

mkdir -p "$(dirname "$prefix_link")"
if [ "$prefix_mode" = link ]; then
  if [ -L "$prefix_link" ]; then
    [ "$(readlink "$prefix_link")" = "$built" ] || ln -sfn "$built" "$prefix_link"
  elif [ -e "$prefix_link" ]; then
    [ -f "$prefix_link/STAMP" ] || die "$prefix_link exists and is not ours; remove it or set DV_PREFIX"
    rm -rf "$prefix_link"
    ln -s "$built" "$prefix_link"
  else
    ln -s "$built" "$prefix_link"
  fi
else
  if [ -L "$prefix_link" ]; then
    rm -f "$prefix_link"
  elif [ -e "$prefix_link" ] && ! cmp -s "$prefix_link/STAMP" "$built/STAMP"; then
    [ -f "$prefix_link/STAMP" ] || [ -z "$(ls -A "$prefix_link")" ] ||
      die "$prefix_link exists and is not ours; remove it or set DV_PREFIX"
    rm -rf "$prefix_link"
  fi
  if [ ! -e "$prefix_link/.complete" ]; then
    mkdir -p "$prefix_link"
    cp -a "$built/." "$prefix_link/"
  fi
fi

echo "third_party: $(paste -sd ' ' "$built/VERSIONS" | sed 's/ ngtcp2/, ngtcp2/') -> $prefix_link"
