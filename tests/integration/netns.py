"""Two network namespaces made for a test: "client" runs dnsveil, "server"
runs the real peers (unbound with DoT and DoH, the Go DoQ peer). They are
joined by two veth pairs, uplink A (10.99.1.0/24) and uplink B
(10.99.2.0/24); the servers answer on 10.99.9.1, a /32 on the server's
loopback that the client reaches through its default route, first via A.
Nothing outside these namespaces is touched.

Sockets for the test itself are made inside a namespace by a short-lived
thread that enters it (setns affects only the calling thread; a socket
stays in the namespace it was created in), so the test can talk to dnsveil
on the client's 127.0.0.1 without a helper process.
"""

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

import helpers

CLONE_NEWNET = 0x40000000
SERVER = "10.99.9.1"
CLIENT_A, GW_A = "10.99.1.2", "10.99.1.1"
CLIENT_B, GW_B = "10.99.2.2", "10.99.2.1"
_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()


def usable():
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


def run(*cmd, check=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s%s" % (" ".join(cmd), r.stdout, r.stderr))
    return r.stdout


class Namespace:
    def __init__(self, name):
        self.name = name
        run("ip", "netns", "add", name)
        # IPv4 only: IPv6 link-local addresses finishing duplicate address
        # detection a second after the links come up would be network
        # changes of their own, at a moment no test chose
        self.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        self.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args, check=True):
        return run("ip", "-n", self.name, *args, check=check)

    def ip_batch(self, *commands):
        """Several `ip` commands in one run, so they reach the kernel in one
        netlink burst: two runs can be further apart than netmon's 50 ms
        debounce on a loaded machine, which would make one change two."""
        r = subprocess.run(["ip", "-n", self.name, "-batch", "-"], input="\n".join(commands) + "\n",
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("ip -batch %r: %s%s" % (commands, r.stdout, r.stderr))

    def sysctl(self, key, value):
        run("ip", "netns", "exec", self.name, "sysctl", "-q", "-w", "%s=%s" % (key, value))

    def cmd(self, argv):
        """argv run inside the namespace (for Popen)."""
        return ["ip", "netns", "exec", self.name] + [str(a) for a in argv]

    def socket(self, family=socket.AF_INET, kind=socket.SOCK_DGRAM):
        out = {}

        def enter():
            fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, "setns: " + os.strerror(e))
                out["s"] = socket.socket(family, kind)
            except Exception as e:  # handed to the caller below
                out["e"] = e
            finally:
                os.close(fd)

        t = threading.Thread(target=enter)
        t.start()
        t.join()
        if "e" in out:
            raise out["e"]
        return out["s"]

    def delete(self):
        run("ip", "netns", "del", self.name, check=False)


class Pair:
    """The two namespaces and their links (see the module comment)."""

    def __init__(self):
        tag = "dv%d%d" % (os.getpid() % 100000, next(_seq))
        self.client = Namespace(tag + "c")
        self.server = Namespace(tag + "s")
        try:
            c, s = self.client, self.server
            for link, cl, gw in (("a", CLIENT_A, GW_A), ("b", CLIENT_B, GW_B)):
                c.ip("link", "add", "up" + link, "type", "veth", "peer", "name", "dn" + link,
                     "netns", s.name)
                c.ip("addr", "add", cl + "/24", "dev", "up" + link)
                s.ip("addr", "add", gw + "/24", "dev", "dn" + link)
                c.ip("link", "set", "up" + link, "up")
                s.ip("link", "set", "dn" + link, "up")
            s.ip("addr", "add", SERVER + "/32", "dev", "lo")
            c.ip("route", "add", "default", "via", GW_A)
            # deleting the first address must not take a second one with it
            c.sysctl("net.ipv4.conf.upa.promote_secondaries", 1)
        except Exception:
            self.delete()
            raise

    def move_address(self, new="10.99.1.3"):
        """The client's address on uplink A changes: new one added, old one
        deleted (a DHCP lease renewed with another address)."""
        self.client.ip_batch("addr add %s/24 dev upa" % new, "addr del %s/24 dev upa" % CLIENT_A)

    def move_default_route(self):
        """Uplink A's router goes away and the client's default route moves
        to uplink B; the client keeps its address on A, so its connections
        from there look alive but nothing comes back (as when a NAT on the
        old path forgets them)."""
        self.server.ip("addr", "del", GW_A + "/24", "dev", "dna")
        self.client.ip("route", "replace", "default", "via", GW_B)

    def delete(self):
        self.client.delete()
        self.server.delete()


