"""Happy Eyeballs (RFC 8305) for an upstream host name with several
bootstrap addresses, over DoT and DoH against real unbound peers: IPv6 is
tried first, IPv4 250 ms later when IPv6 has not connected, at once when it
failed, and every address is tried. The IPv6 address is made a black hole
on loopback: a listener whose accept queue is full drops further SYNs."""

import re
import shutil
import socket
import time

import dns.rcode
import pytest

import dohpeers
import helpers
import tlspeers

TIMEOUT_MS = 4000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("happypki") / "ca")
    return ca, ca.issue("up.test", ["up.test"])


@pytest.fixture(scope="module")
def peers(tmp_path_factory, knot, pki):
    if shutil.which("unbound") is None:
        pytest.skip("unbound is not installed")
    if not helpers.have_ipv6():
        pytest.skip("no ::1")
    ca, (crt, key) = pki
    base = tmp_path_factory.mktemp("happypeers")
    dot = tlspeers.UnboundDoT("unbound", base / "dot", crt, key, ca.cert)
    dot.start(knot.port, check_dot=False)
    doh = dohpeers.UnboundDoH("unbound", base / "doh", crt, key, ca.cert)
    doh.start(knot.port, check_doh=False)
    yield {"tls": dot, "https": doh}
    dot.stop()
    doh.stop()


class BlackHole:
    """[::1]:port accepting nothing: two connections fill its queue, so the
    kernel drops every further SYN (the connect hangs, as to a dead host)."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.bind(("::1", port))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(2):
            f = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(("::1", port))
            except BlockingIOError:
                pass
            self.fillers.append(f)
        time.sleep(0.1)

    def close(self):
        for s in self.fillers + [self.sock]:
            s.close()


def url(scheme, port):
    return "%s://up.test:%d%s" % (scheme, port, "/dns-query" if scheme == "https" else "")


def start(dnsveil, cfgdir, pki, scheme, port, bootstrap):
    ca, _ = pki
    cfg = cfgdir / ("happy-%s.toml" % scheme)
    cfg.write_text('[upstreams.up]\nurl = "%s"\nbootstrap = [%s]\n[cache]\nenabled = false\n'
                   % (url(scheme, port), ", ".join('"%s"' % b for b in bootstrap)))
    return dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(cfg), "--tls-ca", str(ca.cert)])


def ask(d, name):
    q = helpers.make_query(name, "A", edns=0, payload=1232)
    t = time.monotonic()
    wire = helpers.udp_exchange(q.to_wire(), d.host, d.port, timeout=TIMEOUT_MS / 1000 + 2)
    assert wire is not None
    return dns.message.from_wire(wire), time.monotonic() - t


def attempt_times(log, port):
    """(address, seconds since midnight) of each 'connecting to' line."""
    out = []
    for m in re.finditer(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) dnsveil\[debug\]: upstream up: "
                         r"connecting to (\S+)", log):
        h, mi, s, ms, addr = m.groups()
        out.append((addr, int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000))
    return out


import dns.message  # noqa: E402


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_ipv6_black_hole_then_ipv4_after_250ms(scheme, peers, dnsveil, cfgdir, pki):
    p = peers[scheme]
    hole = BlackHole(p.tls_port)
    try:
        # listed IPv4 first: the race still starts with IPv6 (RFC 8305 4)
        d = start(dnsveil, cfgdir, pki, scheme, p.tls_port, ["127.0.0.1", "::1"])
        r, elapsed = ask(d, "www.test.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]
        tries = attempt_times(d.log_text(), p.tls_port)
        assert [a for a, _ in tries[:2]] == ["[::1]:%d" % p.tls_port,
                                             "127.0.0.1:%d" % p.tls_port], tries
        gap = tries[1][1] - tries[0][1]
        assert 0.2 <= gap < 1.5, tries
    finally:
        hole.close()


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_refused_address_moves_on_at_once(scheme, peers, dnsveil, cfgdir, pki):
    p = peers[scheme]
    # nothing listens on [::1]:port: refused, and IPv4 starts without waiting
    d = start(dnsveil, cfgdir, pki, scheme, p.tls_port, ["::1", "127.0.0.1"])
    r, _ = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]
    tries = attempt_times(d.log_text(), p.tls_port)
    if len(tries) >= 2:  # a refusal may even come back inside connect()
        assert tries[1][1] - tries[0][1] < 0.2, tries
    assert tries[-1][0] == "127.0.0.1:%d" % p.tls_port, tries


def test_every_address_tried(peers, dnsveil, cfgdir, pki):
    """Three addresses, the first two dead: the third answers."""
    p = peers["tls"]
    hole = BlackHole(p.tls_port)
    try:
        d = start(dnsveil, cfgdir, pki, "tls", p.tls_port, ["::1", "127.0.0.3", "127.0.0.1"])
        r, _ = ask(d, "www.test.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]
        tried = [a for a, _ in attempt_times(d.log_text(), p.tls_port)]
        assert tried[:3] == ["[::1]:%d" % p.tls_port, "127.0.0.3:%d" % p.tls_port,
                             "127.0.0.1:%d" % p.tls_port], tried
    finally:
        hole.close()


def test_all_dead_is_servfail_in_time(peers, dnsveil, cfgdir, pki):
    p = peers["tls"]
    hole = BlackHole(p.tls_port)
    try:
        d = start(dnsveil, cfgdir, pki, "tls", p.tls_port, ["::1", "127.0.0.3"])
        r, elapsed = ask(d, "www.test.")
        assert r.rcode() == dns.rcode.SERVFAIL
        assert elapsed < TIMEOUT_MS / 1000 + 1.5
    finally:
        hole.close()


# --------------------------------------------------------------------------
# DoQ: one handshake at a time; a silent address is left after 250 ms

import doqpeers  # noqa: E402


def test_doq_silent_ipv6_then_ipv4(dnsveil, cfgdir, pki, knot, tmp_path):
    if not doqpeers.have_go():
        pytest.skip("go is not installed: no DoQ peer")
    if not helpers.have_ipv6():
        pytest.skip("no ::1")
    ca, (crt, key) = pki
    p = doqpeers.DoqPeer("doq", tmp_path / "doq", crt, key, ca.cert)
    p.start(knot.port)
    # a UDP socket on [::1]:port that never answers: as silent as a dead path
    hole = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    hole.bind(("::1", p.port))
    try:
        cfg = cfgdir / "happy-doq.toml"
        cfg.write_text('[upstreams.up]\nurl = "quic://up.test:%d"\n'
                       'bootstrap = ["127.0.0.1", "::1"]\n[cache]\nenabled = false\n' % p.port)
        d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(cfg), "--tls-ca", str(ca.cert)])
        r, elapsed = ask(d, "www.test.")
        log = d.log_text()
        assert r.rcode() == dns.rcode.NOERROR and r.answer, log[-2000:]
        first = log.index("connection 1 to up.test ([::1]:%d)" % p.port)
        gave_up = log.index("no answer from [::1]:%d in 250 ms" % p.port)
        second = log.index("connection 2 to up.test (127.0.0.1:%d)" % p.port)
        assert first < gave_up < second, log[-2000:]
    finally:
        hole.close()
        p.stop()
