"""Shared by the fault tests (test_faults*.py): the Go load generator
(tests/peers/loadgen) that records every reply, the misbehaving Go peer
(tests/peers/fault) and a knotd zone with a wildcard for unique names."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers

# Generous: the machine running the suite may be loaded, and the ASan build
# is several times slower.
MARGIN_MS = 2000


def need_go_peer(name):
    try:
        binary = helpers.go_peer(name)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    if binary is None:
        pytest.skip("go is not installed: cannot build the %s peer" % name)
    return binary


def wildcard_zone(addr):
    """The suite's test zone with every name under load.test. answering
    addr, so each query of a load run can be unique."""
    return helpers.ZONE_FILE.read_text() + "\n*.load IN A %s\n" % addr


class Record:
    __slots__ = ("i", "kind", "sent_ns", "rtt_ms", "rcode", "replies", "addr")

    def __init__(self, line):
        i, kind, sent, rtt, rcode, replies, addr = line.split()
        self.i, self.kind, self.sent_ns = int(i), kind, int(sent)
        self.rtt_ms = None if rtt == "-1" else int(rtt) / 1000.0
        self.rcode = None if rcode == "-1" else int(rcode)
        self.replies = int(replies)
        self.addr = None if addr == "-" else addr

    @property
    def recv_ns(self):
        return None if self.rtt_ms is None else self.sent_ns + int(self.rtt_ms * 1e6)


class Load:
    """One run of the load generator against host:port in the background:
    start(), then wait() gives (summary line, [Record])."""

    def __init__(self, workdir, host, port, rate, count, mix="q:1", zone="load.test.",
                 wait_s=8.0, sockets=16):
        self.out = Path(workdir) / ("load-%d.txt" % time.monotonic_ns())
        self.cmd = [str(need_go_peer("loadgen")), "-server", helpers.hostport(host, port),
                    "-rate", str(rate), "-count", str(count), "-mix", mix, "-zone", zone,
                    "-wait", "%dms" % int(wait_s * 1000), "-sockets", str(sockets),
                    "-out", str(self.out)]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        return self

    def wait(self, timeout=600):
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, "loadgen failed: %s%s" % (out, err)
        with open(self.out) as f:
            recs = [Record(line) for line in f]
        return out.strip(), recs


def check_every_query_once(recs, deadline_ms, summary=""):
    """Every query got exactly one reply, within the deadline (plus margin)."""
    lost = [r for r in recs if r.replies == 0]
    dups = [r for r in recs if r.replies > 1]
    late = [r for r in recs if r.rtt_ms is not None and r.rtt_ms > deadline_ms + MARGIN_MS]
    assert not lost, "%d of %d queries got no reply (first: #%d %s) %s" % (
        len(lost), len(recs), lost[0].i, lost[0].kind, summary)
    assert not dups, "%d queries got more than one reply %s" % (len(dups), summary)
    assert not late, "%d replies came after the deadline, worst %.0f ms %s" % (
        len(late), max(r.rtt_ms for r in late), summary)


class FaultPeer(helpers.Peer):
    """tests/peers/fault on loopback: plain DNS (UDP and TCP on one port),
    DoT, DoH and DoQ, each on a port of its own. Every query is logged, so
    queries(name) tells how many reached it."""

    def start(self, cert=None, key=None, addr="192.0.2.1"):
        binary = need_go_peer("fault")
        self.port = helpers.free_port()
        self.cmd = [str(binary), "-plain", "127.0.0.1:%d" % self.port, "-addr", addr,
                    "-log-queries"]
        self.tls_ports = {}
        if cert:
            for t in ("dot", "doh", "doq"):
                self.tls_ports[t] = helpers.free_port()
                self.cmd += ["-" + t, "127.0.0.1:%d" % self.tls_ports[t]]
            self.cmd += ["-cert", str(cert), "-key", str(key)]
        return self.spawn_until(self.cmd, "ready")

    def restart_killed(self):
        """SIGKILL, then the same peer again on the same ports: every
        connection it had is forgotten without a word to the client."""
        kill9(self.proc)
        self.log.write_text("")
        return self.spawn_until(self.cmd, "ready")

    def url(self, transport):
        if transport in ("udp", "tcp"):
            return "%s://127.0.0.1:%d" % (transport, self.port)
        p = self.tls_ports[transport]
        return {"dot": "tls://127.0.0.1:%d" % p, "doh": "https://127.0.0.1:%d/dns-query" % p,
                "doq": "quic://127.0.0.1:%d" % p}[transport]

    def queries(self, name):
        name = name.lower().rstrip(".") + "."
        time.sleep(0.05)  # the peer flushes its log every 20 ms
        text = self.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines()
                   if line.startswith("q ") and line.split()[-1] == name)


def kill9(proc):
    if proc and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
