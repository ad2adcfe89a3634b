#!/usr/bin/env bash
# Cross builds for routers, tested under qemu-user.
#
#   scripts/cross.sh [--no-test] [--no-integration] [ARCH...]
#
# ARCH: mips (big-endian MIPS32, the default), aarch64, armhf; "all" = all
# three. For each, one after the other (the machine is small):
#   1. third_party/build.sh --host TRIPLET: wolfSSL, ngtcp2, libev, nghttp2
#      and cmocka from Debian source packages, cross-compiled, cached in
#      ~/.cache/dnsveil/cross/TRIPLET;
#   2. dnsveil with Debian's TRIPLET-gcc, -DDV_STATIC=ON (every library
#      linked in, libc dynamic) into build/cross/ARCH; the stripped size;
#   3. every unit test under qemu-ARCH (ctest runs them through the emulator);
#   4. the plain, DoT, DoH and DoQ integration battery against the real
#      peers, with DNSVEIL_BIN a wrapper that runs the cross binary under
#      qemu-user.
# Missing packages (gcc-TRIPLET, qemu-user) are installed with apt-get.
# Results: one line per ARCH in build/cross/results.txt, and the last line
# printed is "N passed, N failed" over everything that ran.
#
# Environment: DV_JOBS (default 2), PYTEST_ARGS (added to the battery's
# pytest command), CROSS_BATTERY (the battery's test files, relative to
# tests/integration).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
JOBS=${DV_JOBS:-2}
PYTHON=/usr/bin/python3
BATTERY=${CROSS_BATTERY:-test_answers.py test_upstreams.py test_truncation.py test_dot.py test_doh.py test_doq.py}
run_tests=1
run_integration=1
arches=()

for arg in "$@"; do
    case $arg in
        --no-test) run_tests=0 ;;
        --no-integration) run_integration=0 ;;
        all) arches+=(mips aarch64 armhf) ;;
        mips|aarch64|armhf) arches+=("$arg") ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scripts/cross.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(mips)

die() { echo "scripts/cross.sh: $*" >&2; exit 1; }

triplet_of() {
    case $1 in
        mips) echo mips-linux-gnu ;;
        aarch64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
    esac
}
qemu_of() {
    case $1 in
        mips) echo qemu-mips ;;
        aarch64) echo qemu-aarch64 ;;
        armhf) echo qemu-arm ;;
    esac
}
debarch_of() {
    case $1 in
        mips) echo mips ;;
        aarch64) echo arm64 ;;
        armhf) echo armhf ;;
    esac
}
cpu_of() {
    case $1 in
        mips) echo mips ;;
        aarch64) echo aarch64 ;;
        armhf) echo arm ;;
    esac
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $*"
    fi
}

need_pkgs=()
for a in "${arches[@]}"; do
    t=$(triplet_of "$a")
    command -v "$t-gcc" >/dev/null || need_pkgs+=("gcc-$t")
    # the C library to link against (only recommended by gcc-$t)
    [ -e "/usr/$t/lib/crti.o" ] || need_pkgs+=("libc6-dev-$(debarch_of "$a")-cross")
    command -v "$(qemu_of "$a")" >/dev/null || need_pkgs+=(qemu-user)
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "cross: installing ${need_pkgs[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=900 "${need_pkgs[@]}" >/dev/null
fi

PASSED=0
FAILED=0
mkdir -p build/cross
results=build/cross/results.txt
: >"$results.new"

# pytest's last line: "N passed, M failed, K skipped in Xs" (any subset)
count() {  # count WORD LINE
    local n
    n=$(printf '%s\n' "$2" | grep -oE "[0-9]+ $1" | cut -d' ' -f1 || true)
    echo "${n:-0}"
}

for a in "${arches[@]}"; do
    t=$(triplet_of "$a")
    q=$(command -v "$(qemu_of "$a")")
    sysroot=/usr/$t
    dir=$REPO/build/cross/$a
    mkdir -p "$dir"
    echo
    echo "==> $a ($t)"

    DV_JOBS=$JOBS nice bash third_party/build.sh --host "$t"
    prefix=$REPO/build/cross/$t/prefix

    cat >"$dir/toolchain.cmake" <<EOF
