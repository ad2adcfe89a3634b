"""Upstreams that misbehave, through every transport where the fault
applies, against the Go fault peer (tests/peers/fault), which speaks each
protocol properly up to the point where it misbehaves. For each: the
client gets SERVFAIL (never the bad bytes or an answer taken from them),
nothing is cached (the next query reaches the upstream again), the right
counter moves, and the daemon goes on answering good names through the
same upstream."""

import itertools

import dns.message
import dns.query
import dns.rcode
import pytest

import faults
import helpers
import tlspeers

TIMEOUT_MS = 2000

# fault -> transports where it applies
MATRIX = {
    "garbage": ["udp", "tcp", "dot", "doh", "doq"],
    "trunc": ["udp", "tcp", "dot", "doh", "doq"],
    "badid": ["udp", "tcp", "dot", "doh", "doq"],
    "wrongq": ["udp", "tcp", "dot", "doh", "doq"],
    "tcstream": ["tcp", "dot", "doh", "doq"],
    "zerolen": ["tcp", "dot", "doh", "doq"],
    "ctype": ["doh"],
    "rst": ["doh", "doq"],
    "half": ["tcp", "dot", "doh", "doq"],
}
CASES = [(f, t) for f, ts in MATRIX.items() for t in ts]

# What moves besides upstream_failed (every case is a failed attempt): a
# reply that reached the engine whole and failed its checks is a bad
# answer; over UDP an answer with our ID but another question (or bytes
# that do not parse after our ID) is ignored, as a spoofer's guess would
# be: the real answer may still come. The rest fail in the transport.
BAD = "bad_answers"
IGNORED = "upstream_ignored"
FAILED = "upstream_failed"


def expected_counter(fault, transport):
    if transport == "udp" and fault in ("wrongq", "garbage"):
        return IGNORED
    if fault in ("trunc", "tcstream", "wrongq", "garbage"):
        return BAD
    return FAILED


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    base = tmp_path_factory.mktemp("faultpeer")
    ca = tlspeers.PrivateCA(base / "ca")
    crt, key = ca.issue("dot.test", ["dot.test"], ["127.0.0.1"])
    p = faults.FaultPeer("faultpeer", base)
    p.start(crt, key)
    p.ca = ca.cert
    yield p
    p.stop()


_seq = itertools.count()


def start(dnsveil, tmp_path, peer, transport):
    conf = tmp_path / "fault.toml"
    conf.write_text("""\
[upstreams.f]
url = "%s"

[groups.default]
upstreams = ["f"]
allow_plaintext = true

[cache]
servfail_ttl = 0
""" % peer.url(transport))
    return dnsveil(timeout=TIMEOUT_MS, verbose=False,
                   extra=["-c", str(conf), "--tls-ca", str(peer.ca)])


def ask(d, name):
    q = helpers.make_query(name, "A", edns=0)
    return dns.query.udp(q, d.host, port=d.port,
                         timeout=(TIMEOUT_MS + faults.MARGIN_MS) / 1000.0)


@pytest.mark.parametrize("fault,transport", CASES)
def test_misbehaving_upstream(fault, transport, peer, dnsveil, tmp_path):
    d = start(dnsveil, tmp_path, peer, transport)
    tag = "%d-%s" % (next(_seq), transport)
    name = "%s.%s.test." % (fault, tag)
    before, _ = d.stats()
    r = ask(d, name)
    assert r.rcode() == dns.rcode.SERVFAIL and not r.answer, r.to_text()
    after, line = d.stats()
    moved = {k: after[k] - before.get(k, 0) for k in (BAD, IGNORED, FAILED)}
    print("\n%s over %s: %s" % (fault, transport, moved))
    assert moved[FAILED] >= 1, line
    assert moved[expected_counter(fault, transport)] >= 1, line
    assert after["servfail"] - before["servfail"] == 1, line
    assert peer.queries(name) >= 1

    # not cached: the same question goes to the upstream again (a broken
    # connection may fail the next try before it is sent: a few tries)
    seen = peer.queries(name)
    for _ in range(3):
        r = ask(d, name)
        assert r.rcode() == dns.rcode.SERVFAIL and not r.answer, r.to_text()
        if peer.queries(name) > seen:
            break
    assert peer.queries(name) > seen
    assert d.stats()[0]["cache_hits"] == before["cache_hits"]

    # and the daemon goes on answering through the same upstream
    for i in range(3):
        good = "good%d.%s.test." % (i, tag)
        r = ask(d, good)
        assert r.rcode() == dns.rcode.NOERROR, r.to_text()
        assert [rd.address for rrset in r.answer for rd in rrset] == ["192.0.2.1"]
