"""Cross-check of the DoQ test peer (tests/peers/doq, quic-go) with an
independent DoQ client: kdig from Knot DNS (ngtcp2 + GnuTLS), built from
Debian's trixie/sid source packages by tests/peers/build_kdig.sh because
bookworm's kdig has no QUIC (issue 8). The peer sits in front of the suite's
knotd with a certificate from a private CA; kdig must get the same answers
over DoQ as knotd gives over plain TCP, and the peer's counters must show
the streams. Skipped, with the script's reason, when kdig cannot be built
here (its exit status 3)."""

import re
import subprocess

import pytest

import doqpeers
import helpers
import tlspeers

BUILD_SCRIPT = helpers.REPO / "tests" / "peers" / "build_kdig.sh"
KDIG = helpers.REPO / "build" / "peers" / "kdig"
NAME = "doq.test"

pytestmark = pytest.mark.skipif(not doqpeers.have_go(),
                                reason="go is not installed: no DoQ peer")


@pytest.fixture(scope="module")
def kdig():
    """build/peers/kdig, built or found current by the script (a no-op run
    takes seconds; a full build about 4 minutes on 2 cores)."""
    r = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode == 3:
        pytest.skip("kdig with QUIC cannot be built here: " + r.stderr.strip()[-500:])
    if r.returncode != 0 or not KDIG.exists():
        pytest.fail("tests/peers/build_kdig.sh failed (%d):\n%s%s" % (
            r.returncode, r.stdout[-2000:], r.stderr[-4000:]), pytrace=False)
    return KDIG


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("kdigpki") / "ca")
    return ca, ca.issue(NAME, [NAME])


@pytest.fixture
def peer(tmp_path, knot, pki):
    ca, (crt, key) = pki
    p = doqpeers.DoqPeer("doq", tmp_path / "peer", crt, key, ca.cert)
    p.start(knot.port)
    yield p
    p.stop()


def run_kdig(kdig, args):
    return subprocess.run([str(kdig)] + args, capture_output=True, text=True, timeout=30)


def answers(output):
    """The ANSWER SECTION's records, whitespace-normalised, as a sorted list."""
    m = re.search(r";; ANSWER SECTION:\n(.*?)(?:\n\n|\Z)", output, re.S)
    if not m:
        return []
    return sorted(" ".join(line.split()) for line in m.group(1).splitlines() if line.strip())


def over_doq(kdig, pki, peer, qname, qtype, hostname=NAME):
    ca, _ = pki
    return run_kdig(kdig, ["@127.0.0.1", "-p", str(peer.port), "+quic",
                           "+tls-ca=%s" % ca.cert, "+tls-hostname=%s" % hostname,
                           "+retry=0", "+time=5", qname, qtype])


def over_tcp(kdig, knot, qname, qtype):
    return run_kdig(kdig, ["@127.0.0.1", "-p", str(knot.port), "+tcp", "+retry=0",
                           "+time=5", qname, qtype])


def check_doq_answer(kdig, pki, peer, knot, qname, qtype, streams_before):
    r = over_doq(kdig, pki, peer, qname, qtype)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # really QUIC, not a silent fall back to UDP or TCP
    assert ";; QUIC session (QUICv1)-(TLS1.3)" in out, out
    assert re.search(r";; From 127\.0\.0\.1@%d\(QUIC\)" % peer.port, out), out
    # RFC 9250 4.2.1: the DNS message ID is 0 on DoQ
    assert "status: NOERROR; id: 0" in out, out
    direct = over_tcp(kdig, knot, qname, qtype)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert answers(out) == answers(direct.stdout) and answers(out), (out, direct.stdout)
    assert peer.wait_stat("streams", streams_before + 1), peer.stats()
    assert peer.wait_stat("answers", streams_before + 1), peer.stats()
    return out


def test_kdig_www_over_doq(kdig, pki, peer, knot):
    out = check_doq_answer(kdig, pki, peer, knot, "www.test", "A", 0)
    assert answers(out) == ["www.test. 300 IN A 192.0.2.1"]
    s = peer.stats()
    assert s["connections"] == 1 and s["streams"] == 1 and s["answers"] == 1, s


def test_kdig_huge_txt_over_doq(kdig, pki, peer, knot):
    """~16 KB answer: 16 TXT RRs in one DoQ stream (over several QUIC packets)."""
    out = check_doq_answer(kdig, pki, peer, knot, "huge.test", "TXT", 0)
    assert len(answers(out)) == 16
    size = int(re.search(r";; Received (\d+) B", out).group(1))
    assert size > 16000, out
    s = peer.stats()
    assert s["connections"] == 1 and s["streams"] == 1 and s["answers"] == 1, s


def test_kdig_several_queries_in_a_row(kdig, pki, peer, knot):
    for i, (qname, qtype) in enumerate([("www.test", "AAAA"), ("multi.test", "A"),
                                        ("c1.test", "A"), ("test", "MX")]):
        check_doq_answer(kdig, pki, peer, knot, qname, qtype, i)
    s = peer.stats()
    assert s["streams"] == 4 and s["answers"] == 4, s


def test_kdig_rejects_wrong_name(kdig, pki, peer):
    """The certificate is checked: a name it does not carry fails the
    handshake, and no query stream reaches the peer."""
    r = over_doq(kdig, pki, peer, "www.test", "A", hostname="wrong.test")
    assert r.returncode != 0, r.stdout
    assert "192.0.2.1" not in r.stdout
    assert peer.wait_stat("connections", 1), peer.stats()
    s = peer.stats()
    assert s.get("streams", 0) == 0 and s.get("answers", 0) == 0, s
