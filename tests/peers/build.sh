#!/usr/bin/env bash
# Builds every Go test peer under tests/peers/<name>/ into build/peers/<name>,
# offline: GOPATH mode against the libraries Debian packages in
# /usr/share/gocode (no module proxy, no network).
#
# Needs: golang-go golang-github-lucas-clemente-quic-go-dev
#        golang-github-miekg-dns-dev golang-github-cloudflare-circl-dev
#        golang-golang-x-crypto-dev
# A peer is rebuilt only when one of its sources is newer than its binary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$(pwd)
OUT=$REPO/build/peers
mkdir -p "$OUT"

if ! command -v go >/dev/null; then
    echo "peers: go not found (apt-get install golang-go" \
         "golang-github-lucas-clemente-quic-go-dev golang-github-miekg-dns-dev" \
         "golang-github-cloudflare-circl-dev golang-golang-x-crypto-dev)" >&2
    exit 1
fi

# A private GOPATH entry and build cache so nothing outside build/ is touched.
export GO111MODULE=off
export GOPATH=/usr/share/gocode:$REPO/build/peers/gopath
export GOCACHE=${DV_GO_CACHE:-$REPO/build/peers/gocache}
export GOFLAGS=
export GOPROXY=off
mkdir -p "$REPO/build/peers/gopath" "$GOCACHE"

status=0
for dir in tests/peers/*/; do
    name=$(basename "$dir")
    ls "$dir"/*.go >/dev/null 2>&1 || continue
    bin=$OUT/$name
    if [ -x "$bin" ] && [ -z "$(find "$dir" -name '*.go' -newer "$bin")" ]; then
        echo "peers: $name up to date"
        continue
    fi
    echo "peers: building $name"
    if (cd "$dir" && go build -o "$bin" .); then
        :
    else
        echo "peers: $name failed to build" >&2
        status=1
    fi
done
exit $status
