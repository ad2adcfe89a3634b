"""DNS over TLS upstreams (tls://): dnsveil against real DoT servers —
unbound, dnsdist and kresd — in front of the suite's knotd, with a private
CA made for this run. Covers answers, large answers, pipelining on one
connection, session resumption, idle closes by either side, certificate and
pin failures (SERVFAIL within the deadline, one clear log line, nothing in
plaintext) and a server killed under load."""

import random
import select
import shutil
import socket
import ssl
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

import helpers
import tlspeers

TIMEOUT_MS = 1500


def need(binary):
    if shutil.which(binary) is None:
        pytest.skip("%s is not installed" % binary)


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = tlspeers.PrivateCA(base / "ca")
    other = tlspeers.PrivateCA(base / "other", name="someone else's CA")
    certs = {
        "good": ca.issue("dot.test", ["dot.test"], ["127.0.0.1"]),
        "dnsonly": ca.issue("dot.test", ["dot.test"]),
        "expired": ca.issue("dot.test", ["dot.test"], ["127.0.0.1"], expired=True),
        "foreign": other.issue("dot.test", ["dot.test"], ["127.0.0.1"]),
    }
    return ca, certs


class PeerSet:
    """Module-wide DoT servers, started on first use and stopped at the end."""

    def __init__(self, base, knot, pki):
        self.base, self.knot, self.pki = base, knot, pki
        self.peers = {}

    def get(self, kind, cert="good"):
        key = (kind, cert)
        if key not in self.peers:
            need({"unbound": "unbound", "dnsdist": "dnsdist", "kresd": "kresd"}[kind])
            ca, certs = self.pki
            crt, k = certs[cert]
            p = tlspeers.PEERS[kind](kind, self.base / ("%s-%s" % (kind, cert)), crt, k,
                                     ca.cert)
            # a bad certificate means our own readiness probe cannot verify it
            p.start(self.knot.port, check_dot=(cert in ("good", "dnsonly")))
            self.peers[key] = p
        return self.peers[key]

    def stop(self):
        for p in self.peers.values():
            p.stop()


@pytest.fixture(scope="module")
def peers(tmp_path_factory, knot, pki):
    ps = PeerSet(tmp_path_factory.mktemp("dotpeers"), knot, pki)
    yield ps
    ps.stop()


@pytest.fixture(params=["unbound", "dnsdist", "kresd"])
def peer(request, peers):
    return peers.get(request.param)


@pytest.fixture
def taps():
    made = []

    def make(port):
        t = tlspeers.TcpTap(port)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def write_config(tmp_path, url, tls_name=None, ca=None, pins=None, bootstrap=None,
                 name="dot1"):
    lines = ["[upstreams.%s]" % name, 'url = "%s"' % url]
    if tls_name:
        lines.append('tls_name = "%s"' % tls_name)
    if ca:
        lines.append('tls_ca = "%s"' % ca)
    if pins is not None:
        lines.append("pins = [%s]" % ", ".join('"%s"' % p for p in pins))
    if bootstrap:
        lines.append("bootstrap = [%s]" % ", ".join('"%s"' % b for b in bootstrap))
    path = tmp_path / ("%s.toml" % name)
    path.write_text("\n".join(lines) + "\n")
    return path


def start_dot(dnsveil, tmp_path, pki, port, timeout=TIMEOUT_MS, **kw):
    ca, _ = pki
    kw.setdefault("ca", ca.cert)
    conf = write_config(tmp_path, "tls://127.0.0.1:%d" % port, **kw)
    return dnsveil(timeout=timeout, extra=["-c", str(conf)])


def ask(d, name, rdtype="A", tcp=False, timeout=5.0):
    q = helpers.make_query(name, rdtype, edns=0, payload=1232)
    if tcp:
        return dns.query.tcp(q, d.host, port=d.port, timeout=timeout)
    return dns.query.udp(q, d.host, port=d.port, timeout=timeout)


def peer_answer(p, name, rdtype):
    return tlspeers.dot_query(helpers.make_query(name, rdtype, edns=0), p.tls_port, p.ca)


