"""Encrypted listeners for LAN clients (listen_tls, listen_https): dnsveil
serving DNS over TLS and DNS over HTTPS itself, checked with independent
clients only (kdig, dig, dnspython, Python's ssl and h2) against the
answers of the plain listener: errors for wrong ALPN, HTTP/1.1, bad paths,
content types and sizes, the per-client connection cap, and certificate
reload on SIGHUP with open connections kept."""

import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers
import tlspeers

NAMES = [("www.test.", "A"), ("www.test.", "AAAA"), ("test.", "SOA"), ("nx.test.", "A"),
         ("test.", "NS"), ("mail.test.", "MX")]


def need(binary):
    if shutil.which(binary) is None:
        pytest.skip("%s is not installed" % binary)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    os.chmod(base, 0o755)  # the daemon reads the files again as 'nobody'
    ca = tlspeers.PrivateCA(base / "ca")
    certs = [ca.issue("dns.test", ["dns.test"], ["127.0.0.1"]) for _ in range(2)]
    for crt, key in certs:
        os.chmod(crt, 0o644)
        os.chmod(key, 0o644)
    os.chmod(ca.dir, 0o755)
    return ca, certs


class Secure:
    """A dnsveil with a plain, a DoT and a DoH listener in front of knotd."""

    name = "dns.test"  # the name in its certificate

    def __init__(self, dnsveil, knot, pki, workdir, extra_server=""):
        self.ca, certs = pki
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.cert, self.key = self.dir / "cert.pem", self.dir / "key.pem"
        self.install(*certs[0])
        self.tls_port = helpers.free_port()
        self.https_port = helpers.free_port()
        self.quic_port = helpers.free_port()
        self.cfg = self.dir / "dnsveil.toml"
        self.cfg.write_text(f"""\
[server]
listen_tls = "127.0.0.1:{self.tls_port}"
listen_https = "127.0.0.1:{self.https_port}"
listen_quic = "127.0.0.1:{self.quic_port}"
cert = "{self.cert}"
key = "{self.key}"
tcp_idle_timeout_ms = 3000
{extra_server}
""")
        os.chmod(self.cfg, 0o644)
        self.d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(self.cfg)])

    def install(self, crt, key):
        shutil.copyfile(crt, self.cert)
        shutil.copyfile(key, self.key)
        os.chmod(self.cert, 0o644)
        os.chmod(self.key, 0o644)

    def reload(self):
        before = self.d.log_text().count("SIGHUP")
        self.d.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            text = self.d.log_text()
            if text.count("SIGHUP") > before and ("reloaded:" in text.split("SIGHUP")[-1] or
                                                   "reload failed" in text.split("SIGHUP")[-1]):
                return text.split("SIGHUP")[-1]
            time.sleep(0.05)
        raise AssertionError("no reload result in the log")

    def ssl_ctx(self, alpn=("dot",)):
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def dot_connect(self, alpn=("dot",), server_hostname=None, session=None, ctx=None):
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        ctx = ctx or self.ssl_ctx(alpn)
        return ctx.wrap_socket(raw, server_hostname=server_hostname or self.name,
                               session=session)

    def plain(self, name, rdtype):
        q = helpers.make_query(name, rdtype, edns=0)
        return dns.query.tcp(q, "127.0.0.1", port=self.d.port, timeout=5)


@pytest.fixture
def secure(dnsveil, knot, pki, cfgdir):
    return Secure(dnsveil, knot, pki, cfgdir / "secure")


def assert_same(want, got, what):
    """A dnspython reply and a parsed dig/kdig output agree (TTLs aside)."""
    w = helpers.from_message(want)
    assert got.rcode == w.rcode and got.answer == w.answer and got.authority == w.authority, \
        (what, w, got)


def dot_exchange(s, msg):
    wire = msg.to_wire()
    s.sendall(struct.pack("!H", len(wire)) + wire)
    return dns.message.from_wire(helpers.tcp_read_frame(s))


def assert_serving(secure):
    """The daemon still answers on the DoT listener and the plain one."""
    with secure.dot_connect() as s:
        r = dot_exchange(s, helpers.make_query("www.test.", "A"))
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert helpers.dns_answers("127.0.0.1", secure.d.port)


# --------------------------------------------------------------------------
# DNS over TLS

