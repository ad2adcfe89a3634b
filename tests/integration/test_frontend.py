"""Listener details beyond what the client matrices cover: a wildcard
address answers from the address each query was sent to. Wildcard sockets
are bound only inside a network namespace made for the test, whose one
interface is its own loopback."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import helpers

CLIENT = r"""
import socket, sys
import dns.message, dns.rcode
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))  # connected: other sources are dropped
for _ in range(30):
    s.send(dns.message.make_query("www.test.", "A").to_wire())
    try:
        r = dns.message.from_wire(s.recv(65535))
        print(dns.rcode.to_text(r.rcode()), r.answer[0][0].address)
        break
    except (socket.timeout, ConnectionRefusedError):
        continue
"""


@pytest.fixture
def netns():
    with helpers.loopback_netns("dvtest") as name:
        yield name


def answer_config(listen):
    """A config for dnsveil listening on listen (a TOML list) that answers
    www.test. itself, in a directory of its own that dnsveil can read."""
    cfgdir = Path(tempfile.mkdtemp(prefix="dnsveil-cfg-"))
    os.chmod(cfgdir, 0o755)
    cfg = cfgdir / "c.toml"
    cfg.write_text('[server]\nlisten = %s\n'
                   '[upstreams.unused]\nurl = "udp://127.0.0.1:9"\n'
                   '[[rules]]\ndomains = ["www.test"]\naction = "answer"\n'
                   'answer = ["192.0.2.77"]\n' % listen)
    return cfg


def test_wildcard_listener_replies_from_queried_address(netns):
    cfg = answer_config('["0.0.0.0:5300", "[::]:5300"]')
    try:
        with helpers.dnsveil_in_netns(netns, cfg):
            time.sleep(0.3)
            for dst in helpers.netns_loopback_targets(netns):
                r = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", CLIENT,
                                    dst, "5300"], capture_output=True, text=True, timeout=30)
                assert r.stdout.split() == ["NOERROR", "192.0.2.77"], (dst, r.stdout, r.stderr)
    finally:
        shutil.rmtree(cfg.parent, ignore_errors=True)


BURST = r"""
import socket, sys
import dns.message, dns.rcode
# a burst on a connected socket (answers from another source are dropped):
# the listener reads several datagrams in one batch
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
n, got = int(sys.argv[3]), 0
for i in range(n):
    q = dns.message.make_query("www.test.", "A")
    q.id = i
    s.send(q.to_wire())
ids = set()
try:
    while len(ids) < n:
        r = dns.message.from_wire(s.recv(65535))
        if dns.rcode.to_text(r.rcode()) == "NOERROR" and r.answer[0][0].address == "192.0.2.77":
            ids.add(r.id)
except socket.timeout:
    pass
print(len(ids))
"""


def test_wildcard_and_specific_listeners_take_turns(netns):
    # one process with a wildcard listener (which reads packet info) and one
    # on a fixed address (which does not), read in turns in bursts: each
    # answer leaves from the address its query went to, none is lost
    cfg = answer_config('["0.0.0.0:5300", "127.0.0.9:5301"]')
    try:
        with helpers.dnsveil_in_netns(netns, cfg):
            time.sleep(0.3)
            for dst, port in [("127.0.0.5", "5300"), ("127.0.0.9", "5301")] * 3:
                r = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", BURST,
                                    dst, port, "40"], capture_output=True, text=True, timeout=30)
                assert r.stdout.split() == ["40"], (dst, r.stdout, r.stderr)
    finally:
        shutil.rmtree(cfg.parent, ignore_errors=True)