def blast(host, port, names, deadline):
    """Sends one UDP query per name at once from one socket and collects the
    replies: {index: (rcode, seconds after sending)}; missing = no reply."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    got = {}
    t0 = time.monotonic()
    for i, n in enumerate(names):
        q = helpers.make_query(n, "A", qid=i, edns=0)
        s.sendto(q.to_wire(), (host, port))
    while len(got) < len(names) and time.monotonic() - t0 < deadline:
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        data = s.recv(65535)
        qid, flags = struct.unpack("!HH", data[:4])
        if qid < len(names) and qid not in got:
            got[qid] = (flags & 0xF, time.monotonic() - t0)
    s.close()
    return got


def wire_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out


def assert_encrypted(tap, qnames):
    """Every byte the client sent through tap is TLS: each connection starts
    with a handshake record, and no question name appears in clear."""
    streams = tap.client_bytes()
    assert streams, "dnsveil never connected through the tap"
    for b in streams:
        if not b:
            continue
        assert b[:1] == b"\x16" and b[1:2] == b"\x03", "not TLS: %r" % b[:16]
        for n in qnames:
            assert wire_name(n) not in b, "%s crossed the wire in clear" % n
            assert n.rstrip(".").encode() not in b


# --------------------------------------------------------------------------
# answers

QUESTIONS = [
    ("www.test.", "A"), ("www.test.", "AAAA"), ("multi.test.", "A"), ("mail.test.", "A"),
    ("nodata.test.", "A"), ("c1.test.", "A"), ("mid.test.", "TXT"), ("missing.test.", "A"),
]


def test_answers_equal_the_peers_own(peer, dnsveil, tmp_path, pki):
    d = start_dot(dnsveil, tmp_path, pki, peer.tls_port)
    for name, rdtype in QUESTIONS:
        ours = helpers.from_message(ask(d, name, rdtype))
        theirs = helpers.from_message(peer_answer(peer, name, rdtype))
        assert ours.rcode == theirs.rcode, (name, rdtype, ours, theirs)
        assert ours.answer == theirs.answer, (name, rdtype)
        assert ours.authority == theirs.authority, (name, rdtype)


def test_large_txt_intact(peer, dnsveil, tmp_path, pki):
    d = start_dot(dnsveil, tmp_path, pki, peer.tls_port)
    q = helpers.make_query("huge.test.", "TXT", edns=0, payload=1232)
    wire = helpers.tcp_exchange(q.to_wire(), d.host, d.port, timeout=5.0)
    assert len(wire) > 16000  # the zone's largest answer, about 16.3 kB
    r = dns.message.from_wire(wire)
    theirs = peer_answer(peer, "huge.test.", "TXT")
    assert r.rcode() == dns.rcode.NOERROR
    assert helpers.from_message(r).answer == helpers.from_message(theirs).answer
    assert len(r.answer) == 1 and len(r.answer[0]) == 16


def test_500_concurrent_queries_share_one_connection(peer, dnsveil, tmp_path, pki):
    d = start_dot(dnsveil, tmp_path, pki, peer.tls_port, timeout=8000)
    tag = "%06x" % random.getrandbits(24)
    names = ["p%d-%s.test." % (i, tag) for i in range(500)]
    seen = []

    import threading
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.append(tlspeers.established(peer.tls_port))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        got = blast(d.host, d.port, names, deadline=10.0)
    finally:
        stop.set()
        t.join()
    missing = [names[i] for i in range(len(names)) if i not in got]
    assert not missing, "%d unanswered, e.g. %s" % (len(missing), missing[:3])
    assert all(rc == dns.rcode.NXDOMAIN for rc, _ in got.values()), \
        {rc for rc, _ in got.values()}
    assert max(seen) == 1, "connections to the peer seen during the load: %s" % sorted(set(seen))
    assert d.log_text().count("connected (") <= 2  # the warm one, maybe one reconnect


def test_resumes_after_the_idle_connection_closed(peer, dnsveil, tmp_path, pki):
    """The peers close idle connections after 1.5 s (dnsdist on its own;
    unbound and kresd also announce it with edns-tcp-keepalive and dnsveil
    closes first). The next query reconnects transparently and resumes the
    TLS session."""
    d = start_dot(dnsveil, tmp_path, pki, peer.tls_port)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    end = time.monotonic() + 6
    while tlspeers.established(peer.tls_port) and time.monotonic() < end:
        time.sleep(0.1)
    assert tlspeers.established(peer.tls_port) == 0, "idle connection never closed"
    t0 = time.monotonic()
    r = ask(d, "mail.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert time.monotonic() - t0 < TIMEOUT_MS / 1000.0
    log = d.log_text()
    assert log.count("connected (") >= 2, log[-2000:]
    assert "resumed session" in log, log[-2000:]


def test_name_with_bootstrap_and_sni(peers, dnsveil, tmp_path, pki):
    """tls://dot.test with a bootstrap address: the name is verified against
    the DNS SAN (the certificate has no IP SAN), sent as SNI, never resolved."""
    p = peers.get("unbound", "dnsonly")
    ca, _ = pki
    conf = write_config(tmp_path, "tls://dot.test:%d" % p.tls_port, ca=ca.cert,
                        bootstrap=["127.0.0.1"])
    d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(conf)])
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer


def test_ipv6_literal_checked_against_ip_san(dnsveil, tmp_path, pki, knot):
    """tls://[::1]:PORT is verified against an IPv6 SAN (wolfSSL prints
    those in full, upper-case form; dnsveil normalises to match) and fails
    against a certificate whose only IP SAN is 127.0.0.1."""
    need("unbound")
    if not helpers.have_ipv6():
        pytest.skip("no ::1 on this machine")
    ca, certs = pki
    v6 = ca.issue("dot.test", ["dot.test"], ["::1"])
    peers_ = []
    try:
        for cert in (v6, certs["good"]):
            p = tlspeers.UnboundDoT("unbound", tmp_path / ("v6-%d" % len(peers_)), cert[0],
                                    cert[1], ca.cert)
            peers_.append(p)
            p.start(knot.port, v6=True, check_dot=False)
        for i, p in enumerate(peers_):
            conf = write_config(tmp_path, "tls://[::1]:%d" % p.tls_port, ca=ca.cert,
                                name="v6peer%d" % i)
            d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(conf)])
            r = ask(d, "www.test.")
            if i == 0:
                assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]
            else:
                assert r.rcode() == dns.rcode.SERVFAIL
                assert ("upstream v6peer1: certificate verify failed: hostname mismatch "
                        "(wanted 0000:0000:0000:0000:0000:0000:0000:0001") in d.log_text()
    finally:
        for p in peers_:
            p.stop()


def test_matching_pin_is_accepted(peers, dnsveil, tmp_path, pki, taps):
    ca, certs = pki
    p = peers.get("unbound")
    tap = taps(p.tls_port)
    d = start_dot(dnsveil, tmp_path, pki, tap.port, tls_name="dot.test",
                  pins=["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                        tlspeers.spki_pin(certs["good"][0])])
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert_encrypted(tap, ["www.test."])


def test_nothing_in_plaintext(peers, dnsveil, tmp_path, pki, taps):
    p = peers.get("unbound")
    tap = taps(p.tls_port)
    d = start_dot(dnsveil, tmp_path, pki, tap.port)
    names = ["www.test.", "mail.test.", "multi.test.", "secret-%d.test." % random.getrandbits(20)]
    for n in names:
        ask(d, n)
    assert_encrypted(tap, names)


# --------------------------------------------------------------------------
# verification failures: SERVFAIL in time, one clear line, no plaintext

FAILURES = [
    # (id, peer certificate, config, expected log text)
    ("hostname", "good", {"tls_name": "wrong.test"},
     "certificate verify failed: hostname mismatch (wanted wrong.test, cert has "),
    ("ip-san-missing", "dnsonly", {},
     "certificate verify failed: hostname mismatch (wanted 127.0.0.1, cert has dot.test)"),
    ("unknown-ca", "foreign", {}, "certificate verify failed: unknown CA"),
    ("expired", "expired", {}, "certificate verify failed: certificate expired"),
    ("pin", "good", {"pins": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]},
     "certificate verify failed: pin mismatch (server key pin is "),
]


@pytest.mark.parametrize("case,cert,conf,expect", FAILURES, ids=[f[0] for f in FAILURES])
def test_verification_failure(case, cert, conf, expect, peers, dnsveil, tmp_path, pki, taps):
    p = peers.get("unbound", cert)
    tap = taps(p.tls_port)
    d = start_dot(dnsveil, tmp_path, pki, tap.port, **conf)
    name = "leak-%s-%d.test." % (case, random.getrandbits(20))
    t0 = time.monotonic()
    r = ask(d, name)
    elapsed = time.monotonic() - t0
    assert r.rcode() == dns.rcode.SERVFAIL
    assert elapsed < TIMEOUT_MS / 1000.0 + 0.5
    log = d.log_text()
    assert "upstream dot1: " + expect in log, log[-3000:]
    assert_encrypted(tap, [name])


def test_verification_failure_fails_over(peers, dnsveil, tmp_path, pki):
    """The first upstream presents a certificate for another name: the query
    moves on to the second (a good DoT server) and is answered."""
    ca, _ = pki
    bad = peers.get("unbound", "foreign")
    good = peers.get("unbound")
    conf = tmp_path / "failover.toml"
    conf.write_text("""\
