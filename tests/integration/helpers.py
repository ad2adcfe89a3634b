"""Helpers for the dnsveil integration suite: loopback ports, real peer
processes (knotd, unbound), the dnsveil process under test, and thin
wrappers around the real clients (dig, kdig, dnspython).

Everything here binds to 127.0.0.0/8 or ::1 only.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZONE_FILE = HERE / "zones" / "test.zone"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "Sanitizer has encountered a fatal error")


def shared_data(*parts):
    """A file or directory in ../shared/testdata (beside the repository).
    Fails with the absolute path it tried when it is missing."""
    path = (REPO.parent / "shared" / "testdata").joinpath(*parts).resolve()
    if not path.exists():
        import pytest
        pytest.fail("shared test data not found: %s (../shared must sit beside the "
                    "repository)" % path, pytrace=False)
    return path


def dnsveil_bin():
    return os.environ.get("DNSVEIL_BIN", str(REPO / "build" / "debug" / "dnsveil"))


# --------------------------------------------------------------------------
# loopback ports

_handed_out = set()
_ipv6 = None


def have_ipv6():
    """True when ::1 is configured and bindable on this machine."""
    global _ipv6
    if _ipv6 is None:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind(("::1", 0))
            _ipv6 = True
        except OSError:
            _ipv6 = False
    return _ipv6


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(hosts=("127.0.0.1",)):
    """A port that is currently free for both UDP and TCP on every host."""
    for _ in range(200):
        socks = []
        try:
            first = socket.socket(family(hosts[0]), socket.SOCK_STREAM)
            socks.append(first)
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            if port in _handed_out:
                continue
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    if host == hosts[0] and kind == socket.SOCK_STREAM:
                        continue
                    s = socket.socket(family(host), kind)
                    socks.append(s)
                    s.bind((host, port))
            _handed_out.add(port)
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free loopback port found")


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# --------------------------------------------------------------------------
# raw DNS over sockets

def make_query(name, rdtype="A", qid=None, edns=None, payload=1232, flags=dns.flags.RD):
    q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)
    q.flags = flags
    if qid is not None:
        q.id = qid
    return q


def udp_exchange(wire, host, port, timeout=3.0):
    """Send one datagram, return the first reply (bytes) or None on timeout."""
    with socket.socket(family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, (host, port))
        try:
            data, _ = s.recvfrom(65535)
            return data
        except socket.timeout:
            return None


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def tcp_read_frame(sock):
    (length,) = struct.unpack("!H", recv_exact(sock, 2))
    return recv_exact(sock, length)


def tcp_exchange(wire, host, port, timeout=3.0):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        return tcp_read_frame(s)


def header(wire):
    """(id, flags, qdcount, ancount, nscount, arcount) of a raw message."""
    return struct.unpack("!HHHHHH", wire[:12])


def wire_rcode(wire):
    return header(wire)[1] & 0xF


def dns_answers(host, port, name="www.test.", rdtype="A", timeout=2.0):
    """True when the server gives a NOERROR answer with data over UDP."""
    try:
        r = dns.query.udp(make_query(name, rdtype), host, port=port, timeout=timeout)
    except Exception:
        return False
    return r.rcode() == dns.rcode.NOERROR and len(r.answer) > 0


def wait_for_dns(host, port, proc=None, deadline=15.0, log=None):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        if dns_answers(host, port, timeout=0.3):
            return
        time.sleep(0.05)
    detail = ""
    if log is not None and Path(log).exists():
        detail = "\n--- log ---\n" + Path(log).read_text(errors="replace")[-4000:]
    raise RuntimeError("%s:%d did not answer (exit=%s)%s" % (
        host, port, None if proc is None else proc.poll(), detail))


# --------------------------------------------------------------------------
# normalised view of an answer, the same for every client

class Result:
    """rcode (text), flags (set of lower-case names), answer/authority as
    frozensets of (name, type, rdata) with names compared case-insensitively,
    and the TTLs seen per (name, type)."""

    def __init__(self, rcode, flags, answer, authority, ttls, qid=None, raw=""):
        self.rcode = rcode
        self.flags = frozenset(flags)
        self.answer = frozenset(answer)
        self.authority = frozenset(authority)
        self.ttls = ttls
        self.qid = qid
        self.raw = raw

    def __repr__(self):
        return "Result(rcode=%s flags=%s answer=%d authority=%s)" % (
            self.rcode, sorted(self.flags), len(self.answer),
            sorted(str(a) for a in self.authority))


def _rr_key(name, rdclass, rdtype, text):
    n = dns.name.from_text(name)
    t = dns.rdatatype.from_text(rdtype)
    rd = dns.rdata.from_text(dns.rdataclass.from_text(rdclass), t, text)
    return (n, t, rd)


_HDR = re.compile(r"->>HEADER<<-\s+opcode:\s*(\w+)[,;]\s*status:\s*(\w+)[,;]\s*id:\s*(\d+)")
_FLAGS = re.compile(r"^;;\s*[Ff]lags:\s*([a-z ]*);")


def parse_text_output(out):
    """Parse the presentation output of dig or kdig."""
    rcode = qid = None
    flags = []
    sections = {"ANSWER": [], "AUTHORITY": []}
    ttls = {}
    cur = None
    for line in out.splitlines():
        m = _HDR.search(line)
        if m:
            rcode, qid = m.group(2), int(m.group(3))
            continue
        m = _FLAGS.match(line)
        if m:
            flags = m.group(1).split()
            continue
        s = line.strip()
        if s.startswith(";;") and s.endswith("SECTION:"):
            cur = s[2:-len("SECTION:")].strip().upper()
            continue
        if not s:
            cur = None
            continue
        if s.startswith(";"):
            continue
        if cur in sections:
            name, ttl, rdclass, rdtype, text = s.split(None, 4)
            key = _rr_key(name, rdclass, rdtype, text)
            sections[cur].append(key)
            ttls.setdefault((key[0], key[1]), []).append(int(ttl))
    return Result(rcode, flags, sections["ANSWER"], sections["AUTHORITY"], ttls, qid, out)


def from_message(msg):
    answer, authority, ttls = [], [], {}
    for section, out in ((msg.answer, answer), (msg.authority, authority)):
        for rrset in section:
            for rd in rrset:
                out.append((rrset.name, rrset.rdtype, rd))
            ttls.setdefault((rrset.name, rrset.rdtype), []).append(rrset.ttl)
    flags = dns.flags.to_text(msg.flags).lower().split()
    return Result(dns.rcode.to_text(msg.rcode()), flags, answer, authority, ttls, msg.id,
                  msg.to_text())


def knot_answer(knot, name, rdtype):
    """knotd's own answer over TCP, to compare a proxied one with."""
    q = make_query(name, rdtype, edns=0, payload=1232)
    return dns.query.tcp(q, "127.0.0.1", port=knot.port, timeout=5)


