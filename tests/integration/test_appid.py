"""Rules on the program that sent a query (users, cgroups, applications):
real kdig processes run as two users, in two cgroups, and under another
name, over UDP and TCP, IPv4 and IPv6; each must reach its own upstream,
observed at counting relays in front of knotd. Needs root (useradd, runuser,
cgroup2)."""

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import helpers

USERS = ("dvtest-a", "dvtest-b")


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            if tail.split(" ")[0] == "cgroup2":
                return head.split(" ")[4]
    return None


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (users, cgroups)")


@pytest.fixture(scope="module")
def users():
    made = []
    for u in USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", u], check=True)
            made.append(u)
    yield USERS
    for u in made:
        subprocess.run(["userdel", u], check=False)


@pytest.fixture(scope="module")
def cgroups():
    mount = cgroup2_mount()
    if not mount:
        pytest.skip("no cgroup2 mount")
    top = os.path.join(mount, "dnsveil-test-%d" % os.getpid())
    a, b = os.path.join(top, "ca"), os.path.join(top, "cb")
    for d in (top, a, b):
        os.makedirs(d, exist_ok=True)
    yield top, a, b
    for d in (a, b, top):
        try:
            os.rmdir(d)
        except OSError:
            pass


@pytest.fixture(scope="module")
def appcopy():
    """kdig under two other names: one matched by name, one by path."""
    d = Path("/tmp") / ("dnsveil-app-%d" % os.getpid())
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o755)
    byname, bypath = d / "dvappname", d / "dvapppath"
    for p in (byname, bypath):
        shutil.copy(shutil.which("kdig"), p)
        os.chmod(p, 0o755)
    yield byname, bypath
    shutil.rmtree(d, ignore_errors=True)


RELAYS = ("user_a", "user_b", "cg_a", "cg_b", "app_name", "app_path", "fallback")


@pytest.fixture
def setup(relay_factory, dnsveil, cfgdir, users, cgroups, appcopy):
    relays = {n: relay_factory() for n in RELAYS}
    cfg = []
    for n, r in relays.items():
        cfg.append('[upstreams.%s]\nurl = "udp://127.0.0.1:%d"\n' % (n, r.port))
    for n in relays:
        cfg.append('[groups.g_%s]\nupstreams = ["%s"]\n' % (n, n))
    cfg.append(f"""
[[rules]]
applications = ["dvappname"]
group = "g_app_name"
[[rules]]
applications = ["{appcopy[1]}"]
group = "g_app_path"
[[rules]]
users = ["{users[0]}"]
group = "g_user_a"
[[rules]]
users = [{pwd.getpwnam(users[1]).pw_uid}]
group = "g_user_b"
[[rules]]
cgroups = ["dnsveil-test-*/ca"]
group = "g_cg_a"
[[rules]]
cgroups = ["/dnsveil-test-{os.getpid()}/cb"]
group = "g_cg_b"
[[rules]]
users = [0]
cgroups = ["no-such-cgroup-anywhere"]
group = "g_fallback"
""")
    path = cfgdir / "appid.toml"
    path.write_text("\n".join(cfg))
    listen = [("127.0.0.1", helpers.free_port())]
    if helpers.have_ipv6():
        listen.append(("::1", helpers.free_port(("::1",))))
    default = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % default.port, listen=listen,
                extra=["-c", str(path)])
    return d, relays, default, cgroups, appcopy


def kdig(argv0, host, port, name, tcp, prefix=()):
    cmd = list(prefix) + [str(argv0), "@" + host, "-p", str(port), name, "A", "+time=3",
                          "+retry=0", "+tcp" if tcp else "+notcp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert "status: NOERROR" in out.stdout or "status: NXDOMAIN" in out.stdout, (
        cmd, out.stdout, out.stderr)


def cases(d):
    for host, port in d.listen:
        for tcp in (False, True):
            yield host, port, tcp, "%s-%s" % ("tcp" if tcp else "udp", "6" if ":" in host else "4")


def assert_only(relays, default, name, want):
    got = {n: r.count(name) for n, r in relays.items()}
    got["default"] = default.count(name)
    assert got[want] == 1 and sum(got.values()) == 1, (name, got)


def test_users_reach_their_own_upstream(setup):
    d, relays, default, _, _ = setup
    for host, port, tcp, tag in cases(d):
        for user, relay in (("dvtest-a", "user_a"), ("dvtest-b", "user_b")):
            name = "%s-%s-%s.test." % (user, tag, uuid.uuid4().hex[:6])
            kdig("kdig", host, port, name, tcp, prefix=["runuser", "-u", user, "--"])
            assert_only(relays, default, name, relay)
        # root matches no user rule (and its cgroup no cgroup rule): default
        name = "root-%s-%s.test." % (tag, uuid.uuid4().hex[:6])
        kdig("kdig", host, port, name, tcp)
        assert_only(relays, default, name, "default")
    st, _ = d.stats()
    assert st["app_lookups"] > 0 and st["app_failed"] == 0, st


