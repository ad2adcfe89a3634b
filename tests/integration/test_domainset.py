"""domains_file: a rule's names from a list file (plain, hosts format,
wildcards, comments), matched like `domains`, re-read on SIGHUP; a file that
cannot be read is a positioned configuration error, and a bad reload keeps
the running list."""

import signal
import subprocess
import time
import uuid

import dns.message
import dns.rcode

import helpers


def ask(d, name, rdtype="A"):
    wire = helpers.udp_exchange(helpers.make_query(name, rdtype).to_wire(), d.host, d.port,
                                timeout=3)
    assert wire is not None, name
    return dns.message.from_wire(wire)


def wait_reload(d, before, wait=10.0):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        text = d.log_text()
        if text.count("reloaded:") + text.count("reload failed") > before:
            return text
        time.sleep(0.05)
    raise AssertionError("no reload in the log:\n" + d.log_text()[-2000:])


def test_list_routes_and_blocks(relay_factory, dnsveil, cfgdir):
    listed, default = relay_factory(), relay_factory()
    lst = cfgdir / "list.txt"
    lst.write_text("# routed to 'listed'\n"
                   "routed.test\n"
                   "0.0.0.0 hosts-a.test hosts-b.test   # hosts format\n"
                   "127.0.0.1 localhost\n"
                   "*.wild.test\n"
                   "||not-a-name^\n")
    block = cfgdir / "block.txt"
    block.write_text("blocked.test\n")
    cfg = cfgdir / "c.toml"
    cfg.write_text(f"""
[upstreams.listed]
url = "udp://127.0.0.1:{listed.port}"
[groups.listed]
upstreams = ["listed"]
[[rules]]
domains_file = "block.txt"
action = "nxdomain"
[[rules]]
domains_file = "{lst}"
domains = ["extra.test"]
group = "listed"
""")
    d = dnsveil("udp://127.0.0.1:%d" % default.port, extra=["-c", str(cfg)])
    assert "1 lines are not names and were skipped (the first: line 6)" in d.log_text()

    for name in ("routed.test.", "www.routed.test.", "hosts-b.test.", "x.wild.test.",
                 "extra.test."):
        ask(d, name)
        assert listed.count(name) == 1 and default.count(name) == 0, name
    for name in ("wild.test.", "other.test.", "not-a-name."):
        ask(d, name)
        assert default.count(name) == 1 and listed.count(name) == 0, name
    assert ask(d, "a.blocked.test.").rcode() == dns.rcode.NXDOMAIN
    assert listed.count("a.blocked.test.") + default.count("a.blocked.test.") == 0

    # SIGHUP re-reads the list: a name added to it moves, one removed goes back
    fresh = "fresh-%s.test." % uuid.uuid4().hex[:6]
    lst.write_text(fresh + "\n")
    before = d.log_text().count("reloaded:")
    d.send_signal(signal.SIGHUP)
    wait_reload(d, before)
    ask(d, fresh)
    assert listed.count(fresh) == 1
    ask(d, "www2.routed.test.")
    assert default.count("www2.routed.test.") == 1

    # a list that disappears fails the reload; the running one stays
    lst.unlink()
    before = d.log_text().count("reloaded:") + d.log_text().count("reload failed")
    d.send_signal(signal.SIGHUP)
    text = wait_reload(d, before)
    assert "reload failed" in text and "c.toml:10:16: error: domains_file" in text, text[-1500:]
    ask(d, "x." + fresh)
    assert listed.count("x." + fresh) == 1


def test_missing_list_is_positioned(cfgdir):
    cfg = cfgdir / "bad.toml"
    cfg.write_text('[[rules]]\naction = "refuse"\ndomains_file = "nope.txt"\n')
    out = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    err = out.stdout + out.stderr
    assert out.returncode == 1
    assert "bad.toml:3:16: error: domains_file \"%s/nope.txt\": No such file or directory" % cfgdir \
        in err, err
