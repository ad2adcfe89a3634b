#!/usr/bin/env python3
"""qlog_cost — what the query log costs on the cache-hit path, in
instructions (callgrind; repeatable on a loaded machine, unlike time).

Runs the release dnsveil under callgrind three times (log off, JSON lines to
a file, text to a file) against a local knotd, primes the cache, sends N
identical queries, and reports the instructions spent inside query_submit
(parse, policy, cache lookup, reply, and the log line) per query, plus the
whole process's instructions per query (the log's buffered writes
included; the kernel's side of the syscalls is not counted).

  python3 bench/qlog_cost.py [N]        (from the repository root, as root)
  DNSVEIL_BIN=OTHER QLOG_MODES=off ...  the hit path of another build, log off
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import helpers  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
BIN = os.environ.get("DNSVEIL_BIN", str(REPO / "build" / "release" / "dnsveil"))


def inclusive(out_file, fn):
    """Inclusive Ir of fn (or of the whole process for "PROGRAM TOTALS")."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out_file)],
                          capture_output=True, text=True).stdout
    for line in text.splitlines():
        if fn == "PROGRAM TOTALS" and fn in line:
            return int(re.match(r"\s*([\d,]+)", line).group(1).replace(",", ""))
        if re.search(r"\b%s\b" % fn, line) and "[" in line or line.rstrip().endswith(fn):
            m = re.match(r"\s*([\d,]+)", line)
            if m and fn in line:
                return int(m.group(1).replace(",", ""))
    return 0


def run(tmp, knot, mode):
    port = helpers.free_port()
    cfg = tmp / ("%s.toml" % mode)
    body = "[server]\nuser = \"root\"\n"
    if mode != "off":
        body += '[querylog]\nfile = "%s"\nformat = "%s"\n' % (tmp / ("%s.log" % mode), mode)
    cfg.write_text(body)
    out = tmp / ("callgrind.%s" % mode)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out,
                             BIN, "-c", str(cfg), "-l", "127.0.0.1:%d" % port,
                             "-u", "udp://127.0.0.1:%d" % knot.port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    helpers.wait_for_dns("127.0.0.1", port, proc, deadline=60)
    wire = helpers.make_query("www.test.", "A").to_wire()
    helpers.udp_exchange(wire, "127.0.0.1", port)  # fills the cache
    for _ in range(N):
        helpers.udp_exchange(wire, "127.0.0.1", port, timeout=5)
    time.sleep(1)  # the log's flush timer
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return inclusive(out, "query_submit"), inclusive(out, "PROGRAM TOTALS")


def install(pkgs):
    """Debian packages this benchmark needs (as bench/cache.sh does)."""
    missing = [p for p in pkgs if subprocess.run(["dpkg", "-s", p], capture_output=True)
               .returncode != 0]
    if not missing:
        return
    policy = Path("/usr/sbin/policy-rc.d")
    made = not policy.exists()
    if made:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        "-o", "DPkg::Lock::Timeout=900"] + missing, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)
    finally:
        if made:
            policy.unlink()


def main():
    install(["valgrind", "knot"])
    if not os.access(BIN, os.X_OK):
        sys.exit("build dnsveil first (bash scripts/setup.sh, or set DNSVEIL_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="qlog-cost-"))
    knot = helpers.Knot("knotd", tmp / "knot").start()
    try:
        modes = os.environ.get("QLOG_MODES", "off json text").split()
        res = {m: run(tmp, knot, m) for m in modes}
    finally:
        knot.stop()
    base = res["off"][0] / (N + 2)
    print("queries: %d cache hits (+ ready probe and priming)" % N)
    # the process total includes start-up and shutdown, the same in each run
    tot = res["off"][1] / (N + 2)
    print("%-5s %18s %8s %22s %8s" % ("log", "query_submit Ir/q", "vs off", "whole process Ir/q",
                                      "vs off"))
    for m, (sub, allir) in res.items():
        per, whole = sub / (N + 2), allir / (N + 2)
        print("%-5s %18.0f %+7.0f%% %22.0f %+7.0f%%" % (m, per, (per / base - 1) * 100, whole,
                                                       (whole / tot - 1) * 100))


if __name__ == "__main__":
    main()
