"""packaging/systemd/dnsveil.service: `systemd-analyze verify` is clean and
`systemd-analyze security` rates it at most 2.0 (the score is printed); and
dnsveil runs the way the unit starts it -- as an ordinary user holding only
CAP_NET_BIND_SERVICE as an ambient capability, with no privileges to drop --
binding port 53, answering, serving the control socket from its runtime
directory and telling the service manager when it is ready.

systemd need not be PID 1 here: verify and security --offline read the file."""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dns.message
import pytest

import helpers
from helpers import REPO, dnsveil_bin, make_query, udp_exchange
from test_notify import NotifyListener

UNIT = REPO / "packaging" / "systemd" / "dnsveil.service"
MAX_EXPOSURE = 2.0
CAP_NET_BIND_SERVICE = 10

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (package systemd)")


def unit_settings():
    """[Service] and [Unit] keys as {key: [values]} (repeatable keys keep all)."""
    out = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@needs_analyze
def test_verify_is_clean(tmp_path):
    # the unit names the installed binary; point it at the one under test
    # (the package test verifies the installed unit as it is, man pages too)
    unit = tmp_path / "dnsveil.service"
    unit.write_text(UNIT.read_text().replace("/usr/sbin/dnsveil", dnsveil_bin()))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "systemd-analyze verify: rc=%d\n%s%s" % (r.returncode, r.stdout, r.stderr)


@needs_analyze
def test_security_exposure_at_most_2(capsys):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for dnsveil\.service: ([0-9.]+) (\w+)", r.stdout)
    assert m, "no overall exposure level in:\n%s%s" % (r.stdout, r.stderr)
    score = float(m.group(1))
    weak = [l.strip() for l in r.stdout.splitlines() if l.lstrip().startswith("✗")]
    with capsys.disabled():
        print("\n[dnsveil.service] systemd-analyze security --offline: exposure %.1f %s "
              "(%d settings not at their strictest)" % (score, m.group(2), len(weak)))
    assert score <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (score, MAX_EXPOSURE,
                                                                "\n".join(weak))


def test_unit_contract():
    """What the rest of the package relies on."""
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["User"] == ["dnsveil"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["ExecStartPre"] == ["/usr/sbin/dnsveil --check -c /etc/dnsveil/dnsveil.toml"]
    assert s["ExecStart"] == ["/usr/sbin/dnsveil -c /etc/dnsveil/dnsveil.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RuntimeDirectory"] == ["dnsveil"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    assert "@system-service" in s["SystemCallFilter"]
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "MemoryDenyWriteExecute", "LockPersonality", "NoNewPrivileges"):
        assert s.get(key) in (["yes"], ["strict"]), key
    assert "PrivateUsers" not in s, "a private user namespace cannot bind the host's port 53"


# --------------------------------------------------------------------------
# started as the unit starts it

def address_with_port_53_free():
    """A loopback address whose port 53 is free over UDP and TCP (the
    provisioning daemon holds 127.0.0.53:53)."""
    for last in range(154, 250):
        host = "127.0.0.%d" % last
        socks = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, 53))
            return host
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no loopback address with port 53 free")


def unprivileged(user, ambient):
    """setpriv as systemd runs User= with AmbientCapabilities=."""
    caps = ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"] if ambient \
        else ["--inh-caps=-all"]
    return ["setpriv", "--reuid=%s" % user, "--regid=%d" % pwd.getpwnam(user).pw_gid,
            "--clear-groups", "--no-new-privs"] + caps


def proc_status(pid):
    return dict(l.split(":", 1) for l in Path("/proc/%d/status" % pid).read_text().splitlines())


@pytest.fixture
def runtime_dir():
    """Like RuntimeDirectory=dnsveil: owned by the service's user, 0750."""
    d = Path(tempfile.mkdtemp(prefix="dnsveil-run-"))
    os.chmod(d, 0o750)
    os.chown(d, pwd.getpwnam("nobody").pw_uid, -1)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed (util-linux)")
def test_runs_unprivileged_with_only_net_bind_service(runtime_dir, tmp_path):
    host = address_with_port_53_free()
    control = runtime_dir / "control.sock"
    listener = NotifyListener()
    log = tmp_path / "dnsveil.log"
    cmd = unprivileged("nobody", ambient=True) + [
        dnsveil_bin(), "-l", "%s:53" % host, "-u", "udp://127.0.0.1:9", "--control", str(control)]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=dict(os.environ, NOTIFY_SOCKET=listener.address))
    try:
        _, pid, _ = listener.wait_for("READY", proc=proc)
        assert pid == proc.pid
        st = proc_status(proc.pid)
        uid = pwd.getpwnam("nobody").pw_uid
        assert st["Uid"].split() == [str(uid)] * 4, st["Uid"]
        assert int(st["CapEff"], 16) == 1 << CAP_NET_BIND_SERVICE, st["CapEff"]
        assert int(st["CapAmb"], 16) == 1 << CAP_NET_BIND_SERVICE, st["CapAmb"]
        reply = udp_exchange(make_query("localhost.", "A").to_wire(), host, 53)
        assert reply is not None and "127.0.0.1" in dns.message.from_wire(reply).to_text()
        assert control.is_socket() and control.stat().st_uid == uid
        assert (control.stat().st_mode & 0o777) == 0o600
        r = subprocess.run([dnsveil_bin(), "--control", str(control), "stats"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith("ok "), r
        text = log.read_text(errors="replace")
        assert "running as" not in text, "tried to switch users while not root:\n" + text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text(errors="replace")
        text = log.read_text(errors="replace")
        assert not any(m in text for m in helpers.SANITIZER_MARKERS), text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed (util-linux)")
def test_without_the_capability_port_53_is_refused(tmp_path):
    host = address_with_port_53_free()
    cmd = unprivileged("nobody", ambient=False) + [
        dnsveil_bin(), "-l", "%s:53" % host, "-u", "udp://127.0.0.1:9"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot listen on %s:53" % host in r.stderr and "Permission denied" in r.stderr, \
        r.stderr
