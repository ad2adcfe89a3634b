#!/usr/bin/env python3
"""Where a running process's resident memory is: one line of KiB figures.

    bench/memmap.py PID [SYMBOL...]

prints `heap=K anon=K image=K other=K` and then `SYMBOL=K` for each named
static object (from `nm` on /proc/PID/exe): the resident pages that lie
inside it, read from /proc/PID/pagemap. heap is the brk heap (glibc's main
arena), anon every other anonymous mapping (large mallocs, other arenas,
the .bss past the end of the file), image the executable's file-backed
mappings, other the rest (shared libraries, stacks, vdso).

bench/soak.sh runs it when SOAK_MEMMAP=1, to tell state kept in the heap
from static caches (wolfSSL's SessionCache) whose pages are touched one by
one as they fill. Needs to read the process's pagemap (root, or the same
user with ptrace access)."""
import os
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def mappings(pid):
    """(start, end, offset, path, rss_kib) for each mapping in smaps."""
    out, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                path = head[5] if len(head) > 5 else ""
                cur = [lo, hi, int(head[2], 16), path, 0]
                out.append(cur)
            elif head[0] == "Rss:":
                cur[4] = int(head[1])
    return out


def symbols(exe, names):
    """{name: (offset, size)} from nm's defined objects."""
    res = subprocess.run(["nm", "-S", exe], capture_output=True, text=True, check=False)
    found = {}
    for line in res.stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[3] in names:
            found[f[3]] = (int(f[0], 16), int(f[1], 16))
    return found


def resident_kib(pid, lo, hi):
    first, last = lo // PAGE, (hi - 1) // PAGE
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(first * 8)
        data = f.read((last - first + 1) * 8)
    n = sum(1 for (e,) in struct.iter_unpack("<Q", data) if e >> 63)
    return n * PAGE // 1024


def main():
    pid = int(sys.argv[1])
    exe = os.readlink("/proc/%d/exe" % pid)
    maps = mappings(pid)
    kib = {"heap": 0, "anon": 0, "image": 0, "other": 0}
    base = None
    for lo, _hi, off, path, rss in maps:
        if path == exe and off == 0 and base is None:
            base = lo
        if path == "[heap]":
            kib["heap"] += rss
        elif path == exe:
            kib["image"] += rss
        elif path == "":
            kib["anon"] += rss
        else:
            kib["other"] += rss
    parts = ["%s=%d" % kv for kv in kib.items()]
    syms = symbols(exe, set(sys.argv[2:]))
    for name in sys.argv[2:]:
        if name in syms and base is not None:
            off, size = syms[name]
            parts.append("%s=%d" % (name, resident_kib(pid, base + off, base + off + size)))
    print(" ".join(parts))


if __name__ == "__main__":
    main()
