"""ODoH relay mode on the DoH listener (odoh_relay_targets): dnsveil as the
Oblivious Proxy of RFC 9230 between dnsveil's own odoh:// upstream (a
second dnsveil) and the Go ODoH target of tests/peers/odoh in front of
knotd. The relay forwards sealed bodies it cannot open to listed targets
only; everything else gets the right HTTP error."""

import os

import dns.message
import dns.query
import pytest

import helpers
import odohpeers
import test_listen_secure as ls
import tlspeers

TARGET = "target.odoh-a.test"
RELAY = "relay.odoh-b.test"
CT = "application/oblivious-dns-message"

pytestmark = pytest.mark.skipif(not odohpeers.have_go(),
                                reason="go is not installed: no ODoH peer")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("relaypki")
    os.chmod(base, 0o755)
    ca = tlspeers.PrivateCA(base / "ca")
    certs = {h: ca.issue(h, [h], ["127.0.0.1"]) for h in (TARGET, RELAY)}
    for crt, key in certs.values():
        os.chmod(crt, 0o644)
        os.chmod(key, 0o644)
    os.chmod(ca.dir, 0o755)
    return ca, certs


@pytest.fixture
def target(tmp_path, pki, knot):
    _, certs = pki
    crt, key = certs[TARGET]
    t = odohpeers.OdohPeer("target", tmp_path / "target", crt, key)
    t.start_target(knot.port)
    yield t
    t.stop()


class Relay(ls.Secure):
    """A dnsveil whose DoH listener relays to the given targets."""

    name = RELAY

    def __init__(self, dnsveil, knot, pki, workdir, targets):
        ca, certs = pki
        lines = "odoh_relay_targets = [%s]\ntls_ca = \"%s\"" % (
            ", ".join('"%s"' % t for t in targets), ca.cert)
        super().__init__(dnsveil, knot, (ca, [certs[RELAY]]), workdir, extra_server=lines)

    def h2(self):
        return ls.H2Client(self)


def client_conf(path, pki, target, relay):
    return odohpeers.odoh_config(
        path, TARGET, target.port, ca=pki[0].cert,
        relays=["https://%s:%d/proxy#127.0.0.1" % (RELAY, relay.https_port)],
        extra="\n[cache]\nenabled = false\n")


def test_dnsveil_client_through_dnsveil_relay_to_go_target(dnsveil, knot, pki, target, cfgdir,
                                                           tmp_path):
    relay = Relay(dnsveil, knot, pki, cfgdir / "relay",
                  ["%s:%d#127.0.0.1" % (TARGET, target.port)])
    client = dnsveil(timeout=4000, extra=["-c", str(client_conf(tmp_path / "c.toml", pki,
                                                                 target, relay))])
    cases = [("www.test.", "A"), ("test.", "MX"), ("nx-relay.test.", "A"), ("big.test.", "TXT")]
    before, _ = relay.d.stats()  # its readiness probe was a query
    for name, rdtype in cases:
        q = helpers.make_query(name, rdtype, edns=0)
        got = dns.query.tcp(q, client.host, port=client.port, timeout=6)
        assert helpers.same_answer(helpers.knot_answer(knot, name, rdtype), got), (name, got)
    st = target.stats()
    assert st.get("answered", 0) >= len(cases), st
    # the relay only relayed: its own query engine saw none of these
    after, _ = relay.d.stats()
    assert after["queries"] == before["queries"], (before, after)
    assert "ODoH relay on for 1 target" in relay.d.log_text()


def test_relay_errors(dnsveil, knot, pki, target, cfgdir):
    relay = Relay(dnsveil, knot, pki, cfgdir / "relay",
                  ["%s:%d#127.0.0.1" % (TARGET, target.port)])
    auth = "%s:%d" % (TARGET, target.port)
    c = relay.h2()
    body = b"\x01" * 60  # opaque: a real target answers 400 or 401 to it
    cases = [
        ("/proxy?targethost=other.test&targetpath=/dns-query", body, CT, 403),
        ("/proxy?targethost=%s&targetpath=/dns-query" % auth, body, "application/dns-message",
         415),
        ("/proxy?targethost=%s" % auth, body, CT, 400),
        ("/proxy?targethost=%s&targetpath=dns-query" % auth, body, CT, 400),
        ("/proxy?targethost=%s&targetpath=/dns-query" % auth, b"\x00" * 70000, CT, 413),
    ]
    for path, b, ct, want in cases:
        res = c.one("POST", path, b, ctype=ct)
        assert res[0] == want, (path, res)
    # a listed target gets the body and its verdict comes back as it is
    st, _, _ = c.one("POST", "/proxy?targethost=%s&targetpath=%%2Fdns-query" % auth, body,
                     ctype=CT)
    assert st in (400, 401), st
    assert target.stats().get("unauthorized", 0) + target.stats().get("bad_request", 0) >= 1
    # the target down: 502, and the relay keeps serving
    target.stop()
    st, _, _ = c.one("POST", "/proxy?targethost=%s&targetpath=/dns-query" % auth, body, ctype=CT)
    assert st == 502
    c.close()
    ls.assert_serving(relay)


def test_relay_off_by_default(dnsveil, knot, cfgdir, pki):
    ca, certs = pki
    sec = ls.Secure(dnsveil, knot, (ca, [certs[RELAY]]), cfgdir / "plain")
    sec.name = RELAY
    c = ls.H2Client(sec)
    st, _, _ = c.one("POST", "/proxy?targethost=%s&targetpath=/dns-query" % TARGET, b"\x01" * 60,
                     ctype=CT)
    assert st == 404
    c.close()
