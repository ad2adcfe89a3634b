"""bootstrap_upstream: an upstream host name resolved through another
upstream (encrypted, given by IP), never through the system resolver, and
asked again when its TTL runs out. knotd's zone has ns.test A 127.0.0.1,
where the real unbound DoT/DoH peers listen."""

import re
import shutil
import subprocess
import time

import dns.message
import dns.rcode
import pytest

import dohpeers
import helpers
import tlspeers

TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("bootpki") / "ca")
    return ca, ca.issue("up.test", ["up.test"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def peers(tmp_path_factory, knot, pki):
    if shutil.which("unbound") is None:
        pytest.skip("unbound is not installed")
    ca, (crt, key) = pki
    base = tmp_path_factory.mktemp("bootpeers")
    dot = tlspeers.UnboundDoT("unbound", base / "dot", crt, key, ca.cert)
    dot.start(knot.port, check_dot=False)
    doh = dohpeers.UnboundDoH("unbound", base / "doh", crt, key, ca.cert)
    doh.start(knot.port, check_doh=False)
    yield dot, doh
    dot.stop()
    doh.stop()


def ask(d, name):
    q = helpers.make_query(name, "A", edns=0, payload=1232)
    wire = helpers.udp_exchange(q.to_wire(), d.host, d.port, timeout=TIMEOUT_MS / 1000 + 2)
    assert wire is not None
    return dns.message.from_wire(wire)


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_name_resolved_through_bootstrap_upstream(scheme, peers, dnsveil, cfgdir, pki):
    dot, doh = peers
    ca, _ = pki
    port = dot.tls_port if scheme == "tls" else doh.tls_port
    path = "/dns-query" if scheme == "https" else ""
    cfg = cfgdir / ("boot-%s.toml" % scheme)
    cfg.write_text(f"""
[upstreams.boot]
url = "tls://127.0.0.1:{dot.tls_port}"
[upstreams.main]
url = "{scheme}://ns.test:{port}{path}"
tls_name = "up.test"
bootstrap_upstream = "boot"
[groups.default]
upstreams = ["main"]
[cache]
enabled = false
""")
    d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(cfg), "--tls-ca", str(ca.cert)])
    end = time.monotonic() + 10
    while "ns.test is" not in d.log_text() and time.monotonic() < end:
        time.sleep(0.05)
    log = d.log_text()
    assert re.search(r"upstream main: ns\.test is 127\.0\.0\.1:%d \(through boot; again in "
                     r"(29\d|300) s\)" % port, log), log[-2000:]
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer, d.log_text()[-2000:]


def test_unresolved_name_fails_over_in_time(peers, dnsveil, cfgdir, pki):
    """The bootstrap upstream answers NXDOMAIN: no address, so the group's
    next upstream answers, and the failed round is logged and retried."""
    dot, _ = peers
    ca, _ = pki
    cfg = cfgdir / "boot-nx.toml"
    cfg.write_text(f"""
[upstreams.boot]
url = "tls://127.0.0.1:{dot.tls_port}"
[upstreams.main]
url = "tls://missing.test:{dot.tls_port}"
tls_name = "up.test"
bootstrap_upstream = "boot"
[groups.default]
upstreams = ["main", "boot"]
strategy = "failover"
[cache]
enabled = false
""")
    d = dnsveil(timeout=TIMEOUT_MS, extra=["-c", str(cfg), "--tls-ca", str(ca.cert)])
    r = ask(d, "www.test.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    end = time.monotonic() + 10
    while "cannot resolve missing.test" not in d.log_text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "upstream main: cannot resolve missing.test through boot; again in 5 s" \
        in d.log_text(), d.log_text()[-2000:]


def test_bootstrap_upstream_errors(cfgdir):
    cfg = cfgdir / "bad.toml"
    cfg.write_text('[upstreams.a]\nurl = "tls://a.test"\nbootstrap_upstream = "nope"\n'
                   '[upstreams.b]\nurl = "tls://b.test"\nbootstrap_upstream = "b"\n'
                   '[upstreams.c]\nurl = "tls://c.test"\nbootstrap_upstream = "plain"\n'
                   '[upstreams.plain]\nurl = "udp://127.0.0.1"\n'
                   '[upstreams.d]\nurl = "tls://d.test"\nbootstrap_upstream = "c"\n')
    out = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    err = out.stdout + out.stderr
    assert out.returncode == 1
    assert "bad.toml:3:22: error: no upstream named 'nope'" in err, err
    assert "bad.toml:6:22: error: upstream 'b' cannot bootstrap itself" in err, err
    assert "bad.toml:9:22: error: upstream 'plain' is not encrypted" in err, err
    assert "bad.toml:14:22: error: upstream 'c' is itself bootstrapped" in err, err
