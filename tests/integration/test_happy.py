"""Happy Eyeballs (RFC 8305) for an upstream host name with several
bootstrap addresses, over DoT and DoH against real unbound peers: IPv6 is
tried first, IPv4 250 ms later when IPv6 has not connected, at once when it
failed, and every address is tried. The IPv6 address is made a black hole
on loopback: a listener whose accept queue is full drops further SYNs."""

import re
import shutil
import signal
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
# DoQ: handshakes race (RFC 8305 5): the next address starts 250 ms after the
# previous one when no handshake has completed, beside it; the first to
# complete wins and the others are closed

import threading  # noqa: E402

import doqpeers  # noqa: E402


def doq_peer(pki, knot, tmp_path):
    if not doqpeers.have_go():
        pytest.skip("go is not installed: no DoQ peer")
    ca, (crt, key) = pki
    p = doqpeers.DoqPeer("doq", tmp_path / "doq", crt, key, ca.cert)
    p.start(knot.port)
    return p


def doq_start(dnsveil, cfgdir, pki, port, bootstrap):
    ca, _ = pki
    cfg = cfgdir / "happy-doq.toml"
    cfg.write_text('[upstreams.up]\nurl = "quic://up.test:%d"\nbootstrap = [%s]\n'
                   '[cache]\nenabled = false\n'
                   % (port, ", ".join('"%s"' % b for b in bootstrap)))
    return dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(cfg), "--tls-ca", str(ca.cert)])


def doq_attempts(log):
    """{connection number: (address, seconds since midnight)}."""
    out = {}
    for m in re.finditer(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) dnsveil\[debug\]: upstream up: "
                         r"doq: connection (\d+) to up\.test \((\S+)\)", log):
        h, mi, s, ms, n, addr = m.groups()
        out[int(n)] = (addr, int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000)
    return out


class SlowPath:
    """A UDP relay on host:port to the peer on 127.0.0.1:target that holds
    every datagram from the peer back for `delay` seconds: an address whose
    handshake takes that long."""

    def __init__(self, host, port, target, delay):
        self.target, self.delay = ("127.0.0.1", target), delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.flows = {}  # client address -> socket towards the peer
        self.due = []    # (time, data, client)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            now = time.monotonic()
            while self.due and self.due[0][0] <= now:
                _, data, client = self.due.pop(0)
                self.sock.sendto(data, client)
            wait = min(0.05, max(0.0, self.due[0][0] - now)) if self.due else 0.05
            back = {s: a for a, s in self.flows.items()}
            r, _, _ = select.select([self.sock] + list(back), [], [], wait)
            for s in r:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.sock:
                    up = self.flows.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(self.target)
                        self.flows[addr] = up
                    up.send(data)
                else:
                    self.due.append((time.monotonic() + self.delay, data, back[s]))

    def close(self):
        self.running = False
        self.thread.join(2)
        for s in list(self.flows.values()) + [self.sock]:
            s.close()


import select  # noqa: E402


def test_doq_silent_ipv6_then_ipv4_races(dnsveil, cfgdir, pki, knot, tmp_path):
    """[::1] never answers: 127.0.0.1 starts 250 ms later while the first
    handshake goes on, wins, and the silent attempt is closed."""
    if not helpers.have_ipv6():
        pytest.skip("no ::1")
    p = doq_peer(pki, knot, tmp_path)
    # a UDP socket on [::1]:port that never answers: as silent as a dead path
    hole = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    hole.bind(("::1", p.port))
    try:
        d = doq_start(dnsveil, cfgdir, pki, p.port, ["127.0.0.1", "::1"])
        r, elapsed = ask(d, "www.test.")
        log = d.log_text()
        assert r.rcode() == dns.rcode.NOERROR and r.answer, log[-2000:]
        tries = doq_attempts(log)
        assert tries[1][0] == "[::1]:%d" % p.port, log[-2000:]
        assert tries[2][0] == "127.0.0.1:%d" % p.port, log[-2000:]
        gap = tries[2][1] - tries[1][1]
        assert 0.2 <= gap < 1.5, tries
        # the first attempt was still running when the second won
        assert ("connection 2 (127.0.0.1:%d) won the race; closing connection 1" % p.port
                in log), log[-2000:]
        assert elapsed < 2.5
    finally:
        hole.close()
        p.stop()


