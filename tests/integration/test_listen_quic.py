"""The DNS-over-QUIC listener (listen_quic) beyond plain answers: its
counters on /metrics moved by real clients, address validation with Retry
and NEW_TOKEN (RFC 9000 8.1.2, 8.1.3), and replies from the address the
client sent to when it listens on a wildcard address.

Clients: kdig +quic (knot's own QUIC stack on GnuTLS, built by
tests/peers/build_kdig.sh) wherever it can produce the case. kdig keeps
neither session tickets nor NEW_TOKEN tokens between runs, so a *returning*
client (0-RTT resumption, a token from the last connection) is a second
dnsveil with a quic:// upstream pointed at the listener: a different code
path (upstream/doq.c, the client side of ngtcp2) from the listener's."""

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

import helpers
import tlspeers

KDIG = helpers.REPO / "build" / "peers" / "kdig"
NAME = "dns.test"  # the name in the listener's certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    os.chmod(base, 0o755)  # the daemon reads the files again as 'nobody'
    ca = tlspeers.PrivateCA(base / "ca")
    crt, key = ca.issue(NAME, [NAME], ["127.0.0.1"])
    other = tlspeers.PrivateCA(base / "other", name="another test CA")
    for p in (crt, key, ca.dir):
        os.chmod(p, 0o755 if p == ca.dir else 0o644)
    return ca, crt, key, other


class Listener:
    """A dnsveil serving DoQ (and plain DNS) in front of knotd, with
    /metrics on."""

    def __init__(self, dnsveil, knot, pki, workdir, quic_host="127.0.0.1", extra_server=""):
        self.ca, crt, key, self.other_ca = pki
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o755)
        self.cert, self.key = workdir / "cert.pem", workdir / "key.pem"
        for src, dst in ((crt, self.cert), (key, self.key)):
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
        self.port = helpers.free_port()
        self.mport = helpers.free_port()
        cfg = workdir / "dnsveil.toml"
        cfg.write_text(f"""\
[server]
listen_quic = "{helpers.hostport(quic_host, self.port)}"
cert = "{self.cert}"
key = "{self.key}"
{extra_server}
[metrics]
listen = "127.0.0.1:{self.mport}"
""")
        os.chmod(cfg, 0o644)
        self.d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(cfg)])

    def metrics(self):
        """The listener's DoQ series as {short name: value}."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("dnsveil_doq_listener_"):
                series, value = line.rsplit(" ", 1)
                name, labels = series.split("{", 1)
                assert labels.startswith('listener="'), line
                out[name[len("dnsveil_doq_listener_"):]] = int(value)
        assert out, text[-2000:]
        return out

    def kdig(self, name="www.test.", rdtype="A", server="127.0.0.1", ca=None, extra=(),
             timeout=3, env=None):
        if not KDIG.exists():
            pytest.skip("no QUIC-capable kdig: run tests/peers/build_kdig.sh")
        cmd = [str(KDIG), "@" + server, "-p", str(self.port), name, rdtype, "+quic",
               "+tls-ca=%s" % (ca or self.ca.cert), "+tls-hostname=%s" % NAME,
               "+time=%d" % timeout, "+retry=0"] + list(extra)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                             env=env).stdout
        return out, helpers.parse_text_output(out)

    def wait_metric(self, key, pred, timeout=15):
        end = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if pred(m[key]) or time.monotonic() > end:
                return m
            time.sleep(0.2)


def quic_client(dnsveil, lst, cfgdir, name):
    """A returning client: dnsveil's quic:// upstream (session tickets,
    0-RTT, NEW_TOKEN tokens kept per upstream), its cache off so that every
    query reaches the listener."""
    conf = cfgdir / ("%s.toml" % name)
    conf.write_text(f"""\