class Proc:
    """A process started inside a namespace, logging to a file."""

    def __init__(self, ns, argv, log):
        self.log = Path(log)
        self.argv = argv
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(ns.cmd(argv), stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, wait=10.0):
        """Signal and wait; the exit code (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


class World:
    """A Pair of namespaces and the processes a test starts in them. finish()
    stops them all and returns the problems found: a checked process (a
    dnsveil) that did not exit 0 on SIGTERM, or whose log holds a sanitizer
    report."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []
        self.checked = []
        self.pair = Pair()

    def spawn(self, ns, argv, log, checked=False):
        p = Proc(ns, argv, self.tmp / log)
        self.procs.append(p)
        if checked:
            self.checked.append(p)
        return p

    def finish(self):
        problems = []
        for p in self.checked:
            rc = p.stop()
            text = p.text()
            bad = [m for m in helpers.SANITIZER_MARKERS if m in text]
            if rc != 0 or bad:
                problems += ["%s exit %s %s" % (p.log.name, rc, bad), text[-4000:]]
        for p in reversed(self.procs):
            if p not in self.checked:
                p.stop()
        self.pair.delete()
        return problems


def worlds(make):
    """The body of a fixture that lets a test build worlds: yields
    build(*args), which calls make(made, *args) (make appends its World to
    made first thing, so a world half built is still torn down); afterwards
    every world is finished and any problem fails the test."""
    import pytest
    made = []
    yield lambda *args, **kw: make(made, *args, **kw)
    problems = []
    for w in made:
        problems += w.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def query(ns, port, name, rdtype="A", timeout=5.0, host="127.0.0.1"):
    """(rcode or None on timeout, seconds) for one UDP query from inside ns."""
    s = ns.socket()
    s.setblocking(False)  # dnspython waits with select on a socket it is given
    try:
        q = helpers.make_query(name, rdtype, edns=0)
        t0 = time.monotonic()
        try:
            r = dns.query.udp(q, host, port=port, timeout=timeout, sock=s)
        except dns.exception.Timeout:
            return None, time.monotonic() - t0
        return r.rcode(), time.monotonic() - t0
    finally:
        s.close()


def wait_answer(ns, port, host="127.0.0.1", proc=None, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.proc.poll() is not None:
            break
        rc, _ = query(ns, port, "ready%d.test." % next(_seq), timeout=1.0, host=host)
        if rc == dns.rcode.NOERROR:
            return
        time.sleep(0.1)
    raise RuntimeError("%s:%d in %s never answered NOERROR%s" % (
        host, port, ns.name, "" if proc is None else "\n--- log ---\n" + proc.text()[-4000:]))


def unbound_conf(workdir, cert, key, plain=53, dot=853, doh=443):
    """unbound on SERVER: plain DNS, DoT and DoH, answering every name under
    test. itself (a redirect zone: no upstream, nothing leaves)."""
    return f"""\
server:
    interface: {SERVER}@{plain}
    interface: {SERVER}@{dot}
    interface: {SERVER}@{doh}
    tls-port: {dot}
    https-port: {doh}
    http-endpoint: "/dns-query"
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    module-config: "iterator"
    access-control: 10.99.0.0/16 allow
    incoming-num-tcp: 64
    tcp-idle-timeout: 60000
    local-zone: "test." redirect
    local-data: "test. 300 IN A 192.0.2.1"
remote-control:
    control-enable: no
"""
