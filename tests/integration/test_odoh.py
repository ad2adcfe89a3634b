"""Oblivious DoH upstreams (odoh://, RFC 9230): dnsveil against the Go ODoH
target (circl HPKE, Go's HTTP/2) in front of the suite's knotd, through Go
relays, with a private CA made for this run. Covers answers through relay
and target equal to knotd's, a target restarted with a new key (401 ->
refetch -> answered, the client sees nothing), a dead relay (the other one
answers), a relay that flips a ciphertext bit (that attempt fails, counted,
no crash), no relay at all (warned), and relays under the target's operator
refused by --check with a position."""

import base64
import os
import random
import shutil
import signal
import subprocess
import time

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers
import odohpeers
import tlspeers

TARGET = "target.odoh-a.test"
RELAYS = ("relay1.odoh-b.test", "relay2.odoh-c.test")

pytestmark = pytest.mark.skipif(not odohpeers.have_go(),
                                reason="go is not installed: no ODoH peer")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("odohpki") / "ca")
    certs = {h: ca.issue(h, [h], ["127.0.0.1"]) for h in (TARGET,) + RELAYS}
    return ca, certs


@pytest.fixture
def peers(tmp_path, pki):
    """peers(host) -> an unstarted OdohPeer with that host's certificate."""
    made = []

    def make(host):
        _, certs = pki
        crt, key = certs[host]
        p = odohpeers.OdohPeer("%s-%d" % (host.split(".")[0], len(made)),
                               tmp_path / ("peer%d" % len(made)), crt, key)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def make_peers(peers, knot, pki, n_relays=1, flip=(), max_age=3600):
    """A target and n relays in front of it; returns (target, [relays])."""
    ca, _ = pki
    target = peers(TARGET).start_target(knot.port, max_age=max_age)
    auth = "%s:%d" % (TARGET, target.port)
    relays = [peers(RELAYS[i]).start_relay(ca.cert, {auth: target.port}, flip=i in flip)
              for i in range(n_relays)]
    return target, relays


def relay_urls(relays):
    return ["https://%s:%d/proxy#127.0.0.1" % (RELAYS[i], r.port) for i, r in enumerate(relays)]


def write_conf(tmp_path, pki, target, relays, mport=None, ca=None):
    return odohpeers.odoh_config(tmp_path / "odoh.toml", TARGET, target.port, relays=relays,
                                 ca=ca or pki[0].cert, metrics_port=mport,
                                 extra="\n[cache]\nenabled = false\n")


def start(dnsveil, tmp_path, pki, target, relays, mport=None, timeout=2500):
    conf = write_conf(tmp_path, pki, target, relay_urls(relays), mport)
    return dnsveil(timeout=timeout, extra=["-c", str(conf)])


def relay_stamp(addr, host, path="/proxy"):
    """An ODoH relay stamp (sdns://, protocol 0x85) with no certificate hashes."""
    def lp(b):
        return bytes([len(b)]) + b
    raw = (bytes([0x85]) + bytes(8) + lp(addr.encode()) + b"\x00" + lp(host.encode()) +
           lp(path.encode()))
    return "sdns://" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ask(d, name, rdtype="A", timeout=5.0):
    q = helpers.make_query(name, rdtype, edns=0, payload=1232)
    return dns.query.tcp(q, d.host, port=d.port, timeout=timeout)


knot_answer = helpers.knot_answer
same = helpers.same_answer


def uniq(prefix):
    return "%s-%06x.test." % (prefix, random.getrandbits(24))


CASES = [("www.test.", "A"), ("multi.test.", "A"), ("test.", "MX"), ("c1.test.", "A"),
         ("nodata.test.", "A"), ("nx-odoh.test.", "A"), ("big.test.", "TXT"),
         ("mid.test.", "TXT")]


