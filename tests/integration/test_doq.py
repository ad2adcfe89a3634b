"""DNS over QUIC upstreams (quic://, RFC 9250): dnsveil against the Go DoQ
peer (quic-go) in front of the suite's knotd, with a private CA made for this
run. Covers answers, a 16 KB answer, 500 concurrent queries on one
connection, 0-RTT accepted and rejected, a forced Retry, DoQ error codes
(connection close and stream reset -> failover or SERVFAIL in time),
REQUEST_CANCELLED on timeout, keep-alive under a slow answer, and
certificate failures."""

import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import time

import dns.message
import dns.query
import dns.rcode
import pytest

import doqpeers
import helpers
import tlspeers

TIMEOUT_MS = 1500

pytestmark = pytest.mark.skipif(not doqpeers.have_go(),
                                reason="go is not installed: no DoQ peer")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("doqpki")
    ca = tlspeers.PrivateCA(base / "ca")
    other = tlspeers.PrivateCA(base / "other", name="someone else's CA")
    certs = {
        "good": ca.issue("doq.test", ["doq.test"], ["127.0.0.1"]),
        "dnsonly": ca.issue("doq.test", ["doq.test"]),
        "foreign": other.issue("doq.test", ["doq.test"], ["127.0.0.1"]),
    }
    return ca, certs


@pytest.fixture
def doq_peer(tmp_path, knot, pki):
    """doq_peer(cert="good", **options) -> a started DoqPeer."""
    started = []

    def make(cert="good", **kw):
        ca, certs = pki
        crt, key = certs[cert]
        p = doqpeers.DoqPeer("doq%d" % len(started), tmp_path / ("peer%d" % len(started)),
                             crt, key, ca.cert)
        started.append(p)
        return p.start(knot.port, **kw)

    yield make
    for p in started:
        p.stop()


def start(dnsveil, tmp_path, pki, port, timeout=TIMEOUT_MS, **kw):
    ca, _ = pki
    kw.setdefault("ca", ca.cert)
    conf = doqpeers.doq_config(tmp_path, "quic://127.0.0.1:%d" % port, **kw)
    return dnsveil(timeout=timeout, extra=["-c", str(conf)])


def ask(d, name, rdtype="A", tcp=False, timeout=5.0):
    q = helpers.make_query(name, rdtype, edns=0, payload=1232)
    if tcp:
        return dns.query.tcp(q, d.host, port=d.port, timeout=timeout)
    return dns.query.udp(q, d.host, port=d.port, timeout=timeout)


knot_answer = helpers.knot_answer
same = helpers.same_answer


def uniq(prefix):
    return "%s-%06x.test." % (prefix, random.getrandbits(24))


def blast(host, port, names, deadline):
    """One UDP query per name, all at once from one socket; returns
    {index: rcode} for the replies that came within deadline."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    got = {}
    t0 = time.monotonic()
    for i, n in enumerate(names):
        s.sendto(helpers.make_query(n, "A", qid=i, edns=0).to_wire(), (host, port))
    while len(got) < len(names) and time.monotonic() - t0 < deadline:
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            data = s.recv(65535)
            qid, flags = struct.unpack("!HH", data[:4])
            if qid < len(names):
                got[qid] = flags & 0xF
    s.close()
    return got


def wait_log(d, text, deadline=5.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if text in d.log_text():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------
# answers

CASES = [("www.test.", "A"), ("multi.test.", "A"), ("test.", "MX"), ("c1.test.", "A"),
         ("nodata.test.", "A"), ("nx-doq.test.", "A"), ("big.test.", "TXT"),
         ("mid.test.", "TXT")]


def test_answers_equal_knot(doq_peer, dnsveil, tmp_path, pki, knot):
    p = doq_peer()
    d = start(dnsveil, tmp_path, pki, p.port)
    for name, rdtype in CASES:
        got = ask(d, name, rdtype, tcp=True)
        want = knot_answer(knot, name, rdtype)
        assert same(got, want), "%s %s:\n%s\n---\n%s" % (name, rdtype, got, want)
    st = p.stats()
    assert st["connections"] == 1 and st["answers"] >= len(CASES), st


def test_cli_url_default_port(doq_peer, dnsveil, pki, knot):
    """-u quic://HOST with --tls-ca, no config file; port 853 by default."""
    ca, _ = pki
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 853))
        probe.close()
    except OSError:
        pytest.skip("udp 127.0.0.1:853 is taken or not ours to bind")
    p = doq_peer(port=853)
    d = dnsveil("quic://127.0.0.1", timeout=TIMEOUT_MS, extra=["--tls-ca", str(ca.cert)])
    assert same(ask(d, "www.test."), knot_answer(knot, "www.test.", "A"))
    assert p.stats()["answers"] >= 1


