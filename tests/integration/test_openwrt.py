"""The OpenWrt package's scripts (packaging/openwrt/files), run on Debian:

- shellcheck (sh dialect) on every shell script;
- the UCI -> TOML renderer against recorded `uci show` fixtures
  (openwrt/render/*.show): good ones must give the recorded TOML and pass
  `dnsveil --check`; bad ones must be refused, by the renderer with the UCI
  name of the problem, or by `dnsveil --check` with FILE:LINE:COL;
- the package's own /etc/config/dnsveil, rendered and checked, and a
  rendered configuration actually serving (split domain, browser canary);
- the dnsmasq helper against /etc/config/dhcp fixture trees: apply points
  the chosen instances at dnsveil, apply again is idempotent, restore gives
  the original file back byte for byte.

Every script runs under dash and under busybox sh with a PATH holding only
busybox applets (busybox awk, sed, cp...), as on a router."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import dns.rcode
import pytest

import helpers

OW = helpers.REPO / "packaging" / "openwrt"
FILES = OW / "files"
DATA = helpers.HERE / "openwrt"
RENDER = FILES / "dnsveil-uci2toml"
DNSMASQ = FILES / "dnsveil-dnsmasq"
SCRIPTS = [FILES / "dnsveil.init", RENDER, DNSMASQ]


# --------------------------------------------------------------------------
# shells

@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory):
    """A directory with one symlink per busybox applet, and nothing else."""
    bb = shutil.which("busybox")
    if bb is None:
        return None
    d = tmp_path_factory.mktemp("busybox-bin")
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        os.symlink(bb, d / a)
    return d


@pytest.fixture(params=["dash", "busybox"])
def shell(request, busybox_path):
    """run(script, *args, env=...) under the chosen shell."""
    if request.param == "busybox":
        if busybox_path is None:
            pytest.skip("busybox is not installed")
        prefix = [str(busybox_path / "sh")]
        path = str(busybox_path)
    else:
        prefix = ["dash"]
        path = os.environ.get("PATH", "/usr/bin:/bin")

    def run(script, *args, env=None):
        e = {"PATH": path, "LC_ALL": "C"}
        e.update(env or {})
        return subprocess.run(prefix + [str(script)] + [str(a) for a in args],
                              capture_output=True, text=True, env=e, timeout=60)

    run.name = request.param
    return run


# --------------------------------------------------------------------------
# test input plumbing: UCI files as `uci show` would print them

def uci_parse(text):
    """[(type, name or None, [(kind, option, value)])] from a UCI file."""
    sections = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "config":
            sections.append((words[1], words[2] if len(words) > 2 else None, []))
        elif words[0] in ("option", "list") and sections:
            sections[-1][2].append((words[0], words[1], words[2] if len(words) > 2 else ""))
    return sections


def uci_show(package, text):
    def quote(v):
        return "'" + v.replace("'", "'\\''") + "'"

    out, seen = [], {}
    for typ, name, opts in uci_parse(text):
        idx = seen.get(typ, 0)
        seen[typ] = idx + 1
        sec = name if name else "@%s[%d]" % (typ, idx)
        out.append("%s.%s=%s" % (package, sec, typ))
        values = {}
        for kind, opt, val in opts:
            values.setdefault(opt, []).append(val)
        for opt, vals in values.items():
            out.append("%s.%s.%s=%s" % (package, sec, opt, " ".join(quote(v) for v in vals)))
    return "\n".join(out) + "\n"


def check(conf):
    return subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


# --------------------------------------------------------------------------
# shellcheck

@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------
# the renderer

GOOD = sorted(p.stem for p in (DATA / "render").glob("*.show") if (DATA / "render" / (p.stem + ".toml")).exists())
BAD = sorted(p.stem for p in (DATA / "render").glob("bad-*.show"))
CHECK_BAD = sorted(p.stem for p in (DATA / "render").glob("check-*.show"))


def test_fixtures_present():
    assert len(GOOD) >= 3 and len(BAD) >= 15 and len(CHECK_BAD) >= 5, (GOOD, BAD, CHECK_BAD)


@pytest.mark.parametrize("name", GOOD)
def test_render_good(name, shell, tmp_path):
    out = tmp_path / "dnsveil.toml"
    r = shell(RENDER, "-i", DATA / "render" / (name + ".show"), "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert out.read_text() == (DATA / "render" / (name + ".toml")).read_text()
    c = check(out)
    assert c.returncode == 0 and ": ok: " in c.stdout, c.stdout + c.stderr


@pytest.mark.parametrize("name", BAD)
def test_render_bad(name, shell, tmp_path):
    out = tmp_path / "dnsveil.toml"
    out.write_text("# the previous rendering\n")
    r = shell(RENDER, "-i", DATA / "render" / (name + ".show"), "-o", out)
    want = (DATA / "render" / (name + ".err")).read_text().strip()
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert want in r.stderr, r.stderr
    # nothing half-written: the previous file stays, no temporary is left
    assert out.read_text() == "# the previous rendering\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnsveil.toml"]


@pytest.mark.parametrize("name", CHECK_BAD)
def test_render_refused_by_check(name, shell, tmp_path):
    """The renderer passes these on; dnsveil --check refuses them and names
    the line and column in the rendered file."""
    out = tmp_path / "dnsveil.toml"
    r = shell(RENDER, "-i", DATA / "render" / (name + ".show"), "-o", out)
    assert r.returncode == 0, r.stderr
    c = check(out)
    want = (DATA / "render" / (name + ".err")).read_text().strip()
    assert c.returncode == 1
    assert want in c.stderr + c.stdout, c.stderr
    assert re.search(r"^%s:\d+:\d+: error: " % re.escape(str(out)), c.stderr + c.stdout, re.M)


def test_render_shipped_defaults(shell, tmp_path):
    """The package's /etc/config/dnsveil renders into a valid configuration:
    listening for dnsmasq on 127.0.0.1:5053, every encrypted upstream in the
    default group, the browser canary answered NXDOMAIN."""
    show = tmp_path / "show"
    show.write_text(uci_show("dnsveil", (FILES / "dnsveil.config").read_text()))
    out = tmp_path / "dnsveil.toml"
    r = shell(RENDER, "-i", show, "-o", out)
    assert r.returncode == 0, r.stderr
    toml = out.read_text()
    assert 'listen = ["127.0.0.1:5053"]' in toml
    assert 'upstreams = ["cloudflare", "quad9", "google"]' in toml
    assert 'domains = ["use-application-dns.net"]\naction = "nxdomain"' in toml
    assert 'tls_time_check = "auto"' in toml
    c = check(out)
    assert c.returncode == 0, c.stdout + c.stderr
    assert "3 upstreams" in c.stdout and "1 rules" in c.stdout


def test_rendered_config_serves(dnsveil, knot, cfgdir, tmp_path, busybox_path):
    """A rendered configuration, run: the split domain goes to its plain
    resolver (knotd), the canary domains get NXDOMAIN from dnsveil itself
    while the default group (a dead encrypted upstream) is never asked."""
    port = helpers.free_port()
    uci = f"""