def same_answer(a, b):
    """Same rcode, answer and authority records (TTLs aside)."""
    ra, rb = from_message(a), from_message(b)
    return ra.rcode == rb.rcode and ra.answer == rb.answer and ra.authority == rb.authority


def run_dig(host, port, name, rdtype, tcp=False, opts=()):
    cmd = ["dig", "@" + host, "-p", str(port), name, rdtype, "+time=3", "+tries=1",
           "+tcp" if tcp else "+notcp", "+ignore"] + list(opts)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    return parse_text_output(out)


def run_kdig(host, port, name, rdtype, tcp=False, opts=()):
    cmd = ["kdig", "@" + host, "-p", str(port), name, rdtype, "+time=3", "+retry=0",
           "+tcp" if tcp else "+notcp", "+ignore"] + list(opts)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    return parse_text_output(out)


def run_dnspython(host, port, name, rdtype, tcp=False, opts=()):
    q = make_query(name, rdtype, edns=0, payload=1232)
    try:
        if tcp:
            r = dns.query.tcp(q, host, port=port, timeout=3)
        else:
            r = dns.query.udp(q, host, port=port, timeout=3)
    except dns.exception.Timeout:
        return Result(None, [], [], [], {}, None, "timeout")
    return from_message(r)


CLIENTS = {"dig": run_dig, "kdig": run_kdig, "dnspython": run_dnspython}


# --------------------------------------------------------------------------
# third-party peers