[upstreams.bad]
url = "tls://127.0.0.1:%d"
tls_ca = "%s"

[upstreams.good]
url = "tls://127.0.0.1:%d"
tls_ca = "%s"

[groups.default]
upstreams = ["bad", "good"]
strategy = "failover"
""" % (bad.tls_port, ca.cert, good.tls_port, ca.cert))
    d = dnsveil(timeout=3000, extra=["-c", str(conf)])
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert "upstream bad: certificate verify failed: unknown CA" in d.log_text()


# --------------------------------------------------------------------------
# the server dies under load

def test_peer_killed_mid_load(knot, dnsveil, tmp_path, pki, relay_factory):
    """unbound answers through a relay that delays each answer by 0.6 s, so
    queries are in flight when it is killed: every client query must still
    get an answer or SERVFAIL within its deadline."""
    need("unbound")
    ca, certs = pki
    slow = relay_factory(delay=0.6)
    p = tlspeers.UnboundDoT("unbound", tmp_path / "victim", certs["good"][0],
                            certs["good"][1], ca.cert)
    try:
        p.start(slow.port, idle_ms=10000, check_dot=False)
        tlspeers.wait_for_dot(p.tls_port, ca.cert, p.proc, p.log, deadline=20)
        d = start_dot(dnsveil, tmp_path, pki, p.tls_port, timeout=2500)
        tag = "%06x" % random.getrandbits(24)
        names = ["k%d-%s.test." % (i, tag) for i in range(200)]
        import threading
        killer = threading.Timer(0.3, p.kill)
        killer.start()
        got = blast(d.host, d.port, names, deadline=2.5 + 1.0)
        killer.join()
    finally:
        p.stop()
    missing = [n for i, n in enumerate(names) if i not in got]
    assert not missing, "%d queries got no reply at all" % len(missing)
    late = [t for _, t in got.values() if t > 2.5 + 0.5]
    assert not late, "%d replies after the deadline" % len(late)
    rcodes = {rc for rc, _ in got.values()}
    assert rcodes <= {dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL}, rcodes
    assert dns.rcode.SERVFAIL in rcodes


# --------------------------------------------------------------------------
# connections that end under the queries

def test_dropped_connection_retried_once(knot, dnsveil, tmp_path, pki):
    """dnsdist ends every DoT connection after 40 queries, dropping the rest
    of the pipeline unanswered: those queries go again, once, on a new
    connection, so all 60 are answered."""
    need("dnsdist")
    ca, certs = pki
    p = tlspeers.DnsdistDoT("dnsdist", tmp_path / "dd40", certs["good"][0], certs["good"][1],
                            ca.cert)
    try:
        p.start(knot.port, idle_ms=10000, extra="setMaxTCPQueriesPerConnection(40)")
        d = start_dot(dnsveil, tmp_path, pki, p.tls_port, timeout=4000)
        tag = "%06x" % random.getrandbits(24)
        names = ["r%d-%s.test." % (i, tag) for i in range(60)]
        got = blast(d.host, d.port, names, deadline=5.0)
    finally:
        p.stop()
    assert len(got) == len(names)
    assert {rc for rc, _ in got.values()} == {dns.rcode.NXDOMAIN}
    log = d.log_text()
    assert "connection lost" in log, log[-2000:]
    assert log.count("connected (") >= 2


def test_late_answers_after_the_deadline(knot, dnsveil, tmp_path, pki, taps):
    """Answers that arrive after the caller gave up (cancelled queries; a tap
    holds the server's bytes back) are dropped on the still-open connection
    and do not confuse the queries that follow on it. (The server keeps idle
    connections for 10 s here: with only cancelled queries left, dnsveil
    would otherwise close the connection as idle before they come back.)"""
    need("unbound")
    ca, certs = pki
    p = tlspeers.UnboundDoT("unbound", tmp_path / "late", certs["good"][0], certs["good"][1],
                            ca.cert)
    p.start(knot.port, idle_ms=10000)
    try:
        _late_answers(p, dnsveil, tmp_path, pki, taps)
    finally:
        p.stop()


def _late_answers(p, dnsveil, tmp_path, pki, taps):
    tap = taps(p.tls_port)
    d = start_dot(dnsveil, tmp_path, pki, tap.port, timeout=1000)
    tag = "%06x" % random.getrandbits(24)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR  # connection up
    tap.delay = 2.0
    first = blast(d.host, d.port, ["l%d-%s.test." % (i, tag) for i in range(50)], deadline=3.0)
    tap.delay = 0.0
    time.sleep(2.5)  # the held answers have all gone through by now
    second = blast(d.host, d.port, ["m%d-%s.test." % (i, tag) for i in range(50)],
                   deadline=3.0)
    assert len(first) == 50
    assert {rc for rc, _ in first.values()} == {dns.rcode.SERVFAIL}
    assert len(second) == 50
    assert {rc for rc, _ in second.values()} == {dns.rcode.NXDOMAIN}
    assert tap.connections == 1
    log = d.log_text()
    assert "bad answer" not in log, log[-2000:]
    assert "late answer to a cancelled query dropped" in log


# --------------------------------------------------------------------------
# protocol versions

def test_tls12_server_works_and_resumes(knot, dnsveil, tmp_path, pki):
    """A TLS 1.2-only server (OpenSSL via Python's ssl, relaying to knotd)
    is accepted, and the reconnect after it closes the idle connection
    resumes the session."""
    ca, certs = pki
    t = tlspeers.TlsTerminator(certs["good"][0], certs["good"][1], knot.port,
                               max_version=ssl.TLSVersion.TLSv1_2, idle=0.5)
    try:
        d = start_dot(dnsveil, tmp_path, pki, t.port)
        assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
        time.sleep(1.0)
        r = ask(d, "mail.test.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        with t.lock:
            hs = list(t.handshakes)
    finally:
        t.close()
    assert len(hs) >= 2 and all(v == "TLSv1.2" for v, _ in hs), hs
    assert hs[-1][1], "the reconnect did not resume: %s" % hs
    assert "TLSv1.2" in d.log_text() and "resumed session" in d.log_text()


def test_tls11_server_refused(knot, dnsveil, tmp_path, pki):
    """Nothing below TLS 1.2: a server that offers at most 1.1 fails the
    handshake, the query gets SERVFAIL, and no query is sent."""
    ca, certs = pki
    try:
        t = tlspeers.TlsTerminator(certs["good"][0], certs["good"][1], knot.port,
                                   max_version=ssl.TLSVersion.TLSv1_1,
                                   min_version=ssl.TLSVersion.TLSv1)
    except (ssl.SSLError, ValueError) as e:
        pytest.skip("this OpenSSL cannot offer TLS 1.1: %s" % e)
    try:
        d = start_dot(dnsveil, tmp_path, pki, t.port)
        r = ask(d, "www.test.")
    finally:
        t.close()
    assert r.rcode() == dns.rcode.SERVFAIL
    assert "upstream dot1: tls handshake failed" in d.log_text(), d.log_text()[-2000:]
    assert not t.handshakes


# --------------------------------------------------------------------------
# what goes on the wire inside TLS

def edns_options(wire):
    m = dns.message.from_wire(wire)
    return {o.otype: o for o in m.options}


def test_queries_padded_with_keepalive_and_no_client_subnet(knot, dnsveil, tmp_path, pki):
    """Inside TLS every query is a multiple of 128 bytes (RFC 8467), offers
    edns-tcp-keepalive with no timeout (RFC 7828), and carries no
    client-subnet even when the client sent one."""
    ca, certs = pki
    t = tlspeers.TlsTerminator(certs["good"][0], certs["good"][1], knot.port, idle=5.0)
    try:
        d = start_dot(dnsveil, tmp_path, pki, t.port)
        for name in ("www.test.", "a-rather-longer-label-to-change-the-size.mail.test."):
            q = helpers.make_query(name, "A", edns=0, payload=1232)
            q.use_edns(0, 0, 1232, options=[dns.edns.ECSOption("192.0.2.0", 24)])
            dns.query.udp(q, d.host, port=d.port, timeout=3)
        with t.lock:
            seen = list(t.queries)
    finally:
        t.close()
    assert len(seen) >= 2
    for wire in seen:
        assert len(wire) % 128 == 0, len(wire)
        opts = edns_options(wire)
        assert 12 in opts  # padding
        assert 11 in opts and opts[11].to_wire() == b""  # keepalive, empty in queries
        assert 8 not in opts  # no client subnet


def test_server_keepalive_timeout_honoured(knot, dnsveil, tmp_path, pki):
    """The server says (edns-tcp-keepalive) it keeps idle connections for
    0.8 s although it would wait 5 s: dnsveil closes its idle connection
    before then, and the next query reconnects."""
    ca, certs = pki
    t = tlspeers.TlsTerminator(certs["good"][0], certs["good"][1], knot.port, idle=5.0,
                               keepalive=8)
    try:
        d = start_dot(dnsveil, tmp_path, pki, t.port)
        assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
        t0 = time.monotonic()
        while tlspeers.established(t.port) and time.monotonic() - t0 < 4:
            time.sleep(0.05)
        closed_after = time.monotonic() - t0
        assert ask(d, "mail.test.").rcode() == dns.rcode.NOERROR
    finally:
        t.close()
    assert closed_after < 1.5, "idle connection kept %.1f s" % closed_after
    assert "closing idle connection" in d.log_text()
