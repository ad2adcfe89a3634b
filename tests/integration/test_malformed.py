"""Malformed client input: each case is followed by a check that the daemon
still answers normal queries over UDP and TCP. Non-queries are dropped
silently and counted; broken queries get an error reply with their ID."""

import socket
import struct
import time

import dns.message
import dns.rcode
import pytest

import helpers

FORMERR, NOTIMP = 1, 4
QTAIL = struct.pack("!HH", 1, 1)  # A IN


def hdr(qid, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def name(*labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"


WWW = name(b"www", b"test")
OPT_V1 = b"\x00" + struct.pack("!HHIH", 41, 1232, 1 << 16, 0)  # version 1

# (id, bytes, expected rcode); the id is what the reply must carry
ERROR_CASES = {
    "label-over-63": (0x1001, hdr(0x1001) + b"\x40" + b"a" * 64 + name(b"test") + QTAIL, FORMERR),
    "name-over-255": (0x1002, hdr(0x1002) + name(*[b"a" * 63] * 4, b"test") + QTAIL, FORMERR),
    "pointer-self-loop": (0x1003, hdr(0x1003) + b"\xc0\x0c" + QTAIL, FORMERR),
    "pointer-label-loop": (0x1004, hdr(0x1004) + b"\x03abc\xc0\x0c" + QTAIL, FORMERR),
    "pointer-out-of-bounds": (0x1005, hdr(0x1005) + b"\x03abc\xc3\xff" + QTAIL, FORMERR),
    "qdcount-0": (0x1006, hdr(0x1006, qd=0), FORMERR),
    "qdcount-2": (0x1007, hdr(0x1007, qd=2) + WWW + QTAIL + WWW + QTAIL, FORMERR),
    "question-missing": (0x1008, hdr(0x1008), FORMERR),
    "question-cut": (0x1009, hdr(0x1009) + WWW + b"\x00", FORMERR),
    "opcode-status": (0x100A, hdr(0x100A, flags=(2 << 11) | 0x0100) + WWW + QTAIL, NOTIMP),
    "opcode-update": (0x100B, hdr(0x100B, flags=(5 << 11)) + WWW + QTAIL, NOTIMP),
}

DROP_CASES = {
    "one-byte": b"\x00",
    "truncated-header": hdr(0x2001)[:7],
    "header-minus-one": hdr(0x2002)[:11],
    "response-qr-set": hdr(0x2003, flags=0x8180, an=1) + WWW + QTAIL
    + b"\xc0\x0c" + QTAIL + struct.pack("!IH", 300, 4) + bytes([192, 0, 2, 1]),
}


@pytest.fixture
def daemon(dnsveil, knot):
    return dnsveil("udp://127.0.0.1:%d" % knot.port)


def assert_still_answers(d):
    assert helpers.dns_answers(d.host, d.port), "no UDP answer after the bad input"
    r = dns.message.from_wire(helpers.tcp_exchange(
        helpers.make_query("multi.test.", "A").to_wire(), d.host, d.port))
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer[0]) == 4


def check_error_reply(reply, qid, rcode):
    assert reply is not None, "no reply"
    assert len(reply) >= 12
    rid, flags, *_ = helpers.header(reply)
    assert rid == qid
    assert flags & 0x8000, "QR not set"
    assert flags & 0xF == rcode, "rcode %d, want %d" % (flags & 0xF, rcode)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_reply_udp(daemon, case):
    qid, wire, rcode = ERROR_CASES[case]
    check_error_reply(helpers.udp_exchange(wire, daemon.host, daemon.port), qid, rcode)
    assert_still_answers(daemon)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_reply_tcp(daemon, case):
    qid, wire, rcode = ERROR_CASES[case]
    check_error_reply(helpers.tcp_exchange(wire, daemon.host, daemon.port), qid, rcode)
    assert_still_answers(daemon)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_edns_version_1_gets_badvers(daemon, transport):
    q = helpers.make_query("www.test.", "A", qid=0x3001, edns=0)
    wire = bytearray(q.to_wire())
    # turn the OPT's version byte (TTL bits 16..23) into 1
    opt_at = wire.rindex(b"\x00\x00\x29")
    wire[opt_at + 6] = 1
    exchange = helpers.udp_exchange if transport == "udp" else helpers.tcp_exchange
    reply = exchange(bytes(wire), daemon.host, daemon.port)
    assert reply is not None
    r = dns.message.from_wire(reply)
    assert r.id == 0x3001
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0, "BADVERS must carry the version we support (0)"
    assert not r.answer
    assert_still_answers(daemon)


@pytest.mark.parametrize("case", sorted(DROP_CASES))
def test_non_query_datagram_dropped(daemon, case):
    reply = helpers.udp_exchange(DROP_CASES[case], daemon.host, daemon.port, timeout=0.5)
    assert reply is None, "expected silence, got %r" % reply[:32]
    assert_still_answers(daemon)


def test_stats_count_dropped_and_formerr(daemon):
    dropped = 0
    for _ in range(2):
        for wire in DROP_CASES.values():
            assert helpers.udp_exchange(wire, daemon.host, daemon.port, timeout=0.3) is None
            dropped += 1
    formerr = 0
    for case in ("label-over-63", "qdcount-0", "pointer-self-loop"):
        qid, wire, rcode = ERROR_CASES[case]
        check_error_reply(helpers.udp_exchange(wire, daemon.host, daemon.port), qid, rcode)
        formerr += 1
    stats, line = daemon.stats()
    assert "dropped" in stats and "formerr" in stats, line
    assert stats["dropped"] >= dropped, line
    assert stats["formerr"] >= formerr, line
    assert_still_answers(daemon)


def tcp_raw(d, data, keep_open=False):
    s = socket.create_connection((d.host, d.port), timeout=3)
    s.sendall(data)
    if keep_open:
        return s
    s.close()
    return None


@pytest.mark.parametrize("data", [
    b"\xff\xff" + b"short body",
    b"\x00\x00",
    b"\x00",
    b"\x00\x30" + hdr(0x4001)[:10],
], ids=["len-ffff-short-body", "len-0", "half-length", "len-48-cut-header"])
def test_tcp_bad_frame_then_close(daemon, data):
    tcp_raw(daemon, data)
    time.sleep(0.1)
    assert_still_answers(daemon)


def test_tcp_partial_frame_does_not_block_others(daemon):
    """A client that sends half a frame and stalls must not hold up others."""
    stalled = tcp_raw(daemon, b"\xff\xff" + b"x" * 100, keep_open=True)
    try:
        assert_still_answers(daemon)
    finally:
        stalled.close()


def test_tcp_garbage_frame_then_good_query_on_new_connection(daemon):
    s = tcp_raw(daemon, struct.pack("!H", 5) + b"\x01\x02\x03\x04\x05", keep_open=True)
    try:
        s.settimeout(1.0)
        try:
            s.recv(100)  # reply or close: either is fine, but no hang forever
        except socket.timeout:
            pass
    finally:
        s.close()
    assert_still_answers(daemon)
