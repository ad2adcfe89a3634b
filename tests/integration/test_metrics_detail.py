"""The detailed metrics, read with Prometheus's own text parser
(python3-prometheus-client) after known traffic against real peers: knotd
over plain DNS, unbound over DoT and DoH, the Go DoQ peer. Every counter
checked is the exact difference the traffic must make: N queries -> N
sent, N NOERROR, N latency samples; a dead upstream -> its failures by
kind; repeated questions -> cache hits; a 404 DoH path -> http_status."""

import base64
import os
import random
import socket
import time
import urllib.error
import urllib.request

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client is not installed")


def fetch(mport, path="/metrics", auth=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (mport, path))
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.headers, r.read().decode()


class Scrape:
    """One parsed scrape: families by name and samples by (name, labels)."""

    def __init__(self, mport):
        status, headers, text = fetch(mport)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        self.families = {f.name: f for f in parser.text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, **labels):
        key = (name, frozenset(labels.items()))
        assert key in self.samples, "%s%s not exposed; have %s" % (
            name, labels, sorted(k for k in self.samples if k[0] == name))
        return self.samples[key]

    def sum(self, name, **labels):
        """Sum over every series of name whose labels include labels."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


def delta(before, after, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


def dead_address():
    """A loopback address and port nothing listens on: a rarely used
    127/8 address, so a free port on 127.0.0.1 taken meanwhile by another
    test's server cannot answer in its place."""
    rnd = random.Random()
    while True:
        host = "127.%d.%d.%d" % (rnd.randrange(1, 255), rnd.randrange(256), rnd.randrange(1, 255))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, 0))
            return "%s:%d" % s.getsockname()
        except OSError:
            continue
        finally:
            s.close()


def write_conf(cfgdir, body, mport, extra=""):
    path = cfgdir / "m.toml"
    path.write_text(body + '\n[metrics]\nlisten = "127.0.0.1:%d"\n%s' % (mport, extra))
    return path


def udp(d, name, rdtype="A", timeout=5.0):
    return dns.query.udp(helpers.make_query(name, rdtype), d.host, port=d.port, timeout=timeout)


def tcp(d, name, rdtype="A", timeout=5.0):
    return dns.query.tcp(helpers.make_query(name, rdtype), d.host, port=d.port, timeout=timeout)


