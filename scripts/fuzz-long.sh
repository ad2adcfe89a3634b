#!/usr/bin/env bash
# The long fuzz runs, done by hand (CI keeps the 60 s smoke runs of
# scripts/test.sh): each libFuzzer target runs until it has used
# FUZZ_CPU_SECONDS of CPU time (not wall time, so a run on a busy machine
# counts only the work it did), FUZZ_JOBS at a time, at nice FUZZ_NICE, on its
# seed corpus and dictionary. Each finished run appends one row to
# build/fuzz-long/results.md: target, CPU time, executions, edges covered,
# crashes, date. A crash leaves its input in build/fuzz-long/artifacts/.
# Never pause the fuzzers (SIGSTOP) to quiet the machine for a benchmark:
# libFuzzer's -timeout is wall time, so the unit in hand when they resume
# is reported as a timeout (a false finding; the input runs in
# milliseconds). Their nice 19 already leaves other work the CPU.
#
# Usage: scripts/fuzz-long.sh [TARGET...]   (default: every build/fuzz/fuzz_*)
#        FUZZ_CPU_SECONDS=3600 FUZZ_JOBS=2 FUZZ_NICE=19 FUZZ_OUT=build/fuzz-long
# FUZZ_OUT outside the checkout (~/.cache/...) keeps the grown corpora for a
# top-up on a later day; $FUZZ_OUT/progress/TARGET holds a running target's
# CPU time and last status line, so a run cut short still has its figures.
# Build first: cmake -S . -B build/fuzz -DDV_FUZZ=ON -DCMAKE_C_COMPILER=clang
#              -DDV_TESTS=OFF && cmake --build build/fuzz --target fuzz_dns ...
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CPU_SECONDS=${FUZZ_CPU_SECONDS:-3600}
JOBS=${FUZZ_JOBS:-2}
NICE=${FUZZ_NICE:-19}
OUT=${FUZZ_OUT:-build/fuzz-long}
TICK=$(getconf CLK_TCK)
mkdir -p "$OUT/artifacts" "$OUT/logs" "$OUT/progress"
RESULTS=$OUT/results.md
if [ ! -s "$RESULTS" ]; then
    printf '| target | CPU time | executions | edges | crashes | date |\n' >"$RESULTS"
    printf '| --- | ---: | ---: | ---: | ---: | --- |\n' >>"$RESULTS"
fi

cpu_seconds() {   # cpu_seconds PID: user + system time of one process
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo -1; return; }
    # the command name may hold spaces: the fields start after its ')'
    read -r -a fields <<<"${stat##*) }"
    echo $(((fields[11] + fields[12]) / TICK))
}

run_one() {   # run_one NAME: one target to its CPU budget, then its row
    local name=$1 bin=build/fuzz/$1 corpus=$OUT/corpus/$1 log=$OUT/logs/$1.log
    local args pid used=0 rc=0 execs edges crashes start
    mkdir -p "$corpus"
    args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$OUT/artifacts/$name-" "$corpus")
    if [ -d "tests/fuzz/corpus/$name" ]; then args+=("tests/fuzz/corpus/$name"); fi
    if [ -f "tests/fuzz/$name.dict" ]; then args=(-dict="tests/fuzz/$name.dict" "${args[@]}"); fi
    start=$(date -u +%Y-%m-%d)
    nice -n "$NICE" "$bin" "${args[@]}" >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        used=$(cpu_seconds "$pid")
        # a run cut short (the machine goes away) still leaves its figures
        printf '%s %d s CPU, %s\n' "$start" "$used" \
            "$(tail -n 20 "$log" | grep -o '^#[0-9]*.*cov: [0-9]*' | tail -n 1 || true)" >"$OUT/progress/$name"
        if [ "$used" -ge "$CPU_SECONDS" ]; then
            kill -INT "$pid" 2>/dev/null || true
            break
        fi
        sleep 5
    done
    wait "$pid" || rc=$?
    # libFuzzer exits 72 when interrupted; anything else before the budget
    # was spent is a finding (crash, leak, timeout, out of memory)
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)
    edges=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
    crashes=$(find "$OUT/artifacts" -name "$name-*" | wc -l)
    if [ "$rc" != 72 ] && [ "$rc" != 0 ]; then crashes=$((crashes > 0 ? crashes : 1)); fi
    printf '| %s | %d min | %s | %s | %d | %s |\n' "${name#fuzz_}" $((used / 60)) \
        "${execs:-?}" "${edges:-?}" "$crashes" "$start" >>"$RESULTS"
    echo "$name: ${used}s CPU, ${execs:-?} execs, ${edges:-?} edges, $crashes crashes (exit $rc)"
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in build/fuzz/fuzz_*; do
        if [ -x "$f" ] && [ -f "$f" ]; then targets+=("$(basename "$f")"); fi
    done
fi
running=0
for t in "${targets[@]}"; do
    [ -x "build/fuzz/$t" ] || { echo "no build/fuzz/$t" >&2; exit 2; }
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
wait
cat "$RESULTS"
