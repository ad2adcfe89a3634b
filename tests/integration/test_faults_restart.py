"""An upstream killed and restarted on the same address and port while the
daemon holds a connection to it: the new process knows nothing of that
connection and, over QUIC without stateless resets, stays silent about it
(no RST, no ICMP: the port is open again). The daemon must notice and be
answering again within the deadline, not after the connection's idle
timeout (30 s by default), for every transport."""

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