def test_answers_through_relay_equal_knot(peers, dnsveil, tmp_path, pki, knot):
    target, relays = make_peers(peers, knot, pki)
    d = start(dnsveil, tmp_path, pki, target, relays)
    for name, rdtype in CASES:
        got = ask(d, name, rdtype)
        want = knot_answer(knot, name, rdtype)
        assert same(got, want), "%s %s:\n%s\n---\n%s" % (name, rdtype, got, want)
    # every query went through the relay; the configs were fetched once
    assert relays[0].stats().get("forwarded", 0) >= len(CASES), relays[0].stats()
    assert target.stats().get("answered", 0) >= len(CASES), target.stats()
    assert target.stats().get("configs") == 1, target.stats()
    assert "through 1 relay" in d.log_text()


def test_target_new_key_401_refetch(peers, dnsveil, tmp_path, pki, knot):
    """The target restarts with a new key: the next query is refused with
    401, the configs are fetched again and the query resealed; the client
    gets its answer."""
    mport = helpers.free_port()
    target, relays = make_peers(peers, knot, pki)
    d = start(dnsveil, tmp_path, pki, target, relays, mport=mport)
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    old = target.key_id()
    target.restart()
    assert target.key_id() != old
    for i in range(3):
        r = ask(d, uniq("rot%d" % i))
        assert r.rcode() == dns.rcode.NXDOMAIN, r
    st = target.stats()
    assert st.get("unauthorized", 0) == 1 and st.get("configs") == 1, st
    m = odohpeers.metrics(mport)
    assert m["key_rejected"] == 1 and m["config_fetches"] == 2, m
    stats, _ = d.stats()
    assert stats["servfail"] == 0 and stats["upstream_failed"] == 0, stats


def test_relay_down_other_relay(peers, dnsveil, tmp_path, pki, knot):
    mport = helpers.free_port()
    target, relays = make_peers(peers, knot, pki, n_relays=2)
    d = start(dnsveil, tmp_path, pki, target, relays, mport=mport)
    for i in range(4):
        assert ask(d, uniq("both%d" % i)).rcode() == dns.rcode.NXDOMAIN
    # balanced: both relays carried queries
    assert relays[0].stats().get("forwarded", 0) >= 1, relays[0].stats()
    assert relays[1].stats().get("forwarded", 0) >= 1, relays[1].stats()
    relays[0].stop()
    before = relays[1].stats().get("forwarded", 0)
    t0 = time.monotonic()
    for i in range(6):
        assert ask(d, uniq("one%d" % i)).rcode() == dns.rcode.NXDOMAIN
    assert time.monotonic() - t0 < 10
    assert relays[1].stats().get("forwarded", 0) >= before + 6, relays[1].stats()
    m = odohpeers.metrics(mport)
    assert m["relay_failures"] >= 1, m
    stats, _ = d.stats()
    assert stats["servfail"] == 0, stats


def test_relay_flipping_a_bit(peers, dnsveil, tmp_path, pki, knot):
    """The relay alters the sealed answer: it fails to open, the attempt
    fails (SERVFAIL in time with no other upstream), and it is counted."""
    mport = helpers.free_port()
    target, relays = make_peers(peers, knot, pki, flip=(0,))
    d = start(dnsveil, tmp_path, pki, target, relays, mport=mport, timeout=1500)
    t0 = time.monotonic()
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 3.0
    assert relays[0].stats().get("flipped", 0) >= 1
    m = odohpeers.metrics(mport)
    assert m["open_failures"] >= 1 and m["answers"] == 0, m
    stats, _ = d.stats()
    assert stats["upstream_failed"] >= 1, stats
    # still alive and still trying
    assert ask(d, "multi.test.").rcode() == dns.rcode.SERVFAIL
    assert odohpeers.metrics(mport)["open_failures"] >= 2


def test_no_relay_straight_to_target(peers, dnsveil, tmp_path, pki, knot):
    target, _ = make_peers(peers, knot, pki, n_relays=0)
    d = start(dnsveil, tmp_path, pki, target, [])
    got = ask(d, "www.test.")
    assert same(got, knot_answer(knot, "www.test.", "A"))
    assert "plain DoH privacy" in d.log_text()
    assert target.stats().get("answered", 0) >= 1  # the readiness probe too