def test_doq_slow_first_address_wins_after_second_started(dnsveil, cfgdir, pki, knot,
                                                           tmp_path):
    """The first address answers after 500 ms, the second after 3 s: the
    second handshake starts at 250 ms, the first completes and wins, the
    second is closed (the peer sees the client close it), and every query is
    sent and answered once, on the winner. The daemon's readiness probe is
    the query that starts the race."""
    p = doq_peer(pki, knot, tmp_path)
    port = helpers.free_port()
    fast, slow = "127.0.0.12", "127.0.0.13"
    paths = [SlowPath(fast, port, p.port, 0.5), SlowPath(slow, port, p.port, 3.0)]
    try:
        d = doq_start(dnsveil, cfgdir, pki, port, [fast, slow])
        q = helpers.make_query("www.test.", "A", edns=0, payload=1232)
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(TIMEOUT_MS / 1000 + 2)
        c.sendto(q.to_wire(), (d.host, d.port))
        r = dns.message.from_wire(c.recv(65535))
        assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]
        c.settimeout(0.7)
        with pytest.raises(socket.timeout):  # one answer, no more
            c.recv(65535)
        c.close()
        log = d.log_text()
        tries = doq_attempts(log)
        assert tries[1][0] == "%s:%d" % (fast, port) and tries[2][0] == "%s:%d" % (slow, port), \
            log[-2000:]
        assert 0.2 <= tries[2][1] - tries[1][1] < 1.5, tries
        # the second had started when the first completed
        assert log.index("connection 2 to up.test") < log.index("connection 1 ready"), log[-2000:]
        assert ("connection 1 (%s:%d) won the race; closing connection 2" % (fast, port)
                in log), log[-2000:]
        assert p.wait_stat("client_closed", 1), p.stats()
        st = p.stats()
        assert st["connections"] == 2 and st["client_closed"] == 1, st
        # the readiness probe (which ran the race) and ours: each sent once
        assert st["streams"] == 2 and st["answers"] == 2, st
        # the winner stays: the next query goes over it, no new connection
        r2, _ = ask(d, "www.test.")
        assert r2.rcode() == dns.rcode.NOERROR and r2.answer
        st = p.stats()
        assert st["connections"] == 2 and st["client_closed"] == 1 and st["answers"] == 3, st
        assert "connection 3 to" not in d.log_text()
    finally:
        for s in paths:
            s.close()
        p.stop()


def test_doq_refused_racer_starts_the_next_at_once(dnsveil, cfgdir, pki, knot, tmp_path):
    """[::1] silent, 127.0.0.14 refuses (ICMP port unreachable), 127.0.0.1
    answers: the refused second attempt neither ends the race nor fails the
    queries; the third starts at once, while the first still runs."""
    if not helpers.have_ipv6():
        pytest.skip("no ::1")
    p = doq_peer(pki, knot, tmp_path)
    hole = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    hole.bind(("::1", p.port))
    try:
        d = doq_start(dnsveil, cfgdir, pki, p.port, ["::1", "127.0.0.14", "127.0.0.1"])
        r, _ = ask(d, "www.test.")
        log = d.log_text()
        assert r.rcode() == dns.rcode.NOERROR and r.answer, log[-3000:]
        tries = doq_attempts(log)
        assert [tries[i][0] for i in (1, 2, 3)] == [
            "[::1]:%d" % p.port, "127.0.0.14:%d" % p.port, "127.0.0.1:%d" % p.port], tries
        assert 0.2 <= tries[2][1] - tries[1][1] < 1.5, tries
        assert tries[3][1] - tries[2][1] < 0.2, tries
        assert ("connection 3 (127.0.0.1:%d) won the race; closing connection 1" % p.port
                in log), log[-3000:]
        # no query failed on the way: not even the readiness probe, which
        # was the one that started the race
        d.send_signal(signal.SIGUSR1)
        end = time.monotonic() + 5
        while "stats: " not in d.log_text() and time.monotonic() < end:
            time.sleep(0.05)
        stats = re.search(r"stats: .*", d.log_text()).group(0)
        assert " servfail=0 " in stats and " upstream_failed=0 " in stats, stats
    finally:
        hole.close()
        p.stop()


def test_doq_early_data_on_the_loser_goes_to_the_winner(dnsveil, cfgdir, pki, knot,
                                                         tmp_path):
    """With a session ticket the first attempt sends the query as 0-RTT at
    once; when its address has gone slow and the second address's handshake
    completes first, the query moves to the winner and is answered once."""
    ca, (crt, key) = pki
    if not doqpeers.have_go():
        pytest.skip("go is not installed: no DoQ peer")
    p = doqpeers.DoqPeer("doq", tmp_path / "doq", crt, key, ca.cert)
    p.start(knot.port, idle=1.0)  # the first connection goes idle quickly
    port = helpers.free_port()
    first, second = "127.0.0.15", "127.0.0.16"
    paths = [SlowPath(first, port, p.port, 0.0), SlowPath(second, port, p.port, 0.0)]
    try:
        d = doq_start(dnsveil, cfgdir, pki, port, [first, second])
        end = time.monotonic() + 5
        while "connection idle" not in d.log_text() and time.monotonic() < end:
            time.sleep(0.05)
        assert "connection idle" in d.log_text(), d.log_text()[-2000:]
        paths[0].delay = 3.0  # the first address goes slow
        q = helpers.make_query("www.test.", "A", edns=0, payload=1232)
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(TIMEOUT_MS / 1000 + 2)
        t = time.monotonic()
        c.sendto(q.to_wire(), (d.host, d.port))
        r = dns.message.from_wire(c.recv(65535))
        elapsed = time.monotonic() - t
        log = d.log_text()
        assert r.rcode() == dns.rcode.NOERROR and r.answer, log[-3000:]
        assert elapsed < 2.0, (elapsed, log[-3000:])
        c.settimeout(0.7)
        with pytest.raises(socket.timeout):  # one answer, no more
            c.recv(65535)
        c.close()
        tries = doq_attempts(log)
        assert tries[2][0] == "%s:%d" % (first, port), tries
        assert tries[3][0] == "%s:%d" % (second, port), tries
        assert "connection 2 to up.test (%s:%d) with 0-RTT" % (first, port) in log, log[-3000:]
        assert ("connection 3 (%s:%d) won the race; closing connection 2" % (second, port)
                in log), log[-3000:]
    finally:
        for s in paths:
            s.close()
        p.stop()
