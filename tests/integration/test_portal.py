"""Captive portals on purpose (issue 14). dnsveil runs in one network
namespace; in the other, unbound serves DoT on 10.99.9.1 (the encrypted
upstream; names under test. answer 192.0.2.1) and a second unbound plays the
network's own resolver on 10.99.9.2: plain DNS, logging every query, and
answering every name with 198.51.100.7, as a portal's resolver does.

Portal-detection names go to the resolver the configured resolv.conf names
(read afresh for each query), logged and uncached; other names never do,
except while `portal SECONDS` holds the portal open, which ends on time."""

import os
import time

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers
import netns
import tlspeers

PORT = 5300
PORTAL_IP = "10.99.9.2"
UPSTREAM_A = "192.0.2.1"
PORTAL_A = "198.51.100.7"

pytestmark = pytest.mark.skipif(netns.usable() is not None, reason=str(netns.usable()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("portalpki"))
    return ca, ca.issue("dns.test", ["dns.test"], [netns.SERVER])


def portal_resolver_conf(workdir):
    return f"""\
server:
    interface: {PORTAL_IP}@53
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/portal-unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    log-queries: yes
    num-threads: 1
    do-ip6: no
    do-tcp: no
    module-config: "iterator"
    access-control: 10.99.0.0/16 allow
    local-zone: "test." nodefault
    local-zone: "." redirect
    local-data: ". 60 IN A {PORTAL_A}"
remote-control:
    control-enable: no
"""


class Setup:
    def __init__(self, made, tmp_path, cfgdir, pki, names=("portal-probe.test",), portal=True):
        ca, (cert, key) = pki
        self.tmp = tmp_path
        self.procs = []
        self.dnsveil = None
        self.pair = netns.Pair()
        made.append(self)  # torn down even when the rest fails
        srv = self.pair.server
        srv.ip("addr", "add", PORTAL_IP + "/32", "dev", "lo")
        (tmp_path / "u1.conf").write_text(netns.unbound_conf(tmp_path, cert, key))
        (tmp_path / "u2.conf").write_text(portal_resolver_conf(tmp_path))
        u1 = self.spawn(srv, ["unbound", "-d", "-c", tmp_path / "u1.conf"], "upstream.log")
        self.plain = self.spawn(srv, ["unbound", "-d", "-c", tmp_path / "u2.conf"], "plain.log")
        netns.wait_answer(srv, 53, host=netns.SERVER, proc=u1)
        netns.wait_answer(srv, 53, host=PORTAL_IP, proc=self.plain)
        self.resolv = cfgdir / "resolv.conf"
        # what a machine whose resolver is dnsveil itself has: only loopback
        self.write_resolv("nameserver 127.0.0.53\n")
        self.ctl = cfgdir / "ctl.sock"
        conf = cfgdir / "dnsveil.toml"
        lines = ["[server]", 'listen = ["127.0.0.1:%d"]' % PORT, 'control = "%s"' % self.ctl,
                 "[upstreams.dot]", 'url = "tls://%s:853"' % netns.SERVER,
                 'tls_ca = "%s"' % ca.cert]
        if portal:
            lines += ["[portal]", 'resolv_conf = "%s"' % self.resolv, "open_seconds = 600"]
            if names is not None:
                lines.append("names = [%s]" % ", ".join('"%s"' % n for n in names))
        conf.write_text("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        self.dnsveil = self.spawn(self.pair.client, [helpers.dnsveil_bin(), "-c", conf, "-v"],
                                  "dnsveil.log")
        netns.wait_answer(self.pair.client, PORT, proc=self.dnsveil)

    def write_resolv(self, text):
        tmp = self.resolv.with_suffix(".new")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.resolv)  # as NetworkManager does: a new file each time

    def spawn(self, ns, argv, log):
        p = netns.Proc(ns, argv, self.tmp / log)
        self.procs.append(p)
        return p

    def ask(self, name):
        """(rcode, the A record's address or None)."""
        s = self.pair.client.socket()
        s.setblocking(False)
        try:
            r = dns.query.udp(helpers.make_query(name, "A", edns=0), "127.0.0.1", port=PORT,
                              timeout=5, sock=s)
        finally:
            s.close()
        addr = r.answer[0][0].address if r.answer else None
        return r.rcode(), addr

    def control(self, *cmd):
        return netns.run(helpers.dnsveil_bin(), "--control", str(self.ctl), *cmd, check=False)

    def plain_saw(self, name):
        """Queries for name the network's resolver logged."""
        return self.plain.text().lower().count(" %s. a in" % name.lower().rstrip("."))

    def log(self):
        return self.dnsveil.text()

    def finish(self):
        problems = []
        rc = self.dnsveil.stop() if self.dnsveil else 0
        text = self.dnsveil.text() if self.dnsveil else ""
        if rc != 0:
            problems.append("dnsveil exit %s" % rc)
        problems += [m for m in helpers.SANITIZER_MARKERS if m in text]
        if problems:
            problems.append(text[-4000:])
        for p in reversed(self.procs):
            if p is not self.dnsveil:
                p.stop()
        self.pair.delete()
        return problems