def check(path):
    return subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_relay_same_operator_is_a_config_error(tmp_path):
    conf = odohpeers.odoh_config(
        tmp_path / "same.toml", "target.example.net", 443,
        relays=["https://relay.example.org/proxy#192.0.2.1",
                "https://odoh-relay.example.net/proxy#192.0.2.2"])
    r = check(conf)
    assert r.returncode == 1, r
    # the second relay, at its position in the array on line 4
    assert "%s:4:" % conf in r.stderr + r.stdout, r.stderr + r.stdout
    assert "example.net" in r.stderr + r.stdout
    conf = odohpeers.odoh_config(
        tmp_path / "allowed.toml", "target.example.net", 443,
        relays=["https://odoh-relay.example.net/proxy#192.0.2.2"], allow_same_operator=True)
    r = check(conf)
    assert r.returncode == 0, r.stderr + r.stdout
    # a relay stamp is held to the same rule
    conf = odohpeers.odoh_config(tmp_path / "stamp.toml", "target.example.net", 443,
                                 relays=[relay_stamp("192.0.2.9", "r.example.net")])
    r = check(conf)
    assert r.returncode == 1 and "%s:4:" % conf in r.stderr + r.stdout, r.stderr + r.stdout
    # a country-code second level counts as part of the suffix
    conf = odohpeers.odoh_config(tmp_path / "cc.toml", "t.example.co.uk", 443,
                                 relays=["https://r.other.co.uk/proxy#192.0.2.3"])
    assert check(conf).returncode == 0


def test_relay_config_errors(tmp_path):
    for relay, why in [("http://r.example.org/proxy#192.0.2.1", "https://"),
                       ("https://r.example.org/proxy", "IP addresses after '#'"),
                       ("https://r.example.org#192.0.2.1", "path"),
                       ("https://r.example.org/proxy#not-an-ip", "must be IP addresses")]:
        conf = odohpeers.odoh_config(tmp_path / "bad.toml", "t.example.net", 443,
                                     relays=[relay])
        r = check(conf)
        assert r.returncode == 1 and why in r.stderr + r.stdout, (relay, r.stderr + r.stdout)
        assert "%s:4:" % conf in r.stderr + r.stdout


def test_relay_stamp(peers, dnsveil, tmp_path, pki, knot):
    """A relay given as an ODoH relay stamp: its address (with the port)
    bootstraps its host name."""
    target, relays = make_peers(peers, knot, pki)
    conf = write_conf(tmp_path, pki, target,
                      [relay_stamp("127.0.0.1:%d" % relays[0].port, RELAYS[0])])
    d = dnsveil(extra=["-c", str(conf)])
    assert same(ask(d, "www.test."), knot_answer(knot, "www.test.", "A"))
    assert relays[0].stats().get("forwarded", 0) >= 1


def test_reload_adds_a_relay(peers, dnsveil, cfgdir, pki, knot):
    """SIGHUP with a second relay: the new upstream takes both in turn (the
    file and CA sit where the daemon can read them after dropping root)."""
    target, relays = make_peers(peers, knot, pki, n_relays=2)
    ca = cfgdir / "ca.pem"
    shutil.copy(pki[0].cert, ca)
    os.chmod(ca, 0o644)
    conf = write_conf(cfgdir, pki, target, relay_urls(relays[:1]), ca=ca)
    os.chmod(conf, 0o644)
    d = dnsveil(extra=["-c", str(conf)])
    assert ask(d, uniq("r1")).rcode() == dns.rcode.NXDOMAIN
    write_conf(cfgdir, pki, target, relay_urls(relays), ca=ca)
    d.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while "reloaded:" not in d.log_text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "reloaded:" in d.log_text(), d.log_text()[-2000:]
    for i in range(4):
        assert ask(d, uniq("r2-%d" % i)).rcode() == dns.rcode.NXDOMAIN
    assert relays[1].stats().get("forwarded", 0) >= 1, relays[1].stats()