def go_peer(name):
    """build/peers/NAME, built (offline, tests/peers/build.sh) when missing
    or older than its source; None when Go is not installed."""
    binary = REPO / "build" / "peers" / name
    src = REPO / "tests" / "peers" / name / "main.go"
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    if shutil.which("go") is None:
        return None
    r = subprocess.run(["bash", str(REPO / "tests" / "peers" / "build.sh")],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not binary.exists():
        raise RuntimeError("building the %s peer failed:\n%s%s" % (name, r.stdout, r.stderr))
    return binary


class Peer:
    """A real server process started from a private config in a temp dir."""

    def __init__(self, name, workdir):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / (name + ".log")
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None

    def _spawn(self, cmd):
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        wait_for_dns(self.host, self.port, self.proc, log=self.log)

    def spawn_until(self, cmd, marker, deadline=30.0):
        """Starts cmd with its output appended to the log; returns self once
        the log shows marker, raises when the process exits or time runs out."""
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            if marker in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise RuntimeError("%s did not start (exit=%s):\n%s" % (
            self.name, self.proc.poll(), self.log.read_text(errors="replace")[-3000:]))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Knot(Peer):
    """knotd serving zones/test.zone as `test.`; nothing external."""

    def start(self, zone_text=None):
        """zone_text: the zone to serve as `test.` instead of zones/test.zone."""
        self.v6 = have_ipv6()
        self.port = free_port(("127.0.0.1", "::1") if self.v6 else ("127.0.0.1",))
        zone = self.workdir / "test.zone"
        if zone_text is None:
            zone.write_bytes(ZONE_FILE.read_bytes())
        else:
            zone.write_text(zone_text)
        listen = "127.0.0.1@%d" % self.port
        if self.v6:
            listen += ", ::1@%d" % self.port
        conf = self.workdir / "knot.conf"
        conf.write_text(f"""\
server:
    rundir: "{self.workdir}"
    listen: [ {listen} ]
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "{self.workdir}"
template:
  - id: default
    storage: "{self.workdir}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: test.
    file: "{zone}"
""")
        self._spawn(["knotd", "-c", str(conf)])
        return self


def unbound_server_common(workdir):
    """The server: lines every test unbound shares: in the foreground with no
    user, chroot or syslog changes; loopback clients only; the iterator alone
    (no validator, so no trust anchor to fetch); the test. zone not treated as
    a special-use name. Each peer adds its interfaces and what is its own."""
    return f"""\
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    prefetch: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    local-zone: "test." nodefault
    access-control: 127.0.0.0/8 allow
"""


class Unbound(Peer):
    """unbound forwarding everything to knotd: iterator only (no validator,
    so no trust anchors), no root hints in use, no remote control."""

    def start(self, knot):
        self.port = free_port()
        conf = self.workdir / "unbound.conf"
        conf.write_text(f"""\
server:
    interface: 127.0.0.1
    port: {self.port}
{unbound_server_common(self.workdir)}    do-ip6: no
    outgoing-interface: 127.0.0.1
    access-control: ::1/128 allow
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{knot.port}
remote-control:
    control-enable: no
""")
        self._spawn(["unbound", "-d", "-c", str(conf)])
        return self


# --------------------------------------------------------------------------
# test-only UDP tools: a counting (optionally delaying) relay and a black hole

class CountingRelay:
    """Forwards every UDP datagram it receives to a real server and relays
    the reply back, optionally after a delay; counts queries per
    (lower-case qname, qtype). A measuring tool, not a DNS server."""

    def __init__(self, target_host, target_port, delay=0.0):
        self.target = (target_host, target_port)
        self.delay = delay
        self.counts = {}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def count(self, name, rdtype="A"):
        key = (name.lower().rstrip(".") + ".", dns.rdatatype.from_text(rdtype))
        with self.lock:
            return self.counts.get(key, 0)

    def _loop(self):
        self.sock.settimeout(0.2)
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
                key = (q.question[0].name.to_text().lower(), q.question[0].rdtype)
                with self.lock:
                    self.counts[key] = self.counts.get(key, 0) + 1
            except Exception:
                pass
            threading.Thread(target=self._forward, args=(data, peer), daemon=True).start()

    def _forward(self, data, peer):
        if self.delay:
            time.sleep(self.delay)
        reply = udp_exchange(data, self.target[0], self.target[1], timeout=3.0)
        if reply is not None and self.running:
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


# --------------------------------------------------------------------------
# the daemon under test

class Dnsveil:
    def __init__(self, workdir, upstreams, listen=None, timeout=None, extra=(), verbose=True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.listen = list(listen) if listen else [("127.0.0.1", free_port())]
        self.host, self.port = self.listen[0]
        args = [dnsveil_bin()]
        for h, p in self.listen:
            args += ["-l", hostport(h, p)]
        for u in upstreams:
            args += ["-u", u]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        if verbose:
            args.append("-v")
        args += list(extra)
        self.args = args
        self.log = self.workdir / ("dnsveil-%d.log" % self.port)
        self.proc = None
        self.returncode = None

    def start(self, ready_timeout=15.0):
        if not os.access(self.args[0], os.X_OK):
            raise FileNotFoundError("dnsveil binary not found at %s (set DNSVEIL_BIN)"
                                    % self.args[0])
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, deadline):
        """Ready = every listener accepts TCP and the first answers a UDP
        query with any DNS reply (the upstream may be deliberately dead)."""
        end = time.monotonic() + deadline
        pending = list(self.listen)
        while pending and time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            h, p = pending[0]
            try:
                socket.create_connection((h, p), timeout=0.2).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
        while not pending and time.monotonic() < end and self.proc.poll() is None:
            wire = make_query("ready.test.", "A").to_wire()
            left = max(0.1, min(3.0, end - time.monotonic()))
            if udp_exchange(wire, self.host, self.port, timeout=left) is not None:
                return
        raise RuntimeError("dnsveil did not become ready (exit=%s): %s\n--- log ---\n%s" % (
            self.proc.poll(), " ".join(self.args), self.log_text()[-4000:]))

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stats(self, wait=5.0):
        """SIGUSR1, then the counters of the new "stats:" line as a dict."""
        before = self.log_text().count("stats:")
        self.send_signal(signal.SIGUSR1)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            lines = [l for l in self.log_text().splitlines() if "stats:" in l]
            if len(lines) > before:
                line = lines[before]
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}, line
            time.sleep(0.05)
        raise AssertionError("no new 'stats:' line after SIGUSR1; log:\n" + self.log_text()[-3000:])

    def stop(self, sig=signal.SIGTERM, wait=10.0):
        """Signal, wait, and return a list of problems (empty when clean)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("did not exit within %.0fs of %s" % (wait, sig.name))
        self.returncode = self.proc.returncode
        if self.returncode != 0:
            problems.append("exit code %s after %s" % (self.returncode, sig.name))
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                problems.append("log contains %r" % marker)
        if problems:
            problems.append("--- log tail (%s) ---\n%s" % (self.log, text[-4000:]))
        return problems


# ---- a namespace of the test's own, for wildcard listeners ----------------

@contextlib.contextmanager
def loopback_netns(prefix):
    """A network namespace made for one test, its loopback its one interface
    (IPv4, and IPv6 where the host has it): a listener on 0.0.0.0 or :: there
    sees none of the host's addresses. Yields its name."""
    import pytest
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 for a network namespace")
    name = "%s%d" % (prefix, os.getpid())
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def netns_loopback_targets(ns):
    """Addresses of ns's loopback that a wildcard listener there must answer
    from: several of 127/8, and ::1 when IPv6 is up."""
    targets = ["127.0.0.1", "127.0.0.5", "127.1.2.3"]
    v6 = subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "addr", "show", "lo"],
                        capture_output=True, text=True).stdout
    if "::1" in v6:
        targets.append("::1")
    return targets


@contextlib.contextmanager
def dnsveil_in_netns(ns, cfg):
    """dnsveil -c cfg run inside ns, logging to `log` beside cfg. Yields
    (process, log path); afterwards it must have exited 0 on SIGTERM with no
    sanitizer report."""
    log_path = Path(cfg).parent / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, dnsveil_bin(), "-c", str(cfg), "-v"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc, log_path
        finally:
            proc.terminate()
            rc = proc.wait(10)
    text = log_path.read_text(errors="replace")
    assert rc == 0, text
    for marker in SANITIZER_MARKERS:
        assert marker not in text, text
