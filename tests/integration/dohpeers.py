"""DoH peers for the DoH tests: real DNS-over-HTTPS servers (unbound,
dnsdist, kresd) on loopback in front of the suite's knotd, an HTTP/1.1-only
TLS endpoint, and client helpers. The private CA and the DoT server plumbing
come from tlspeers.py.

Every server gets a loopback-only config with nothing that phones home:
unbound only forwards to knotd (no root hints, no trust anchor), dnsdist has
its security poll disabled, kresd runs without priming, trust anchors or
time-skew checks and sends everything to knotd as a stub.
"""

import http.server
import socket
import ssl
import subprocess
import threading

import dns.message
import dns.query

import helpers
import tlspeers

PATH = "/dns-query"


def doh_query(msg, port, ca, path=PATH, post=True, host="127.0.0.1", timeout=5.0):
    """One query over DoH (HTTP/2 when httpx has h2) with dnspython."""
    return dns.query.https(msg, "https://%s:%d%s" % (host, port, path), timeout=timeout,
                           post=post, verify=str(ca))


def alpn_of(port, ca, host="127.0.0.1"):
    """The ALPN protocol the server selects when offered h2 and http/1.1."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((host, port), timeout=2) as s:
        with ctx.wrap_socket(s, server_hostname="doh.test") as t:
            return t.selected_alpn_protocol()


def wait_for_doh(port, ca, proc=None, log=None, deadline=20.0, path=PATH):
    tlspeers.wait_for_answer("DoH", port,
                             lambda q: doh_query(q, port, ca, path=path, timeout=1.0),
                             proc, log, deadline)


def connections(port):
    """Established TCP connections to 127.0.0.1:port (`ss -tn`)."""
    return tlspeers.established(port)


class DoHPeer(tlspeers.TLSPeer):
    """A DoH server: self.tls_port speaks HTTPS at self.path, self.port plain
    DNS (used to tell that the process is up and to get the peer's own
    answers)."""

    path = PATH

    def start_process(self, cmd, check_doh=True):
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        helpers.wait_for_dns(self.host, self.port, self.proc, log=self.log)
        if check_doh:
            wait_for_doh(self.tls_port, self.ca, self.proc, self.log, path=self.path)

    def restart(self):
        """Stops the process (SIGTERM) and starts it again on the same ports."""
        self.stop()
        self.start_process(self.cmd)

    def url(self, path=None, host="127.0.0.1"):
        return "https://%s:%d%s" % (host, self.tls_port, path or self.path)


class UnboundDoH(DoHPeer):
    kind = "unbound"

    def start(self, upstream_port, endpoint=PATH, max_streams=1000, idle_ms=30000,
              check_doh=True):
        self.port = helpers.free_port()
        self.tls_port = helpers.free_port()
        self.path = endpoint
        conf = self.workdir / "unbound.conf"
        conf.write_text(f"""\
server:
    interface: 127.0.0.1@{self.port}
    interface: 127.0.0.1@{self.tls_port}
    https-port: {self.tls_port}
    http-endpoint: "{endpoint}"
    http-max-streams: {max_streams}
    tls-service-key: "{self.key}"
    tls-service-pem: "{self.cert}"
{helpers.unbound_server_common(self.workdir)}    do-ip6: no
    incoming-num-tcp: 64
    tcp-idle-timeout: {idle_ms}
    num-queries-per-thread: 4096
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream_port}
remote-control:
    control-enable: no
""")
        self.cmd = ["unbound", "-d", "-c", str(conf)]
        self.start_process(self.cmd, check_doh)
        return self


class DnsdistDoH(DoHPeer):
    kind = "dnsdist"

    def start(self, upstream_port, endpoint=PATH, check_doh=True):
        self.port = helpers.free_port()
        self.tls_port = helpers.free_port()
        self.path = endpoint
        conf = self.workdir / "dnsdist.conf"
        conf.write_text(f"""\
setSecurityPollSuffix("")
setLocal("127.0.0.1:{self.port}")
addDOHLocal("127.0.0.1:{self.tls_port}", "{self.cert}", "{self.key}", "{endpoint}",
            {{ maxInFlight=2000 }})
setACL({{"127.0.0.0/8"}})
setMaxTCPQueriesPerConnection(0)
newServer({{address="127.0.0.1:{upstream_port}", healthCheckMode="lazy"}})
""")
        self.cmd = ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]
        self.start_process(self.cmd, check_doh)
        return self


class KresdDoH(DoHPeer):
    kind = "kresd"

    def start(self, upstream_port, check_doh=True):
        self.port = helpers.free_port()
        self.tls_port = helpers.free_port()
        conf = self.workdir / "kresd.conf"
        conf.write_text(f"""\
-- loopback only; nothing that reaches the Internet
for _, m in ipairs({{'priming', 'detect_time_skew', 'detect_time_jump', 'ta_update',
                    'ta_signal_query', 'ta_sentinel'}}) do
    pcall(modules.unload, m)
end
trust_anchors.remove('.')
net.listen('127.0.0.1', {self.port}, {{ kind = 'dns' }})
net.listen('127.0.0.1', {self.tls_port}, {{ kind = 'doh2' }})
net.tls("{self.cert}", "{self.key}")
cache.open(10 * MB, 'lmdb://{self.workdir}/cache')
cache.size = 10 * MB
policy.add(policy.all(policy.STUB({{'127.0.0.1@{upstream_port}'}})))
""")
        self.cmd = ["kresd", "-n", "-c", str(conf), str(self.workdir)]
        self.start_process(self.cmd, check_doh)
        return self


PEERS = {"unbound": UnboundDoH, "dnsdist": DnsdistDoH, "kresd": KresdDoH}


# --------------------------------------------------------------------------
# an HTTPS endpoint that speaks HTTP/1.1 only

class _Http11Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.server.hits += 1
        self.send_error(400, "this endpoint is HTTP/1.1 only")

    do_GET = do_POST

    def log_message(self, *args):
        pass


class Http11Server:
    """python's http.server behind TLS (python ssl) that offers ALPN
    http/1.1 only: a DoH client that insists on h2 must give up on it."""

    def __init__(self, cert, key):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http11Handler)
        self.httpd.hits = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.set_alpn_protocols(["http/1.1"])
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
