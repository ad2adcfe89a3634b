#!/usr/bin/env bash
# The whole test suite: dependencies, test peers, debug/ASan/fuzz builds,
# unit tests (ctest), the integration suite against the debug and the ASan
# binary, and a short run of every fuzz target (in the background, at nice
# 19, from the end of the builds on).
#
# Usage: scripts/test.sh            (FUZZ_SECONDS=60 by default)
#        FUZZ_SECONDS=10 scripts/test.sh
#        PYTEST_ARGS="-k malformed" scripts/test.sh
#        STAGES="builds fuzz" scripts/test.sh   (a subset, by hand)
#        DV_FRESH=1 scripts/test.sh   (as on a new machine: every build cache
#            -- third_party, kdig, Go -- in an empty temporary directory, and
#            the debug/ASan/fuzz/peer build trees under build/ removed first)
#
# Every stage runs even when an earlier one failed; the last line of output
# is always "N passed, N failed" and the exit status is non-zero when
# anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
PYTEST_ARGS=${PYTEST_ARGS:-}
PYTHON=/usr/bin/python3          # Debian's, which has pytest and dnspython
JOBS=$(nproc 2>/dev/null || echo 2)
LOGDIR=$REPO/build/test-logs

# Prove a fresh machine without a new one: nothing built before is reused.
if [ "${DV_FRESH:-0}" = 1 ]; then
    fresh_cache=$(mktemp -d /tmp/dnsveil-fresh-cache.XXXXXX)
    export XDG_CACHE_HOME=$fresh_cache DV_GO_CACHE=$fresh_cache/go-build
    unset DV_CACHE_DIR DV_KDIG_CACHE_DIR
    rm -rf build/debug build/asan build/fuzz build/fuzz-corpus build/peers build/third_party
    # the temporary cache goes at exit; the next ordinary run relinks
    # build/third_party/prefix to the usual cache
    trap 'rm -rf "$fresh_cache"' EXIT
    echo "DV_FRESH=1: empty build caches in $fresh_cache"
fi
mkdir -p "$LOGDIR"

PASSED=0
FAILED=0
SUMMARY=()

note() { printf '\n==> %s\n' "$*"; }
record() {   # record STAGE PASSED FAILED
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '%-28s %4d passed, %4d failed' "$1" "$2" "$3")")
}
# Set-up stages are not tests: success adds nothing to the counts, failure
# counts as one failure so it can never go unnoticed.
stage_ok() { SUMMARY+=("$(printf '%-28s ok' "$1")"); }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "need root for: $*" >&2; return 1
    fi
}

# ---------------------------------------------------------------- 1. deps
stage_deps() {
    note "dependencies"
    if [ -f scripts/deps.sh ]; then
        if bash scripts/deps.sh; then stage_ok deps; else record deps 0 1; fi
    else
        echo "scripts/deps.sh not present; skipping"
    fi
}

# ---------------------------------------------------------------- 2. peers
PEER_PKGS=(
    knot knot-dnsutils unbound dnsutils python3-pytest python3-dnspython  # plain DNS
    openssl dnsdist knot-resolver                      # DoT/DoH peers and their private CA
    python3-httpx python3-h2 iproute2 dnsperf          # DoH client, ss/ip netns, load for the cache test
    golang-go golang-github-lucas-clemente-quic-go-dev golang-github-miekg-dns-dev  # Go DoQ peer
    systemd man-db shellcheck                          # unit verify/security, resolved helper
    debhelper dpkg-dev lintian                         # the Debian package test
    golang-github-cloudflare-circl-dev golang-golang-x-crypto-dev  # Go ODoH target and relay (HPKE)
    faketime                                           # a clock in the past (test_rtc.py)
    busybox                                            # the OpenWrt scripts (test_openwrt.py)
    python3-prometheus-client chromium                 # metrics parser, status page in a browser
    valgrind                                           # scripts/valgrind-dnsveil.sh (memcheck by hand)
    strace                                             # what the daemon asks of the kernel (DoQ's GSO)
)

missing_pkgs() {
    local p
    for p in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] \
            || echo "$p"
    done
}