config dnsveil 'main'
	option listen_port '{port}'
	list canary_domain 'use-application-dns.net'
	list canary_domain 'mask.icloud.com'
	option control '{cfgdir}/dnsveil.sock'
	option timeout_ms '1500'

config upstream 'dead'
	option url 'tls://127.0.0.1:1'

config upstream 'local'
	option url 'udp://127.0.0.1:{knot.port}'

config rule
	list domain 'test'
	option upstream 'local'
"""
    show = tmp_path / "show"
    show.write_text(uci_show("dnsveil", uci))
    conf = cfgdir / "dnsveil.toml"
    prefix = [str(busybox_path / "sh")] if busybox_path else ["dash"]
    subprocess.run(prefix + [str(RENDER), "-i", str(show), "-o", str(conf)], check=True)
    os.chmod(conf, 0o644)
    d = dnsveil(listen=[("127.0.0.1", port)], extra=["-c", str(conf)])
    r = helpers.run_dnspython(d.host, d.port, "www.test.", "A")
    assert r.rcode == "NOERROR" and r.answer, r
    for name in ("use-application-dns.net.", "mask.icloud.com.", "x.mask.icloud.com."):
        r = helpers.run_dnspython(d.host, d.port, name, "A")
        assert r.rcode == "NXDOMAIN", (name, r)
    assert "upstream dead" not in d.log_text()


# --------------------------------------------------------------------------
# dnsmasq: apply and restore on /etc/config/dhcp

DHCP = sorted(p.name for p in (DATA / "dhcp").iterdir())


def dnsmasq_sections(path):
    return [s for s in uci_parse(Path(path).read_text()) if s[0] == "dnsmasq"]


def values(section, kind, opt):
    return [v for k, o, v in section[2] if k == kind and o == opt]


def assert_pointed(before, after, server):
    """after is before with dnsveil in front: plain upstream servers set
    aside, domain-specific ones kept, our server and noresolv added."""
    assert values(after, "list", "server").count(server) == 1
    assert values(after, "option", "noresolv") == ["1"]
    kept = [v for v in values(before, "list", "server") if v.startswith("/")]
    aside = [v for v in values(before, "list", "server") if not v.startswith("/")]
    assert values(after, "list", "server") == kept + [server]
    assert values(after, "list", "dnsveil_server") == aside
    assert values(after, "option", "dnsveil_noresolv") == values(before, "option", "noresolv")
    assert values(after, "option", "dnsveil_applied") == [server]


@pytest.mark.parametrize("fixture", DHCP)
def test_dnsmasq_apply_restore(fixture, shell, tmp_path):
    orig = (DATA / "dhcp" / fixture).read_bytes()
    conf = tmp_path / "dhcp"
    conf.write_bytes(orig)
    env = {"DNSVEIL_DHCP_CONFIG": str(conf)}
    before = dnsmasq_sections(conf)
    assert before, "fixture without a dnsmasq section"

    r = shell(DNSMASQ, "apply", "5053", env=env)
    assert r.returncode == 0, r.stderr
    after = dnsmasq_sections(conf)
    for b, a in zip(before, after):
        assert_pointed(b, a, "127.0.0.1#5053")
    # everything outside the dnsmasq sections is untouched
    others = [s for s in uci_parse(orig.decode()) if s[0] != "dnsmasq"]
    assert [s for s in uci_parse(conf.read_text()) if s[0] != "dnsmasq"] == others

    # again, with another port: one server of ours, the new one
    r = shell(DNSMASQ, "apply", "5054", env=env)
    assert r.returncode == 0, r.stderr
    for b, a in zip(before, dnsmasq_sections(conf)):
        assert_pointed(b, a, "127.0.0.1#5054")
        assert "127.0.0.1#5053" not in values(a, "list", "server")

    r = shell(DNSMASQ, "restore", env=env)
    assert r.returncode == 0, r.stderr
    assert conf.read_bytes() == orig
    # restoring what is not applied changes nothing
    r = shell(DNSMASQ, "restore", env=env)
    assert r.returncode == 0 and conf.read_bytes() == orig


@pytest.mark.parametrize("which,changed", [("guest_dns", [1]), ("@dnsmasq[0]", [0]),
                                           ("lan_dns guest_dns", [0, 1]), ("*", [0, 1])])
def test_dnsmasq_instances(which, changed, shell, tmp_path):
    orig = (DATA / "dhcp" / "two-instances").read_bytes()
    conf = tmp_path / "dhcp"
    conf.write_bytes(orig)
    env = {"DNSVEIL_DHCP_CONFIG": str(conf)}
    before = dnsmasq_sections(conf)
    r = shell(DNSMASQ, "apply", "5053", *which.split(), env=env)
    assert r.returncode == 0, r.stderr
    for i, (b, a) in enumerate(zip(before, dnsmasq_sections(conf))):
        if i in changed:
            assert_pointed(b, a, "127.0.0.1#5053")
        else:
            assert a == b
    r = shell(DNSMASQ, "restore", env=env)
    assert r.returncode == 0 and conf.read_bytes() == orig


@pytest.mark.parametrize("args,why", [(["apply"], "apply needs a port number"),
                                      (["apply", "53x"], "apply needs a port number"),
                                      (["apply", "70000"], "out of range"),
                                      (["frobnicate"], "dnsveil-dnsmasq apply PORT")])
def test_dnsmasq_bad_arguments(args, why, shell, tmp_path):
    orig = (DATA / "dhcp" / "openwrt-default").read_bytes()
    conf = tmp_path / "dhcp"
    conf.write_bytes(orig)
    r = shell(DNSMASQ, *args, env={"DNSVEIL_DHCP_CONFIG": str(conf)})
    assert r.returncode != 0
    assert why in r.stderr
    assert conf.read_bytes() == orig
