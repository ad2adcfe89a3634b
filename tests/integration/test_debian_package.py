"""The Debian package, built once per run from a clean copy of the tree with
`dpkg-buildpackage -us -uc -b` (third_party/build.sh runs inside the build):
lintian reports nothing, the .deb holds what it should, and on this machine
`dpkg -i` installs it, the installed unit verifies (man pages included), the
installed binary checks its conffile and -- started like the unit starts it,
as the dnsveil user with only CAP_NET_BIND_SERVICE -- answers through a real
upstream, and `dpkg --purge` leaves nothing behind.

Skipped, saying why, when dpkg-dev or debhelper is missing; the lintian
test alone when lintian is."""

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import dns.message
import pytest

import helpers
from helpers import REPO, free_port, hostport, make_query, udp_exchange
from test_notify import NotifyListener
from test_systemd_unit import CAP_NET_BIND_SERVICE, proc_status, unprivileged

pytestmark = [
    pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None,
                       reason="dpkg-dev is missing: cannot build the Debian package"),
    pytest.mark.skipif(shutil.which("dh") is None,
                       reason="debhelper is missing: cannot build the Debian package"),
]

BUILD_TIMEOUT = 1800   # a fresh machine builds wolfSSL and ngtcp2 first


def clean_copy(dest):
    """The tree as a clone would have it: tracked and new files, nothing
    ignored (no build/), the top-level debian link kept as a link."""
    try:
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co",
                                "--exclude-standard"], capture_output=True, check=True,
                               timeout=60).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "build", "__pycache__"))
        return
    for f in files:
        if not f:
            continue
        src = REPO / os.fsdecode(f)
        if not os.path.lexists(src):   # deleted but not yet committed
            continue
        target = dest / os.fsdecode(f)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)


class Build:
    def __init__(self, workdir):
        self.workdir = workdir
        self.src = workdir / "dnsveil"
        self.log = workdir / "dpkg-buildpackage.log"

    def run(self):
        self.src.mkdir()
        clean_copy(self.src)
        with open(self.log, "wb") as logf:
            r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=self.src,
                               stdout=logf, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        if r.returncode != 0:
            pytest.fail("dpkg-buildpackage failed (rc=%d); log tail:\n%s" % (
                r.returncode, self.log.read_text(errors="replace")[-5000:]), pytrace=False)
        debs = sorted(self.workdir.glob("dnsveil_*.deb"))
        assert len(debs) == 1, list(self.workdir.iterdir())
        self.deb = debs[0]
        self.changes = next(self.workdir.glob("dnsveil_*.changes"))
        return self


@pytest.fixture(scope="module")
def package():
    """One build per run, shared by every test here."""
    workdir = Path(tempfile.mkdtemp(prefix="dnsveil-deb-"))
    try:
        yield Build(workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def deb_contents(deb):
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1].lstrip(".") if "->" not in line else
            line.split(" -> ")[0].split()[-1].lstrip("."): line for line in out.splitlines()}


def test_package_contents(package, capsys):
    size = package.deb.stat().st_size
    with capsys.disabled():
        print("\n[debian] %s: %d bytes" % (package.deb.name, size))
    files = deb_contents(package.deb)
    for path in ("/usr/sbin/dnsveil", "/usr/sbin/dnsveil-resolved",
                 "/etc/dnsveil/dnsveil.toml", "/lib/systemd/system/dnsveil.service",
                 "/usr/share/man/man8/dnsveil.8.gz", "/usr/share/man/man5/dnsveil.toml.5.gz",
                 "/usr/share/man/man8/dnsveil-resolved.8.gz", "/usr/share/doc/dnsveil/copyright"):
        assert path in files, "%s not in the package:\n%s" % (path, "\n".join(sorted(files)))
    assert files["/usr/sbin/dnsveil"].startswith("-rwxr-xr-x root/root")
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(package.deb)],
                               capture_output=True, check=True).stdout
    assert b"conffiles" in conffiles
    info = subprocess.run(["dpkg-deb", "-f", str(package.deb)], capture_output=True, text=True,
                          check=True).stdout
    assert re.search(r"^Depends:.*\badduser\b", info, re.M), info
    # the statically linked Debian sources, by exact version
    assert re.search(r"^Built-Using: .*ngtcp2 \(= [^)]+\).*wolfssl \(= [^)]+\)", info, re.M), info
    # the unit in the package is the one in packaging/systemd
    unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(package.deb)], capture_output=True,
                          check=True).stdout
    assert (REPO / "packaging/systemd/dnsveil.service").read_bytes() in unit


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian is not installed")
def test_lintian_reports_nothing(package, capsys):
    r = subprocess.run(["lintian", "--pedantic", "--info", "--display-experimental",
                        str(package.changes)], capture_output=True, text=True, timeout=600)
    tags = [l for l in r.stdout.splitlines() if re.match(r"^[EWIPX]: ", l)]
    with capsys.disabled():
        print("\n[debian] lintian --pedantic --info: %s" % ("\n  ".join(tags) or "no tags"))
    assert r.returncode == 0 and not tags, r.stdout + r.stderr


# --------------------------------------------------------------------------
# installed on this machine

