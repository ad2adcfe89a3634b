"""Boot without a real-time clock (tls_time_check): dnsveil run with a wall
clock in the past by Debian's libfaketime, against a real DoT server
(unbound) whose certificate comes from the run's private CA.

With "auto" (the default) a clock earlier than the build date skips only
certificate validity dates: the query is answered, the log says so once, and
every other check (chain, name, pins) still refuses a bad server. "strict"
refuses. A certificate expired by a sane clock is refused, and once a clock
in the past is set right the full checks are back."""

import glob
import os
import shutil
import time

import dns.rcode
import pytest

import helpers
import tlspeers

TIMEOUT_MS = 1500
RELAXED = "certificate validity dates are not checked until it is"
RESUMED = "certificate validity dates are checked again"
STRICT_HINT = 'with tls_time_check = "strict" certificates will fail their validity dates'


def libfaketime():
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    return libs[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("rtc-pki")
    ca = tlspeers.PrivateCA(base / "ca")
    other = tlspeers.PrivateCA(base / "other", name="someone else's CA")
    certs = {
        "good": ca.issue("dot.test", ["dot.test"], ["127.0.0.1"]),
        "expired": ca.issue("dot.test", ["dot.test"], ["127.0.0.1"], expired=True),
        "foreign": other.issue("dot.test", ["dot.test"], ["127.0.0.1"]),
    }
    return ca, certs


@pytest.fixture(scope="module")
def peers(tmp_path_factory, knot, pki):
    if shutil.which("unbound") is None:
        pytest.skip("unbound is not installed")
    ca, certs = pki
    base = tmp_path_factory.mktemp("rtc-peers")
    started = {}

    def get(cert):
        if cert not in started:
            crt, key = certs[cert]
            p = tlspeers.UnboundDoT("unbound", base / cert, crt, key, ca.cert)
            # our own readiness probe cannot verify a bad certificate; a short
            # idle timeout makes dnsveil reconnect soon after the clock moves
            p.start(knot.port, idle_ms=500, check_dot=(cert == "good"))
            started[cert] = p
        return started[cert]

    yield get
    for p in started.values():
        p.stop()


def start(dnsveil, cfgdir, pki, port, clock=None, clock_file=None, mode=None, extra_up=()):
    """dnsveil with one DoT upstream; clock = a faketime timestamp such as
    "@2000-01-01 00:00:00", or clock_file = a file holding one (re-read on
    every call, so a test can set the clock while it runs). The CA sits in
    cfgdir, readable after the daemon drops to nobody."""
    ca, _ = pki
    ca_copy = cfgdir / "ca.pem"
    ca_copy.write_bytes(ca.cert.read_bytes())
    os.chmod(ca_copy, 0o644)
    lines = []
    if mode:
        lines += ["[server]", 'tls_time_check = "%s"' % mode, ""]
    lines += ["[upstreams.dot1]", 'url = "tls://127.0.0.1:%d"' % port, 'tls_ca = "%s"' % ca_copy]
    lines += list(extra_up)
    conf = cfgdir / "rtc.toml"
    conf.write_text("\n".join(lines) + "\n")
    os.chmod(conf, 0o644)
    d = helpers.Dnsveil(dnsveil.workdir, [], timeout=TIMEOUT_MS, extra=["-c", str(conf)])
    if clock or clock_file:
        env = ["LD_PRELOAD=" + libfaketime(), "FAKETIME_DONT_FAKE_MONOTONIC=1",
               # the sanitizer build: libfaketime is preloaded ahead of ASan
               "ASAN_OPTIONS=%s:verify_asan_link_order=0"
               % os.environ.get("ASAN_OPTIONS", "")]
        if clock:
            env.append("FAKETIME=" + clock)
        else:
            env += ["FAKETIME_TIMESTAMP_FILE=%s" % clock_file, "FAKETIME_NO_CACHE=1"]
        d.args = [shutil.which("env")] + env + d.args
    dnsveil.started.append(d)
    return d.start()


def ask(d, name, rdtype="A"):
    return helpers.run_dnspython(d.host, d.port, name, rdtype)


CLOCKS = [("1970", "@1970-01-02 00:00:00"), ("2000", "@2000-01-01 00:00:00")]


@pytest.mark.parametrize("clock", [c[1] for c in CLOCKS], ids=[c[0] for c in CLOCKS])
def test_auto_answers_while_clock_is_unset(clock, peers, dnsveil, cfgdir, pki):
    d = start(dnsveil, cfgdir, pki, peers("good").tls_port, clock=clock)
    for name in ("www.test.", "mail.test.", "multi.test."):
        r = ask(d, name)
        assert r.rcode == "NOERROR" and r.answer, (name, r, d.log_text()[-3000:])
    log = d.log_text()
    assert log.count(RELAXED) == 1, log[-3000:]
    assert "certificate verify failed" not in log


def test_strict_refuses_while_clock_is_unset(peers, dnsveil, cfgdir, pki):
    d = start(dnsveil, cfgdir, pki, peers("good").tls_port, clock="@2000-01-01 00:00:00",
              mode="strict")
    t0 = time.monotonic()
    r = ask(d, "www.test.")
    assert r.rcode == "SERVFAIL", r
    assert time.monotonic() - t0 < TIMEOUT_MS / 1000.0 + 1.0
    log = d.log_text()
    assert "upstream dot1: certificate verify failed: certificate not yet valid" in log, log
    assert STRICT_HINT in log
    assert RELAXED not in log


# Everything but the dates is still checked while the clock is unset.
STILL_CHECKED = [
    ("unknown-ca", "foreign", [], "certificate verify failed: unknown CA"),
    ("hostname", "good", ['tls_name = "wrong.test"'],
     "certificate verify failed: hostname mismatch (wanted wrong.test"),
    ("pin", "good", ['pins = ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]'],
     "certificate verify failed: pin mismatch"),
]


@pytest.mark.parametrize("case,cert,extra,expect", STILL_CHECKED, ids=[c[0] for c in STILL_CHECKED])
def test_unset_clock_still_checks_the_rest(case, cert, extra, expect, peers, dnsveil, cfgdir,
                                           pki):
    d = start(dnsveil, cfgdir, pki, peers(cert).tls_port, clock="@2000-01-01 00:00:00",
              extra_up=extra)
    r = ask(d, "www.test.")
    assert r.rcode == "SERVFAIL", r
    assert "upstream dot1: " + expect in d.log_text(), d.log_text()[-3000:]


def test_expired_certificate_refused_with_a_set_clock(peers, dnsveil, cfgdir, pki):
    d = start(dnsveil, cfgdir, pki, peers("expired").tls_port, mode="auto")
    r = ask(d, "www.test.")
    assert r.rcode == "SERVFAIL", r
    log = d.log_text()
    assert "upstream dot1: certificate verify failed: certificate expired" in log, log[-3000:]
    assert RELAXED not in log


def test_full_checks_resume_once_the_clock_is_set(peers, dnsveil, cfgdir, pki):
    """Booted in 2000 against a server whose certificate expired last year:
    answered while the clock is unset; once the clock is set, the next
    connection (no session from the relaxed one is resumed) is refused."""
    clock = cfgdir / "clock"
    clock.write_text("@2000-01-01 00:00:00\n")
    os.chmod(clock, 0o644)
    p = peers("expired")
    d = start(dnsveil, cfgdir, pki, p.tls_port, clock_file=clock)
    r = ask(d, "www.test.")
    assert r.rcode == "NOERROR" and r.answer, (r, d.log_text()[-3000:])
    clock.write_text("+0\n")
    # the server closes the idle connection after 500 ms; the next query
    # needs a new handshake
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and tlspeers.established(p.tls_port):
        time.sleep(0.1)
    r = ask(d, "mail.test.")
    assert r.rcode == "SERVFAIL", (r, d.log_text()[-3000:])
    log = d.log_text()
    assert log.count(RELAXED) == 1, log[-3000:]
    assert RESUMED in log, log[-3000:]
    assert "upstream dot1: certificate verify failed: certificate expired" in log, log[-3000:]