# Stop whatever a package's maintainer scripts may have started: only the
# processes named by the packaged services' own pid files (or units).
stop_packaged_services() {
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
        as_root systemctl disable --now knot.service unbound.service dnsdist.service \
            kresd@1.service >/dev/null 2>&1 || true
    fi
    local f pid comm
    for f in /run/knot/knot.pid /run/unbound.pid /var/run/unbound.pid /run/dnsdist/dnsdist.pid; do
        [ -r "$f" ] || continue
        pid=$(tr -dc 0-9 <"$f")
        [ -n "$pid" ] || continue
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        if [ "$comm" = knotd ] || [ "$comm" = unbound ] || [ "$comm" = dnsdist ]; then
            echo "stopping packaged $comm (pid $pid from $f)"
            as_root kill "$pid" || true
        fi
    done
}

install_with_policy_rc_d() {
    local policy=/usr/sbin/policy-rc.d backup="" rc=0
    if [ -e "$policy" ]; then
        backup=$(mktemp /tmp/policy-rc.d.XXXXXX)
        as_root cp -p "$policy" "$backup"
    fi
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    apt_install() {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends -o DPkg::Lock::Timeout=600 "$@"
    }
    # stale package lists give 404s: refresh once and retry
    apt_install "$@" || { as_root apt-get update -q && apt_install "$@"; } || rc=$?
    if [ -n "$backup" ]; then
        as_root cp -p "$backup" "$policy"
        rm -f "$backup"
    else
        as_root rm -f "$policy"
    fi
    return $rc
}

stage_peers() {
    note "test peers"
    local need=() base=()
    mapfile -t need < <(missing_pkgs "${PEER_PKGS[@]}")
    if [ ! -f scripts/deps.sh ]; then   # the bare minimum to build without deps.sh
        mapfile -t base < <(missing_pkgs cmake make gcc clang pkg-config libev-dev libcmocka-dev)
        need+=("${base[@]}")
    fi
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing: ${need[*]}"
        if ! install_with_policy_rc_d "${need[@]}"; then
            stop_packaged_services
            record peers 0 1
            return
        fi
    else
        echo "all present: ${PEER_PKGS[*]}"
    fi
    stop_packaged_services
    # Build the peers here, not inside the first test that needs them, so a
    # failure is reported once and clearly and pytest's time limit is spent
    # on tests. build_kdig.sh exits 3 when QUIC kdig cannot be built on this
    # system (the kdig tests then skip with its reason).
    local rc=0
    bash tests/peers/build.sh || rc=$?
    if [ "$rc" -ne 0 ]; then record "peers (Go)" 0 1; fi
    rc=0
    bash tests/peers/build_kdig.sh || rc=$?
    case $rc in
        0) ;;
        3) echo "kdig with QUIC cannot be built here; its tests will skip" ;;
        *) record "peers (kdig)" 0 1 ;;
    esac
    stage_ok peers
}