def dpkg_status(name="dnsveil"):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                       text=True)
    return r.stdout if r.returncode == 0 else ""


def account_exists(kind, name="dnsveil"):
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def installed(package):
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root")
    if dpkg_status().startswith("install"):
        pytest.skip("a dnsveil package is already installed here; not replacing it")
    if account_exists("user") or account_exists("group"):
        pytest.skip("a dnsveil user or group exists that this test did not create")
    r = subprocess.run(["dpkg", "-i", str(package.deb)], capture_output=True, text=True,
                       timeout=300)
    try:
        assert r.returncode == 0, "dpkg -i: %s%s" % (r.stdout, r.stderr)
        files = subprocess.run(["dpkg", "-L", "dnsveil"], capture_output=True, text=True,
                               check=True).stdout.split()
        yield files
    finally:
        if dpkg_status():
            subprocess.run(["dpkg", "--purge", "dnsveil"], capture_output=True, timeout=300)


@pytest.fixture
def runtime_dir():
    d = Path(tempfile.mkdtemp(prefix="dnsveil-run-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_install_run_and_purge(installed, knot, runtime_dir):
    assert dpkg_status() == "install ok installed"
    user = pwd.getpwnam("dnsveil")
    assert user.pw_uid < 1000 and user.pw_dir == "/nonexistent", user
    assert user.pw_shell.endswith("nologin") or user.pw_shell == "/bin/false", user
    assert grp.getgrgid(user.pw_gid).gr_name == "dnsveil"

    # the shipped configuration: valid, control socket in the unit's runtime dir
    r = subprocess.run(["/usr/sbin/dnsveil", "--check", "-c", "/etc/dnsveil/dnsveil.toml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and ": ok:" in r.stdout, r
    conf = Path("/etc/dnsveil/dnsveil.toml").read_text()
    assert re.search(r'^control = "/run/dnsveil/control\.sock"$', conf, re.M)
    assert re.search(r'^listen = \["127\.0\.0\.53:53"\]$', conf, re.M)
    conffiles = Path("/var/lib/dpkg/info/dnsveil.conffiles").read_text().split()
    assert conffiles == ["/etc/dnsveil/dnsveil.toml"]

    # the installed unit, as it is (binary, kill and man pages all present)
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", "/lib/systemd/system/dnsveil.service"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r
    # nothing enabled or started by the installation
    assert not Path("/etc/systemd/system/multi-user.target.wants/dnsveil.service").exists()
    for man in ("dnsveil", "dnsveil.toml", "dnsveil-resolved"):
        assert any(f.startswith("/usr/share/man/") and ("/%s." % man) in f for f in installed)

    # the installed binary, started as the unit does, on a free loopback port
    # with a test configuration forwarding to a real knotd
    port = free_port()
    os.chown(runtime_dir, user.pw_uid, user.pw_gid)
    os.chmod(runtime_dir, 0o750)
    test_conf = runtime_dir / "test.toml"
    test_conf.write_text(
        '[server]\nlisten = ["%s"]\ncontrol = "%s"\n\n[upstreams.knot]\nurl = "udp://%s"\n'
        '[groups.default]\nupstreams = ["knot"]\nallow_plaintext = true\n' % (
            hostport("127.0.0.1", port), runtime_dir / "control.sock",
            hostport("127.0.0.1", knot.port)))
    os.chmod(test_conf, 0o644)
    listener = NotifyListener()
    log = runtime_dir / "dnsveil.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(unprivileged("dnsveil", ambient=True) +
                                ["/usr/sbin/dnsveil", "-c", str(test_conf)],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, NOTIFY_SOCKET=listener.address))
    try:
        listener.wait_for("READY", proc=proc)
        st = proc_status(proc.pid)
        assert st["Uid"].split()[0] == str(user.pw_uid)
        assert int(st["CapEff"], 16) == 1 << CAP_NET_BIND_SERVICE
        reply = udp_exchange(make_query("www.test.", "A").to_wire(), "127.0.0.1", port)
        assert reply is not None, log.read_text(errors="replace")
        msg = dns.message.from_wire(reply)
        assert "192.0.2.1" in msg.to_text(), msg.to_text()
        r = subprocess.run(["/usr/sbin/dnsveil", "--control", str(runtime_dir / "control.sock"),
                            "stats"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "queries=1" in r.stdout, r
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()

    # purge: not a file, directory, account or systemd state left
    r = subprocess.run(["dpkg", "--purge", "dnsveil"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dpkg_status() == ""
    left = [f for f in installed if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, left
    for d in ("/etc/dnsveil", "/var/lib/dnsveil", "/usr/share/doc/dnsveil"):
        assert not os.path.lexists(d), d
    assert not account_exists("user") and not account_exists("group")
    leftovers = [str(p) for base in ("/var/lib/systemd/deb-systemd-helper-enabled",
                                     "/var/lib/systemd/deb-systemd-helper-masked",
                                     "/etc/systemd/system")
                 for p in Path(base).rglob("dnsveil*")] if Path("/var/lib/systemd").exists() else []
    assert not leftovers, leftovers
    assert not list(Path("/var/lib/dpkg/info").glob("dnsveil.*"))