def test_plain_upstream_listener_cache_rule_and_process(knot, dnsveil, cfgdir):
    mport = helpers.free_port()
    conf = write_conf(cfgdir, """
[upstreams.knot]
url = "udp://127.0.0.1:%d"

[groups.default]
upstreams = ["knot"]
allow_plaintext = true
[[rules]]
domains = ["blocked.test"]
action = "refuse"
""" % knot.port, mport)
    d = dnsveil(extra=["-c", str(conf)])
    up = {"upstream": "knot", "transport": "plain"}
    lst = {"listener": "%s:%d" % (d.host, d.port)}
    b = Scrape(mport)

    names = ["www.test.", "mail.test.", "mail2.test.", "multi.test.", "target.test."]
    for n in names:
        assert udp(d, n).rcode() == dns.rcode.NOERROR
    assert udp(d, "nothere.test.").rcode() == dns.rcode.NXDOMAIN
    for n in names[:3]:  # from the cache now
        assert udp(d, n).rcode() == dns.rcode.NOERROR
    for _ in range(2):
        assert udp(d, "x.blocked.test.").rcode() == dns.rcode.REFUSED
    assert tcp(d, "c1.test.").rcode() == dns.rcode.NOERROR
    helpers.udp_exchange(b"\x00", d.host, d.port, timeout=0.3)  # not DNS: dropped
    a = Scrape(mport)

    # the upstream saw each distinct question once
    assert delta(b, a, "dnsveil_upstream_queries_total", **up) == 7
    assert delta(b, a, "dnsveil_upstream_answers_total", rcode="NOERROR", **up) == 6
    assert delta(b, a, "dnsveil_upstream_answers_total", rcode="NXDOMAIN", **up) == 1
    assert a.sum("dnsveil_upstream_failures_total", **up) == b.sum(
        "dnsveil_upstream_failures_total", **up)
    # the histogram: 7 samples, cumulative buckets ending in +Inf = count
    assert delta(b, a, "dnsveil_upstream_latency_seconds_count", **up) == 7
    assert a.get("dnsveil_upstream_latency_seconds_bucket", le="+Inf", **up) == \
        a.get("dnsveil_upstream_latency_seconds_count", **up)
    assert a.families["dnsveil_upstream_latency_seconds"].type == "histogram"
    buckets = [s for s in a.families["dnsveil_upstream_latency_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["upstream"] == "knot"]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)
    assert 0 < a.get("dnsveil_upstream_latency_seconds_sum", **up) < 7 * 2.5
    assert delta(b, a, "dnsveil_upstream_sent_bytes_total", **up) > 7 * 12
    assert delta(b, a, "dnsveil_upstream_received_bytes_total", **up) > 7 * 12
    assert a.get("dnsveil_upstream_healthy", **up) == 1
    assert a.get("dnsveil_upstream_connections", **up) == 0

    # per listener and transport: 11 UDP queries + 1 drop, 1 TCP query
    assert delta(b, a, "dnsveil_listener_queries_total", transport="udp", **lst) == 11
    assert delta(b, a, "dnsveil_listener_queries_total", transport="tcp", **lst) == 1
    assert delta(b, a, "dnsveil_listener_answers_total", transport="udp", rcode="NOERROR",
                 **lst) == 8
    assert delta(b, a, "dnsveil_listener_answers_total", transport="udp", rcode="NXDOMAIN",
                 **lst) == 1
    assert delta(b, a, "dnsveil_listener_answers_total", transport="udp", rcode="REFUSED",
                 **lst) == 2
    assert delta(b, a, "dnsveil_listener_answers_total", transport="tcp", rcode="NOERROR",
                 **lst) == 1
    assert delta(b, a, "dnsveil_listener_dropped_total", transport="udp", **lst) == 1
    assert delta(b, a, "dnsveil_listener_truncated_total", transport="udp", **lst) == 0

    # the cache and the rule
    assert delta(b, a, "dnsveil_cache_hits_total") == 3
    assert delta(b, a, "dnsveil_cache_lookup_hits_total") == 3
    assert delta(b, a, "dnsveil_cache_misses_total") >= 7
    assert a.get("dnsveil_cache_entries") >= 7
    assert a.get("dnsveil_rule_matches_total", rule="1", line="8", action="refuse") - \
        b.get("dnsveil_rule_matches_total", rule="1", line="8", action="refuse") == 2
    # the old names still work
    assert delta(b, a, "dnsveil_queries_total") == 12
    assert a.get("dnsveil_upstream_up", upstream="knot") == 1

    # the process
    assert a.get("process_open_fds") >= 5
    assert a.get("process_resident_memory_bytes") > 1 << 20
    assert abs(a.get("process_start_time_seconds") - time.time()) < 120
    info = [s for s in a.families["dnsveil_build_info"].samples][0]
    assert info.value == 1 and info.labels["version"]
    assert info.labels["wolfssl"][0].isdigit() and info.labels["ngtcp2"][0].isdigit()
    assert info.labels["nghttp2"][0].isdigit()


def test_dead_upstreams_count_timeouts_and_refusals(dnsveil, cfgdir):
    """One upstream port with nothing behind it (ICMP port unreachable:
    connection) and one socket that never answers (timeout), three distinct
    questions through each."""
    mport = helpers.free_port()
    refused = dead_address()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        conf = write_conf(cfgdir, """
[upstreams.refused]
url = "udp://%s"
[upstreams.silent]
url = "udp://127.0.0.1:%d"
[groups.default]
upstreams = ["refused"]
allow_plaintext = true
[groups.quiet]
upstreams = ["silent"]
[[rules]]
domains = ["quiet.test"]
group = "quiet"
""" % (refused, silent.getsockname()[1]), mport)
        d = dnsveil(timeout=700, extra=["-c", str(conf)])
        b = Scrape(mport)
        for i in range(3):
            assert udp(d, "r%d.test." % i).rcode() == dns.rcode.SERVFAIL
            assert udp(d, "s%d.quiet.test." % i).rcode() == dns.rcode.SERVFAIL
        a = Scrape(mport)
    finally:
        silent.close()
    r = {"upstream": "refused", "transport": "plain"}
    s = {"upstream": "silent", "transport": "plain"}
    assert delta(b, a, "dnsveil_upstream_queries_total", **r) == 3
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="connection", **r) == 3
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="timeout", **r) == 0
    assert delta(b, a, "dnsveil_upstream_queries_total", **s) == 3
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="timeout", **s) == 3
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="connection", **s) == 0
    for u in (r, s):
        assert a.sum("dnsveil_upstream_answers_total", **u) == 0
        assert a.get("dnsveil_upstream_latency_seconds_count", **u) == 0
        assert a.get("dnsveil_upstream_consecutive_failures", **u) >= 3
    assert delta(b, a, "dnsveil_listener_answers_total", transport="udp", rcode="SERVFAIL",
                 listener="%s:%d" % (d.host, d.port)) == 6


