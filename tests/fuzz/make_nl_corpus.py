#!/usr/bin/python3
"""Writes the seed corpus of fuzz_nl (tests/fuzz/corpus/fuzz_nl/) from real
kernel messages: in a network namespace of its own (nothing of this
machine's interfaces or addresses ends up in the files), it records

  - the rtnetlink notifications netmon subscribes to while a veth pair comes
    up, gets a TEST-NET address and a default route, and goes away again;
  - the link, address and route dumps netmon asks for at start;
  - an NLMSG_ERROR (a link index nobody has);
  - a sock_diag exact lookup of a UDP socket, as appid asks, and the
    ENOENT for one that does not exist;

each datagram as received, plus a few byte-exact damaged copies (truncated,
a length past the end). Needs root (unshare -n) and iproute2.

Run again after changing it: python3 tests/fuzz/make_nl_corpus.py"""

import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus" / "fuzz_nl"

NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
RTMGRP = 0x1 | 0x10 | 0x40 | 0x100 | 0x400  # LINK, IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20


def nlmsg(mtype, flags, seq, payload):
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def recv_until_done(s, seq, out):
    """Datagrams of one answer into out, until NLMSG_DONE or an error."""
    while True:
        d = s.recv(65536)
        out.append(d)
        off = 0
        while off + 16 <= len(d):
            ln, mtype = struct.unpack_from("=IH", d, off)
            if mtype in (2, 3) or ln < 16:  # NLMSG_ERROR, NLMSG_DONE
                return
            off += (ln + 3) & ~3


def rtnl(s, mtype, seq, payload=bytes(12)):
    s.sendto(nlmsg(mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, payload), (0, 0))


def diag_req(seq, sport, dport):
    # inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_UDP, 0, 0, 0xFFFFFFFF)
    lo = socket.inet_aton("127.0.0.1") + bytes(12)
    req += struct.pack(">HH", sport, dport) + lo + lo + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, req)


def capture():
    """Runs inside the namespace: returns {name: bytes}."""
    got = {}
    ip = lambda *a: subprocess.run(["ip"] + list(a), check=True)
    ip("link", "set", "lo", "up")

    mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    mon.bind((0, RTMGRP))
    ip("link", "add", "dv0", "type", "veth", "peer", "name", "dv1")
    ip("link", "set", "dv1", "up")
    ip("link", "set", "dv0", "up")
    ip("addr", "add", "192.0.2.10/24", "dev", "dv0")
    ip("route", "add", "default", "via", "192.0.2.1", "dev", "dv0", "metric", "50")
    ip("-6", "addr", "add", "2001:db8::10/64", "dev", "dv0", "nodad")

    dumps = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    dumps.bind((0, 0))
    for i, what in enumerate((RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE)):
        out = []
        rtnl(dumps, what, i + 1)
        recv_until_done(dumps, i + 1, out)
        for j, d in enumerate(out):
            got["dump-%d-%d" % (what, j)] = d
    # one link by an index nobody has: NLMSG_ERROR -ENODEV
    ifi = struct.pack("=BBHiII", 0, 0, 0, 0x7FFFFFF0, 0, 0)
    dumps.sendto(nlmsg(RTM_GETLINK, NLM_F_REQUEST, 9, ifi), (0, 0))
    got["error-enodev"] = dumps.recv(65536)

    ip("route", "del", "default", "via", "192.0.2.1", "dev", "dv0")
    ip("addr", "del", "192.0.2.10/24", "dev", "dv0")
    ip("link", "set", "dv0", "down")
    ip("link", "del", "dv0")
    mon.setblocking(False)
    n = 0
    while True:
        try:
            got["notify-%02d" % n] = mon.recv(65536)
            n += 1
        except BlockingIOError:
            break

    diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    diag.bind((0, 0))
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.connect(server.getsockname())
    cport, sport = client.getsockname()[1], server.getsockname()[1]
    # as appid asks for UDP: the server's end as the source
    diag.sendto(diag_req(1, sport, cport), (0, 0))
    got["diag-udp"] = diag.recv(65536)
    diag.sendto(diag_req(2, 1, 2), (0, 0))
    got["diag-enoent"] = diag.recv(65536)
    return got


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        for name, data in capture().items():
            (OUT / name).write_bytes(data)
        return
    if os.geteuid() != 0:
        sys.exit("make_nl_corpus.py: needs root (unshare -n)")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    subprocess.run(["unshare", "-n", sys.executable, __file__, "--inside"], check=True)
    # byte-exact damage on real messages
    link = (OUT / ("dump-%d-0" % RTM_GETLINK)).read_bytes()
    (OUT / "bad-truncated").write_bytes(link[: len(link) // 2 + 1])
    (OUT / "bad-len-past-end").write_bytes(struct.pack("=I", len(link) + 64) + link[4:])
    diag = (OUT / "diag-udp").read_bytes()
    if len(diag) > 16 + 72 + 4:
        # the first attribute's nla_len past the message
        bad = bytearray(diag)
        struct.pack_into("=H", bad, 16 + 72, 0xFFF0)
        (OUT / "bad-attr-len").write_bytes(bytes(bad))
    print("%d files in %s" % (len(list(OUT.iterdir())), OUT))


if __name__ == "__main__":
    main()
