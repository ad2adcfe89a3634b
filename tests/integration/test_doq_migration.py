"""QUIC connection migration after a network change (issue 14). dnsveil runs
in one network namespace with a quic:// upstream in the other (netns.py).
After one query has warmed the connection, the client's address changes (a
new one added, the old one deleted) or its default route moves to another
uplink, so the kernel would now send from another source address.

- Against a server that allows active migration, the connection moves to
  the new path with its streams (ngtcp2 client migration): the next query
  is answered NOERROR promptly, the metrics count one migration and no
  second connection. Debian packages no DoQ server that migrates (knotd
  3.2 has no DoQ, the Go peer's quic-go forbids it), so the server is
  dnsveil's own DoQ listener (an ngtcp2 server) in the server namespace,
  with unbound as its plain upstream.
- Against the Go DoQ peer (quic-go sends disable_active_migration), the
  change gives a prompt NOERROR through a new connection with 0-RTT; the
  metrics count a reconnect and no migration.
- A new path that never validates (the server's answers to it are
  blackholed) is given up, counted as a failed migration, and a new
  connection takes over.
- The listener judges a migrated client by its validated new address (its
  allow list refuses it there).

The first two print their first-query latency after the change."""

import re
import time

import dns.rcode
import pytest

import doqpeers
import helpers
import netns
import tlspeers

PORT = 5300
METRICS = 9153
DEADLINE_MS = 2500
FIRST_ANSWER_MAX = 1.5  # as test_netchange.py: generous for a loaded machine

pytestmark = pytest.mark.skipif(netns.usable() is not None, reason=str(netns.usable()))

CHANGES = {
    "address": netns.Pair.move_address,
    "route": netns.Pair.move_default_route,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("migpki"))
    return ca, ca.issue("dns.test", ["dns.test"], [netns.SERVER])