def test_basic_auth_and_routes(knot, dnsveil, cfgdir):
    mport = helpers.free_port()
    conf = write_conf(cfgdir, "", mport, 'username = "ops"\npassword = "s3cret:x"\n')
    dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(conf)])
    for path in ("/metrics", "/", "/status.json"):
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(mport, path)
        assert e.value.code == 401
        assert e.value.headers["WWW-Authenticate"].startswith("Basic ")
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(mport, path, auth="ops:wrong")
        assert e.value.code == 401
    status, headers, body = fetch(mport, "/", auth="ops:s3cret:x")
    assert headers["Content-Type"].startswith("text/html")
    assert "<title>dnsveil status</title>" in body
    # self-contained: nothing loaded from anywhere else
    assert "src=" not in body and "href=" not in body and "@import" not in body
    status, headers, body = fetch(mport, "/status.json", auth="ops:s3cret:x")
    assert headers["Content-Type"] == "application/json"
    status, headers, body = fetch(mport, "/metrics", auth="ops:s3cret:x")
    assert "dnsveil_upstream_queries_total" in body


# ---------------------------------------------------------------- encrypted

tlspeers = pytest.importorskip("tlspeers")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlspeers.PrivateCA(tmp_path_factory.mktemp("mpki") / "ca")
    return ca, ca.issue("dot.test", ["dot.test", "doh.test", "doq.test"], ["127.0.0.1"])


def enc_conf(cfgdir, mport, ca, *ups):
    lines = []
    for name, url in ups:
        lines += ["[upstreams.%s]" % name, 'url = "%s"' % url, 'tls_ca = "%s"' % ca]
    lines += ["[groups.default]",
              "upstreams = [%s]" % ", ".join('"%s"' % n for n, _ in ups),
              'strategy = "failover"', "[cache]", "enabled = false"]
    return write_conf(cfgdir, "\n".join(lines), mport)


def test_dot_counts_handshakes_connections_and_bytes(knot, dnsveil, cfgdir, pki, tmp_path):
    ca, (crt, key) = pki
    p = tlspeers.UnboundDoT("unbound-dot", tmp_path / "dot", crt, key, ca.cert)
    p.start(knot.port, idle_ms=10000)
    try:
        mport = helpers.free_port()
        conf = enc_conf(cfgdir, mport, ca.cert, ("dot", "tls://127.0.0.1:%d" % p.tls_port))
        d = dnsveil(extra=["-c", str(conf)])
        up = {"upstream": "dot", "transport": "dot"}
        b = Scrape(mport)
        for i in range(10):
            assert udp(d, "www.test.", "A" if i % 2 else "AAAA").rcode() == dns.rcode.NOERROR
        a = Scrape(mport)
    finally:
        p.stop()
    assert delta(b, a, "dnsveil_upstream_queries_total", **up) == 10
    assert delta(b, a, "dnsveil_upstream_answers_total", rcode="NOERROR", **up) == 10
    assert delta(b, a, "dnsveil_upstream_latency_seconds_count", **up) == 10
    assert a.sum("dnsveil_upstream_failures_total", **up) == 0
    # one connection, opened for the readiness probe and kept
    assert a.get("dnsveil_upstream_connections", **up) == 1
    assert a.get("dnsveil_upstream_connections_opened_total", **up) == 1
    assert a.get("dnsveil_upstream_handshakes_total", kind="full", **up) == 1
    assert a.get("dnsveil_upstream_handshakes_total", kind="resumed", **up) == 0
    # padded queries (RFC 8467): at least 128 bytes each
    assert delta(b, a, "dnsveil_upstream_sent_bytes_total", **up) >= 10 * 128
    assert delta(b, a, "dnsveil_upstream_received_bytes_total", **up) > 10 * 40


