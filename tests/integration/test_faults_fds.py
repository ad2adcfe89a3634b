"""File-descriptor exhaustion and recovery: the running daemon's
RLIMIT_NOFILE is lowered (prlimit(2), as prlimit(1) does) to the number of
descriptors it holds, so it cannot open one more. Cached names are still
answered from the cache; the rest are forwarded through the udp:// socket
pool, which recycles its own descriptors, or get SERVFAIL or REFUSED at
once when no descriptor is to be had (never silence), a TCP client waits in the backlog; once the
limit is back, it serves normally."""

import os
import pwd
import resource
import socket
import struct
import time

import dns.message
import dns.query
import dns.rcode

import faults
import helpers

TIMEOUT_MS = 2000
CACHED = ["www.test.", "mail.test.", "target.test."]
UNCACHED = ["multi.test.", "ns.test.", "mail2.test.", "ttl5.test.", "c3.test."]
STARVED = 100  # more than the open udp:// sockets can still carry


def ask(d, name):
    q = helpers.make_query(name, "A", edns=0)
    t0 = time.monotonic()
    r = dns.query.udp(q, d.host, port=d.port,
                      timeout=(TIMEOUT_MS + faults.MARGIN_MS) / 1000.0)
    return r, (time.monotonic() - t0) * 1000


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_fd_exhaustion_and_recovery(knot, dnsveil):
    # as our own user: prlimit(2) on another user's process needs
    # CAP_SYS_RESOURCE, which a container may not grant
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, timeout=TIMEOUT_MS, verbose=False,
                extra=["--user", pwd.getpwuid(os.getuid()).pw_name])
    pid = d.proc.pid
    for name in CACHED:
        r, _ = ask(d, name)
        assert r.rcode() == dns.rcode.NOERROR and r.answer, r.to_text()

    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    held = open_fds(pid)
    before, _ = d.stats()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (held, hard))
    try:
        for name in CACHED:
            r, ms = ask(d, name)
            assert r.rcode() == dns.rcode.NOERROR and r.answer, r.to_text()
        # names nobody asked: the udp:// socket pool keeps forwarding at the
        # limit (a retired socket's descriptor is what its successor takes),
        # and a query that finds no descriptor gets SERVFAIL at once. Every
        # one gets exactly one reply in time either way, and the daemon never
        # holds more descriptors than the limit (checked below).
        starved = {}
        for i in range(STARVED):
            r, ms = ask(d, "s%d.fds.test." % i)
            rc = dns.rcode.to_text(r.rcode())
            starved[rc] = starved.get(rc, 0) + 1
            assert r.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL,
                                 dns.rcode.REFUSED), r.to_text()
            assert ms < TIMEOUT_MS + faults.MARGIN_MS
        # a TCP client now: the kernel takes the connection, the daemon
        # cannot accept it yet; it must be served once descriptors are back
        waiting = socket.create_connection((d.host, d.port), timeout=10)
        wire = helpers.make_query("mail.test.", "A", edns=0).to_wire()
        waiting.sendall(struct.pack("!H", len(wire)) + wire)
        time.sleep(0.3)
        during, line = d.stats()
        assert open_fds(pid) <= held
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert during["cache_hits"] - before["cache_hits"] >= len(CACHED), line
    print("\nstarved at %d descriptors: %s" % (held, starved))

    # descriptors back: the waiting TCP client is served, and every name
    # answered again, through the upstream
    with waiting:
        r = dns.message.from_wire(helpers.tcp_read_frame(waiting))
    assert r.rcode() == dns.rcode.NOERROR and r.answer, r.to_text()
    for name in UNCACHED + CACHED:
        r, _ = ask(d, name)
        assert r.rcode() == dns.rcode.NOERROR and r.answer, (name, r.to_text())
    after, line = d.stats()
    assert after["upstream_sent"] - during["upstream_sent"] >= len(UNCACHED), line
