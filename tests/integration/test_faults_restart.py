"""An upstream killed and restarted on the same address and port while the
daemon holds a connection to it: the new process knows nothing of that
connection and, over QUIC without stateless resets, stays silent about it
(no RST, no ICMP: the port is open again). The daemon must notice and be
answering again within the deadline, not after the connection's idle
timeout (30 s by default), for every transport."""

import os
import struct
import subprocess
import time

import dns.query
import dns.rcode
import pytest

import faults
import helpers
import tlspeers

TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return tlspeers.PrivateCA(tmp_path_factory.mktemp("restartpki"))


def ask(d, name):
    q = helpers.make_query(name, "A", edns=0)
    t0 = time.monotonic()
    r = dns.query.udp(q, d.host, port=d.port,
                      timeout=(TIMEOUT_MS + faults.MARGIN_MS) / 1000.0)
    return r, (time.monotonic() - t0) * 1000


@pytest.mark.parametrize("transport", ["udp", "tcp", "dot", "doh", "doq"])
def test_upstream_restarted_on_same_port(transport, ca, tmp_path, dnsveil):
    crt, key = ca.issue("dot.test", ["dot.test"], ["127.0.0.1"])
    peer = faults.FaultPeer("faultpeer", tmp_path / "peer")
    peer.start(crt, key)
    try:
        conf = tmp_path / "restart.toml"
        conf.write_text('[upstreams.f]\nurl = "%s"\n\n[groups.default]\nupstreams = ["f"]\n'
                        "allow_plaintext = true\n" % peer.url(transport))
        d = dnsveil(timeout=TIMEOUT_MS, verbose=False,
                    extra=["-c", str(conf), "--tls-ca", str(ca.cert)])
        r, _ = ask(d, "before.restart.test.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        peer.restart_killed()
        r, ms = ask(d, "first.restart.test.")
        print("\n%s: first answer after the restart in %.0f ms" % (transport, ms))
        assert r.rcode() == dns.rcode.NOERROR and r.answer, (
            "%s after %.0f ms: the daemon still uses the dead connection" % (
                dns.rcode.to_text(r.rcode()), ms))
        for i in range(3):
            r, ms = ask(d, "next%d.restart.test." % i)
            assert r.rcode() == dns.rcode.NOERROR and r.answer
            assert ms < 1000
    finally:
        peer.stop()


def resident_kib(pid, symbol):
    """Resident KiB of the static object `symbol` in process pid (its pages
    present in /proc/PID/pagemap), or None when the binary does not name it
    (stripped, another TLS library, run under valgrind)."""
    exe = os.readlink("/proc/%d/exe" % pid)
    out = subprocess.run(["nm", "-S", exe], capture_output=True, text=True,
                         check=False).stdout
    where = [f for f in (line.split() for line in out.splitlines())
             if len(f) == 4 and f[3] == symbol]
    if not where:
        return None
    off, size = int(where[0][0], 16), int(where[0][1], 16)
    base = None
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            m = line.split()
            if len(m) > 5 and m[5] == exe and int(m[2], 16) == 0:
                base = int(m[0].split("-")[0], 16)
                break
    page = os.sysconf("SC_PAGE_SIZE")
    lo, hi = (base + off) // page, (base + off + size - 1) // page
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(lo * 8)
        data = f.read((hi - lo + 1) * 8)
    return sum(1 for (e,) in struct.iter_unpack("<Q", data) if e >> 63) * page // 1024


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_reconnects_keep_no_tls_state(ca, tmp_path, dnsveil):
    """Each restart of the upstream makes a new DoT, DoH and DoQ connection
    (a full handshake: the new process has new ticket keys) and a new
    session. We keep the one session to offer next; wolfSSL's static session
    cache must not get a copy of each (it did: ~37 KiB of fresh pages per
    session, RSS stepping up at every reconnect until its 1.2 MiB were all
    resident)."""
    crt, key = ca.issue("dot.test", ["dot.test"], ["127.0.0.1"])
    peer = faults.FaultPeer("faultpeer", tmp_path / "peer")
    peer.start(crt, key)
    transports = ("dot", "doh", "doq")
    try:
        conf = tmp_path / "reconnect.toml"
        conf.write_text("".join('[upstreams.%s]\nurl = "%s"\n[groups.%s]\nupstreams = ["%s"]\n'
                                '[[rules]]\ndomains = ["%s.test"]\ngroup = "%s"\n'
                                % (t, peer.url(t), t, t, t, t) for t in transports)
                        + '[groups.default]\nupstreams = ["dot"]\n')
        d = dnsveil(timeout=TIMEOUT_MS, verbose=False,
                    extra=["-c", str(conf), "--tls-ca", str(ca.cert)])

        def round_trip(i):
            # unique names, so after a restart each answer came from the new
            # process: over a new connection, with a new session
            for t in transports:
                for attempt in range(3):  # the first may meet the dead connection
                    r, _ = ask(d, "r%d-%d.%s.test." % (i, attempt, t))
                    if r.rcode() == dns.rcode.NOERROR:
                        break
                assert r.rcode() == dns.rcode.NOERROR and r.answer, (t, i)

        round_trip(0)
        before = resident_kib(d.proc.pid, "SessionCache")
        if before is None:
            pytest.skip("the binary names no SessionCache (not our static wolfSSL)")
        rss0 = vm_rss_kib(d.proc.pid)
        restarts = 10
        for i in range(1, restarts + 1):
            peer.restart_killed()
            round_trip(i)
        after = resident_kib(d.proc.pid, "SessionCache")
        print("\nafter %d reconnects of each of %s: wolfSSL SessionCache resident %d -> %d KiB, "
              "RSS %d -> %d KiB" % (restarts, ", ".join(transports), before, after, rss0,
                                   vm_rss_kib(d.proc.pid)))
        assert after - before < 64, (
            "%d KiB of wolfSSL's session cache touched by %d reconnects" % (
                after - before, restarts * len(transports)))
    finally:
        peer.stop()
