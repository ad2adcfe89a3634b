"""TLS peers for the DoT tests: a private CA made with openssl per run, real
DNS-over-TLS servers (unbound, dnsdist, kresd) on loopback in front of the
suite's knotd, a byte-recording TCP tap, and DoT client helpers.

Every server gets a loopback-only config with nothing that phones home:
unbound only forwards to knotd (no root hints, no trust anchor), dnsdist has
its security poll disabled, kresd runs without priming, trust anchors or
time-skew checks and sends everything to knotd as a stub.
"""

import base64
import hashlib
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings
from pathlib import Path

import dns.edns
import dns.message
import dns.query

import helpers


def openssl(*args, cwd=None):
    subprocess.run(["openssl"] + list(args), check=True, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --------------------------------------------------------------------------
# private CA

class PrivateCA:
    """A throwaway CA (EC P-256) that issues server certificates, valid or
    deliberately expired, via `openssl ca` so any validity window works."""

    def __init__(self, workdir, name="dnsveil test CA"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "newcerts").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.pem"
        self.cnf = self.dir / "ca.cnf"
        self.cnf.write_text(f"""\
[ ca ]
default_ca = dv
[ dv ]
dir = {self.dir}
database = {self.dir}/index.txt
new_certs_dir = {self.dir}/newcerts
serial = {self.dir}/serial
certificate = {self.cert}
private_key = {self.key}
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
""")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "30",
                "-subj", "/CN=" + name,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.n = 0

    def issue(self, cn, dns_names=(), ips=(), expired=False):
        """(cert_path, key_path) for a server certificate with the given
        SANs; expired=True makes one that ended a year ago."""
        self.n += 1
        base = self.dir / ("srv%d" % self.n)
        key, csr, crt = base.with_suffix(".key"), base.with_suffix(".csr"), base.with_suffix(".pem")
        ext = base.with_suffix(".ext")
        sans = ["DNS:" + d for d in dns_names] + ["IP:" + i for i in ips]
        lines = ["basicConstraints = CA:FALSE",
                 "keyUsage = critical, digitalSignature",
                 "extendedKeyUsage = serverAuth"]
        if sans:
            lines.append("subjectAltName = " + ", ".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=" + cn)
        now = time.gmtime()
        if expired:
            start = "%04d0101000000Z" % (now.tm_year - 2)
            end = "%04d0101000000Z" % (now.tm_year - 1)
        else:
            start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 3600))
            end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + 30 * 86400))
        openssl("ca", "-batch", "-config", str(self.cnf), "-notext", "-in", str(csr),
                "-out", str(crt), "-startdate", start, "-enddate", end,
                "-extfile", str(ext))
        return crt, key


def spki_pin(cert_path):
    """base64 SHA-256 of the certificate's DER SubjectPublicKeyInfo (the pin
    format of kdig +tls-pin and stubby)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


# --------------------------------------------------------------------------
# DoT client side

def dot_query(msg, port, ca, server_hostname="dot.test", host="127.0.0.1", timeout=5.0):
    """One query over DNS-over-TLS with dnspython, verifying against ca."""
    ctx = ssl.create_default_context(cafile=str(ca))
    return dns.query.tls(msg, host, port=port, timeout=timeout, ssl_context=ctx,
                         server_hostname=server_hostname)


def wait_for_answer(label, port, ask, proc=None, log=None, deadline=20.0):
    """Until ask(query) gets a NOERROR answer with data from a peer's port, or
    the peer exits, or deadline: then RuntimeError with the peer's log tail.
    Shared by the DoT and DoH peers, which differ only in how they ask."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        try:
            r = ask(helpers.make_query("www.test.", "A", edns=0))
            if r.rcode() == 0 and r.answer:
                return
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    detail = ""
    if log is not None and Path(log).exists():
        detail = "\n--- log ---\n" + Path(log).read_text(errors="replace")[-3000:]
    raise RuntimeError("%s port %d never answered (%r, exit=%s)%s" % (
        label, port, last, None if proc is None else proc.poll(), detail))


def wait_for_dot(port, ca, proc=None, log=None, deadline=20.0):
    wait_for_answer("DoT", port, lambda q: dot_query(q, port, ca, timeout=1.0), proc, log,
                    deadline)


def established(port):
    """Established TCP connections to 127.0.0.1:port, counted from the
    client side (`ss -tn`, destination port = port)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", "127.0.0.1:%d" % port],
                         capture_output=True, text=True, check=True).stdout
    return len([l for l in out.splitlines() if l.strip()])


# --------------------------------------------------------------------------
# servers

class TLSPeer(helpers.Peer):
    """A DoT server: self.tls_port speaks TLS, self.port plain DNS (used only
    to tell that the process is up; nothing under test goes there)."""

    kind = "?"

    def __init__(self, name, workdir, cert, key, ca):
        super().__init__(name, workdir)
        self.cert, self.key, self.ca = cert, key, ca
        self.tls_port = None

    def start_process(self, cmd, check_dot=True):
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        helpers.wait_for_dns(self.host, self.port, self.proc, log=self.log)
        if check_dot:
            wait_for_dot(self.tls_port, self.ca, self.proc, self.log)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class UnboundDoT(TLSPeer):
    kind = "unbound"

    def start(self, upstream_port, idle_ms=1500, check_dot=True, v6=False):
        """v6=True also serves DoT on [::1]:tls_port."""
        self.port = helpers.free_port()
        self.tls_port = helpers.free_port(("127.0.0.1", "::1") if v6 else ("127.0.0.1",))
        v6_lines = ("interface: ::1@%d\n    access-control: ::1/128 allow\n    do-ip6: yes"
                    % self.tls_port) if v6 else "do-ip6: no"
        conf = self.workdir / "unbound.conf"
        conf.write_text(f"""\