def test_cgroups_reach_their_own_upstream(setup):
    d, relays, default, (top, ca, cb), _ = setup
    for host, port, tcp, tag in cases(d):
        for cg, relay in ((ca, "cg_a"), (cb, "cg_b")):
            name = "cg-%s-%s-%s.test." % (os.path.basename(cg), tag, uuid.uuid4().hex[:6])
            # the shell moves itself into the cgroup, then becomes kdig
            prefix = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg]
            kdig("kdig", host, port, name, tcp, prefix=prefix)
            assert_only(relays, default, name, relay)


def test_applications_by_name_and_path(setup):
    d, relays, default, _, (byname, bypath) = setup
    for host, port, tcp, tag in cases(d):
        name = "byname-%s-%s.test." % (tag, uuid.uuid4().hex[:6])
        kdig(byname, host, port, name, tcp)
        assert_only(relays, default, name, "app_name")
        # run as another user: the process is found all the same
        name = "bypath-%s-%s.test." % (tag, uuid.uuid4().hex[:6])
        kdig(bypath, host, port, name, tcp, prefix=["runuser", "-u", "dvtest-b", "--"])
        assert_only(relays, default, name, "app_path")


def test_v4_mapped_client_socket(setup):
    """A dual-stack IPv6 client socket sending to an IPv4 listener."""
    d, relays, default, _, _ = setup
    host, port = d.listen[0]
    if not helpers.have_ipv6():
        pytest.skip("no IPv6")
    name = "mapped-%s.test." % uuid.uuid4().hex[:6]
    script = ("import socket,sys,dns.message\n"
              "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
              "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
              "s.settimeout(3)\n"
              "s.sendto(dns.message.make_query(sys.argv[1],'A').to_wire(),"
              "('::ffff:'+sys.argv[2],int(sys.argv[3])))\n"
              "print(dns.message.from_wire(s.recvfrom(4096)[0]).rcode())\n")
    out = subprocess.run(["runuser", "-u", "dvtest-a", "--", "python3", "-c", script, name,
                          host, str(port)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert_only(relays, default, name, "user_a")


def test_no_lookup_without_sender_rules(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port)
    kdig("kdig", d.host, d.port, "plain.test.", False)
    st, _ = d.stats()
    assert st["app_lookups"] == 0, st


def test_bad_sender_keys_are_positioned(cfgdir):
    cfg = cfgdir / "bad.toml"
    cfg.write_text('[[rules]]\nusers = ["no-such-user-dv"]\naction = "refuse"\n'
                   '[[rules]]\napplications = ["bin/curl"]\naction = "refuse"\n'
                   '[[rules]]\nusers = [-4]\naction = "refuse"\n'
                   '[[rules]]\ncgroups = []\naction = "refuse"\n')
    out = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1
    err = out.stdout + out.stderr
    assert "bad.toml:2:10: error: no user named 'no-such-user-dv'" in err, err
    assert "bad.toml:5:17: error: application \"bin/curl\"" in err, err
    assert "bad.toml:8:10: error: user id -4 is out of range" in err, err
    assert "bad.toml:11:11: error: 'cgroups' is empty: the rule could never match" in err, err


def test_sender_gone_falls_to_next_rule(setup):
    """The socket closed before dnsveil looked: the user rule cannot match, the
    next rule (here the default group) decides, and the failure is counted.
    dnsveil is stopped while the client sends and closes, so the order is
    certain."""
    import signal
    import time
    d, relays, default, _, _ = setup
    host, port = d.listen[0]
    name = "gone-%s.test." % uuid.uuid4().hex[:6]
    script = ("import socket,sys,dns.message\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              "s.sendto(dns.message.make_query(sys.argv[1],'A').to_wire(),"
              "(sys.argv[2],int(sys.argv[3])))\n"
              "s.close()\n")
    before, _ = d.stats()
    d.send_signal(signal.SIGSTOP)
    try:
        out = subprocess.run(["runuser", "-u", "dvtest-a", "--", "python3", "-c", script, name,
                              host, str(port)], capture_output=True, text=True, timeout=20)
    finally:
        d.send_signal(signal.SIGCONT)
    assert out.returncode == 0, out.stderr
    end = time.monotonic() + 5
    while default.count(name) == 0 and time.monotonic() < end:
        time.sleep(0.05)
    assert_only(relays, default, name, "default")
    after, _ = d.stats()
    assert after["app_failed"] == before["app_failed"] + 1, (before, after)
