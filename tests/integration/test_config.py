"""The TOML configuration through the real binary: --check, starting from a
file, and SIGHUP reloads (good and broken) observed with real queries."""

import signal
import subprocess
import time

import dns.rcode

import helpers

def write(path, text):
    path.write_text(text)
    return path


def check(path):
    return subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(path)],
                          capture_output=True, text=True, timeout=10)


def base_config(knot, relay, listen_port, rules=""):
    return f"""
[server]
listen = ["127.0.0.1:{listen_port}"]
timeout_ms = 1500

[upstreams.knot]
url = "udp://127.0.0.1:{knot.port}"

[upstreams.relay]
url = "udp://127.0.0.1:{relay.port}"

[groups.default]
upstreams = ["knot"]
strategy = "failover"
allow_plaintext = true

[groups.alt]
upstreams = ["relay"]
strategy = "failover"
{rules}
"""


def rcode_of(port, name, rdtype="A"):
    msg = helpers.make_query(name, rdtype)
    wire = helpers.udp_exchange(msg.to_wire(), "127.0.0.1", port, timeout=3.0)
    assert wire is not None, "no answer for %s" % name
    return helpers.wire_rcode(wire)


def wait_log(d, needle, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in d.log_text():
            return True
        time.sleep(0.05)
    return False


def test_check_example_config_ok():
    r = check(helpers.REPO / "config.example.toml")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "ok" in lines[0], r.stdout


def test_check_reports_every_error_with_position(tmp_path):
    p = write(tmp_path / "bad.toml",
              '[server]\ntimout_ms = 5\n[cache]\nsize = "huge"\n[upstreams.a]\nurl = "ftp://x"\n')
    r = check(p)
    assert r.returncode == 1
    errs = r.stderr.strip().splitlines()
    assert errs == [
        f"{p}:2:1: error: unknown key 'timout_ms' in [server] (did you mean 'timeout_ms'?)",
        f'{p}:4:8: error: \'size\' expects a size such as "8MiB", not "huge"',
        f'{p}:6:7: error: upstream \'a\': URL "ftp://x" must start with udp://, tcp://, '
        "tls://, https://, quic://, odoh:// or sdns://",
    ], r.stderr


def test_check_syntax_error(tmp_path):
    r = check(write(tmp_path / "syntax.toml", "[server\n"))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{tmp_path / 'syntax.toml'}:1:"), r.stderr
    assert ": error: " in r.stderr


def test_check_missing_file(tmp_path):
    r = check(tmp_path / "nope.toml")
    assert r.returncode == 1
    assert "cannot open" in r.stderr


def test_example_config_starts(tmp_path):
    """The shipped default starts (on a test port; no query leaves the host)."""
    port = helpers.free_port()
    d = helpers.Dnsveil(tmp_path, [], listen=[("127.0.0.1", port)],
                        extra=["-c", str(helpers.REPO / "config.example.toml"),
                               "--control", str(tmp_path / "ctl.sock")])
    with open(d.log, "wb") as logf:
        d.proc = subprocess.Popen(d.args, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        assert wait_log(d, "started", 10), d.log_text()
        assert d.proc.poll() is None
    finally:
        assert d.stop() == []


def test_reload_changes_routing_and_keeps_cache(cfgdir, knot, relay_factory, dnsveil):
    relay = relay_factory()
    port = helpers.free_port()
    cfg = write(cfgdir / "dnsveil.toml", base_config(knot, relay, port, """
[[rules]]
domains = ["blocked.test"]
action = "nxdomain"
"""))
    d = dnsveil(listen=[("127.0.0.1", port)], extra=["-c", str(cfg)])

    assert rcode_of(port, "www.test.") == dns.rcode.NOERROR
    assert rcode_of(port, "x.blocked.test.") == dns.rcode.NXDOMAIN
    assert rcode_of(port, "mail.test.") == dns.rcode.NOERROR
    assert relay.count("mail.test.") == 0  # default group: knot directly

    # new rules: mail.test goes to the alt group (through the relay), and
    # blocked.test is now refused
    write(cfg, base_config(knot, relay, port, """
[[rules]]
domains = ["blocked.test"]
action = "refuse"

[[rules]]
domains = ["mail2.test"]
group = "alt"
"""))
    d.send_signal(signal.SIGHUP)
    assert wait_log(d, "reloaded:"), d.log_text()
    assert rcode_of(port, "x.blocked.test.") == dns.rcode.REFUSED
    assert rcode_of(port, "mail2.test.") == dns.rcode.NOERROR
    assert relay.count("mail2.test.") == 1
    # the cache survived: www.test was answered before the reload
    stats, _ = d.stats()
    hits_before = stats["cache_hits"]
    assert rcode_of(port, "www.test.") == dns.rcode.NOERROR
    stats, _ = d.stats()
    assert stats["cache_hits"] == hits_before + 1


def test_broken_reload_keeps_old_config(cfgdir, knot, relay_factory, dnsveil):
    relay = relay_factory()
    port = helpers.free_port()
    cfg = write(cfgdir / "dnsveil.toml", base_config(knot, relay, port, """
[[rules]]
domains = ["blocked.test"]
action = "nxdomain"
"""))
    d = dnsveil(listen=[("127.0.0.1", port)], extra=["-c", str(cfg)])
    assert rcode_of(port, "x.blocked.test.") == dns.rcode.NXDOMAIN

    write(cfg, base_config(knot, relay, port, """
[[rules]]
domains = ["blocked.test"]
acton = "refuse"
"""))
    d.send_signal(signal.SIGHUP)
    assert wait_log(d, "reload failed"), d.log_text()
    log = d.log_text()
    assert f"{cfg}:" in log and "unknown key 'acton'" in log and "did you mean 'action'" in log
    # the old rules still apply and the daemon still answers
    assert rcode_of(port, "x.blocked.test.") == dns.rcode.NXDOMAIN
    assert rcode_of(port, "www.test.") == dns.rcode.NOERROR
    assert d.proc.poll() is None


def test_reload_adds_and_removes_listener(tmp_path, cfgdir, knot, relay_factory):
    relay = relay_factory()
    port, port2 = helpers.free_port(), helpers.free_port()
    cfg = write(cfgdir / "dnsveil.toml", base_config(knot, relay, port))
    d = helpers.Dnsveil(tmp_path, [], listen=[("127.0.0.1", port)], extra=["-c", str(cfg)])
    # listeners come from the file alone: -l would override it on every reload
    i = d.args.index("-l")
    del d.args[i:i + 2]
    d.start()
    try:
        write(cfg, base_config(knot, relay, port).replace(
            f'listen = ["127.0.0.1:{port}"]', f'listen = ["127.0.0.1:{port2}"]'))
        d.send_signal(signal.SIGHUP)
        assert wait_log(d, "reloaded:"), d.log_text()
        assert rcode_of(port2, "www.test.") == dns.rcode.NOERROR
        assert helpers.udp_exchange(helpers.make_query("www.test.").to_wire(), "127.0.0.1",
                                    port, timeout=0.5) is None
    finally:
        assert d.stop() == []


def test_client_rule_gets_its_own_cache_view(cfgdir, knot, relay_factory, dnsveil):
    """A rule that routes some clients to another group must not be answered
    from what the default group cached for everybody else."""
    import socket
    relay = relay_factory()
    port = helpers.free_port()
    cfg = write(cfgdir / "dnsveil.toml", base_config(knot, relay, port, """
[[rules]]
clients = ["127.0.0.2/32"]
group = "alt"
"""))
    dnsveil(listen=[("127.0.0.1", port)], extra=["-c", str(cfg)])
    assert rcode_of(port, "www.test.") == dns.rcode.NOERROR  # from 127.0.0.1: default
    assert relay.count("www.test.") == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.settimeout(3)
        for _ in range(2):
            s.sendto(helpers.make_query("www.test.").to_wire(), ("127.0.0.1", port))
            assert helpers.wire_rcode(s.recv(65535)) == dns.rcode.NOERROR
    assert relay.count("www.test.") == 1  # asked through alt once, then cached there