def test_dot_kdig_equals_plain(secure):
    need("kdig")
    for name, rdtype in NAMES:
        want = secure.plain(name, rdtype)
        got = helpers.run_kdig("127.0.0.1", secure.tls_port, name, rdtype, tcp=True,
                               opts=["+tls", "+tls-ca=%s" % secure.ca.cert,
                                     "+tls-hostname=dns.test"])
        assert_same(want, got, (name, rdtype))


def test_dot_dnspython_equals_plain(secure):
    ctx = secure.ssl_ctx()
    for name, rdtype in NAMES:
        want = secure.plain(name, rdtype)
        got = dns.query.tls(helpers.make_query(name, rdtype, edns=0), "127.0.0.1",
                            port=secure.tls_port, timeout=5, ssl_context=ctx,
                            server_hostname="dns.test")
        assert helpers.same_answer(want, got), (name, rdtype, got)


def test_dot_alpn_and_tls13(secure):
    with secure.dot_connect() as s:
        assert s.selected_alpn_protocol() == "dot"
        assert s.version() == "TLSv1.3"
        assert dot_exchange(s, helpers.make_query("www.test.", "A")).answer
    # a client that offers no ALPN at all is served (RFC 7858 predates it)
    with secure.dot_connect(alpn=None) as s:
        assert dot_exchange(s, helpers.make_query("www.test.", "A")).answer


def test_dot_wrong_alpn_refused(secure):
    with pytest.raises(ssl.SSLError):
        with secure.dot_connect(alpn=("h2", "http/1.1")) as s:
            dot_exchange(s, helpers.make_query("www.test.", "A"))
    assert_serving(secure)


def test_dot_wrong_name_fails_at_the_client(secure):
    """Our certificate names dns.test: a client verifying another name must
    refuse it (nothing is served without the right certificate), and the
    daemon serves the next client."""
    with pytest.raises(ssl.SSLCertVerificationError):
        secure.dot_connect(server_hostname="other.test").close()
    assert_serving(secure)


def test_dot_pipelined_out_of_order(secure):
    """Many queries written at once on one connection, cache misses
    interleaved with hits: every one answered, matched by ID, and the
    answers need not follow the order of the questions."""
    secure.plain("www.test.", "A")  # a cache hit from now on
    qs = []
    for i in range(40):
        name = "www.test." if i % 2 else "p%d.test." % i
        q = helpers.make_query(name, "A", qid=1000 + i)
        qs.append(q)
    with secure.dot_connect() as s:
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in qs)))
        got = [dns.message.from_wire(helpers.tcp_read_frame(s)) for _ in qs]
    assert sorted(r.id for r in got) == [q.id for q in qs]
    for r in got:
        q = qs[r.id - 1000]
        assert r.question == q.question


def test_dot_edns_tcp_keepalive(secure):
    """RFC 7828: a client that sends edns-tcp-keepalive is told the idle
    timeout (3 s here, in units of 100 ms); one that does not is not."""
    import dns.edns
    q = helpers.make_query("www.test.", "A", edns=0)
    q.use_edns(0, options=[dns.edns.GenericOption(11, b"")])
    with secure.dot_connect() as s:
        r = dot_exchange(s, q)
        opts = [o for o in r.options if o.otype == 11]
        assert r.answer and len(opts) == 1 and opts[0].to_wire() == b"\x00\x1e", r.options
    with secure.dot_connect() as s:
        r = dot_exchange(s, helpers.make_query("www.test.", "A", edns=0))
        assert r.answer and not [o for o in r.options if o.otype == 11], r.options


def test_dot_session_resumption(secure):
    ctx = secure.ssl_ctx()
    with secure.dot_connect(ctx=ctx) as s:
        dot_exchange(s, helpers.make_query("www.test.", "A"))  # the ticket comes after
        sess = s.session
    with secure.dot_connect(ctx=ctx, session=sess) as s:
        assert s.session_reused
        assert dot_exchange(s, helpers.make_query("www.test.", "A")).answer