def test_doh_counts_http_status_failures(knot, dnsveil, cfgdir, pki, tmp_path):
    dohpeers = pytest.importorskip("dohpeers")
    ca, (crt, key) = pki
    p = dohpeers.UnboundDoH("unbound-doh", tmp_path / "doh", crt, key, ca.cert)
    p.start(knot.port)
    try:
        mport = helpers.free_port()
        conf = enc_conf(cfgdir, mport, ca.cert, ("bad", p.url("/nothing-here")),
                        ("good", p.url()))
        d = dnsveil(timeout=2000, extra=["-c", str(conf)])
        b = Scrape(mport)
        for i in range(3):
            assert udp(d, "www.test.", ["A", "AAAA", "MX"][i]).rcode() == dns.rcode.NOERROR
        a = Scrape(mport)
    finally:
        p.stop()
    bad = {"upstream": "bad", "transport": "doh"}
    good = {"upstream": "good", "transport": "doh"}
    # failover: a question goes to the first, then the second (until the
    # first backs off after repeated failures: then the other way round)
    sent = delta(b, a, "dnsveil_upstream_queries_total", **bad)
    assert sent >= 1
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="http_status", **bad) == sent
    assert a.get("dnsveil_upstream_http_errors_total", code="404", **bad) == \
        a.get("dnsveil_upstream_queries_total", **bad)
    assert a.sum("dnsveil_upstream_answers_total", **bad) == 0
    assert delta(b, a, "dnsveil_upstream_answers_total", rcode="NOERROR", **good) == 3
    assert a.get("dnsveil_upstream_handshakes_total", kind="full", **good) >= 1
    assert a.get("dnsveil_upstream_connections", **good) == 1


def test_doq_counts_0rtt_resumption_and_error_codes(knot, dnsveil, cfgdir, pki, tmp_path):
    doqpeers = pytest.importorskip("doqpeers")
    if not doqpeers.have_go():
        pytest.skip("go is not installed: no DoQ peer")
    ca, (crt, key) = pki
    p = doqpeers.DoqPeer("doq", tmp_path / "doq", crt, key, ca.cert)
    # a short idle timeout: the second burst needs a new connection, which
    # resumes the first one's session and sends its query as 0-RTT
    p.start(knot.port, idle=0.4)
    try:
        mport = helpers.free_port()
        conf = enc_conf(cfgdir, mport, ca.cert, ("doq", "quic://127.0.0.1:%d" % p.port))
        d = dnsveil(extra=["-c", str(conf)])
        up = {"upstream": "doq", "transport": "doq"}
        b = Scrape(mport)
        for i in range(4):
            assert udp(d, "www.test.", ["A", "AAAA", "MX", "TXT"][i]).rcode() == dns.rcode.NOERROR
        time.sleep(1.5)
        assert udp(d, "mail.test.").rcode() == dns.rcode.NOERROR
        a = Scrape(mport)
        assert delta(b, a, "dnsveil_upstream_queries_total", **up) == 5
        assert delta(b, a, "dnsveil_upstream_answers_total", rcode="NOERROR", **up) == 5
        assert a.get("dnsveil_upstream_connections_opened_total", **up) >= 2
        assert a.get("dnsveil_upstream_handshakes_total", kind="resumed", **up) >= 1
        assert a.get("dnsveil_upstream_handshakes_total", kind="early_accepted", **up) >= 1
        assert a.get("dnsveil_upstream_handshakes_total", kind="full", **up) >= 1

        # every stream reset with DOQ_INTERNAL_ERROR (0x1)
        p.restart(upstream_port=knot.port, reset_code=1)
        b = Scrape(mport)
        for i in range(2):
            assert udp(d, "r%d.test." % i).rcode() == dns.rcode.SERVFAIL
        a = Scrape(mport)
    finally:
        p.stop()
    assert a.get("dnsveil_upstream_doq_errors_total", code="0x1", **up) >= 2
    assert delta(b, a, "dnsveil_upstream_failures_total", kind="server_error", **up) >= 2


# ---------------------------------------------------------------- config

def test_status_keys_errors_named_with_position(cfgdir):
    import subprocess
    conf = cfgdir / "bad.toml"
    conf.write_text('[metrics]\nlisten = "127.0.0.1:9"\nprivacy = 3\nstatus_page = "yes"\n'
                    'username = "a:b"\npassword = "p"\n')
    r = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "bad.toml:3:11: error: 'privacy' = 3 is out of range (0 to 2)" in r.stderr, r.stderr
    assert "bad.toml:4:15: error: 'status_page' expects true or false" in r.stderr, r.stderr
    assert "bad.toml:5:12: error: 'username' cannot contain ':'" in r.stderr, r.stderr
    conf.write_text('[metrics]\npassword = "p"\n')
    r = subprocess.run([helpers.dnsveil_bin(), "--check", "-c", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "bad.toml:2:12: error: 'username' and 'password' go together" in r.stderr, r.stderr


def test_reload_applies_privacy_and_page(knot, dnsveil, cfgdir):
    import json
    import signal
    mport = helpers.free_port()
    conf = write_conf(cfgdir, "", mport, "privacy = 0\n")
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(conf)])
    udp(d, "www.test.")
    s = json.loads(fetch(mport, "/status.json")[2])
    assert s["top_clients"][0]["client"] == "127.0.0.1"
    write_conf(cfgdir, "", mport, "privacy = 2\nstatus_page = false\n")
    d.send_signal(signal.SIGHUP)
    end = time.monotonic() + 5
    while time.monotonic() < end and "reloaded" not in d.log_text():
        time.sleep(0.05)
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(mport, "/status.json")
    assert e.value.code == 404
    status, headers, body = fetch(mport, "/")
    assert headers["Content-Type"].startswith("text/plain") and "dnsveil_queries_total" in body


