"""The query log: one JSON (or text) line per query with who asked, what,
which rule/group/upstream answered, how, and how fast; reopened on SIGHUP
for logrotate."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

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


# The syslog script: a private /dev in a new mount namespace (only the nodes
# dnsveil opens) whose "log" is the test's socket, so syslog(3) writes to it.
PRIVATE_DEV = r"""
set -e
dev=$1 sock=$2
shift 2
mount -t tmpfs -o mode=755 tmpfs "$dev"
for n in null zero random urandom; do
    : > "$dev/$n"
    mount --bind "/dev/$n" "$dev/$n"
done
: > "$dev/log"
mount --bind "$sock" "$dev/log"
mount --rbind "$dev" /dev
exec "$@"
"""


def syslog_lines(sock, n, wait=10.0):
    out = []
    end = time.monotonic() + wait
    while len(out) < n and time.monotonic() < end:
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            out.append(sock.recv(65536).decode())
        except socket.timeout:
            break
    return out


def test_syslog_lines(relay_factory, cfgdir, tmp_path):
    """[querylog] syslog = true: one datagram per query through syslog(3) to
    /dev/log, LOG_DAEMON|LOG_INFO, tagged dnsveil[pid], the JSON line as its
    message; still after a reload (SIGHUP)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/log")
    relay = relay_factory()
    sockpath = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sockpath))
    os.chmod(sockpath, 0o666)  # dnsveil runs as 'nobody' after startup
    devdir = tmp_path / "dev"
    devdir.mkdir()
    cfg = cfgdir / "c.toml"
    cfg.write_text(f"""
[querylog]
syslog = true
[upstreams.knot]
url = "udp://127.0.0.1:{relay.port}"
[groups.default]
upstreams = ["knot"]
allow_plaintext = true
[[rules]]
domains = ["blocked.example"]
action = "nxdomain"
""")
    d = helpers.Dnsveil(tmp_path, [], extra=["-c", str(cfg)], timeout=1500)
    d.args = [shutil.which("unshare"), "-m", "--propagation", "private",
              "sh", "-c", PRIVATE_DEV, "sh", str(devdir), str(sockpath)] + d.args
    d.start()
    try:
        syslog_lines(sock, 1)  # the readiness probe
        ask(d, "www.test.")
        ask(d, "x.blocked.example.", "AAAA", tcp=True)
        got = syslog_lines(sock, 2)
        assert len(got) == 2, got
        pid = d.proc.pid
        msgs = []
        for g in got:
            # glibc: "<PRI>Mmm dd hh:mm:ss dnsveil[PID]: MESSAGE"
            m = re.fullmatch(r"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d dnsveil\[(\d+)\]: (.*)", g,
                             re.S)
            assert m, g
            assert int(m.group(1)) == 3 * 8 + 6, g  # LOG_DAEMON, LOG_INFO
            assert int(m.group(2)) == pid, g
            msgs.append(json.loads(m.group(3)))
        up, local = msgs
        assert up["name"] == "www.test." and up["type"] == "A" and up["rcode"] == "NOERROR", up
        assert up["source"] == "upstream" and up["upstream"] == "knot", up
        assert up["proto"] == "udp" and up["client"].startswith("127.0.0.1:"), up
        assert local["name"] == "x.blocked.example." and local["type"] == "AAAA", local
        assert local["rcode"] == "NXDOMAIN" and local["source"] == "local", local
        assert local["proto"] == "tcp", local

        # a reload builds a new query log: lines keep coming to syslog
        before = d.log_text().count("reloaded:")
        d.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while d.log_text().count("reloaded:") == before and time.monotonic() < end:
            time.sleep(0.05)
        ask(d, "after.blocked.example.")
        got = syslog_lines(sock, 1)
        assert len(got) == 1 and '"name":"after.blocked.example."' in got[0], got
    finally:
        problems = d.stop()
        sock.close()
    assert not problems, problems
