"""Answers through dnsveil equal what the real peer gives directly, for each
real client (dig, kdig, dnspython) over UDP and TCP; ID and question case
are preserved."""

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

import helpers
from conftest import DaemonFactory

CASES = [
    ("www.test.", "A"),
    ("www.test.", "AAAA"),
    ("multi.test.", "A"),
    ("c1.test.", "A"),           # 3-hop CNAME chain
    ("test.", "MX"),
    ("nx.test.", "A"),           # NXDOMAIN
    ("nodata.test.", "A"),       # NODATA (name exists, no A)
    ("www.test.", "MX"),         # NODATA by type
    ("mid.test.", "TXT"),        # ~700 B: TC for clients without EDNS
    ("big.test.", "TXT"),        # ~1.5 KB: TC over UDP, whole over TCP
    ("huge.test.", "TXT"),       # ~16 KB
]

UPSTREAMS = ["knot-udp", "knot-tcp", "unbound-udp"]

COMPARED_FLAGS = ("qr", "tc", "rd", "cd")


@pytest.fixture(scope="module", params=UPSTREAMS)
def via(request, tmp_path_factory, knot, unbound):
    peer_name, scheme = request.param.split("-")
    peer = knot if peer_name == "knot" else unbound
    factory = DaemonFactory(tmp_path_factory.mktemp("dnsveil-" + request.param))
    daemon = factory("%s://127.0.0.1:%d" % (scheme, peer.port))
    yield request.param, peer, daemon
    problems = factory.finish()
    if problems:
        pytest.fail("dnsveil teardown:\n" + "\n".join(problems), pytrace=False)


def assert_same(got, want, authoritative_ttls):
    assert want.rcode is not None, "the peer itself did not answer:\n" + want.raw
    assert got.rcode is not None, "no answer through dnsveil:\n" + got.raw
    assert got.rcode == want.rcode, (got.raw, want.raw)
    for f in COMPARED_FLAGS:
        assert (f in got.flags) == (f in want.flags), ("flag " + f, got.raw, want.raw)
    if "ra" in want.flags:
        assert "ra" in got.flags, got.raw
    if "tc" in want.flags:
        return  # truncated: contents of a TC answer are not comparable
    assert got.answer == want.answer, (got.raw, want.raw)
    assert got.authority == want.authority, (got.raw, want.raw)
    if authoritative_ttls:
        for key, ttls in got.ttls.items():
            assert max(ttls) <= max(want.ttls[key]), ("TTL raised", key, got.raw, want.raw)


@pytest.mark.parametrize("client", sorted(helpers.CLIENTS))
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name,rdtype", CASES, ids=["%s%s" % c for c in CASES])
def test_same_answer_as_peer(via, client, tcp, name, rdtype):
    kind, peer, d = via
    run = helpers.CLIENTS[client]
    got = run(d.host, d.port, name, rdtype, tcp)
    want = run(peer.host, peer.port, name, rdtype, tcp)
    assert_same(got, want, authoritative_ttls=kind.startswith("knot"))
    if name in ("nx.test.", "nodata.test.") or (name, rdtype) == ("www.test.", "MX"):
        assert not got.answer
        assert any(t == dns.rdatatype.SOA for _, t, _ in got.authority), got.raw
    if tcp:
        assert "tc" not in got.flags


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_id_and_question_case_preserved(via, tcp):
    _, _, d = via
    exchange = helpers.tcp_exchange if tcp else helpers.udp_exchange
    # first a lower-case query, so the mixed-case ones may be cache hits
    exchange(helpers.make_query("www.test.", "A").to_wire(), d.host, d.port)
    for qid, qname in ((0xBEEF, "WwW.TeSt."), (0x0001, "WWW.TEST."), (0xFFFF, "www.tEST.")):
        q = helpers.make_query(qname, "A", qid=qid)
        wire = q.to_wire()
        reply = exchange(wire, d.host, d.port)
        assert reply is not None
        rid, flags, qd, an, _, _ = helpers.header(reply)
        assert rid == qid
        assert flags & 0x8000 and flags & 0xF == 0 and qd == 1 and an >= 1
        qlen = len(qname) + 1 + 4  # wire name of a dotted name + type + class
        assert reply[12:12 + qlen] == wire[12:12 + qlen], "question not echoed byte for byte"
        r = dns.message.from_wire(reply)
        assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.1"]
