"""Signals, listeners, IPv6."""

import os
import pwd
import signal
import socket
import subprocess
import threading
import time

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers


def answer_of(host, port, name="www.test.", tcp=False):
    q = helpers.make_query(name, "A")
    r = (dns.query.tcp if tcp else dns.query.udp)(q, host, port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    return sorted(rd.to_text() for rd in r.answer[-1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_exits_zero(dnsveil, knot, sig):
    d = dnsveil("udp://127.0.0.1:%d" % knot.port)
    assert answer_of(d.host, d.port) == ["192.0.2.1"]
    assert d.stop(sig) == [], d.log_text()[-2000:]


def test_sigterm_drains_in_flight_query(dnsveil, relay_factory):
    relay = relay_factory(delay=0.6)
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, timeout=3000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(helpers.make_query("target.test.", "A", qid=77).to_wire(), (d.host, d.port))
        time.sleep(0.2)
        d.send_signal(signal.SIGTERM)
        r = dns.message.from_wire(s.recv(4096))
    assert r.id == 77 and r.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.30"]
    assert d.stop() == []


def test_sigusr1_stats_line(dnsveil, knot):
    d = dnsveil("udp://127.0.0.1:%d" % knot.port)
    stats, line = d.stats()
    assert "dropped" in stats and "formerr" in stats, line
    assert answer_of(d.host, d.port) == ["192.0.2.1"], "must keep serving after SIGUSR1"


def test_several_listeners(dnsveil, knot):
    listen = [("127.0.0.1", helpers.free_port()), ("127.0.0.2", helpers.free_port(("127.0.0.2",)))]
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, listen=listen)
    for host, port in listen:
        for tcp in (False, True):
            assert answer_of(host, port, "multi.test.", tcp) == [
                "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"]


needs_ipv6 = pytest.mark.skipif(not helpers.have_ipv6(), reason="::1 not configured")


@needs_ipv6
def test_listen_on_ipv6_loopback(dnsveil, knot):
    port = helpers.free_port(("::1",))
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, listen=[("::1", port)])
    for tcp in (False, True):
        assert answer_of("::1", port, tcp=tcp) == ["192.0.2.1"]
        for client in ("dig", "kdig"):
            got = helpers.CLIENTS[client]("::1", port, "www.test.", "AAAA", tcp)
            assert got.rcode == "NOERROR"
            assert [rd.to_text() for _, _, rd in got.answer] == ["2001:db8::1"]


@needs_ipv6
@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_ipv6_upstream(dnsveil, knot, scheme):
    if not knot.v6:
        pytest.skip("knotd not on ::1")
    d = dnsveil("%s://[::1]:%d" % (scheme, knot.port))
    assert answer_of(d.host, d.port, "target.test.") == ["192.0.2.30"]


def proc_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(v) for v in value.split()]
    return ids


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
@pytest.mark.parametrize("user", [None, "daemon"], ids=["default-nobody", "daemon"])
def test_drops_privileges_after_binding(dnsveil, knot, user):
    extra = ["--user", user] if user else []
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=extra)
    pw = pwd.getpwnam(user or "nobody")
    ids = proc_ids(d.proc.pid)
    assert set(ids["Uid"]) == {pw.pw_uid}, ids
    assert set(ids["Gid"]) == {pw.pw_gid}, ids
    assert 0 not in ids["Groups"], ids
    assert answer_of(d.host, d.port) == ["192.0.2.1"]


def test_daemon_mode_with_pidfile(tmp_path, knot):
    port = helpers.free_port()
    pidfile = tmp_path / "dnsveil.pid"
    args = [helpers.dnsveil_bin(), "-l", "127.0.0.1:%d" % port,
            "-u", "udp://127.0.0.1:%d" % knot.port, "--daemon", "--pidfile", str(pidfile)]
    started = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert started.returncode == 0, started.stderr
    end = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < end:
        time.sleep(0.05)
    pid = int(pidfile.read_text().strip())
    try:
        helpers.wait_for_dns("127.0.0.1", port, deadline=10)
        assert answer_of("127.0.0.1", port, "c1.test.") == ["192.0.2.30"]
    finally:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with open("/proc/%d/status" % pid) as f:
                if "\nState:\tZ" in f.read():
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("daemon pid %d still running 10 s after SIGTERM" % pid)
