#!/usr/bin/env bash
# Where each server's CPU goes, path by path: dnsveil and its competitor of
# bench/run.sh's table (dnsdist for udp, doh and hit; unbound forward-tls for
# dot; our own DoT for doq) loaded at once by two dnsperf runs at the path's
# fixed rate (run.sh's rates), each server under its own `perf record -g -p
# PID` (cpu-clock samples of that process only, never system-wide). Per
# server it prints CPU µs per query (/proc/PID/task/*/schedstat, as run.sh)
# split into kernel and user by where each sample's instruction was (and,
# as a cross-check, by /proc's utime/stime ticks), the user part split by
# component (dnsveil's own code; wolfSSL and ngtcp2, linked statically, by
# the symbols of their archives in build/third_party/prefix; shared
# libraries by file: OpenSSL, nghttp2, libev/libevent, libc), the kernel
# part by the system call it was spent in (the `__x64_sys_*` frame of the
# sample's kernel stack) and by kind (the loopback receive work a send runs
# for its receiver, switching to and from sleep, the rest), its top kernel
# and user symbols, and context switches per query. System calls
# per query come from a second, shorter window of the same pair under
# `perf record -e raw_syscalls:sys_enter`, so tracing does not distort the
# CPU figures. A benchmark, not a test: it prints figures, asserts nothing.
#
# Usage: bench/profile.sh [--quick] [PATH...]   (PATH: udp dot doh doq hit;
#        default all. --quick: 3 s windows, about a minute on 2 cores; the
#        full run about 1.5 minutes)
#        DNSVEIL_BIN=build/release/dnsveil BENCH_CPU=8 BENCH_SYSCALLS=2 (s)
#        BENCH_RATE overrides every path's rate; BENCH_OUT=DIR keeps the
#        perf.data files there (PATH-cpu-a.data is dnsveil's, -b the
#        competitor's) for `perf report -i`. Needs root (perf -p);
#        build/peers/doq (tests/peers/build.sh) for doq.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DNSVEIL_BIN=${DNSVEIL_BIN:-$root/build/release/dnsveil}
CPUSEC=${BENCH_CPU:-8}
SCSEC=${BENCH_SYSCALLS:-2}
paths=()
for a in "$@"; do
  case $a in
    --quick) CPUSEC=${BENCH_CPU:-3}; SCSEC=${BENCH_SYSCALLS:-1} ;;
    udp | dot | doh | doq | hit) paths+=("$a") ;;
    *) echo "usage: bench/profile.sh [--quick] [udp dot doh doq hit]" >&2; exit 2 ;;
  esac
