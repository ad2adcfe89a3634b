"""packaging/systemd/dnsveil-resolved against temporary root trees shaped
like real systems: every file take-over and beside write is checked, and
restore leaves the tree exactly as it was (contents, modes, owners, symbolic
links), with no service touched under --root."""

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, dnsveil_bin

HELPER = REPO / "packaging" / "systemd" / "dnsveil-resolved"
STUB_LINK = "../run/systemd/resolve/stub-resolv.conf"


def snapshot(root):
    """Every path under root: type, mode, owner and content or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                            p.read_bytes())
    return out


def resolv_conf_in_use(root):
    """What /etc/resolv.conf of the tree says, its link followed inside root."""
    p = root / "etc/resolv.conf"
    if p.is_symlink():
        target = os.readlink(p)
        p = root / target.lstrip("/") if target.startswith("/") else root / "etc" / target
    return p.read_text()


def changed(before, after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def ubuntu_like(root):
    """resolved's stub behind a relative /etc/resolv.conf link."""
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/resolved.conf").write_text("[Resolve]\n#DNS=\n")
    (root / "run/systemd/resolve").mkdir(parents=True)
    (root / "run/systemd/resolve/stub-resolv.conf").write_text(
        "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n"
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example lan\n")
    os.symlink(STUB_LINK, root / "etc/resolv.conf")
    (root / "var/lib/apt").mkdir(parents=True)


def static_file(root):
    """A plain resolv.conf, no systemd directories at all, no /var."""
    (root / "etc").mkdir()
    f = root / "etc/resolv.conf"
    f.write_text("domain home.example\nnameserver 192.0.2.1\n")
    os.chmod(f, 0o640)
    os.chown(f, 0, 4)


def absolute_link_and_old_dropin(root):
    """An absolute link to resolved's uplink file, and a drop-in of the same
    name already there (saved and put back, not lost)."""
    ubuntu_like_dirs = root / "etc/systemd/resolved.conf.d"
    ubuntu_like_dirs.mkdir(parents=True)
    old = ubuntu_like_dirs / "dnsveil.conf"
    old.write_text("[Resolve]\nDNSSEC=no\n")
    os.chmod(old, 0o600)
    (root / "run/systemd/resolve").mkdir(parents=True)
    (root / "run/systemd/resolve/resolv.conf").write_text("nameserver 192.0.2.53\n")
    os.symlink("/run/systemd/resolve/resolv.conf", root / "etc/resolv.conf")
    (root / "var").mkdir()


TREES = [ubuntu_like, static_file, absolute_link_and_old_dropin]


@pytest.fixture
def tripwire(tmp_path):
    """A systemctl first in PATH that records being called: under --root the
    helper must start, stop and restart nothing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl-called"
    script = bindir / "systemctl"
    script.write_text("#!/bin/sh\necho \"$*\" >> %s\nexit 0\n" % shlex.quote(str(log)))
    script.chmod(0o755)
    return bindir, log


def run(root, *args, tripwire=None, env_root=False, expect=0):
    env = dict(os.environ)
    if tripwire:
        env["PATH"] = "%s:%s" % (tripwire[0], env["PATH"])
    cmd = [str(HELPER)]
    if env_root:
        env["DV_ROOT"] = str(root)
    else:
        cmd += ["--root", str(root)]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == expect, "%s: rc=%d\n%s%s" % (" ".join(cmd + list(args)),
                                                          r.returncode, r.stdout, r.stderr)
    if tripwire:
        assert not tripwire[1].exists(), "systemctl called under --root: " + \
            tripwire[1].read_text()
    return r


def ini(text):
    """Key=value lines of a unit-style file (comments and sections left out)."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def check_service_dropin(root, listens):
    d = root / "etc/systemd/system/dnsveil.service.d/resolved.conf"
    kv = ini(d.read_text())
    args = "".join(" -l %s" % l for l in listens)
    assert kv["ExecStart"] == ["", "/usr/sbin/dnsveil -c /etc/dnsveil/dnsveil.toml" + args]
    assert kv["ExecStartPre"] == [
        "", "/usr/sbin/dnsveil --check -c /etc/dnsveil/dnsveil.toml" + args]
    assert "[Service]" in d.read_text()
    assert stat.S_IMODE(d.stat().st_mode) == 0o644
    # the command line is one dnsveil accepts
    r = subprocess.run([dnsveil_bin(), "--check", "-c", str(REPO / "config.example.toml")]
                       + args.split(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and ("%d listeners" % len(listens)) in r.stdout, r


@pytest.mark.parametrize("make_tree", TREES, ids=lambda f: f.__name__)
def test_take_over_then_restore(tmp_path, make_tree, tripwire):
    root = tmp_path / "root"
    root.mkdir()
    make_tree(root)
    before = snapshot(root)
    original_search = [l for l in resolv_conf_in_use(root).splitlines()
                       if l.startswith(("search", "domain"))]

    run(root, "take-over", tripwire=tripwire)
    after = snapshot(root)
    resolv = root / "etc/resolv.conf"
    assert not resolv.is_symlink() and stat.S_IMODE(resolv.stat().st_mode) == 0o644
    lines = [l for l in resolv.read_text().splitlines() if l and not l.startswith("#")]
    assert [l for l in lines if l.startswith("nameserver")] == ["nameserver 127.0.0.53"]
    # the search domains in force are kept
    assert [l for l in lines if l.startswith(("search", "domain"))] == original_search
    dropin = root / "etc/systemd/resolved.conf.d/dnsveil.conf"
    kv = ini(dropin.read_text())
    assert kv == {"DNSStubListener": ["no"], "DNS": ["127.0.0.153"], "Domains": ["~."]}
    assert "[Resolve]" in dropin.read_text()
    check_service_dropin(root, ["127.0.0.53:53", "127.0.0.153:53"])
    touched = {"etc/resolv.conf", "etc/systemd/resolved.conf.d/dnsveil.conf",
               "etc/systemd/system/dnsveil.service.d/resolved.conf"}
    unexpected = [p for p in changed(before, after) if p not in touched and not any(
        t.startswith(p + "/") for t in touched) and not p.startswith("var")]
    assert not unexpected, unexpected
    r = run(root, "status", tripwire=tripwire)
    assert "mode: take-over" in r.stdout and "/etc/resolv.conf" in r.stdout

    # the same mode again changes nothing; another mode is refused
    run(root, "take-over", tripwire=tripwire)
    assert snapshot(root) == after
    r = run(root, "beside", tripwire=tripwire, expect=1)
    assert "restore" in r.stderr
    assert snapshot(root) == after

    run(root, "restore", tripwire=tripwire)
    assert changed(before, snapshot(root)) == []
    r = run(root, "status", tripwire=tripwire)
    assert "mode: none" in r.stdout


@pytest.mark.parametrize("make_tree", TREES, ids=lambda f: f.__name__)
def test_beside_then_restore(tmp_path, make_tree, tripwire):
    root = tmp_path / "root"
    root.mkdir()
    make_tree(root)
    before = snapshot(root)

    run(root, "--address", "127.0.0.199", "beside", tripwire=tripwire, env_root=True)
    after = snapshot(root)
    # resolv.conf stays with resolved
    assert after["etc/resolv.conf"] == before["etc/resolv.conf"]
    kv = ini((root / "etc/systemd/resolved.conf.d/dnsveil.conf").read_text())
    assert kv == {"DNS": ["127.0.0.199"], "Domains": ["~."]}
    check_service_dropin(root, ["127.0.0.199:53"])

    run(root, "restore", tripwire=tripwire, env_root=True)
    assert changed(before, snapshot(root)) == []


def test_beside_on_ipv6_loopback(tmp_path, tripwire):
    root = tmp_path / "root"
    root.mkdir()
    ubuntu_like(root)
    before = snapshot(root)
    run(root, "--address", "::1", "beside", tripwire=tripwire)
    kv = ini((root / "etc/systemd/resolved.conf.d/dnsveil.conf").read_text())
    assert kv["DNS"] == ["::1"]
    check_service_dropin(root, ["[::1]:53"])
    run(root, "restore", tripwire=tripwire)
    assert snapshot(root) == before


@pytest.mark.parametrize("address", ["127.0.0.54", "127.0.0.53", "192.0.2.1", "127.0.0.300",
                                     "127.1", "localhost", "::2"])
def test_addresses_resolved_uses_or_not_loopback_are_refused(tmp_path, tripwire, address):
    root = tmp_path / "root"
    root.mkdir()
    ubuntu_like(root)
    before = snapshot(root)
    for mode in ("beside", "take-over"):
        r = run(root, "--address", address, mode, tripwire=tripwire, expect=1)
        assert "loopback address" in r.stderr
        assert snapshot(root) == before


def test_restore_without_a_mode_changes_nothing(tmp_path, tripwire):
    root = tmp_path / "root"
    root.mkdir()
    ubuntu_like(root)
    before = snapshot(root)
    r = run(root, "restore", tripwire=tripwire)
    assert "nothing to restore" in r.stdout
    assert snapshot(root) == before


def test_restore_keeps_what_the_user_added(tmp_path, tripwire):
    """A file the user put into a directory the helper created is not lost."""
    root = tmp_path / "root"
    root.mkdir()
    static_file(root)
    run(root, "take-over", tripwire=tripwire)
    mine = root / "etc/systemd/resolved.conf.d/mine.conf"
    mine.write_text("[Resolve]\nLLMNR=no\n")
    r = run(root, "restore", tripwire=tripwire)
    assert mine.read_text() == "[Resolve]\nLLMNR=no\n"
    assert "not empty" in r.stderr
    assert not (root / "etc/systemd/resolved.conf.d/dnsveil.conf").exists()
    assert (root / "etc/resolv.conf").read_text() == "domain home.example\nnameserver 192.0.2.1\n"


def test_bad_usage(tmp_path):
    r = subprocess.run([str(HELPER), "--root", str(tmp_path / "missing"), "restore"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not a directory" in r.stderr
    r = subprocess.run([str(HELPER), "--root", str(tmp_path), "reboot"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "unknown command" in r.stderr
    r = subprocess.run([str(HELPER), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "take-over" in r.stdout and "restore" in r.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", "-s", "sh", str(HELPER)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert HELPER.read_text().startswith("#!/bin/sh\n")
