"""The fixtures themselves: the real peers serve what the other tests assume.
(If these fail, every comparison elsewhere is meaningless.)"""

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

import helpers


def test_knot_serves_zone(knot):
    r = dns.query.udp(helpers.make_query("www.test.", "A"), knot.host, port=knot.port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.1"]


def test_knot_sizes(knot):
    """mid > 512 but <= 1232, big > 1232, huge ~16 KB: the truncation cases
    depend on exactly these sizes."""
    def size(name):
        q = helpers.make_query(name, "TXT")
        return len(helpers.tcp_exchange(q.to_wire(), knot.host, knot.port))
    assert 512 < size("mid.test.") <= 1232
    assert 1232 < size("big.test.") < 4096
    assert 16000 <= size("huge.test.") < 65535


def test_knot_negative_answers(knot):
    for name, rcode in (("nx.test.", dns.rcode.NXDOMAIN), ("nodata.test.", dns.rcode.NOERROR)):
        r = dns.query.udp(helpers.make_query(name, "A"), knot.host, port=knot.port, timeout=3)
        assert r.rcode() == rcode
        assert not r.answer
        soa = [rr for rr in r.authority if rr.rdtype == dns.rdatatype.SOA]
        assert soa and soa[0][0].minimum == 60


def test_unbound_forwards_to_knot(knot, unbound):
    for client in helpers.CLIENTS.values():
        a = client(knot.host, knot.port, "c1.test.", "A")
        b = client(unbound.host, unbound.port, "c1.test.", "A")
        assert a.rcode == b.rcode == "NOERROR"
        assert a.answer == b.answer and len(a.answer) == 4
        assert "ra" in b.flags and "ra" not in a.flags


def test_relay_counts(knot, relay_factory):
    relay = relay_factory()
    for _ in range(3):
        assert helpers.dns_answers("127.0.0.1", relay.port, "multi.test.")
    assert relay.count("multi.test.") == 3
    assert relay.count("www.test.") == 0
