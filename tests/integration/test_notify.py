"""The service manager's notify protocol, against our own NOTIFY_SOCKET
listener (what systemd does for Type=notify): READY=1 only once every
listener answers, RELOADING=1/READY=1 around SIGHUP, WATCHDOG=1 at half of
WATCHDOG_USEC, STOPPING=1 on SIGTERM, STATUS= lines with the counters.

Each datagram is checked to come from the dnsveil process itself
(SCM_CREDENTIALS), as systemd checks with NotifyAccess=main."""

import os
import re
import signal
import socket
import struct
import subprocess
import time
import uuid

import dns.message
import pytest

import helpers
from helpers import dnsveil_bin, free_port, hostport, make_query, tcp_exchange, udp_exchange

UCRED = struct.Struct("3i")


class NotifyListener:
    """A datagram socket like systemd's /run/systemd/notify: abstract
    ("@name") by default, or a path inside directory."""

    def __init__(self, directory=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if directory is None:
            name = "dnsveil-test-%s" % uuid.uuid4().hex
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(str(directory), "notify")
            self.sock.bind(self.address)
            # the daemon sends after it dropped to 'nobody'
            os.chmod(self.address, 0o777)
        self.messages = []   # (monotonic time, pid, {key: value})

    def receive(self, timeout):
        """The next datagram as (time, pid, fields), or None by the timeout."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[:UCRED.size])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        msg = (time.monotonic(), pid, fields)
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout=15.0, proc=None):
        """Reads until a datagram carries key; returns it (fails otherwise)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.receive(min(0.2, end - time.monotonic()))
            if msg and key in msg[2]:
                return msg
            if msg is None and proc is not None and proc.poll() is not None:
                break
        pytest.fail("no %s= datagram within %.0fs; got %r" % (key, timeout, self.messages),
                    pytrace=False)

    def close(self):
        self.sock.close()


class Daemon:
    def __init__(self, workdir, args, env, wrap_pid=False):
        self.log = workdir / ("dnsveil-notify-%s.log" % uuid.uuid4().hex[:8])
        cmd = [dnsveil_bin(), "-v"] + args
        if wrap_pid:
            # WATCHDOG_PID names the process itself, as systemd sets it: the
            # shell's PID is the one exec keeps
            cmd = ["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + cmd
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        self.expected_rc = 0

    def text(self):
        return self.log.read_text(errors="replace")

    def stop(self):
        """SIGTERM; problems as a list (exit code, sanitizer reports)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return ["did not exit within 15 s of SIGTERM"]
        problems = []
        if self.proc.returncode != self.expected_rc:
            problems.append("exit code %s" % self.proc.returncode)
        problems += ["log contains %r" % m for m in helpers.SANITIZER_MARKERS if m in self.text()]
        return problems


@pytest.fixture
def notify(tmp_path):
    listeners = []
    daemons = []

    def start(args, directory=None, extra_env=None, wrap_pid=False):
        listener = NotifyListener(directory)
        listeners.append(listener)
        env = dict(os.environ, NOTIFY_SOCKET=listener.address)
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        env.update(extra_env or {})
        d = Daemon(tmp_path, args, env, wrap_pid)
        daemons.append(d)
        return listener, d

    yield start
    problems = []
    for d in daemons:
        for p in d.stop():
            problems.append("%s: %s\n%s" % (d.log, p, d.text()[-3000:]))
    for listener in listeners:
        listener.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


DEAD_UPSTREAM = "udp://127.0.0.1:9"   # never asked: localhost is answered here


def localhost_answered(host, port, tcp=False):
    """One attempt, no retry: the listener must answer right now."""
    wire = make_query("localhost.", "A").to_wire()
    reply = tcp_exchange(wire, host, port, timeout=3.0) if tcp else \
        udp_exchange(wire, host, port, timeout=3.0)
    if reply is None:
        return False
    msg = dns.message.from_wire(reply)
    return any("127.0.0.1" in rr.to_text() for rr in msg.answer)


def status_counter(fields, name):
    m = re.search(r"%s (\d+)" % re.escape(name), fields.get("STATUS", ""))
    assert m, "no '%s N' in STATUS=%r" % (name, fields.get("STATUS"))
    return int(m.group(1))


def test_ready_only_when_every_listener_answers(notify):
    listen = [("127.0.0.1", free_port()), ("127.0.0.2", free_port(("127.0.0.2",)))]
    if helpers.have_ipv6():
        listen.append(("::1", free_port(("::1",))))
    args = ["-u", DEAD_UPSTREAM]
    for h, p in listen:
        args += ["-l", hostport(h, p)]
    listener, d = notify(args)
    _, pid, fields = listener.wait_for("READY", proc=d.proc)
    assert listener.messages[0][2].get("READY") == "1", \
        "READY=1 must be the first message: %r" % listener.messages
    assert pid == d.proc.pid, "sent by pid %s, not the daemon (%s)" % (pid, d.proc.pid)
    # no retries: at READY=1 every socket is bound and the loop about to run
    for h, p in listen:
        assert localhost_answered(h, p), "%s not answering over UDP at READY=1" % hostport(h, p)
        assert localhost_answered(h, p, tcp=True), \
            "%s not answering over TCP at READY=1" % hostport(h, p)
    assert status_counter(fields, "listeners") == len(listen)
    assert re.search(r"upstreams up \d+/1\b", fields["STATUS"]), fields


def test_no_ready_when_a_listener_cannot_bind(notify):
    good = free_port()
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        listener, d = notify(["-u", DEAD_UPSTREAM, "-l", hostport("127.0.0.1", good),
                              "-l", hostport("127.0.0.1", busy.getsockname()[1])])
        d.expected_rc = 1
        assert d.proc.wait(15) == 1
        while listener.receive(0.3):
            pass
        assert not any("READY" in m[2] for m in listener.messages), listener.messages
        assert "cannot listen" in d.text()
    finally:
        busy.close()


def write_config(path, listen):
    path.write_text("[server]\nlisten = [%s]\n\n[upstreams.dead]\nurl = \"%s\"\n" % (
        ", ".join('"%s"' % hostport(h, p) for h, p in listen), DEAD_UPSTREAM))


def test_reloading_then_ready_around_sighup(notify, cfgdir):
    first = ("127.0.0.1", free_port())
    second = ("127.0.0.1", free_port())
    conf = cfgdir / "dnsveil.toml"
    write_config(conf, [first])
    listener, d = notify(["-c", str(conf)])
    listener.wait_for("READY", proc=d.proc)

    # a good file: the new listener answers once READY=1 is back
    write_config(conf, [first, second])
    before = time.monotonic_ns() // 1000
    d.proc.send_signal(signal.SIGHUP)
    _, pid, fields = listener.wait_for("RELOADING")
    after = time.monotonic_ns() // 1000
    assert fields["RELOADING"] == "1" and pid == d.proc.pid
    # systemd (253+) pairs RELOADING=1 with the time of the reload request
    assert before <= int(fields["MONOTONIC_USEC"]) <= after, (before, fields, after)
    _, _, fields = listener.wait_for("READY")
    assert localhost_answered(*second), "the reloaded listener does not answer at READY=1"
    assert status_counter(fields, "listeners") == 2

    # a bad file: still RELOADING=1 then READY=1, on the old configuration
    conf.write_text("[server]\nlisten = 5\n")
    d.proc.send_signal(signal.SIGHUP)
    listener.wait_for("RELOADING")
    _, _, fields = listener.wait_for("READY")
    assert status_counter(fields, "listeners") == 2
    assert localhost_answered(*first) and localhost_answered(*second)
    assert "reload failed" in d.text()


def test_watchdog_pings_at_half_the_interval(notify):
    port = free_port()
    interval = 0.6
    listener, d = notify(["-u", DEAD_UPSTREAM, "-l", hostport("127.0.0.1", port)],
                         extra_env={"WATCHDOG_USEC": str(int(interval * 1e6))}, wrap_pid=True)
    listener.wait_for("READY", proc=d.proc)
    pings = []
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        msg = listener.receive(end - time.monotonic())
        if msg and msg[2].get("WATCHDOG") == "1":
            assert msg[1] == d.proc.pid
            pings.append(msg[0])
    # every interval/2 = 0.3 s: about 13 in 4 s; systemd only kills a service
    # whose pings are a whole interval apart, which must never happen
    assert 8 <= len(pings) <= 16, "%d pings in 4 s: %r" % (len(pings), pings)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < interval, "a gap of %.3f s between pings" % max(gaps)
    # (too frequent pings show in the count above; the gaps between receive
    # times are not checked from below: on a loaded machine two pings can be
    # read by this process in one go)


def test_watchdog_meant_for_another_process_is_left_alone(notify):
    listener, d = notify(["-u", DEAD_UPSTREAM, "-l", hostport("127.0.0.1", free_port())],
                         extra_env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    listener.wait_for("READY", proc=d.proc)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        listener.receive(end - time.monotonic())
    assert not any("WATCHDOG" in m[2] for m in listener.messages), listener.messages


def test_status_counts_queries_and_stopping_on_sigterm(notify, cfgdir):
    host, port = "127.0.0.1", free_port()
    # a path socket this time, as /run/systemd/notify is
    listener, d = notify(["-u", DEAD_UPSTREAM, "-l", hostport(host, port)], directory=cfgdir)
    _, _, fields = listener.wait_for("READY", proc=d.proc)
    assert status_counter(fields, "queries") == 0
    for _ in range(3):
        assert localhost_answered(host, port)
    d.proc.send_signal(signal.SIGUSR1)   # the statistics, also as STATUS=
    _, _, fields = listener.wait_for("STATUS")
    assert status_counter(fields, "queries") == 3, fields

    d.proc.send_signal(signal.SIGTERM)
    _, pid, fields = listener.wait_for("STOPPING")
    assert fields["STOPPING"] == "1" and pid == d.proc.pid
    assert d.proc.wait(15) == 0
    while listener.receive(0.2):
        pass
    assert "STOPPING" in listener.messages[-1][2], "sent after STOPPING=1: %r" % \
        listener.messages[-1:]