server:
    interface: 127.0.0.1@{self.port}
    interface: 127.0.0.1@{self.tls_port}
    {v6_lines}
    tls-port: {self.tls_port}
    tls-service-key: "{self.key}"
    tls-service-pem: "{self.cert}"
{helpers.unbound_server_common(self.workdir)}\
    incoming-num-tcp: 64
    tcp-idle-timeout: {idle_ms}
    edns-tcp-keepalive: yes
    edns-tcp-keepalive-timeout: {idle_ms}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream_port}
remote-control:
    control-enable: no
""")
        self.start_process(["unbound", "-d", "-c", str(conf)], check_dot)
        return self


class DnsdistDoT(TLSPeer):
    kind = "dnsdist"

    def start(self, upstream_port, idle_ms=1500, check_dot=True, extra=""):
        self.port = helpers.free_port()
        self.tls_port = helpers.free_port()
        conf = self.workdir / "dnsdist.conf"
        conf.write_text(f"""\
{extra}
setSecurityPollSuffix("")
setLocal("127.0.0.1:{self.port}")
addTLSLocal("127.0.0.1:{self.tls_port}", "{self.cert}", "{self.key}",
            {{ provider="openssl", maxInFlight=1000 }})
setACL({{"127.0.0.0/8"}})
setTCPRecvTimeout({max(1, idle_ms // 1000)})
newServer({{address="127.0.0.1:{upstream_port}", healthCheckMode="lazy"}})
""")
        self.start_process(["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)],
                           check_dot)
        return self


class KresdDoT(TLSPeer):
    kind = "kresd"

    def start(self, upstream_port, idle_ms=1500, check_dot=True):
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
net.listen('127.0.0.1', {self.tls_port}, {{ kind = 'tls' }})
net.tls("{self.cert}", "{self.key}")
net.tcp_in_idle({idle_ms})
cache.open(10 * MB, 'lmdb://{self.workdir}/cache')
cache.size = 10 * MB
policy.add(policy.all(policy.STUB({{'127.0.0.1@{upstream_port}'}})))
""")
        self.start_process(["kresd", "-n", "-c", str(conf), str(self.workdir)], check_dot)
        return self


PEERS = {"unbound": UnboundDoT, "dnsdist": DnsdistDoT, "kresd": KresdDoT}


# --------------------------------------------------------------------------
# a tap: forwards TCP to a target and records what clients sent

class TcpTap:
    """Listens on a loopback port, relays every connection to target, and
    keeps the bytes each client sent, so a test can prove nothing readable
    crossed the wire. Counts accepted connections. Bytes from the server are
    held for `delay` seconds (settable at any time) before they go on."""

    def __init__(self, target_port, host="127.0.0.1", delay=0.0):
        self.target = (host, target_port)
        self.delay = delay
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.sent = []       # one bytearray per client connection
        self.running = True
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def connections(self):
        with self.lock:
            return len(self.sent)

    def client_bytes(self):
        with self.lock:
            return [bytes(b) for b in self.sent]

    def _accept(self):
        self.lsock.settimeout(0.2)
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=3)
            except OSError:
                c.close()
                continue
            rec = bytearray()
            with self.lock:
                self.sent.append(rec)
            for a, b, r in ((c, s, rec), (s, c, None)):
                t = threading.Thread(target=self._pump, args=(a, b, r), daemon=True)
                t.start()

    def _pump(self, src, dst, rec):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if rec is not None:
                    rec += data
                elif self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.lsock.close()


# --------------------------------------------------------------------------
# a TLS terminator with a chosen protocol version range

class TlsTerminator:
    """A minimal DoT server for protocol-version tests: Python's ssl
    (OpenSSL) terminates TLS limited to [min_version, max_version] and each
    framed query is relayed over TCP to a real DNS server. An idle
    connection is closed after idle seconds."""

    def __init__(self, cert, key, target_port, max_version=ssl.TLSVersion.TLSv1_3,
                 min_version=None, idle=1.0, keepalive=None):
        """keepalive: an edns-tcp-keepalive timeout (100 ms units) to put in
        every answer. The queries as received are kept in self.queries."""
        self.keepalive = keepalive
        self.queries = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if min_version is not None and min_version < ssl.TLSVersion.TLSv1_2:
            self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old versions on purpose
            self.ctx.minimum_version = min_version or ssl.TLSVersion.TLSv1_2
            self.ctx.maximum_version = max_version
        self.ctx.load_cert_chain(str(cert), str(key))
        self.target = target_port
        self.idle = idle
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.handshakes = []   # (version, resumed) per accepted connection
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        try:
            raw.settimeout(5)
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self.lock:
            self.handshakes.append((s.version(), s.session_reused))
        s.settimeout(self.idle)
        try:
            while True:
                hdr = helpers.recv_exact(s, 2)
                (n,) = struct.unpack("!H", hdr)
                q = helpers.recv_exact(s, n)
                with self.lock:
                    self.queries.append(q)
                a = helpers.tcp_exchange(q, "127.0.0.1", self.target)
                if self.keepalive is not None:
                    m = dns.message.from_wire(a)
                    m.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(
                        11, struct.pack("!H", self.keepalive))])
                    a = m.to_wire()
                s.sendall(struct.pack("!H", len(a)) + a)
        except (OSError, ConnectionError, ssl.SSLError):
            pass
        try:
            s.close()
        except OSError:
            pass

    def close(self):
        self.running = False
        self.lsock.close()