done
[ ${#paths[@]} -gt 0 ] || paths=(udp dot doh doq hit)

BENCH=profile
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
bench_install knot unbound dnsdist dnsperf dnsutils linux-perf
bench_need knotd unbound dnsperf openssl dig perf python3
[ -x "$DNSVEIL_BIN" ] || bench_die "no dnsveil at $DNSVEIL_BIN (build it: cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release; or set DNSVEIL_BIN)"
chmod 755 "$work"

bench_ca
bench_cert srv dot.test
bench_knotd
bench_unbound

# ---- the servers each path needs: NAME -> port, pid, label -------------------
declare -A P PID LABEL
add() { P[$1]=$2; PID[$1]=$3; LABEL[$1]=$4; }
want() { [[ " ${paths[*]} " == *" $1 "* ]]; }
have_dd=0; command -v dnsdist >/dev/null && have_dd=1

if want udp; then
  bench_dnsveil dv-udp "udp://127.0.0.1:$UB"; add dv-udp "$DV" "$DV_PID" "dnsveil udp://"
  if [ $have_dd = 1 ]; then bench_dd udp; add dd-udp "$DD" "$DD_PID" dnsdist; fi
fi
if want dot || want doq; then
  bench_dnsveil dv-dot "tls://127.0.0.1:$UB_TLS"; add dv-dot "$DV" "$DV_PID" "dnsveil tls://"
fi
if want dot; then bench_unbound_fwd; add ub-dot "$FW" "$FW_PID" "unbound forward-tls"; fi
if want doh; then
  bench_dnsveil dv-doh "https://127.0.0.1:$UB_DOH/dns-query"; add dv-doh "$DV" "$DV_PID" "dnsveil https://"
  if [ $have_dd = 1 ] && bench_dd_has_doh; then bench_dd doh; add dd-doh "$DD" "$DD_PID" dnsdist; fi
fi
if want doq && [ -x "$root/build/peers/doq" ]; then
  bench_doq_peer
  bench_dnsveil dv-doq "quic://127.0.0.1:$DOQ"; add dv-doq "$DV" "$DV_PID" "dnsveil quic://"
fi
if want hit; then
  bench_dnsveil dv-hit "udp://127.0.0.1:$KNOT" true; add dv-hit "$DV" "$DV_PID" "dnsveil cache"
  if [ $have_dd = 1 ]; then bench_dd hit; add dd-hit "$DD" "$DD_PID" "dnsdist packet cache"; fi
fi

# the names a cache hit asks (long TTLs), as run.sh
printf '%s\n' "www.test A" "www.test AAAA" "multi.test A" "mail.test A" "mail2.test A" \
  "target.test A" "ns.test A" "test MX" "test NS" "test SOA" > "$work/hit"
# the connections up and the caches holding the hit names, untimed
for s in "${!P[@]}"; do dnsperf -s 127.0.0.1 -p "${P[$s]}" -d "$work/hit" -n 2 -t 3 >/dev/null 2>&1 || true; done

qfile() {  # qfile hit|miss OUT: the names to ask into OUT (fresh for a miss)
  if [ "$1" = hit ]; then cp "$work/hit" "$2"; else names; mv "$work/names" "$2"; fi
}

ticks() {  # ticks PID: "utime stime" of every thread, in clock ticks
  cat /proc/"$1"/task/*/stat 2>/dev/null |
    awk '{ sub(/^.*\) /, ""); u += $12; s += $13 } END { print u + 0, s + 0 }'
}

ctxsw() {  # ctxsw PID: context switches of every thread (voluntary and not)
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'
}

# window KIND A B SECONDS OUT PERF-ARGS...: A and B loaded at once by two
# dnsperf runs at $RATE for SECONDS, each under `perf record PERF-ARGS -p`;
# OUT-a.data, OUT-b.data and OUT.vals ("queries ns utime stime ctxsw",
# a line for A, one for B)
window() {
  local kind=$1 a=$2 b=$3 secs=$4 out=$5 ra rb ja ca cb ta tb xa xb t0 t1
  shift 5
  qfile "$kind" "$work/qa"; qfile "$kind" "$work/qb"
  perf record -q "$@" -p "${PID[$a]}" -o "$out-a.data" >"$out-a.rec" 2>&1 & ra=$!; pids+=("$ra")
  perf record -q "$@" -p "${PID[$b]}" -o "$out-b.data" >"$out-b.rec" 2>&1 & rb=$!; pids+=("$rb")
  sleep 0.5  # both attached
  ca=$(cpu_ns "${PID[$a]}"); cb=$(cpu_ns "${PID[$b]}"); ta=$(ticks "${PID[$a]}"); tb=$(ticks "${PID[$b]}")
  xa=$(ctxsw "${PID[$a]}"); xb=$(ctxsw "${PID[$b]}")
  dnsperf -s 127.0.0.1 -p "${P[$a]}" -d "$work/qa" -l "$secs" -c 10 -Q "$RATE" -t 3 > "$out-a.perf" 2>&1 & ja=$!
  dnsperf -s 127.0.0.1 -p "${P[$b]}" -d "$work/qb" -l "$secs" -c 10 -Q "$RATE" -t 3 > "$out-b.perf" 2>&1 || true
  wait "$ja" || true
  ca=$(( $(cpu_ns "${PID[$a]}") - ca )); cb=$(( $(cpu_ns "${PID[$b]}") - cb ))
  xa=$(( $(ctxsw "${PID[$a]}") - xa )); xb=$(( $(ctxsw "${PID[$b]}") - xb ))
  read -r -a t1 <<<"$(ticks "${PID[$a]}") $(ticks "${PID[$b]}")"
  read -r -a t0 <<<"$ta $tb"
  kill -INT "$ra" "$rb" 2>/dev/null || true
  wait "$ra" "$rb" 2>/dev/null || true
  printf '%s %s %s %s %s\n%s %s %s %s %s\n' \
    "$(awk '/Queries completed/ { print $3 }' "$out-a.perf")" "$ca" $((t1[0] - t0[0])) $((t1[1] - t0[1])) "$xa" \
    "$(awk '/Queries completed/ { print $3 }' "$out-b.perf")" "$cb" $((t1[2] - t0[2])) $((t1[3] - t0[3])) "$xb" \
    > "$out.vals"
}

# ---- the measurements (all first, the analysis after: it costs CPU) ---------
declare -A PAIR=([udp]="dv-udp dd-udp" [dot]="dv-dot ub-dot" [doh]="dv-doh dd-doh"
                 [doq]="dv-doq dv-dot" [hit]="dv-hit dd-hit")
declare -A KIND=([udp]=miss [dot]=miss [doh]=miss [doq]=miss [hit]=hit)
declare -A TITLE=([udp]="plain udp:// miss" [dot]="DoT miss" [doh]="DoH miss"
                  [doq]="DoQ miss (against our own DoT)" [hit]="cache hit")
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "bench/profile.sh: $started, $(nproc) CPUs, ${CPUSEC} s CPU windows, ${SCSEC} s syscall windows" >&2
done_paths=()
for p in "${paths[@]}"; do
  read -r a b <<<"${PAIR[$p]}"
  if [ -z "${PID[$a]:-}" ] || [ -z "${PID[$b]:-}" ]; then
    echo "bench/profile.sh: $p skipped (no $([ -n "${PID[$a]:-}" ] && echo "$b" || echo "$a"))" >&2; continue
  fi
  RATE=${BENCH_RATE:-${RATES[$p]}}
  echo "bench/profile.sh: $p at $RATE q/s each: $a, $b" >&2
  window "${KIND[$p]}" "$a" "$b" "$CPUSEC" "$work/$p-cpu" -g -F 1999
  window "${KIND[$p]}" "$a" "$b" "$SCSEC" "$work/$p-sc" -e raw_syscalls:sys_enter -m 512
  echo "$RATE" > "$work/$p.rate"
  done_paths+=("$p")
done

# ---- the analysis -------------------------------------------------------------
# wolfSSL and ngtcp2 are linked into dnsveil statically: their archives'
# symbols (static functions too) name the component of a sample in dnsveil
: > "$work/symmap"
for ar in "$root"/build/third_party/prefix/lib/lib*.a; do
  [ -e "$ar" ] || continue
  case $(basename "$ar") in libwolfssl*) c=tls ;; libngtcp2*) c=ngtcp2 ;; *) continue ;; esac
  nm --defined-only "$ar" 2>/dev/null | awk -v c="$c" 'NF == 3 && $2 ~ /[tTrRdDbB]/ { print $3, c }' >> "$work/symmap"
done
unistd=/usr/include/x86_64-linux-gnu/asm/unistd_64.h

profile_split() {  # profile_split PATH SIDE(a|b) NAME: one table row into $work/rows, details into $work/notes
  local p=$1 s=$2 name=$3 exe line=1
  [ "$s" = a ] || line=2  # of the .vals files
  exe=$(readlink "/proc/${PID[$name]}/exe" 2>/dev/null || echo "")
  perf script -i "$work/$p-cpu-$s.data" -F comm,tid,ip,sym,dso > "$work/cpu.txt" 2>/dev/null || : > "$work/cpu.txt"
  perf script -i "$work/$p-sc-$s.data" > "$work/sc.txt" 2>/dev/null || : > "$work/sc.txt"
  python3 - "$work/cpu.txt" "$work/sc.txt" "$work/symmap" "$(basename "$exe")" "$unistd" \
    "${LABEL[$name]}" "$(sed -n "${line}p" "$work/$p-cpu.vals")" \
    "$(sed -n "${line}p" "$work/$p-sc.vals")" "$work/sums" "$work/$p-cpu-$s.rec" \
    >> "$work/rows" 2>> "$work/notes" <<'PY'
import re, sys
from collections import Counter
cpu_txt, sc_txt, symmap, exe, unistd, label, cpu_vals, sc_vals, sums, rec = sys.argv[1:11]
q, ns, ut, st, cs = (int(x or 0) for x in (cpu_vals.split() + ['0'] * 5)[:5])
scq = int((sc_vals.split() or ['0'])[0] or 0)
lib = {}
for line in open(symmap):
    sym, comp = line.split()
    lib.setdefault(sym, comp)
suffix = re.compile(r'\.(lto_priv|constprop|isra|part|cold|localalias)\b.*$')
def component(sym, dso):
    base = dso.rsplit('/', 1)[-1]
    if base == exe:
        s = suffix.sub('', sym)
        if s in lib: return lib[s]
        if re.match(r'(wolfSSL|wolfssl|wc_|AES_|GHASH|sp_256|fe_|ge_)', s): return 'tls'
        if s.startswith('ngtcp2_'): return 'ngtcp2'
        if s.startswith('nghttp2_'): return 'nghttp2'
        if s.startswith('ev_'): return 'loop'
        return 'own'
    if re.match(r'lib(ssl|crypto|gnutls|nettle|hogweed|gmp|wolfssl)\b', base): return 'tls'
    if base.startswith('libnghttp2'): return 'nghttp2'
    if base.startswith('libngtcp2'): return 'ngtcp2'
    if re.match(r'lib(ev|event)[.-]', base): return 'loop'
    if re.match(r'(libc[.-]|ld-linux|libm[.-])', base): return 'libc'
    return 'other'

frame = re.compile(r'^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)$')
kern, user = 0, 0
comp, bysc, ksym, usym, kind = Counter(), Counter(), Counter(), Counter(), Counter()
def finish(fr):
    global kern, user
    if not fr: return
    ip, sym, dso = fr[0]
    if dso == '[kernel.kallsyms]' or int(ip, 16) >= 0xffff800000000000:
        kern += 1
        ksym[sym] += 1
        sc = None
        kframes = [f for f in fr if f[2] == '[kernel.kallsyms]']
        for _, s, _ in kframes:
            m = re.match(r'__(?:x64|ia32|se|do)_sys_(\w+)', s)
            if m: sc = m.group(1); break
        if sc is None and kframes and kframes[-1][1].startswith('entry_SYSCALL'):
            # on the way out of a system call (preempted, signals): the
            # user-space frame under it is the libc call that made it
            ucall = [f[1] for f in fr if f[2] != '[kernel.kallsyms]']
            sc = '%s (exit)' % re.sub(r'^(_*GI)?_*(libc_)?', '', ucall[0]) if ucall else '(syscall exit)'
        if sc is None:
            sc = '(%s)' % (kframes[-1][1] if kframes else sym)
        bysc[sc] += 1
        if not kframes: return  # kernel symbols not resolvable
        # loopback: a send runs the packet's receive path (and wakes the
        # receiver) on the sender's CPU time; a switch is the way to or
        # from sleep (cpu-clock lands on finish_task_switch)
        ks = [f[1] for f in kframes]
        if any(re.match(r'(net_rx_action|process_backlog|__netif_receive_skb)', x) for x in ks):
            kind['rx'] += 1
        elif any(re.match(r'(__schedule|schedule$|finish_task_switch)', x) for x in ks):
            kind['switch'] += 1
        else:
            kind['rest'] += 1
    else:
        user += 1
        comp[component(sym, dso)] += 1
        usym['%s (%s)' % (sym, dso.rsplit('/', 1)[-1])] += 1
fr = []
for line in open(cpu_txt, errors='replace'):
    m = frame.match(line.rstrip('\n'))
    if m: fr.append(m.groups())
    elif not line.strip() or not line[0].isspace():
        finish(fr); fr = []
finish(fr)

names = {}
try:
    for line in open(unistd):
        m = re.match(r'#define __NR_(\w+)\s+(\d+)', line)
        if m: names[m.group(2)] = m.group(1)
except OSError:
    pass
calls = Counter()
for line in open(sc_txt, errors='replace'):
    m = re.search(r'sys_enter: NR (\d+)', line)
    if m: calls[names.get(m.group(1), 'NR ' + m.group(1))] += 1

n = kern + user
us = ns / 1000 / q if q else 0
def f(x): return '%.1f' % x
def part(c): return f(us * c / n) if n and c else '-'
kpct_proc = '%.0f %%' % (100 * st / (ut + st)) if ut + st else '-'
scq = scq if calls else 0  # no events: the tracing failed, not zero calls
scpq = sum(calls.values()) / scq if scq else 0
if n:
    row = [label, str(q), f(us), f(us * kern / n), '%.0f %%' % (100 * kern / n), kpct_proc,
           f(us * user / n)] + [part(comp[c]) for c in ('own', 'tls', 'nghttp2', 'ngtcp2', 'loop', 'libc', 'other')]
else:  # no samples: perf could not record; /proc's ticks split it
    ks = us * st / (ut + st) if ut + st else 0
    row = [label, str(q), f(us), f(ks) + ' (/proc)', '-', kpct_proc, f(us - ks)] + ['-'] * 7
with open(sums, 'a') as out:
    out.write('%f %f\n' % (us, us * kern / n if n else 0))
print('| ' + ' | '.join(row + ['%.2f' % scpq if scq else '-', '%.2f' % (cs / q) if q else '-']) + ' |')

err = sys.stderr
if not n:
    why = [l.strip() for l in open(rec, errors='replace') if l.strip()] if rec else []
    err.write('- %s: no perf samples (%s): kernel/user split from /proc/PID/task/*/stat utime/stime instead\n'
              % (label, why[0] if why else 'perf record gave no data'))
    sys.exit(0)
if kern and not kind:
    err.write('- %s: kernel addresses without symbols (kptr_restrict?): no split of the kernel part\n' % label)
err.write('- %s, kernel µs/query by system call (%d samples, %d in the kernel): %s\n' % (label, n, kern,
          ', '.join('%s %s' % (s, f(us * c / n)) for s, c in bysc.most_common(6)) or '-'))
err.write('- %s, kernel µs/query by kind: loopback receive work run in its own sends %s, switching to and from sleep %s, the rest (system call entry, socket, TCP/UDP send, epoll) %s\n'
          % (label, f(us * kind['rx'] / n), f(us * kind['switch'] / n), f(us * kind['rest'] / n)))
err.write('- %s, top kernel symbols (%% of its kernel time): %s\n' % (label,
          ', '.join('%s %.0f %%' % (s, 100 * c / kern) for s, c in ksym.most_common(6)) or '-'))
err.write('- %s, top user symbols (%% of its user time): %s\n' % (label,
          ', '.join('%s %.0f %%' % (s, 100 * c / user) for s, c in usym.most_common(6)) or '-'))
err.write('- %s, system calls per query (%d queries in the traced window): %s = %s\n' % (label, scq,
          '%.2f' % scpq if scq else '-',
          ', '.join('%s %.2f' % (s, c / scq) for s, c in calls.most_common(8) if c / scq >= 0.005) if scq else '-'))
PY
}

echo
echo "$started bench/profile.sh${1:+ $*}: $(nproc) CPUs shared by everything. Each pair loaded at once;"
echo "CPU from /proc/PID/task/*/schedstat over a ${CPUSEC} s window, split by that window's perf cpu-clock samples"
echo "of each process (perf record -g -p PID); kernel % (/proc) is utime/stime's; user columns in µs/query;"
echo "syscalls/q from a separate ${SCSEC} s window under perf record -e raw_syscalls:sys_enter; ctx switches/q"
echo "from /proc/PID/task/*/status. Kernel time by system call: the __x64_sys_* frame on each kernel sample's"
echo "stack (on loopback a send runs the receiver's network stack too; \"(exit)\": preempted or scheduled on the"
echo "way out of that call). $(perf evlist -i "$work/${done_paths[0]:-udp}-cpu-a.data" 2>/dev/null || echo "(no perf data) cpu-clock") samples (no PMU in a VM) land where"
echo "interrupts come back on: finish_task_switch and *_unlock_irqrestore stand for the switch or wake-up before them."
for p in "${done_paths[@]}"; do
  read -r a b <<<"${PAIR[$p]}"
  : > "$work/rows"; : > "$work/notes"; : > "$work/sums"
  profile_split "$p" a "$a"; profile_split "$p" b "$b"
  if [ -n "${BENCH_OUT:-}" ]; then mkdir -p "$BENCH_OUT"; cp "$work/$p"-*.data "$BENCH_OUT/"; fi
  echo
  echo "#### $p: ${TITLE[$p]}, $(cat "$work/$p.rate") q/s each"
  echo
  echo "| server | queries | CPU µs/q | kernel µs/q | kernel % | kernel % (/proc) | user µs/q | own code | TLS/crypto | nghttp2 | ngtcp2 | event loop | libc | other | syscalls/q | ctx switches/q |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  cat "$work/rows"
  echo
  # what a goal "X times the other's CPU" can reach by user-space work alone
  awk -v a="${LABEL[$a]}" -v b="${LABEL[$b]}" 'NR == 1 { ua = $1; ka = $2 } NR == 2 { ub = $1; kb = $2 }
    END { if (ub > 0 && kb > 0)
            printf "%s / %s: CPU %.2fx, kernel part %.2fx; the kernel part of %s alone is %.2fx the whole CPU of %s\n\n",
                   a, b, ua / ub, ka / kb, a, ka / ub, b }' "$work/sums"
  cat "$work/notes"
done