# ---- client bounds, pre-parse drops and applications per listener --------

def blast_udp(d, src, names):
    """Sends one query per name from src at once, then collects the replies
    for a second: their rcodes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((src, 0))
        for n in names:
            u.sendto(helpers.make_query(n, "A").to_wire(), (d.host, d.port))
        u.settimeout(1.0)
        rcodes = []
        while True:
            try:
                rcodes.append(helpers.wire_rcode(u.recv(4096)))
            except socket.timeout:
                return rcodes


def test_client_bounds_and_drops_counted_per_listener(knot, dnsveil, cfgdir):
    """A client outside allow (127.0.0.1), one over its rate (127.0.0.2 and
    .3, burst 3), an oversized datagram and an empty TCP frame: each counted
    on its listener and transport, equal to what was sent and refused."""
    mport = helpers.free_port()
    conf = write_conf(cfgdir, """
[server]
allow = ["127.0.0.2", "127.0.0.3"]
rate_limit = 1
rate_limit_burst = 3
""", mport)
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(conf)])  # ready on REFUSED
    lu = {"listener": "%s:%d" % (d.host, d.port), "transport": "udp"}
    lt = {"listener": "%s:%d" % (d.host, d.port), "transport": "tcp"}
    b = Scrape(mport)

    # outside allow: REFUSED, 4 over UDP and 2 over TCP
    for i in range(4):
        assert udp(d, "acl%d.test." % i).rcode() == dns.rcode.REFUSED
    for i in range(2):
        assert tcp(d, "acl-t%d.test." % i).rcode() == dns.rcode.REFUSED
    # over the rate on UDP: dropped without a word
    sent = ["rate%d.test." % i for i in range(10)]
    got = blast_udp(d, "127.0.0.2", sent)
    assert 3 <= len(got) < len(sent), got
    # over the rate on TCP: REFUSED
    trc = []
    with socket.create_connection((d.host, d.port), timeout=5,
                                  source_address=("127.0.0.3", 0)) as s:
        for i in range(8):
            wire = helpers.make_query("rate-t%d.test." % i, "A").to_wire()
            s.sendall(len(wire).to_bytes(2, "big") + wire)
        for _ in range(8):
            trc.append(helpers.wire_rcode(helpers.tcp_read_frame(s)))
    t_refused = trc.count(dns.rcode.REFUSED)
    assert len(trc) - t_refused >= 3 and t_refused >= 1, trc
    # dropped before parsing: a datagram past the receive buffer, an empty frame
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"\x00" * 5000, (d.host, d.port))
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(b"\x00\x00")
        assert s.recv(10) == b""  # closed at once
    time.sleep(0.3)
    a = Scrape(mport)

    assert delta(b, a, "dnsveil_listener_refused_total", reason="acl", **lu) == 4
    assert delta(b, a, "dnsveil_listener_refused_total", reason="acl", **lt) == 2
    assert delta(b, a, "dnsveil_listener_refused_total", reason="ratelimit", **lu) == \
        len(sent) - len(got)
    assert delta(b, a, "dnsveil_listener_refused_total", reason="ratelimit", **lt) == t_refused
    assert delta(b, a, "dnsveil_listener_dropped_total", **lu) == 1
    assert delta(b, a, "dnsveil_listener_dropped_total", **lt) == 1
    assert delta(b, a, "dnsveil_listener_overloaded_total", **lu) == 0
    # the per-listener series add up to the global counters
    assert delta(b, a, "dnsveil_refused_clients_total") == 6
    assert delta(b, a, "dnsveil_ratelimited_total") == len(sent) - len(got) + t_refused
    assert delta(b, a, "dnsveil_dropped_total") == 2


def test_inflight_cap_counted_per_listener(dnsveil, cfgdir):
    """Two queries may wait per client at an upstream that never answers:
    of five distinct questions three get SERVFAIL at once, counted as
    overloaded on the UDP listener."""
    mport = helpers.free_port()
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        conf = write_conf(cfgdir, """
[server]
max_inflight_per_client = 2
[upstreams.hole]
url = "tcp://127.0.0.1:%d"
[groups.default]
upstreams = ["hole"]
allow_plaintext = true
[[rules]]
domains = ["ready.test"]
action = "nxdomain"
""" % hole.getsockname()[1], mport)
        d = dnsveil(timeout=20000, extra=["-c", str(conf)])
        lu = {"listener": "%s:%d" % (d.host, d.port), "transport": "udp"}
        b = Scrape(mport)
        got = blast_udp(d, "127.0.0.1", ["cap%d.test." % i for i in range(5)])
        a = Scrape(mport)
    finally:
        hole.close()
    assert got == [dns.rcode.SERVFAIL] * 3, got
    assert delta(b, a, "dnsveil_listener_overloaded_total", **lu) == 3
    assert delta(b, a, "dnsveil_overloaded_total") == 3
    assert delta(b, a, "dnsveil_listener_answers_total", rcode="SERVFAIL", **lu) == 3


APP_USERS = ("dvstat-a", "dvstat-b")


@pytest.fixture(scope="module")
def app_users():
    import pwd
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("needs root (useradd, runuser)")
    made = []
    for u in APP_USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", u], check=True)
            made.append(u)
    yield {u: pwd.getpwnam(u).pw_uid for u in APP_USERS}
    for u in made:
        subprocess.run(["userdel", u], check=False)


def kdig_as(user, d, name):
    import subprocess
    cmd = ["runuser", "-u", user, "--", "kdig", "@" + d.host, "-p", str(d.port), name, "A",
           "+time=3", "+retry=0", "+notcp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert "status: NOERROR" in out.stdout or "status: NXDOMAIN" in out.stdout, (cmd, out)


def app_conf(cfgdir, knot, mport, users, privacy):
    return write_conf(cfgdir, """