def test_configs_refetched_on_expiry(peers, dnsveil, tmp_path, pki, knot):
    """The target says max-age=1; dnsveil keeps configs at least 10 s, then
    fetches them again before the next query is sealed."""
    ca, _ = pki
    target = peers(TARGET).start_target(knot.port, max_age=1)
    relay = peers(RELAYS[0]).start_relay(ca.cert, {"%s:%d" % (TARGET, target.port): target.port})
    d = start(dnsveil, tmp_path, pki, target, [relay])
    assert "kept for 10s" in d.log_text()
    assert ask(d, uniq("exp1")).rcode() == dns.rcode.NXDOMAIN
    assert target.stats().get("configs") == 1
    time.sleep(10.5)
    assert ask(d, uniq("exp2")).rcode() == dns.rcode.NXDOMAIN
    assert target.stats().get("configs") == 2, target.stats()


def test_target_stamp_with_relays(tmp_path):
    """An ODoH target stamp (protocol 0x05: host and path only) is an
    odoh:// upstream; its relays are checked as any others."""
    def lp(b):
        return bytes([len(b)]) + b
    raw = bytes([0x05]) + bytes(8) + lp(b"odoh.target.example") + lp(b"/dns-query")
    stamp = "sdns://" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    p = tmp_path / "tstamp.toml"
    p.write_text('[upstreams.t]\nurl = "%s"\nbootstrap = ["192.0.2.1"]\n'
                 'relays = ["https://relay.other.example/proxy#192.0.2.2"]\n' % stamp)
    r = check(p)
    assert r.returncode == 0, r.stderr + r.stdout
    p.write_text('[upstreams.t]\nurl = "%s"\nbootstrap = ["192.0.2.1"]\n'
                 'relays = ["https://relay.target.example/proxy#192.0.2.2"]\n' % stamp)
    r = check(p)
    assert r.returncode == 1 and "%s:4:" % p in r.stderr + r.stdout, r.stderr + r.stdout


def test_configs_fetch_that_never_answers(peers, dnsveil, tmp_path, pki, knot):
    """A target that keeps the connection up but never answers the configs
    fetch: the fetch fails after its own timeout (5 s) and is counted, so
    queries stop waiting for it."""
    mport = helpers.free_port()
    ca, _ = pki
    target = peers(TARGET).start_target(knot.port, stall=True)
    relay = peers(RELAYS[0]).start_relay(ca.cert, {"%s:%d" % (TARGET, target.port): target.port})
    d = start(dnsveil, tmp_path, pki, target, [relay], mport=mport, timeout=1000)
    end = time.monotonic() + 15
    while time.monotonic() < end and "configs failed" not in d.log_text():
        time.sleep(0.1)
    assert "fetching /.well-known/odohconfigs failed" in d.log_text(), d.log_text()[-2000:]
    assert odohpeers.metrics(mport)["config_failures"] >= 1
    assert ask(d, "www.test.").rcode() == dns.rcode.SERVFAIL


def test_target_down_relays_not_blamed(peers, dnsveil, tmp_path, pki, knot):
    """The target is down: both relays answer 502, the query fails, and the
    relays are not backed off for it; once the target is back (with a new
    key) the next query is answered at once."""
    mport = helpers.free_port()
    target, relays = make_peers(peers, knot, pki, n_relays=2)
    d = start(dnsveil, tmp_path, pki, target, relays, mport=mport)
    assert ask(d, uniq("up")).rcode() == dns.rcode.NXDOMAIN
    target.stop()
    t0 = time.monotonic()
    assert ask(d, uniq("down")).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 2.4
    m = odohpeers.metrics(mport)
    assert m["relay_failures"] == 0 and m["http_errors"] >= 2, m
    target.restart()
    assert ask(d, uniq("back")).rcode() == dns.rcode.NXDOMAIN
    assert odohpeers.metrics(mport)["relay_failures"] == 0