# written by scripts/cross.sh
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR $(cpu_of "$a"))
set(CMAKE_C_COMPILER $t-gcc)
set(CMAKE_FIND_ROOT_PATH $prefix $sysroot)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR $q;-L;$sysroot)
EOF
    # pkg-config sees only the target's prefix, never the build machine's
    PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig nice cmake -S . -B "$dir" \
        -DCMAKE_TOOLCHAIN_FILE="$dir/toolchain.cmake" -DCMAKE_BUILD_TYPE=Release \
        -DDV_STATIC=ON -DDV_WERROR=ON -DDV_THIRD_PARTY_PREFIX="$prefix" >"$dir/cmake.log" 2>&1 ||
        { tail -30 "$dir/cmake.log"; die "cmake failed for $a"; }
    PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig nice cmake --build "$dir" -j"$JOBS" >"$dir/build.log" 2>&1 ||
        { grep -m 30 -E 'error|warning' "$dir/build.log"; die "build failed for $a"; }
    size=$(stat -c %s "$dir/dnsveil.stripped")
    file -b "$dir/dnsveil.stripped" | cut -d, -f1-2
    echo "cross: $a: dnsveil stripped $size bytes"

    # a wrapper the integration suite can run as if it were the binary
    cat >"$dir/dnsveil-qemu" <<EOF
#!/bin/sh
exec $q -L $sysroot $dir/dnsveil "\$@"
EOF
    chmod 755 "$dir/dnsveil-qemu"
    # must run at all before anything else is tried
    "$dir/dnsveil-qemu" --check -c config.example.toml

    unit="-"
    integ="-"
    if [ "$run_tests" -eq 1 ]; then
        ulog=$dir/ctest.log
        nice ctest --test-dir "$dir" --output-on-failure >"$ulog" 2>&1 || true
        # "100% tests passed, 0 tests failed out of 11"
        line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$ulog" || true)
        total=$(printf '%s\n' "$line" | sed -n -E 's/.*out of ([0-9]+).*/\1/p')
        ufail=$(printf '%s\n' "$line" | sed -n -E 's/.* ([0-9]+) tests failed.*/\1/p')
        if [ -z "$total" ]; then total=1; ufail=1; fi
        upass=$((total - ufail))
        PASSED=$((PASSED + upass)); FAILED=$((FAILED + ufail))
        unit="$upass passed, $ufail failed"
        echo "cross: $a: unit tests under $(basename "$q"): $unit (log: $ulog)"
        if [ "$run_integration" -eq 1 ]; then
            ilog=$dir/battery.log
            files=()
            for f in $BATTERY; do files+=("tests/integration/$f"); done
            # qemu-user hands the host kernel control messages it does not
            # know unswapped, so a big-endian build's UDP_SEGMENT (DoQ's GSO)
            # arrives with its bytes reversed and the datagrams come out
            # wrong: GSO off there (real big-endian hardware is fine)
            gso_env=()
            if [ "$a" = mips ]; then gso_env=(DNSVEIL_DISABLE_GSO=1); fi
            # shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
            env "${gso_env[@]}" DNSVEIL_BIN="$dir/dnsveil-qemu" nice "$PYTHON" -m pytest "${files[@]}" -q \
                -p no:cacheprovider ${PYTEST_ARGS:-} >"$ilog" 2>&1 || true
            last=$(tail -n 1 "$ilog")
            ipass=$(count passed "$last")
            ifail=$(( $(count failed "$last") + $(count error "$last") ))
            if [ "$ipass" -eq 0 ] && [ "$ifail" -eq 0 ]; then ifail=1; fi
            PASSED=$((PASSED + ipass)); FAILED=$((FAILED + ifail))
            integ="$ipass passed, $ifail failed"
            echo "cross: $a: integration battery under qemu: $last (log: $ilog)"
        fi
    fi
    printf '%-8s %-22s stripped %8d bytes; unit: %s; battery: %s\n' \
        "$a" "$t" "$size" "$unit" "$integ" >>"$results.new"
done

# keep the lines of arches not built this time
if [ -f "$results" ]; then
    for a in mips aarch64 armhf; do
        if ! grep -q "^$a " "$results.new" && grep -q "^$a " "$results"; then
            grep "^$a " "$results" >>"$results.new"
        fi
    done
fi
mv "$results.new" "$results"
echo
cat "$results"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