# ---------------------------------------------------------------- lint
# Under `set -o pipefail`, `producer | grep -q` and `producer | head` fail
# whenever the reader exits first and the producer dies of SIGPIPE: it
# depends on timing, so such a line can pass for months and then fail on a
# new machine. No shell file of ours may contain one.
stage_lint() {
    note "lint: pipes that race under pipefail"
    local files=() hits
    mapfile -t files < <(git ls-files '*.sh' .ci/run 2>/dev/null || true)
    [ ${#files[@]} -gt 0 ] || { record lint 0 0; return; }
    # (comment lines excluded: they may name the pattern)
    hits=$(grep -nE '^[^#]*\|[[:space:]]*(grep[[:space:]]+(-[a-zA-Z]*q|--quiet)|head)\b' "${files[@]}" || true)
    if [ -n "$hits" ]; then
        echo "$hits"
        record "lint pipefail" 0 1
    else
        record "lint pipefail" 1 0
    fi
}

# ---------------------------------------------------------------- 3. builds
BUILT_DEBUG=0 BUILT_ASAN=0 BUILT_FUZZ=0 BUILT_RELEASE=0

# build DIR cmake-args... ; BUILD_TARGETS (if set) limits what gets built
build() {
    local dir=$1 tag targets=()
    shift
    tag=$(basename "$dir")
    note "build $dir"
    if [ -n "${BUILD_TARGETS:-}" ]; then
        read -r -a targets <<<"$BUILD_TARGETS"
        targets=(--target "${targets[@]}")
    fi
    if cmake -S . -B "$dir" "$@" >"$LOGDIR/$tag-configure.log" 2>&1 \
        && cmake --build "$dir" -j "$JOBS" "${targets[@]}" >"$LOGDIR/$tag-build.log" 2>&1; then
        grep -E 'warning:' "$LOGDIR/$tag-build.log" || true
        stage_ok "build $tag"
        return 0
    fi
    echo "build of $dir failed; see $LOGDIR/$tag-*.log"
    tail -n 40 "$LOGDIR/$tag-configure.log" "$LOGDIR/$tag-build.log" 2>/dev/null || true
    record "build $tag" 0 1
    return 1
}

stage_builds() {
    if build build/debug -DCMAKE_BUILD_TYPE=Debug -DDV_WERROR=ON; then BUILT_DEBUG=1; fi
    if build build/asan -DCMAKE_BUILD_TYPE=Debug -DDV_SANITIZE=ON -DDV_WERROR=ON; then
        BUILT_ASAN=1
    fi
    # the release daemon alone, for ctest's check of its hardening flags
    if BUILD_TARGETS=dnsveil build build/release -DCMAKE_BUILD_TYPE=Release -DDV_WERROR=ON \
            -DDV_TESTS=OFF; then
        BUILT_RELEASE=1
    fi
    # only the fuzz targets: the daemon itself is not needed from this build
    local src names=()
    for src in tests/fuzz/fuzz_*.c; do
        [ -f "$src" ] && names+=("$(basename "$src" .c)")
    done
    if [ ${#names[@]} -eq 0 ]; then
        echo "no fuzz targets in tests/fuzz"
    elif BUILD_TARGETS="${names[*]}" build build/fuzz -DDV_FUZZ=ON -DCMAKE_C_COMPILER=clang \
            -DDV_TESTS=OFF; then
        BUILT_FUZZ=1
    fi
}

# ---------------------------------------------------------------- 4. ctest
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_ctest() {   # run_ctest DIR
    local dir=$1 name log total failed
    name="ctest $(basename "$dir")"
    log="$LOGDIR/$(basename "$dir")-ctest.log"
    note "$name"
    ctest --test-dir "$dir" --output-on-failure --timeout 300 -j "$JOBS" 2>&1 | tee "$log" || true
    if grep -q 'No tests were found' "$log"; then
        record "$name" 0 0
        return
    fi
    # "100% tests passed, 0 tests failed out of 12"
    total=$(sed -nE 's/.*tests failed out of ([0-9]+).*/\1/p' "$log" | tail -n1)
    failed=$(sed -nE 's/.* ([0-9]+) tests? failed out of.*/\1/p' "$log" | tail -n1)
    if [ -z "$total" ] || [ -z "$failed" ]; then
        echo "could not read ctest's summary"
        record "$name" 0 1
        return
    fi
    record "$name" $((total - failed)) "$failed"
}

stage_ctest() {
    if [ "$BUILT_DEBUG" = 1 ]; then run_ctest build/debug; fi
    if [ "$BUILT_ASAN" = 1 ]; then run_ctest build/asan; fi
    if [ "$BUILT_RELEASE" = 1 ]; then run_ctest build/release; fi  # 'hardening' only
}

# ---------------------------------------------------------------- 5. integration
junit_counts() {   # prints "passed failed" from a pytest junit file
    "$PYTHON" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
passed = failed = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        failed += 1
    elif "skipped" not in tags:
        passed += 1
print(passed, failed)
EOF
}

run_integration() {   # run_integration FLAVOUR
    local flavour=$1 bin="$REPO/build/$1/dnsveil" xml="$LOGDIR/integration-$1.xml" counts
    local name="integration $flavour"
    note "$name ($bin)"
    if [ ! -x "$bin" ]; then
        echo "no binary at $bin"
        record "$name" 0 1
        return
    fi
    rm -f "$xml"
    # The Debian package test builds its own release binary: once per run,
    # with the debug flavour.
    local once=()
    if [ "$flavour" != debug ]; then once=(--ignore=tests/integration/test_debian_package.py); fi
    # shellcheck disable=SC2086
    DNSVEIL_BIN="$bin" timeout 1200 "$PYTHON" -m pytest tests/integration -q \
        -p no:cacheprovider --junitxml="$xml" "${once[@]}" $PYTEST_ARGS || true
    if [ ! -s "$xml" ]; then
        echo "pytest produced no report"
        record "$name" 0 1
        return
    fi
    counts=$(junit_counts "$xml")
    record "$name" "${counts% *}" "${counts#* }"
}

stage_integration() {
    run_integration debug
    run_integration asan
}

# ---------------------------------------------------------------- 6. fuzz
run_fuzzer() {   # run_fuzzer BINARY: one time-boxed libFuzzer run
    local f=$1 name corpus seeds
    name=$(basename "$f")
    corpus=build/fuzz-corpus/$name
    seeds=tests/fuzz/corpus/$name
    mkdir -p "$corpus"
    local args=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048
                -print_final_stats=1 -artifact_prefix="build/fuzz-artifacts/$name-" "$corpus")
    if [ -d "$seeds" ]; then args+=("$seeds"); fi
    # a dictionary of the format's tokens, when the target has one
    if [ -f "tests/fuzz/$name.dict" ]; then args=(-dict="tests/fuzz/$name.dict" "${args[@]}"); fi
    timeout $((FUZZ_SECONDS + 120)) "$f" "${args[@]}" >"$LOGDIR/$name.log" 2>&1
}

# The smoke runs start in the background at nice 19 as soon as the fuzz
# build is done, one target at a time, and use the CPU that ctest and the
# integration suite leave idle (those mostly wait on peers and timers):
# that saves the stage's own 7 minutes. stage_fuzz collects them at the end.
FUZZ_PID=
fuzz_all() {   # fuzz_all SUMMARY: every target in turn, one line each
    local f name
    for f in build/fuzz/fuzz_*; do
        if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
        name=$(basename "$f")
        if run_fuzzer "$f"; then echo "$name: ok"; else echo "$name: FAILED"; fi >>"$1"
    done
}

fuzz_start() {
    [ "$BUILT_FUZZ" = 1 ] || return 0
    mkdir -p build/fuzz-corpus build/fuzz-artifacts
    : >"$LOGDIR/fuzz-summary"
    echo "fuzz: every target for ${FUZZ_SECONDS}s in the background, one at a time, at nice 19"
    (renice -n 19 -p "$BASHPID" >/dev/null || true
     fuzz_all "$LOGDIR/fuzz-summary") </dev/null >/dev/null 2>&1 &
    FUZZ_PID=$!
}

stage_fuzz() {
    [ "$BUILT_FUZZ" = 1 ] || return 0
    local ok bad name
    [ -n "$FUZZ_PID" ] || fuzz_start   # STAGES without builds: nothing; by hand
    note "fuzz: every target for ${FUZZ_SECONDS}s (started after the builds)"
    wait "$FUZZ_PID" || true
    cat "$LOGDIR/fuzz-summary"
    ok=$(grep -c ': ok$' "$LOGDIR/fuzz-summary" || true)
    bad=$(grep -c ': FAILED$' "$LOGDIR/fuzz-summary" || true)
    while read -r name; do
        tail -n 40 "$LOGDIR/$name.log"
    done < <(sed -n 's/: FAILED$//p' "$LOGDIR/fuzz-summary")
    record fuzz "$ok" "$bad"
}

# ---------------------------------------------------------------- run
start=$(date +%s)
# STAGES picks a subset when iterating by hand, e.g. STAGES="builds fuzz"
for stage in ${STAGES:-deps lint peers builds ctest integration fuzz}; do
    case $stage in
        deps|lint|peers|builds|ctest|integration|fuzz) "stage_$stage" ;;
        *) echo "unknown stage: $stage" >&2; record "stage $stage" 0 1 ;;
    esac
    if [ "$stage" = builds ] && [[ " ${STAGES:-fuzz} " == *" fuzz "* ]]; then fuzz_start; fi
done

note "summary ($(( $(date +%s) - start ))s)"
for line in "${SUMMARY[@]}"; do echo "$line"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
