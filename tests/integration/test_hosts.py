"""Local answers: action "hosts" answers A, AAAA and PTR from a hosts file
for the names it lists (anything else goes on to the next rule), and a fixed
answer may be a CNAME (chased, see test_cname.py). Asked with dig; the upstream is watched through a
counting relay."""

import signal
import subprocess
import time

import dns.rdatatype

import helpers


def dig(d, name, rdtype):
    return helpers.run_dig(d.host, d.port, name, rdtype)


def rrs(r):
    """The answer as (name, type, rdata) text, for readable comparisons."""
    return {(n.to_text().lower(), dns.rdatatype.to_text(t), rd.to_text()) for n, t, rd in r.answer}


def test_hosts_file_answers(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    hosts = cfgdir / "hosts"
    hosts.write_text("# local machines\n"
                     "192.0.2.10   nas.home.test nas\n"
                     "2001:db8::10 nas.home.test\n"
                     "192.0.2.20   printer.home.test\n")
    cfg = cfgdir / "c.toml"
    cfg.write_text('[[rules]]\nhosts_file = "hosts"\nanswer_ttl = 120\n'
                   '[[rules]]\ndomains = ["alias.test"]\nanswer = "www.test."\n')
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, extra=["-c", str(cfg)])

    r = dig(d, "nas.home.test.", "A")
    assert r.rcode == "NOERROR" and "aa" in r.flags, r
    assert rrs(r) == {("nas.home.test.", "A", "192.0.2.10")}, r
    assert list(r.ttls.values()) == [[120]], r.ttls
    assert rrs(dig(d, "NAS.Home.Test.", "AAAA")) == {("nas.home.test.", "AAAA", "2001:db8::10")}
    assert rrs(dig(d, "nas.", "A")) == {("nas.", "A", "192.0.2.10")}
    r = dig(d, "printer.home.test.", "AAAA")
    assert r.rcode == "NOERROR" and not r.answer, r  # NODATA
    r = dig(d, "10.2.0.192.in-addr.arpa.", "PTR")
    assert rrs(r) == {("10.2.0.192.in-addr.arpa.", "PTR", "nas.home.test.")}, r
    r = dig(d, "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR")
    assert {a[2] for a in rrs(r)} == {"nas.home.test."}, r
    with relay.lock:
        asked = {n for n, _ in relay.counts}
    assert asked == {"ready.test."}, asked  # nothing above left the host

    # a name the file does not list goes on to the upstream
    assert dig(d, "www.test.", "A").rcode == "NOERROR"
    assert relay.count("www.test.") == 1

    # a fixed CNAME, chased: the target's records follow it (test_cname.py)
    cname = ("alias.test.", "CNAME", "www.test.")
    assert rrs(dig(d, "alias.test.", "A")) == {cname, ("www.test.", "A", "192.0.2.1")}
    assert rrs(dig(d, "alias.test.", "AAAA")) == {cname, ("www.test.", "AAAA", "2001:db8::1")}
    assert rrs(dig(d, "alias.test.", "CNAME")) == {cname}

    # SIGHUP reads the file again
    hosts.write_text("192.0.2.99 nas.home.test\n")
    before = d.log_text().count("reloaded:")
    d.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while d.log_text().count("reloaded:") == before and time.monotonic() < end:
        time.sleep(0.05)
    assert rrs(dig(d, "nas.home.test.", "A")) == {("nas.home.test.", "A", "192.0.2.99")}


def test_bad_hosts_and_cname_config(cfgdir):
    cfg = cfgdir / "bad.toml"
    cfg.write_text('[[rules]]\naction = "hosts"\n'
                   '[[rules]]\nhosts_file = "missing"\n'
                   '[[rules]]\ndomains = ["a.test"]\nanswer = ["b.test.", "192.0.2.1"]\n'
                   '[[rules]]\ndomains = ["c.test"]\nanswer = "nodots"\n')
    out = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    err = out.stdout + out.stderr
    assert out.returncode == 1
    assert "bad.toml:2:10: error: action \"hosts\" needs a 'hosts_file'" in err, err
    assert "bad.toml:4:14: error: hosts_file \"%s/missing\": No such file" % cfgdir in err, err
    assert "bad.toml:7:22: error: answer \"192.0.2.1\": a CNAME must be the only answer" in err, err
    assert "bad.toml:10:10: error: answer \"nodots\" is neither an IP address nor a domain name" \
        in err, err