def test_huge_answer_intact(doq_peer, dnsveil, tmp_path, pki, knot):
    p = doq_peer()
    d = start(dnsveil, tmp_path, pki, p.port)
    got = ask(d, "huge.test.", "TXT", tcp=True)
    want = knot_answer(knot, "huge.test.", "TXT")
    assert len(want.to_wire()) > 15000
    assert same(got, want)
    assert sum(len(s) for rr in got.answer for rd in rr for s in rd.strings) > 15000


def test_500_concurrent_on_one_connection(doq_peer, dnsveil, tmp_path, pki):
    """More queries than the server's stream limit (100): the rest queue and
    go as the server raises MAX_STREAMS, all on the one connection."""
    p = doq_peer(max_streams=100)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=5000)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    tag = "%06x" % random.getrandbits(24)
    names = ["c%d-%s.test." % (i, tag) for i in range(500)]
    got = blast(d.host, d.port, names, deadline=8.0)
    assert len(got) == 500, "%d of 500 answered" % len(got)
    assert set(got.values()) == {dns.rcode.NXDOMAIN}
    st = p.stats()
    assert st["connections"] == 1, st
    assert st["streams"] >= 501, st


def traced_burst(d, tmp_path, n):
    """Blasts n queries at d with strace on its sends: the replies, the
    sends that carried a UDP_SEGMENT control message, and the trace."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    trace = tmp_path / "strace.out"
    st = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=sendmsg,sendto,sendmmsg", "-e", "signal=none",
                           "-s", "0", "-o", str(trace), "-p", str(d.proc.pid)],
                          stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # attached
        tag = "%06x" % random.getrandbits(24)
        names = ["gso%d-%s.test." % (i, tag) for i in range(n)]
        got = blast(d.host, d.port, names, deadline=8.0)
    finally:
        st.terminate()
        st.wait(timeout=10)
    trains = [ln for ln in trace.read_text().splitlines()
              if "SOL_UDP" in ln and ("UDP_SEGMENT" in ln or "0x67" in ln)]
    return got, trains, trace.read_text()


def test_burst_leaves_in_gso_trains(doq_peer, dnsveil, tmp_path, pki):
    """Queries that arrive together leave in full, padded packets of one
    size, several per send through UDP GSO (a UDP_SEGMENT control message,
    as strace shows it); the peer sees each datagram and answers them all."""
    if os.environ.get("DNSVEIL_DISABLE_GSO", "0") != "0":
        pytest.skip("DNSVEIL_DISABLE_GSO is set (a qemu-user run of a big-endian build)")
    p = doq_peer(max_streams=1000)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=5000)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    got, trains, trace = traced_burst(d, tmp_path, 400)
    assert len(got) == 400, "%d of 400 answered" % len(got)
    print("%d sends with UDP_SEGMENT for 400 queries, e.g. %s" % (len(trains), trains[:1]))
    assert trains, "no sendmsg with UDP_SEGMENT:\n" + trace[:2000]


def test_gso_turned_off_by_environment(doq_peer, dnsveil, tmp_path, pki, monkeypatch):
    """DNSVEIL_DISABLE_GSO=1 (for where GSO is taken but comes out wrong,
    as under qemu-user with a big-endian build): the same burst leaves
    datagram by datagram and is answered whole."""
    monkeypatch.setenv("DNSVEIL_DISABLE_GSO", "1")
    p = doq_peer(max_streams=1000)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=5000)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    got, trains, trace = traced_burst(d, tmp_path, 400)
    assert len(got) == 400, "%d of 400 answered" % len(got)
    assert "send" in trace, trace[:2000]
    assert not trains, trains[:3]


def wire_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out


def test_nothing_in_plaintext(doq_peer, dnsveil, tmp_path, pki, knot):
    """Every datagram dnsveil sends is QUIC (long or short header), and no
    question name crosses in clear: not in 1-RTT, not in 0-RTT."""
    p = doq_peer(idle=1.0)
    path = doqpeers.UdpPath(p.port)
    try:
        d = start(dnsveil, tmp_path, pki, path.port)
        first = [uniq("secret-a"), uniq("secret-b")]
        for n in first:
            ask(d, n)
        assert wait_log(d, "connection idle, closed", 5.0)
        later = uniq("secret-early")
        ask(d, later)
        assert p.wait_stat("zero_rtt_streams", 1), p.stats()
        sent = path.client_bytes()
    finally:
        path.close()
    assert len(sent) > 4
    for b in sent:
        assert b[0] & 0x40, "not a QUIC packet (fixed bit clear): %r" % b[:8]
        for n in first + [later]:
            assert wire_name(n) not in b and n.rstrip(".").encode() not in b, n


# --------------------------------------------------------------------------
# 0-RTT, Retry

def test_0rtt_after_idle_close(doq_peer, dnsveil, tmp_path, pki, knot):
    p = doq_peer(idle=1.0)
    d = start(dnsveil, tmp_path, pki, p.port)
    assert same(ask(d, "www.test."), knot_answer(knot, "www.test.", "A"))
    assert p.stats()["zero_rtt_streams"] == 0
    # the connection idles out on both sides; the session ticket stays
    assert wait_log(d, "connection idle, closed", 5.0), d.log_text()[-2000:]
    got = ask(d, "mail.test.")
    assert same(got, knot_answer(knot, "mail.test.", "A"))
    assert p.wait_stat("zero_rtt_streams", 1), p.stats()
    # the peer counts the connection once its handshake is done, a moment later
    assert p.wait_stat("zero_rtt_conns", 1), p.stats()
    st = p.stats()
    assert st["connections"] == 2 and st["zero_rtt_conns"] == 1, st
    assert wait_log(d, "0-RTT accepted"), d.log_text()[-2000:]


def test_0rtt_rejected_still_answers(doq_peer, dnsveil, tmp_path, pki, knot):
    """The peer restarts without 0-RTT but with the same ticket key: the
    session resumes, the early data is refused, and the query goes again
    after the handshake."""
    seed = "seed-%d" % random.getrandbits(32)
    p = doq_peer(idle=1.0, ticket_seed=seed)
    d = start(dnsveil, tmp_path, pki, p.port)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    assert wait_log(d, "connection idle, closed", 5.0)
    p.restart(upstream_port=knot.port, idle=1.0, ticket_seed=seed, no_0rtt=True)
    got = ask(d, "mail2.test.")
    assert same(got, knot_answer(knot, "mail2.test.", "A"))
    log = d.log_text()
    assert "connection 2 to 127.0.0.1 with 0-RTT" in log, log[-2000:]
    assert "0-RTT rejected" in log and "resumed session" in log, log[-2000:]
    st = p.stats()
    assert st["zero_rtt_streams"] == 0 and st["answers"] == 1, st


def test_retry_forced(doq_peer, dnsveil, tmp_path, pki, knot):
    """The peer validates every new address with a Retry. The first
    connection goes through one; the next presents the NEW_TOKEN token the
    peer gave, needs no Retry, and its 0-RTT data is accepted."""
    p = doq_peer(retry=True, idle=1.0)
    d = start(dnsveil, tmp_path, pki, p.port)
    assert same(ask(d, "target.test."), knot_answer(knot, "target.test.", "A"))
    assert p.stats()["retries"] == 1
    assert wait_log(d, "connection idle, closed", 5.0)
    assert same(ask(d, "mail.test."), knot_answer(knot, "mail.test.", "A"))
    st = p.stats()
    assert st["connections"] == 2 and st["retries"] == 1, st
    assert p.wait_stat("zero_rtt_streams", 1), p.stats()


def test_version_negotiation_fails_over(doq_peer, dnsveil, tmp_path, pki, knot):
    """A server without QUIC v1 answers with Version Negotiation: the query
    fails over at once and the log says why."""
    p = doq_peer(draft29_only=True)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=3000,
              extra_upstreams=[("plain", "udp://127.0.0.1:%d" % knot.port)])
    t0 = time.monotonic()
    got = ask(d, "www.test.")
    assert time.monotonic() - t0 < 1.0
    assert same(got, knot_answer(knot, "www.test.", "A"))
    assert wait_log(d, "upstream doq1: doq: server does not speak QUIC v1")
    assert p.stats()["connections"] == 0


# --------------------------------------------------------------------------
# DoQ errors, cancellation, keep-alive

@pytest.mark.parametrize("kind,code", [("close", 4), ("close", 1), ("reset", 1), ("reset", 4)],
                         ids=["close-excessive-load", "close-internal", "reset-internal",
                              "reset-excessive-load"])
def test_error_code_fails_over(kind, code, doq_peer, dnsveil, tmp_path, pki, knot):
    opts = {"close_code": code} if kind == "close" else {"reset_code": code}
    p = doq_peer(**opts)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=3000,
              extra_upstreams=[("plain", "udp://127.0.0.1:%d" % knot.port)])
    t0 = time.monotonic()
    got = ask(d, "www.test.")
    elapsed = time.monotonic() - t0
    assert same(got, knot_answer(knot, "www.test.", "A"))
    assert elapsed < 1.0, "failover took %.3fs" % elapsed
    assert p.stats()["streams"] >= 1
    if kind == "close":
        assert wait_log(d, "server closed the connection with error 0x%x" % code)
    else:
        assert wait_log(d, "reset with error 0x%x" % code)


def test_error_code_alone_gives_servfail_in_time(doq_peer, dnsveil, tmp_path, pki):
    p = doq_peer(close_code=2)
    d = start(dnsveil, tmp_path, pki, p.port)
    t0 = time.monotonic()
    r = ask(d, uniq("closed"))
    elapsed = time.monotonic() - t0
    assert r.rcode() == dns.rcode.SERVFAIL
    assert elapsed < TIMEOUT_MS / 1000.0 + 0.5


def test_timeout_cancels_stream(doq_peer, dnsveil, tmp_path, pki):
    """A query the deadline gives up on is cancelled on the wire with
    REQUEST_CANCELLED; the peer sees it when it tries to answer."""
    p = doq_peer(delay=1.5)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=600)
    r = ask(d, uniq("slow"))
    assert r.rcode() == dns.rcode.SERVFAIL
    assert p.wait_stat("cancelled", 1, deadline=4.0), p.stats()
    assert p.stats()["answers"] == 0


def test_keepalive_holds_slow_answer(doq_peer, dnsveil, tmp_path, pki, knot):
    """The peer's idle timeout (0.8 s) is shorter than its answer delay
    (1.5 s): keep-alive PINGs hold the connection open for the answer."""
    p = doq_peer(idle=0.8, delay=1.5)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=4000)
    got = ask(d, "www.test.")
    assert same(got, knot_answer(knot, "www.test.", "A"))
    assert p.stats()["connections"] == 1


def test_late_loop_is_not_a_silent_server(doq_peer, dnsveil, tmp_path, pki, knot):
    """The daemon's own loop falls behind (a slow router CPU; here SIGSTOP
    for 1.6 s) with an answer awaited: the answer arrives meanwhile and waits
    in the socket. On resuming, the silence check must not take the late read
    for a dead server: same connection, one answer, no reconnect."""
    p = doq_peer(delay=0.4)
    d = start(dnsveil, tmp_path, pki, p.port, timeout=5000)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    before = p.stats()
    q = helpers.make_query("target.test.", "A", qid=0x5151, edns=0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(5.0)
        s.sendto(q.to_wire(), (d.host, d.port))
        assert p.wait_stat("streams", before["streams"] + 1, deadline=1.0), p.stats()
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.6)  # the peer answers at 0.4 s, into the socket
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        reply = dns.message.from_wire(s.recv(65535))
    finally:
        s.close()
    assert same(reply, knot_answer(knot, "target.test.", "A"))
    time.sleep(0.3)
    assert "silent for" not in d.log_text(), d.log_text()[-2000:]
    st = p.stats()
    assert st["connections"] == 1 and st["answers"] == before["answers"] + 1, st


def test_connection_loss_retried_on_new_connection(doq_peer, dnsveil, tmp_path, pki, knot):
    """The path to the server breaks silently with a query in flight: once
    the connection idles out (the peer's 1 s) or is found silent with the
    answer awaited (1 s), the query goes again, once, on a new connection and
    gets its answer within the deadline."""
    p = doq_peer(idle=1.0, delay=0.5)
    path = doqpeers.UdpPath(p.port)
    try:
        d = start(dnsveil, tmp_path, pki, path.port, timeout=4000)
        assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
        q = helpers.make_query("target.test.", "A", qid=0x7777, edns=0)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(4.5)
            t0 = time.monotonic()
            s.sendto(q.to_wire(), (d.host, d.port))
            assert p.wait_stat("streams", 3, deadline=1.0), p.stats()
            assert path.cut() == 1
            reply = dns.message.from_wire(s.recv(65535))
            elapsed = time.monotonic() - t0
        finally:
            s.close()
        assert reply.id == 0x7777
        assert same(reply, knot_answer(knot, "target.test.", "A"))
        assert elapsed < 4.0
        assert path.clients() == 2
        log = d.log_text()
        assert ("connection idle, closed" in log or "silent for" in log) and \
            "connection 2 to" in log, log[-2000:]
    finally:
        path.close()


# --------------------------------------------------------------------------
# certificate failures: SERVFAIL in time, one clear log line

FAILURES = [
    ("hostname", "good", {"tls_name": "wrong.test"},
     "certificate verify failed: hostname mismatch (wanted wrong.test, cert has "),
    ("ip-san-missing", "dnsonly", {},
     "certificate verify failed: hostname mismatch (wanted 127.0.0.1, cert has doq.test)"),
    ("unknown-ca", "foreign", {}, "certificate verify failed: unknown CA"),
    ("pin", "good", {"pins": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]},
     "certificate verify failed: pin mismatch (server key pin is "),
]


@pytest.mark.parametrize("case,cert,conf,expect", FAILURES, ids=[f[0] for f in FAILURES])
def test_wrong_certificate_refused(case, cert, conf, expect, doq_peer, dnsveil, tmp_path,
                                   pki):
    p = doq_peer(cert=cert)
    d = start(dnsveil, tmp_path, pki, p.port, **conf)
    t0 = time.monotonic()
    r = ask(d, uniq("leak-" + case))
    elapsed = time.monotonic() - t0
    assert r.rcode() == dns.rcode.SERVFAIL
    assert elapsed < TIMEOUT_MS / 1000.0 + 0.5
    assert wait_log(d, "upstream doq1: " + expect), d.log_text()[-3000:]
    assert p.stats()["answers"] == 0


def test_host_name_with_bootstrap(doq_peer, dnsveil, tmp_path, pki, knot):
    """quic://doq.test:PORT reached through its bootstrap address: the name
    is what the certificate must match (its DNS SAN)."""
    p = doq_peer(cert="dnsonly")
    ca, _ = pki
    conf = doqpeers.doq_config(tmp_path, "quic://doq.test:%d" % p.port, ca=ca.cert,
                               bootstrap=["127.0.0.1"])
    d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(conf)])
    assert same(ask(d, "www.test."), knot_answer(knot, "www.test.", "A"))


def test_correct_pin_accepted(doq_peer, dnsveil, tmp_path, pki, knot):
    _, certs = pki
    p = doq_peer()
    d = start(dnsveil, tmp_path, pki, p.port, pins=[tlspeers.spki_pin(certs["good"][0])])
    assert same(ask(d, "www.test."), knot_answer(knot, "www.test.", "A"))