@pytest.fixture
def setup(tmp_path, cfgdir, pki):
    made = []

    def make(**kw):
        return Setup(made, tmp_path, cfgdir, pki, **kw)

    yield make
    problems = []
    for s in made:
        problems += s.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_portal_name_goes_to_network_resolver(setup):
    s = setup()
    # resolv.conf names only loopback (ourselves): nothing goes plain
    assert s.ask("portal-probe.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
    assert s.plain_saw("portal-probe.test") == 0
    # the network's resolver appears; the file is read afresh for the next query
    s.write_resolv("# Generated by NetworkManager\nsearch lan\nnameserver %s\n" % PORTAL_IP)
    assert s.ask("portal-probe.test.") == (dns.rcode.NOERROR, PORTAL_A)
    assert s.plain_saw("portal-probe.test") == 1
    assert ("portal: portal-probe.test. (a portal-detection name) via the network's resolver "
            "%s:53" % PORTAL_IP) in s.log()
    # never cached: each probe sees the network as it is now
    assert s.ask("portal-probe.test.") == (dns.rcode.NOERROR, PORTAL_A)
    assert s.plain_saw("portal-probe.test") == 2
    # other names never go there
    for name in ("www.test.", "other.test.", "probe.portal-probe.test."):
        assert s.ask(name) == (dns.rcode.NOERROR, UPSTREAM_A)
        assert s.plain_saw(name) == 0, name


def test_default_names_cover_common_probes(setup):
    s = setup(names=None)
    s.write_resolv("nameserver %s\n" % PORTAL_IP)
    for name in ("connectivitycheck.gstatic.com", "captive.apple.com",
                 "www.msftconnecttest.com", "detectportal.firefox.com"):
        assert s.ask(name + ".") == (dns.rcode.NOERROR, PORTAL_A), name
        assert s.plain_saw(name) == 1, name
    assert s.ask("www.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
    assert s.plain_saw("www.test") == 0


def test_portal_open_expires_on_time(setup):
    s = setup()
    s.write_resolv("nameserver %s\n" % PORTAL_IP)
    assert s.ask("before.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
    out = s.control("portal", "2")
    assert out.startswith("ok portal open for 2 s"), out
    t0 = time.monotonic()
    assert s.ask("during.test.") == (dns.rcode.NOERROR, PORTAL_A)
    assert s.plain_saw("during.test") == 1
    assert "portal: during.test. via the network's resolver %s:53" % PORTAL_IP in s.log()
    assert "portal: open for 2 s" in s.log()
    # closes by itself, on time: logged within a second of the 2 s
    while "portal: closed (time is up)" not in s.log() and time.monotonic() - t0 < 4:
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert "portal: closed (time is up)" in s.log()
    assert 1.5 < took < 3.0, took
    assert s.ask("after.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
    assert s.plain_saw("after.test") == 0
    assert s.plain_saw("before.test") == 0


def test_portal_closed_by_request_and_errors(setup):
    s = setup()
    s.write_resolv("nameserver %s\n" % PORTAL_IP)
    assert s.control("portal").startswith("ok portal open for 600 s")
    assert s.ask("open.test.") == (dns.rcode.NOERROR, PORTAL_A)
    assert s.control("portal", "off").startswith("ok portal closed")
    assert "portal: closed by request" in s.log()
    assert s.ask("shut.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
    assert s.plain_saw("shut.test") == 0
    assert s.control("portal", "soon").startswith("error: portal [SECONDS")


def test_portal_not_configured(setup):
    s = setup(portal=False)
    out = s.control("portal", "60")
    assert out.startswith("error: portal mode is not configured"), out
    assert s.ask("www.test.") == (dns.rcode.NOERROR, UPSTREAM_A)
