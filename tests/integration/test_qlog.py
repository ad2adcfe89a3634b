"""The query log: one JSON (or text) line per query with who asked, what,
which rule/group/upstream answered, how, and how fast; reopened on SIGHUP
for logrotate."""

import json
import os
import signal
import subprocess
import time

import helpers


def ask(d, name, rdtype="A", tcp=False):
    r = helpers.run_kdig(d.host, d.port, name, rdtype, tcp=tcp)
    assert r.rcode is not None, name
    return r


def wait_lines(path, n, wait=10.0):
    end = time.monotonic() + wait
    lines = []
    while time.monotonic() < end:
        if path.exists():
            lines = [l for l in path.read_text().splitlines() if l]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError("%d lines in %s, wanted %d: %s" % (len(lines), path, n, lines))


def test_json_lines(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    logdir = cfgdir / "log"
    logdir.mkdir()
    os.chmod(logdir, 0o777)  # dnsveil reopens it as 'nobody'
    log = logdir / "queries.log"
    cfg = cfgdir / "c.toml"
    cfg.write_text(f"""
[querylog]
file = "{log}"
[upstreams.knot]
url = "udp://127.0.0.1:{relay.port}"
[groups.knot]
upstreams = ["knot"]
[[rules]]
domains = ["test"]
users = [0]
group = "knot"
[[rules]]
domains = ["blocked.example"]
action = "nxdomain"
""")
    d = dnsveil("udp://127.0.0.1:9", extra=["-c", str(cfg)], timeout=1500)
    base = len(wait_lines(log, 1))  # the readiness probe
    ask(d, "www.test.")
    ask(d, "WWW.test.", tcp=True)  # from the cache
    ask(d, "x.blocked.example.", "AAAA")
    lines = [json.loads(l) for l in wait_lines(log, base + 3)[base:]]

    up, hit, local = lines
    assert up["name"] == "www.test." and up["type"] == "A" and up["rcode"] == "NOERROR", up
    assert up["source"] == "upstream" and up["upstream"] == "knot" and up["transport"] == "plain", up
    assert up["group"] == "knot" and up["rule"] == 8 and up["uid"] == 0 and up["proto"] == "udp", up
    assert up["client"].startswith("127.0.0.1:") and up["time"].endswith("Z"), up
    assert up["latency_ms"] > 0, up
    assert hit["source"] == "cache" and hit["proto"] == "tcp" and hit["name"].lower() == "www.test.", hit
    assert "upstream" not in hit and hit["group"] == "knot", hit
    assert local["source"] == "local" and local["rcode"] == "NXDOMAIN" and local["rule"] == 12, local
    assert "group" not in local and local["type"] == "AAAA" and "uid" not in local, local

    # logrotate: the file moves away, SIGHUP, and new lines go to a new file
    os.rename(log, logdir / "queries.log.1")
    before = d.log_text().count("reloaded:")
    d.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while d.log_text().count("reloaded:") == before and time.monotonic() < end:
        time.sleep(0.05)
    ask(d, "after.blocked.example.")
    lines = wait_lines(log, 1)
    assert json.loads(lines[0])["name"] == "after.blocked.example.", lines
    assert len((logdir / "queries.log.1").read_text().splitlines()) == base + 3


def test_text_format_and_off_by_default(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    log = cfgdir / "q.txt"
    cfg = cfgdir / "c.toml"
    cfg.write_text(f'[querylog]\nfile = "{log}"\nformat = "text"\n')
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, extra=["-c", str(cfg)])
    base = len(wait_lines(log, 1))
    ask(d, "localhost.")
    line = wait_lines(log, base + 1)[base]
    f = line.split(" ")
    assert f[1].startswith("127.0.0.1:") and f[2] == "udp", line
    assert "name=localhost. type=A" in line and "rcode=NOERROR" in line, line
    assert "source=local" in line and "latency_ms=" in line, line

    d2 = dnsveil("udp://127.0.0.1:%d" % relay.port)
    assert "query log" not in d2.log_text()


def test_querylog_config_errors(cfgdir):
    cfg = cfgdir / "bad.toml"
    cfg.write_text('[querylog]\nfile = "rel.log"\nsyslog = true\nformat = "xml"\n')
    out = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    err = out.stdout + out.stderr
    assert out.returncode == 1
    assert "bad.toml:2:8: error: 'file' must be an absolute path" in err, err
    assert "bad.toml:3:10: error: the query log goes to a 'file' or to 'syslog'" in err, err
    assert "bad.toml:4:10: error: 'format' = \"xml\": expected \"json\" or \"text\"" in err, err