[upstreams.knot]
url = "udp://127.0.0.1:%d"
[groups.default]
upstreams = ["knot"]
allow_plaintext = true
[groups.other]
upstreams = ["knot"]
[[rules]]
applications = ["no-such-program-dv"]
action = "refuse"
[[rules]]
users = ["%s"]
group = "other"
""" % (knot.port, users[0]), mport, "privacy = %d\n" % privacy)


def test_per_application_queries(knot, dnsveil, cfgdir, app_users):
    """kdig as two users behind per-user and per-application rules: 3 and 5
    queries, counted under their uid, user name and comm."""
    import json
    mport = helpers.free_port()
    users = sorted(app_users)
    d = dnsveil(extra=["-c", str(app_conf(cfgdir, knot, mport, users, 1))])
    for i in range(3):
        kdig_as(users[0], d, "app-a%d.test." % i)
    for i in range(5):
        kdig_as(users[1], d, "app-b%d.test." % i)
    a = Scrape(mport)
    for u, n in zip(users, (3, 5)):
        assert a.get("dnsveil_app_queries_total", uid=str(app_users[u]), user=u, comm="kdig",
                     cgroup="") == n
    s = json.loads(fetch(mport, "/status.json")[2])
    got = {(x["user"], x["comm"]): x["count"] for x in s["top_apps"]}
    assert got[(users[0], "kdig")] == 3 and got[(users[1], "kdig")] == 5, got
    assert s["apps"]["found"] >= 8


def test_per_application_aggregates_only_at_privacy_2(knot, dnsveil, cfgdir, app_users):
    import json
    mport = helpers.free_port()
    users = sorted(app_users)
    d = dnsveil(extra=["-c", str(app_conf(cfgdir, knot, mport, users, 2))])
    b = json.loads(fetch(mport, "/status.json")[2])["apps"]
    for i in range(2):
        kdig_as(users[0], d, "agg%d.test." % i)
    a = Scrape(mport)
    assert not [k for k in a.samples if k[0] == "dnsveil_app_queries_total"]
    s = json.loads(fetch(mport, "/status.json")[2])
    assert "top_apps" not in s
    assert s["apps"]["found"] - b["found"] == 2
    body = fetch(mport, "/status.json")[2] + fetch(mport)[2]
    assert users[0] not in body and "kdig" not in body