class World(netns.World):
    """unbound and a DoQ server (dnsveil's listener or the Go peer) in the
    server namespace, the dnsveil under test in the client namespace."""

    def __init__(self, made, tmp_path, pki, server, server_conf=""):
        super().__init__(tmp_path)
        made.append(self)  # torn down even when the rest fails
        ca, (cert, key) = pki
        srv, cli = self.pair.server, self.pair.client
        conf = tmp_path / "unbound.conf"
        conf.write_text(netns.unbound_conf(tmp_path, cert, key))
        unbound = self.spawn(srv, ["unbound", "-d", "-c", conf], "unbound.log")
        netns.wait_answer(srv, 53, host=netns.SERVER, proc=unbound)
        if server == "dnsveil":
            scfg = tmp_path / "server.toml"
            scfg.write_text('[server]\nlisten_quic = "%s:8853"\ncert = "%s"\nkey = "%s"\n%s\n'
                            % (netns.SERVER, cert, key, server_conf))
            self.server = self.spawn(srv, [helpers.dnsveil_bin(), "-c", scfg,
                                           "-l", "127.0.0.1:%d" % PORT,
                                           "-u", "udp://%s:53" % netns.SERVER, "-v"],
                                     "server.log", checked=True)
            netns.wait_answer(srv, PORT, proc=self.server)
        else:
            binary = doqpeers.peer_binary()
            if binary is None:
                pytest.skip("go is not installed: no DoQ peer")
            self.server = self.spawn(srv, [binary, "-listen", "%s:8853" % netns.SERVER,
                                           "-cert", cert, "-key", key,
                                           "-upstream", "%s:53" % netns.SERVER,
                                           "-stats", tmp_path / "doq.stats",
                                           "-idle", "30000ms"], "doq.log")
        ccfg = tmp_path / "client.toml"
        ccfg.write_text('[metrics]\nlisten = "127.0.0.1:%d"\n' % METRICS)
        self.dnsveil = self.spawn(cli, [helpers.dnsveil_bin(), "-c", ccfg,
                                        "-l", "127.0.0.1:%d" % PORT,
                                        "-u", "quic://%s:8853" % netns.SERVER,
                                        "--tls-ca", ca.cert, "--timeout", DEADLINE_MS, "-v"],
                                  "dnsveil.log", checked=True)
        netns.wait_answer(cli, PORT, proc=self.dnsveil)

    def ask(self, name, timeout=5.0):
        return netns.query(self.pair.client, PORT, name, timeout=timeout)

    def metrics(self):
        """{(name, frozenset(labels)): value} from the client's /metrics,
        fetched from inside its namespace."""
        s = self.pair.client.socket(netns.socket.AF_INET, netns.socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect(("127.0.0.1", METRICS))
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        out = {}
        for m in re.finditer(r"^(\w+)\{([^}]*)\} (\S+)$", data.decode(errors="replace"), re.M):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def counter(self, name, **want):
        """name summed over the series whose labels include want."""
        w = set(want.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and w <= ls)


@pytest.fixture
def world(tmp_path, pki):
    yield from netns.worlds(lambda made, *args, **kw: World(made, tmp_path, pki, *args, **kw))


def wait_counter(w, name, want, deadline=5.0, **labels):
    end = time.monotonic() + deadline
    while True:
        got = w.counter(name, **labels)
        if got >= want or time.monotonic() > end:
            return got
        time.sleep(0.05)


def change_and_ask(w, change):
    """(first answer's latency, connections opened before the change,
    handshakes before it)."""
    rc, _ = w.ask("warm.test.")
    assert rc == dns.rcode.NOERROR
    # (the first connection may have met a server not yet listening)
    conns = w.counter("dnsveil_upstream_connections_opened_total", transport="doq")
    hs = w.counter("dnsveil_upstream_handshakes_total", transport="doq")
    CHANGES[change](w.pair)
    rc, took = w.ask("first-after.test.")
    assert rc == dns.rcode.NOERROR, w.dnsveil.text()[-3000:]
    assert took < FIRST_ANSWER_MAX, w.dnsveil.text()[-3000:]
    for i in range(3):  # and the next ones too, not just one lucky answer
        rc, t = w.ask("after%d.test." % i)
        assert rc == dns.rcode.NOERROR and t < FIRST_ANSWER_MAX, w.dnsveil.text()[-3000:]
    # the answers may have come before netmon reported the change (a send
    # that found no route acts at once): count only once it has
    end = time.monotonic() + 5
    while "network changed (" not in w.dnsveil.text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "network changed (" in w.dnsveil.text()
    time.sleep(0.2)
    rc, t = w.ask("settled.test.")
    assert rc == dns.rcode.NOERROR and t < FIRST_ANSWER_MAX, w.dnsveil.text()[-3000:]
    return took, conns, hs


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_migrates_when_the_server_allows_it(world, change):
    w = world("dnsveil")
    took, conns, hs = change_and_ask(w, change)
    print("\nfirst query after %s change over quic://, connection migrated: NOERROR in %.1f ms"
          % (change, took * 1000))
    text = w.dnsveil.text()
    assert re.search(r"doq connection \d+ migrates from 10\.99\.1\.2:\d+ to 10\.99\.[12]\.[23]:",
                     text), text[-3000:]
    ok = wait_counter(w, "dnsveil_upstream_migrations_total", 1, result="ok")
    assert ok == 1, text[-3000:]
    assert w.counter("dnsveil_upstream_migrations_total", result="failed") == 0
    # the same connection carried on: no second one, no new handshake
    assert w.counter("dnsveil_upstream_connections_opened_total", transport="doq") == conns
    assert w.counter("dnsveil_upstream_handshakes_total", transport="doq") == hs
    # (the server reached the client on its new path: the old address is
    # deleted, or, after the route change, unreachable from the server)
    assert "a new one with 0-RTT takes over" not in text


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_reconnects_when_the_server_forbids_migration(world, change):
    w = world("go")
    took, conns, _ = change_and_ask(w, change)
    print("\nfirst query after %s change over quic://, server forbids migration, 0-RTT "
          "reconnect: NOERROR in %.1f ms" % (change, took * 1000))
    text = w.dnsveil.text()
    assert "migrat" not in text.replace("not migratable (the server forbids it)", ""), \
        text[-3000:]
    assert w.counter("dnsveil_upstream_migrations_total", result="ok") == 0
    assert w.counter("dnsveil_upstream_migrations_total", result="failed") == 0
    # a new connection: at once when a send found no route, and (again) when
    # netmon reported the change
    assert w.counter("dnsveil_upstream_connections_opened_total", transport="doq") > conns
    assert w.counter("dnsveil_upstream_handshakes_total", transport="doq",
                     kind="early_accepted") >= 1


def test_failed_path_validation_reconnects(world):
    """The server allows migration, but nothing it sends reaches the
    client's new address: the migrated connection's path never validates.
    That counts as a failed migration and a new connection takes over, which
    works once the path does."""
    w = world("dnsveil")
    rc, _ = w.ask("warm.test.")
    assert rc == dns.rcode.NOERROR
    conns = w.counter("dnsveil_upstream_connections_opened_total", transport="doq")
    srv = w.pair.server
    srv.ip("route", "add", "blackhole", "default", "table", "99")
    srv.ip("rule", "add", "to", netns.CLIENT_B, "lookup", "99")
    netns.Pair.move_default_route(w.pair)
    end = time.monotonic() + 5
    while "migrates from" not in w.dnsveil.text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "migrates from" in w.dnsveil.text(), w.dnsveil.text()[-3000:]
    t0 = time.monotonic()
    failed = wait_counter(w, "dnsveil_upstream_migrations_total", 1, deadline=20,
                          result="failed")
    print("\nnew path given up after %.1f s" % (time.monotonic() - t0))
    assert failed == 1, w.dnsveil.text()[-3000:]
    srv.ip("rule", "del", "to", netns.CLIENT_B, "lookup", "99")
    end = time.monotonic() + 15
    rc = None
    while rc != dns.rcode.NOERROR and time.monotonic() < end:
        rc, _ = w.ask("after-failure.test.", timeout=3)
    assert rc == dns.rcode.NOERROR, w.dnsveil.text()[-3000:]
    assert w.counter("dnsveil_upstream_migrations_total", result="ok") == 0
    assert w.counter("dnsveil_upstream_connections_opened_total", transport="doq") > conns
    text = w.dnsveil.text()
    assert "new path failed validation" in text or "before its new path was validated" in text


def test_server_judges_a_migrated_client_by_its_new_address(world):
    """dnsveil's DoQ listener answers only the client's first address: once
    the client has migrated to its new one (and proved it), its queries are
    judged by that address and refused, not served on the strength of
    where the connection began."""
    w = world("dnsveil", 'allow = ["127.0.0.0/8", "%s/32"]' % netns.CLIENT_A)
    rc, _ = w.ask("warm.test.")
    assert rc == dns.rcode.NOERROR
    w.pair.move_address()
    # (a query that rides the very packets that move the connection comes
    # before the server has validated the new address: judged by the old)
    w.ask("moving.test.")
    end = time.monotonic() + 5
    while "new path is validated" not in w.dnsveil.text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "new path is validated" in w.dnsveil.text(), w.dnsveil.text()[-3000:]
    rcs = [w.ask("moved%d.test." % i)[0] for i in range(3)]
    assert dns.rcode.NOERROR not in rcs, rcs
    w.server.stop()
    counts = re.findall(r"refused_clients=(\d+)", w.server.text())
    assert counts and int(counts[-1]) >= 1, w.server.text()[-2000:]