def test_dot_per_client_connection_cap(dnsveil, knot, pki, tmp_path):
    sec = Secure(dnsveil, knot, pki, tmp_path / "capped",
                 extra_server="tcp_max_connections_per_client = 3")
    held = [sec.dot_connect() for _ in range(3)]
    for s in held:
        assert dot_exchange(s, helpers.make_query("www.test.", "A")).answer
    # the fourth is closed at once: the handshake or the first read fails
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with sec.dot_connect() as s:
            dot_exchange(s, helpers.make_query("www.test.", "A"))
    for s in held:
        s.close()
    time.sleep(0.3)
    assert_serving(sec)


def test_dot_silent_handshake_closed(secure):
    """A client that connects and never says hello is closed within the
    idle timeout (3 s here), like a TCP client that never sends a frame."""
    raw = socket.create_connection(("127.0.0.1", secure.tls_port), timeout=15)
    t0 = time.monotonic()
    assert raw.recv(10) == b""
    assert time.monotonic() - t0 < 12
    raw.close()
    assert_serving(secure)


def serial_of(s):
    return s.getpeercert()["serialNumber"]


def test_certificate_reload_on_sighup(secure, pki):
    ca, certs = pki
    old = secure.dot_connect()
    first = serial_of(old)
    secure.install(*certs[1])
    assert "reloaded:" in secure.reload()
    with secure.dot_connect() as s:
        second = serial_of(s)
    assert second != first
    # the connection made before the reload keeps working
    assert dot_exchange(old, helpers.make_query("www.test.", "A")).answer
    # a key that does not load keeps the certificate being served
    secure.key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    out = secure.reload()
    assert "reload failed" in out and "private key" in out, out
    with secure.dot_connect() as s:
        assert serial_of(s) == second
        assert dot_exchange(s, helpers.make_query("www.test.", "A")).answer
    assert dot_exchange(old, helpers.make_query("www.test.", "A")).answer
    old.close()


# --------------------------------------------------------------------------
# DNS over HTTPS

import base64  # noqa: E402

import h2.connection  # noqa: E402
import h2.config  # noqa: E402
import h2.events  # noqa: E402


