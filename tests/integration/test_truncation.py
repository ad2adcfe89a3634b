"""UDP answers respect the client's size (512 without EDNS, else its EDNS
payload) with TC set when they do not fit; over TCP the same answers arrive
whole, including ~16 KB. The upstream is udp://, so dnsveil itself must
retry over TCP when knotd truncates."""

import dns.flags
import dns.message
import dns.rcode
import pytest

import helpers


@pytest.fixture
def daemon(dnsveil, knot):
    return dnsveil("udp://127.0.0.1:%d" % knot.port)


@pytest.mark.parametrize("client", ["dig", "kdig"])
@pytest.mark.parametrize("name,opt,want_tc", [
    ("mid.test.", "+noedns", True),
    ("big.test.", "+noedns", True),
    ("mid.test.", "+bufsize=1232", False),
    ("big.test.", "+bufsize=1232", True),
    ("huge.test.", "+bufsize=1232", True),
], ids=["mid-noedns", "big-noedns", "mid-1232", "big-1232", "huge-1232"])
def test_tc_over_udp(daemon, knot, client, name, opt, want_tc):
    run = helpers.CLIENTS[client]
    got = run(daemon.host, daemon.port, name, "TXT", False, [opt])
    assert got.rcode == "NOERROR", got.raw
    assert ("tc" in got.flags) == want_tc, got.raw
    if not want_tc:
        whole = run(knot.host, knot.port, name, "TXT", True)
        assert got.answer == whole.answer and len(got.answer) == 1


@pytest.mark.parametrize("edns,limit", [(None, 512), (0, 1232)], ids=["noedns", "edns1232"])
@pytest.mark.parametrize("name", ["mid.test.", "big.test.", "huge.test."])
def test_udp_reply_fits_client_size(daemon, edns, limit, name):
    q = helpers.make_query(name, "TXT", qid=4242, edns=edns, payload=limit)
    reply = helpers.udp_exchange(q.to_wire(), daemon.host, daemon.port)
    assert reply is not None
    assert len(reply) <= limit
    r = dns.message.from_wire(reply)
    assert r.id == 4242 and r.rcode() == dns.rcode.NOERROR
    assert r.question == q.question
    full_size = {"mid.test.": 742, "big.test.": 1500, "huge.test.": 16000}[name]
    assert bool(r.flags & dns.flags.TC) == (full_size > limit)
    if edns is not None:
        assert r.edns == 0, "EDNS client got an answer without OPT"


@pytest.mark.parametrize("client", sorted(helpers.CLIENTS))
@pytest.mark.parametrize("name,count", [("big.test.", 1), ("huge.test.", 16)])
def test_whole_over_tcp(daemon, knot, client, name, count):
    run = helpers.CLIENTS[client]
    got = run(daemon.host, daemon.port, name, "TXT", True)
    want = run(knot.host, knot.port, name, "TXT", True)
    assert got.rcode == "NOERROR" and "tc" not in got.flags, got.raw
    assert len(got.answer) == count
    assert got.answer == want.answer


def test_huge_raw_size_over_tcp(daemon):
    q = helpers.make_query("huge.test.", "TXT", qid=7)
    reply = helpers.tcp_exchange(q.to_wire(), daemon.host, daemon.port)
    assert len(reply) >= 16000
    r = dns.message.from_wire(reply)
    assert r.id == 7 and not r.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in r.answer) == 16
