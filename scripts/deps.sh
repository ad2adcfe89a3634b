#!/usr/bin/env bash
# Install every build dependency of dnsveil (Debian packages), then build the
# static wolfSSL and ngtcp2 that Debian does not ship in the form we need
# (third_party/build.sh). Idempotent: installed packages and a current
# third-party prefix are left alone. Quiet unless something is wrong.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

packages=(
  build-essential cmake pkg-config           # compiler, make, CMake, pkg-config
  libev-dev libnghttp2-dev libcmocka-dev     # event loop, HTTP/2, unit tests
  clang                                      # fuzz targets (libFuzzer)
  dnsutils iproute2                          # dig for the README's quick start; ss
  ca-certificates debian-archive-keyring     # TLS trust store; deb-src signatures
  autoconf automake libtool dpkg-dev xz-utils  # third_party/build.sh
)

die() { echo "scripts/deps.sh: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"
  fi
}

command -v apt-get >/dev/null || die "this script needs a Debian-based system (apt-get)"

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  log=$(mktemp)
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  cleanup() {
    if [ "$made_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
    rm -f "$log"
  }
  trap cleanup EXIT

  # No service may start while we install: a temporary policy-rc.d that
  # forbids it, unless the system already has one (which then stays as is).
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from dnsveil scripts/deps.sh\nexit 101\n' |
      as_root tee "$policy" >/dev/null
    as_root chmod 0755 "$policy"
    made_policy=1
  fi

  apt_update() {
    as_root apt-get update >>"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
  }
  # Refresh the package lists only when they cannot serve the install:
  # none at all, or a package without an installable candidate.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt_update
  else
    for p in "${missing[@]}"; do
      cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')
      if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then apt_update; break; fi
    done
  fi

  install() {
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1
  }
  # Lists that are present but stale give 404s: refresh once and retry.
  if ! install; then
    apt_update
    install || { tail -n 40 "$log" >&2; die "apt-get install ${missing[*]} failed"; }
  fi

  cleanup
  trap - EXIT
fi

"$root/third_party/build.sh"