[upstreams.q]
url = "quic://{NAME}:{lst.port}"
bootstrap = ["127.0.0.1"]
tls_ca = "{lst.ca.cert}"
[cache]
enabled = false
""")
    os.chmod(conf, 0o644)
    return dnsveil(timeout=4000, extra=["-c", str(conf)])


def ask(d, name="www.test.", rdtype="A"):
    return dns.query.tcp(helpers.make_query(name, rdtype, edns=0), d.host, port=d.port,
                         timeout=6)


@pytest.fixture
def listener(dnsveil, knot, pki, cfgdir):
    def make(**kw):
        return Listener(dnsveil, knot, pki, cfgdir / ("l%d" % helpers.free_port()), **kw)
    return make


# --------------------------------------------------------------------------
# counters on /metrics

def test_metrics_count_queries_tokens_and_handshake_failures(listener):
    lst = listener()
    before = lst.metrics()
    assert before["connections_total"] == 0 and before["connections_open"] == 0, before
    out, got = lst.kdig()
    assert "(QUIC)" in out and got.rcode == "NOERROR" and got.answer, out
    m = lst.metrics()
    assert m["connections_total"] == 1 and m["queries_total"] == 1, m
    assert m["new_tokens_sent_total"] == 1, m  # after the handshake, for next time
    assert m["handshake_failures_total"] == 0, m

    # a client that does not trust our certificate aborts the handshake
    out, got = lst.kdig(ca=lst.other_ca.cert)
    assert not got.answer, out
    m = lst.wait_metric("handshake_failures_total", lambda v: v >= 1)
    assert m["handshake_failures_total"] == 1 and m["queries_total"] == 1, m
    assert m["new_tokens_sent_total"] == 1, m
    # and the listener still serves
    out, got = lst.kdig("test.", "MX")
    assert got.answer, out
    assert lst.metrics()["queries_total"] == 2


# --------------------------------------------------------------------------
# every TLS 1.3 cipher suite QUIC uses (RFC 9001 5.3, 5.4): the 1-RTT packets
# are protected by src/tls/quic_crypto.c, not by ngtcp2's wolfSSL glue

@pytest.mark.parametrize("disabled,suite", [
    ((), "AES-128-GCM"),
    (("AES-128-GCM",), "AES-256-GCM"),
    (("AES-128-GCM", "AES-256-GCM", "AES-128-CCM"), "CHACHA20-POLY1305"),
])
def test_each_cipher_suite_answers(listener, cfgdir, disabled, suite):
    lst = listener()
    # kdig's GnuTLS reads its system-wide overrides from this file: what it
    # may not offer, wolfSSL cannot pick
    conf = cfgdir / ("gnutls-%s.conf" % suite)
    conf.write_text("[overrides]\n" + "".join("tls-disabled-cipher = %s\n" % c for c in disabled))
    env = dict(os.environ, GNUTLS_SYSTEM_PRIORITY_FILE=str(conf))
    for name, rdtype in (("www.test.", "A"), ("test.", "MX")):
        out, got = lst.kdig(name, rdtype, env=env)
        assert "(%s)" % suite in out and got.rcode == "NOERROR" and got.answer, out
    assert lst.metrics()["queries_total"] == 2


def test_metrics_count_refused_and_idle_closed(listener, dnsveil, cfgdir):
    lst = listener(extra_server="tcp_max_connections_per_client = 1\n"
                                "tcp_idle_timeout_ms = 2000")
    client = quic_client(dnsveil, lst, cfgdir, "a")
    assert ask(client).answer  # the one connection 127.0.0.1 may hold
    out, got = lst.kdig(timeout=2)
    assert not got.answer, out
    m = lst.metrics()
    assert m["refused_total"] >= 1 and m["connections_open"] == 1, m
    # the cap is per client address: another one is served
    out, got = lst.kdig(extra=["-b", "127.0.0.2"])
    assert got.answer, out
    # nobody asks: the listener closes both connections when idle
    m = lst.wait_metric("connections_open", lambda v: v == 0)
    assert m["connections_open"] == 0 and m["idle_closed_total"] >= 1, m
    assert m["handshake_failures_total"] == 0, m


def test_retry_under_load_and_new_token_spares_returning_clients(listener, dnsveil, cfgdir):
    """tcp_max_connections = 2: from one open connection on, a client must
    prove its address. The first time that costs a Retry; a client that
    comes back with the NEW_TOKEN token of its last connection is let in at
    once, and its 0-RTT queries with it."""
    lst = listener(extra_server="tcp_max_connections = 2\ntcp_idle_timeout_ms = 2000")
    a = quic_client(dnsveil, lst, cfgdir, "a")
    assert ask(a).answer  # no load yet: no Retry; a keeps a token
    m = lst.metrics()
    assert m["retry_sent_total"] == 0 and m["new_tokens_sent_total"] == 1, m

    # b's first connection comes while a's is open: Retry
    b = quic_client(dnsveil, lst, cfgdir, "b")
    assert ask(b, "test.", "MX").answer
    m = lst.metrics()
    assert m["retry_sent_total"] == 1 and m["connections_open"] == 2, m

    # b keeps its connection busy while a's goes idle and closes
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            try:
                ask(b, "test.", "SOA")
            except (OSError, dns.exception.DNSException):
                pass
            stop.wait(0.4)
    t = threading.Thread(target=keep_busy, daemon=True)
    t.start()
    try:
        m = lst.wait_metric("idle_closed_total", lambda v: v >= 1)
        assert m["idle_closed_total"] == 1 and m["connections_open"] == 1, m
        # a comes back under load with its token: no Retry this time
        early = m["early_queries_total"]
        assert ask(a, "test.", "NS").answer
        m = lst.metrics()
    finally:
        stop.set()
        t.join()
    assert m["retry_sent_total"] == 1, m
    assert m["new_tokens_accepted_total"] >= 1, m
    assert m["bad_tokens_total"] == 0, m
    # resumed: the query went as 0-RTT data and was counted
    assert m["early_queries_total"] > early, m
    assert m["handshake_failures_total"] == 0, m


def initial_with_token(token):
    """A client Initial whose header carries token: enough for the listener
    to look at the token (it decides on Retry before any decryption); the
    payload is padding, as from an attacker who spoofs addresses."""
    dcid, scid = os.urandom(16), os.urandom(8)
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + \
        bytes([len(scid)]) + scid
    assert len(token) < 64
    head += bytes([len(token)]) + token  # a 1-byte varint
    rest = 1200 - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + bytes(rest)


def test_forged_tokens_are_not_accepted(listener):
    """tcp_max_connections = 1 asks every new client for a Retry. An Initial
    with a Retry token we never issued is dropped and counted; one with a
    NEW_TOKEN token we never issued is treated as no token at all: a Retry
    (RFC 9000 8.1.3), never a connection. Then a real client is served."""
    lst = listener(extra_server="tcp_max_connections = 1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", lst.port))
    try:
        # magic 0xB7: a Retry token (ngtcp2's RETRY2 format), not ours
        s.send(initial_with_token(bytes([0xB7]) + os.urandom(40)))
        m = lst.wait_metric("bad_tokens_total", lambda v: v >= 1, timeout=5)
        assert m["bad_tokens_total"] == 1 and m["retry_sent_total"] == 0, m
        # magic 0x36: a NEW_TOKEN token, not ours
        s.send(initial_with_token(bytes([0x36]) + os.urandom(40)))
        reply = s.recv(2048)
        assert reply[0] & 0xF0 == 0xF0, reply[:8].hex()  # long header, type Retry
    finally:
        s.close()
    m = lst.metrics()
    assert m["retry_sent_total"] == 1 and m["new_tokens_accepted_total"] == 0, m
    assert m["connections_total"] == 0, m
    out, got = lst.kdig()  # kdig follows the Retry
    assert got.answer, out
    m = lst.metrics()
    assert m["retry_sent_total"] == 2 and m["connections_total"] == 1, m


# --------------------------------------------------------------------------
# a wildcard address answers from the address the client sent to

@pytest.fixture
def netns():
    with helpers.loopback_netns("dvquic") as name:
        yield name


def test_wildcard_listener_replies_from_queried_address(netns, pki, cfgdir):
    """kdig's QUIC socket is connected to the address it asked: a reply from
    any other source (127.0.0.1 for a query to 127.0.0.5, without pktinfo)
    never reaches it."""
    if not KDIG.exists():
        pytest.skip("no QUIC-capable kdig: run tests/peers/build_kdig.sh")
    ca, crt, key, _ = pki
    port = 8853
    cfg = cfgdir / "c.toml"
    cfg.write_text(f"""\
[server]
listen = ["127.0.0.1:5300"]
listen_quic = ["0.0.0.0:{port}", "[::]:{port}"]
cert = "{crt}"
key = "{key}"
[upstreams.unused]
url = "udp://127.0.0.1:9"
[[rules]]
domains = ["www.test"]
action = "answer"
answer = ["192.0.2.77"]
""")
    os.chmod(cfg, 0o644)
    with helpers.dnsveil_in_netns(netns, cfg) as (proc, log):
        end = time.monotonic() + 15
        while b"listening on [::]:%d/quic" % port not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < end, log.read_text(errors="replace")
            time.sleep(0.1)
        for dst in helpers.netns_loopback_targets(netns):
            out = subprocess.run(["ip", "netns", "exec", netns, str(KDIG), "@" + dst, "-p",
                                  str(port), "www.test.", "A", "+quic", "+tls-ca=%s" % ca.cert,
                                  "+tls-hostname=%s" % NAME, "+time=3", "+retry=0"],
                                 capture_output=True, text=True, timeout=30).stdout
            got = helpers.parse_text_output(out)
            assert "(QUIC)" in out and got.rcode == "NOERROR", (dst, out)
            assert "192.0.2.77" in out, (dst, out)
