#!/usr/bin/env bash
# Runs dnsveil under valgrind memcheck: point the integration suite at it
# with DNSVEIL_BIN=$PWD/scripts/valgrind-dnsveil.sh. Each process writes
# its own log (DV_VALGRIND_LOGS, default /tmp/dnsveil-valgrind/PID.log); an
# error, or a definitely lost block at exit, makes the exit status 99, which
# the suite's teardown reports as a failure.
#   DV_VALGRIND_BIN   the binary (default build/debug/dnsveil)
# Summarise afterwards with: scripts/valgrind-dnsveil.sh --summary
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
logs=${DV_VALGRIND_LOGS:-/tmp/dnsveil-valgrind}
mkdir -p "$logs"

if [ "${1:-}" = "--summary" ]; then
    files=("$logs"/*.log)
    [ -e "${files[0]}" ] || { echo "no logs in $logs"; exit 1; }
    errs=0 lost=0 procs=0
    for f in "${files[@]}"; do
        procs=$((procs + 1))
        e=$(awk '/ERROR SUMMARY:/ {v=$4} END {print v+0}' "$f")
        l=$(awk '/definitely lost:/ {gsub(/,/,"",$4); v=$4} END {print v+0}' "$f")
        errs=$((errs + e)); lost=$((lost + l))
        if [ "$e" -ne 0 ] || [ "$l" -ne 0 ]; then echo "$f: $e errors, $l bytes definitely lost"; fi
    done
    echo "valgrind: $procs processes, $errs errors, $lost bytes definitely lost"
    [ "$errs" -eq 0 ] && [ "$lost" -eq 0 ]
    exit
fi

exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --log-file="$logs/%p.log" "${DV_VALGRIND_BIN:-$root/build/debug/dnsveil}" "$@"