class H2Client:
    """A bare HTTP/2 client (Python's h2 library) on one TLS connection, to
    send requests no DoH client library would."""

    def __init__(self, secure, alpn=("h2",)):
        raw = socket.create_connection(("127.0.0.1", secure.https_port), timeout=5)
        self.s = secure.ssl_ctx(alpn).wrap_socket(raw, server_hostname=secure.name)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.backlog = []  # events read while waiting for flow-control credit
        self.c.initiate_connection()
        self.flush()

    def flush(self):
        data = self.c.data_to_send()
        if data:
            self.s.sendall(data)

    def request(self, method, path, body=None, ctype="application/dns-message", flush=True):
        sid = self.c.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "https"),
                (":authority", "dns.test")]
        if body is not None and ctype:
            hdrs.append(("content-type", ctype))
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        self.c.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            # as much as flow control lets through; the server answers first
            # when the body is over its limit
            while body:
                room = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
                if room <= 0:
                    # wait for WINDOW_UPDATE (or the server's early answer)
                    self.s.settimeout(2)
                    try:
                        data = self.s.recv(65535)
                    except socket.timeout:
                        data = b""
                    finally:
                        self.s.settimeout(5)
                    if not data:
                        break
                    evs = self.c.receive_data(data)
                    self.backlog += evs
                    if any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and
                           e.stream_id == sid for e in evs):
                        break
                    continue
                self.c.send_data(sid, body[:room], end_stream=len(body) <= room)
                body = body[room:]
                self.flush()
        if flush:
            self.flush()
        return sid

    def responses(self, sids, deadline=10):
        """{sid: (status, headers, body) or ('reset', code)} for every sid."""
        out, bodies, heads = {}, {}, {}
        end = time.monotonic() + deadline
        backlog, self.backlog = self.backlog, []
        while set(sids) - set(out) and time.monotonic() < end:
            if backlog:
                evs, backlog = backlog, []
            else:
                data = self.s.recv(65535)
                if not data:
                    break
                evs = self.c.receive_data(data)
            for ev in evs:
                if isinstance(ev, h2.events.ResponseReceived):
                    heads[ev.stream_id] = dict((k.decode(), v.decode()) for k, v in ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    h = heads.get(ev.stream_id, {})
                    out[ev.stream_id] = (int(h.get(":status", 0)), h,
                                         bodies.get(ev.stream_id, b""))
                elif isinstance(ev, h2.events.StreamReset):
                    out[ev.stream_id] = ("reset", ev.error_code)
            self.flush()
        return out

    def one(self, *args, **kw):
        sid = self.request(*args, **kw)
        return self.responses([sid])[sid]

    def close(self):
        self.s.close()


def b64(wire):
    return base64.urlsafe_b64encode(wire).decode().rstrip("=")


def test_doh_kdig_post_and_get_equal_plain(secure):
    need("kdig")
    for mode in ("+https", "+https-get"):
        for name, rdtype in NAMES:
            want = secure.plain(name, rdtype)
            got = helpers.run_kdig("127.0.0.1", secure.https_port, name, rdtype, tcp=True,
                                   opts=[mode, "+tls-ca=%s" % secure.ca.cert,
                                         "+tls-hostname=dns.test"])
            assert_same(want, got, (mode, name, rdtype))


def test_doh_dig_equals_plain(secure):
    need("dig")
    for mode in ("+https", "+https-get"):
        for name, rdtype in NAMES:
            want = secure.plain(name, rdtype)
            got = helpers.run_dig("127.0.0.1", secure.https_port, name, rdtype, tcp=True,
                                  opts=[mode, "+tls-ca=%s" % secure.ca.cert,
                                        "+tls-hostname=dns.test"])
            assert_same(want, got, (mode, name, rdtype))


def test_doh_dnspython_equals_plain(secure):
    for post in (True, False):
        for name, rdtype in NAMES:
            want = secure.plain(name, rdtype)
            got = dns.query.https(helpers.make_query(name, rdtype, edns=0), "127.0.0.1",
                                  port=secure.https_port, timeout=5, post=post,
                                  verify=str(secure.ca.cert))
            assert helpers.same_answer(want, got), (post, name, rdtype, got)


def test_doh_headers_and_max_age(secure):
    c = H2Client(secure)
    assert c.s.selected_alpn_protocol() == "h2"
    wire = helpers.make_query("www.test.", "A", qid=0).to_wire()
    st, h, body = c.one("POST", "/dns-query", wire)
    assert st == 200 and h["content-type"] == "application/dns-message"
    assert int(h["content-length"]) == len(body)
    r = dns.message.from_wire(body)
    assert r.id == 0 and r.answer
    ttl = min(rr.ttl for rr in r.answer + r.authority + r.additional)
    assert h["cache-control"] == "max-age=%d" % ttl
    # NXDOMAIN: fresh as long as the SOA's negative TTL says
    st, h, body = c.one("GET", "/dns-query?dns=" + b64(
        helpers.make_query("nx.test.", "A", qid=0).to_wire()))
    r = dns.message.from_wire(body)
    assert st == 200 and r.rcode() == dns.rcode.NXDOMAIN
    assert h["cache-control"] == "max-age=%d" % min(rr.ttl for rr in r.authority)
    c.close()


def test_doh_bad_requests_get_http_errors(secure):
    c = H2Client(secure)
    wire = helpers.make_query("www.test.", "A", qid=0).to_wire()
    cases = [
        (("POST", "/other", wire), 404),
        (("GET", "/dns-query?dns=" + b64(wire)[:-1] + "*"), 400),  # not base64url
        (("GET", "/dns-query?dns=" + b64(wire) + "AAA"), 400),  # a lone 6 bits at the end
        (("GET", "/dns-query?name=www.test"), 400),
        (("GET", "/dns-query"), 400),
        (("POST", "/dns-query", wire, "text/plain"), 415),
        (("POST", "/dns-query", wire, None), 415),
        (("POST", "/dns-query", b"\x00" * 5), 400),            # shorter than a header
        (("POST", "/dns-query", b"\x00\x00\x80" + b"\x00" * 9), 400),  # a response
        (("PUT", "/dns-query", wire), 405),
        (("POST", "/dns-query", b"\x00" * 70000), 413),
        (("GET", "/dns-query?dns=" + "A" * 5000), 400),  # a :path over 1024 bytes
    ]
    for args, want in cases:
        res = c.one(*args[:3], **({"ctype": args[3]} if len(args) > 3 else {}))
        assert res[0] == want, (args[:2], res)
    # the same connection still answers
    st, _, body = c.one("POST", "/dns-query", wire)
    assert st == 200 and dns.message.from_wire(body).answer
    c.close()
    assert_serving(secure)


def test_doh_http1_refused(secure):
    # ALPN offering only HTTP/1.1: the handshake fails (no_application_protocol)
    raw = socket.create_connection(("127.0.0.1", secure.https_port), timeout=5)
    with pytest.raises(ssl.SSLError):
        secure.ssl_ctx(("http/1.1",)).wrap_socket(raw, server_hostname="dns.test")
    raw.close()
    # no ALPN, HTTP/1.1 spoken anyway: 505 and the connection closes
    raw = socket.create_connection(("127.0.0.1", secure.https_port), timeout=5)
    s = secure.ssl_ctx(None).wrap_socket(raw, server_hostname="dns.test")
    s.sendall(b"GET /dns-query?dns=AAAB HTTP/1.1\r\nHost: dns.test\r\n\r\n")
    got = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
    assert got.startswith(b"HTTP/1.1 505 "), got
    s.close()
    assert_serving(secure)


class Silent:
    """An upstream address that never answers (a bound UDP socket nobody
    reads), so queries stay open until the deadline."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]


def test_doh_stream_limit_enforced(dnsveil, pki, cfgdir):
    """The server advertises 100 concurrent streams; a client that opens
    150 at once, before it has read the SETTINGS, while every query waits
    for a silent upstream, gets the excess refused (RST_STREAM); the
    others end in SERVFAIL at the deadline, and the connection and the
    daemon keep serving."""
    silent = Silent()
    secure = Secure(dnsveil, silent, pki, cfgdir / "silent")
    c = H2Client(secure)
    sids = []
    for i in range(150):
        q = helpers.make_query("s%d.test." % i, "A", qid=0).to_wire()
        sids.append(c.request("GET", "/dns-query?dns=" + b64(q), flush=False))
    c.flush()
    res = c.responses(sids, deadline=20)
    ok = [r for r in res.values() if r[0] == 200]
    refused = [r for r in res.values() if r[0] == "reset"]
    assert len(res) == 150, len(res)
    assert len(ok) <= 100 and len(refused) >= 50, (len(ok), len(refused))
    assert c.c.remote_settings.max_concurrent_streams == 100
    st, _, body = c.one("POST", "/dns-query", helpers.make_query("localhost.", "A").to_wire())
    assert st == 200 and dns.message.from_wire(body).answer
    c.close()
    silent.sock.close()


def test_doh_certificate_reload(secure, pki):
    ca, certs = pki
    c = H2Client(secure)
    first = serial_of(c.s)
    secure.install(*certs[1])
    assert "reloaded:" in secure.reload()
    c2 = H2Client(secure)
    assert serial_of(c2.s) != first
    wire = helpers.make_query("www.test.", "A").to_wire()
    for cl in (c, c2):
        assert cl.one("POST", "/dns-query", wire)[0] == 200
        cl.close()


# --------------------------------------------------------------------------
# DNS over QUIC

QUIC_KDIG = helpers.REPO / "build" / "peers" / "kdig"


def quic_kdig(secure, name, rdtype, extra=(), timeout=3):
    if not QUIC_KDIG.exists():
        pytest.skip("no QUIC-capable kdig: run tests/peers/build_kdig.sh")
    cmd = [str(QUIC_KDIG), "@127.0.0.1", "-p", str(secure.quic_port), name, rdtype, "+quic",
           "+tls-ca=%s" % secure.ca.cert, "+tls-hostname=%s" % secure.name,
           "+time=%d" % timeout, "+retry=0"] + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    return out, helpers.parse_text_output(out)


def test_doq_kdig_equals_plain(secure):
    for name, rdtype in NAMES:
        want = secure.plain(name, rdtype)
        out, got = quic_kdig(secure, name, rdtype)
        assert "(QUIC)" in out, out
        assert_same(want, got, (name, rdtype))


def doq_counters(secure):
    """Stops the daemon and reads the DoQ listener's closing line."""
    problems = secure.d.stop()
    assert not problems, problems
    import re
    m = re.search(r"doq listener: (\d+) connections, (\d+) queries \((\d+) as 0-RTT\), "
                  r"(\d+) Retry sent, (\d+) refused", secure.d.log_text())
    assert m, secure.d.log_text()[-2000:]
    return dict(zip(("conns", "queries", "early", "retries", "refused"), map(int, m.groups())))


def quic_client(dnsveil, secure):
    """dnsveil's own quic:// upstream (tickets, 0-RTT) in front of the listener."""
    return dnsveil("quic://%s:%d#127.0.0.1" % (secure.name, secure.quic_port), timeout=4000,
                   extra=["--tls-ca", str(secure.ca.cert)])


def ask(d, name, rdtype="A"):
    return dns.query.tcp(helpers.make_query(name, rdtype, edns=0), d.host, port=d.port,
                         timeout=6)


def test_doq_zero_rtt_for_returning_clients(dnsveil, secure):
    client = quic_client(dnsveil, secure)
    assert ask(client, "www.test.").answer
    # the listener closes the idle connection after 3 s; the next query
    # comes on a new one, resumed, as 0-RTT data
    time.sleep(4.5)
    r = ask(client, "test.", "MX")
    assert r.answer
    st = doq_counters(secure)
    assert st["conns"] >= 2 and st["early"] >= 1, st


def test_doq_certificate_reload(dnsveil, secure, pki, tmp_path):
    """A client that pins the renewed certificate's key fails on the old
    one and gets answers once SIGHUP has loaded the new pair."""
    ca, certs = pki
    conf = tmp_path / "client.toml"
    conf.write_text(f"""\
[upstreams.q]
url = "quic://{secure.name}:{secure.quic_port}"
bootstrap = ["127.0.0.1"]
tls_ca = "{ca.cert}"
pins = ["{tlspeers.spki_pin(certs[1][0])}"]
[cache]
enabled = false
""")
    client = dnsveil(timeout=3000, extra=["-c", str(conf)])
    assert ask(client, "www.test.").rcode() == dns.rcode.SERVFAIL
    secure.install(*certs[1])
    assert "reloaded:" in secure.reload()
    end = time.monotonic() + 15
    while True:  # the client backs off after the pin failure; it retries
        r = ask(client, "www.test.")
        if r.answer or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert r.answer, r


def test_doq_retry_under_load(dnsveil, knot, pki, cfgdir):
    """With 2 connections allowed, a Retry is asked from the second on: the
    client proves its address and is served."""
    sec = Secure(dnsveil, knot, pki, cfgdir / "retry", extra_server="tcp_max_connections = 2")
    client = quic_client(dnsveil, sec)
    assert ask(client, "www.test.").answer   # holds one connection open
    out, got = quic_kdig(sec, "www.test.", "A")
    assert got.rcode == "NOERROR" and got.answer, out
    st = doq_counters(sec)
    assert st["retries"] >= 1, st


def test_doq_connection_caps(dnsveil, knot, pki, cfgdir):
    sec = Secure(dnsveil, knot, pki, cfgdir / "cap",
                 extra_server="tcp_max_connections_per_client = 1")
    client = quic_client(dnsveil, sec)
    assert ask(client, "www.test.").answer   # the one connection 127.0.0.1 may hold
    out, got = quic_kdig(sec, "www.test.", "A", timeout=2)
    assert not got.answer, out
    # the held connection still answers, and so does every other listener
    assert ask(client, "test.", "MX").answer
    assert_serving(sec)
    st = doq_counters(sec)
    assert st["refused"] >= 1, st


# --------------------------------------------------------------------------
# configuration

def check(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(p)],
                          capture_output=True, text=True, timeout=20)


def test_config_errors_are_positioned(tmp_path):
    r = check(tmp_path, '[server]\nlisten_tls = ["127.0.0.1:853"]\n')
    assert r.returncode != 0
    assert "c.toml:2:14: error: encrypted listeners need both 'cert' and 'key'" in r.stderr, r.stderr
    r = check(tmp_path, '[server]\nlisten_https = "nonsense"\ncert = "/nonexistent.pem"\n'
                        'key = "/etc/hostname"\nhttps_path = "dns-query"\n')
    assert "c.toml:2:16: error: listen address \"nonsense\"" in r.stderr, r.stderr
    assert "c.toml:3:8: error: 'cert' = \"/nonexistent.pem\": No such file" in r.stderr, r.stderr
    assert "c.toml:5:14: error: 'https_path' = \"dns-query\"" in r.stderr, r.stderr
