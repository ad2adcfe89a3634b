"""The DoQ test peer (tests/peers/doq, Go on Debian's quic-go) for the DoQ
tests: build it if needed, start it on a loopback UDP port in front of the
suite's knotd with a certificate from tlspeers.PrivateCA, and read its
counters.

Debian 12 packages no DNS-over-QUIC server and its kdig is built without
QUIC, so this small server is the only DoQ peer; it is a different QUIC and
TLS stack (quic-go, Go's crypto/tls) from dnsveil's (ngtcp2, wolfSSL).
"""

import os
import re
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import helpers

PEER_BIN = helpers.REPO / "build" / "peers" / "doq"


def peer_binary():
    """The built peer (helpers.go_peer); None when Go is missing."""
    return helpers.go_peer("doq")


class DoqPeer(helpers.Peer):
    """doqpeer on 127.0.0.1:<free port>/udp. Options map to its flags:
    no_0rtt, retry, delay (s), close_code, reset_code, idle (s), max_streams,
    ticket_seed (a fixed session-ticket key, so a restart still resumes),
    draft29_only (answers QUIC v1 with Version Negotiation)."""

    def __init__(self, name, workdir, cert, key, ca):
        super().__init__(name, workdir)
        self.cert, self.key, self.ca = cert, key, ca
        self.stats_file = self.workdir / (name + ".stats")

    def start(self, upstream_port, port=None, no_0rtt=False, retry=False, delay=0.0,
              close_code=None, reset_code=None, idle=30.0, max_streams=100,
              ticket_seed=None, draft29_only=False):
        binary = peer_binary()
        if binary is None:
            raise FileNotFoundError("go is not installed: cannot build the DoQ peer")
        self.port = port or helpers.free_port()
        cmd = [str(binary), "-listen", "127.0.0.1:%d" % self.port,
               "-cert", str(self.cert), "-key", str(self.key),
               "-upstream", "127.0.0.1:%d" % upstream_port,
               "-stats", str(self.stats_file),
               "-idle", "%dms" % int(idle * 1000), "-max-streams", str(max_streams)]
        if no_0rtt:
            cmd.append("-no-0rtt")
        if retry:
            cmd.append("-retry")
        if delay:
            cmd += ["-delay", "%dms" % int(delay * 1000)]
        if close_code is not None:
            cmd += ["-close-code", str(close_code)]
        if reset_code is not None:
            cmd += ["-reset-code", str(reset_code)]
        if ticket_seed:
            cmd += ["-ticket-seed", ticket_seed]
        if draft29_only:
            cmd.append("-draft29-only")
        if self.stats_file.exists():
            self.stats_file.unlink()
        return self.spawn_until(cmd, "ready ")

    def restart(self, **kw):
        """Stops and starts again on the same port with new options."""
        self.stop()
        # the log keeps growing; only the new "ready" line matters
        self.log.write_text("")
        return self.start(kw.pop("upstream_port"), port=self.port, **kw)

    def stats(self):
        """The peer's counters: connections, streams, answers,
        zero_rtt_streams (streams whose data arrived in accepted 0-RTT
        packets), zero_rtt_conns, zero_rtt_dropped, retries, client_closed
        (connections the client closed). The peer
        rewrites its file within 10 ms of a change: give it that first."""
        time.sleep(0.05)
        try:
            text = self.stats_file.read_text()
        except FileNotFoundError:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}

    def wait_stat(self, key, at_least, deadline=5.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.stats().get(key, 0) >= at_least:
                return True
            time.sleep(0.02)
        return False


def have_go():
    return PEER_BIN.exists() or shutil.which("go") is not None


def doq_config(tmp_path, url, ca=None, tls_name=None, pins=None, name="doq1",
               extra_upstreams=(), bootstrap=None):
    """A config file with the DoQ upstream first and any extra upstreams
    (name, url) after it, in one failover group (the listed order)."""
    lines = ["[upstreams.%s]" % name, 'url = "%s"' % url]
    if tls_name:
        lines.append('tls_name = "%s"' % tls_name)
    if ca:
        lines.append('tls_ca = "%s"' % ca)
    if pins is not None:
        lines.append("pins = [%s]" % ", ".join('"%s"' % p for p in pins))
    if bootstrap:
        lines.append("bootstrap = [%s]" % ", ".join('"%s"' % b for b in bootstrap))
    for n, u in extra_upstreams:
        lines += ["", "[upstreams.%s]" % n, 'url = "%s"' % u]
    members = [name] + [n for n, _ in extra_upstreams]
    lines += ["", "[groups.default]",
              "upstreams = [%s]" % ", ".join('"%s"' % m for m in members),
              'strategy = "failover"']
    if any(u.startswith(("udp://", "tcp://")) for _, u in extra_upstreams):
        lines.append("allow_plaintext = true")  # a plain DNS fallback on purpose
    path = Path(tmp_path) / ("%s.toml" % name)
    path.write_text("\n".join(lines) + "\n")
    return path


class UdpPath:
    """A UDP relay on loopback between dnsveil and a peer: each client
    address gets its own socket towards the target. cut() silently drops
    everything from the client addresses seen so far, in both directions,
    as a broken path or a NAT that forgot the mapping would: no ICMP, no
    reset, the connection just goes quiet."""

    def __init__(self, target_port, host="127.0.0.1"):
        self.target = (host, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.flows = {}   # client addr -> socket towards the target
        self.dead = set()
        self.sent = []    # every datagram the clients sent, in order
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def cut(self):
        with self.lock:
            self.dead.update(self.flows)
            return len(self.flows)

    def client_bytes(self):
        with self.lock:
            return list(self.sent)

    def clients(self):
        with self.lock:
            return len(self.flows)

    def _loop(self):
        while self.running:
            with self.lock:
                back = {s: a for a, s in self.flows.items()}
            r, _, _ = select.select([self.sock] + list(back), [], [], 0.1)
            for s in r:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                with self.lock:
                    if s is self.sock:
                        if addr in self.dead:
                            continue
                        self.sent.append(data)
                        up = self.flows.get(addr)
                        if up is None:
                            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            up.connect(self.target)
                            self.flows[addr] = up
                        up.send(data)
                    else:
                        client = back.get(s)
                        if client is not None and client not in self.dead:
                            self.sock.sendto(data, client)

    def close(self):
        self.running = False
        self.thread.join(2)
        for s in self.flows.values():
            s.close()
        self.sock.close()
