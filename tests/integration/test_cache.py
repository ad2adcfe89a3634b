"""The shared answer cache through the real binary, with knotd behind a
counting relay: TTL aging and expiry on time, negative caching from the SOA,
serve-stale when the upstream dies, and the hard memory bound under a flood of
unique names."""

import shutil
import subprocess
import time

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

import helpers


def ask(d, name, rdtype="A"):
    wire = helpers.udp_exchange(helpers.make_query(name, rdtype).to_wire(), d.host, d.port,
                                timeout=3.0)
    assert wire is not None, "no answer for " + name
    return dns.message.from_wire(wire)


def min_ttl(msg):
    return min(rr.ttl for rr in msg.answer + msg.authority)


def test_ttl_aging_and_expiry(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port)

    first = ask(d, "ttl5.test.")
    assert first.answer[0].ttl == 5
    time.sleep(2.1)
    aged = ask(d, "ttl5.test.")
    assert relay.count("ttl5.test.") == 1
    assert 2 <= aged.answer[0].ttl <= 3
    assert aged.answer[0][0].address == "192.0.2.45"
    time.sleep(3.2)
    ask(d, "ttl5.test.")
    assert relay.count("ttl5.test.") == 2  # expired on time: asked again

    ask(d, "ttl1.test.")
    ask(d, "ttl1.test.")
    assert relay.count("ttl1.test.") == 1
    time.sleep(1.3)
    ask(d, "ttl1.test.")
    assert relay.count("ttl1.test.") == 2


def test_ttl0_not_cached(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port)
    for _ in range(3):
        assert ask(d, "ttl0.test.").answer[0][0].address == "192.0.2.40"
    assert relay.count("ttl0.test.") == 3


def test_negative_answers_cached_for_soa_minimum(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port)

    nx = ask(d, "nope.test.")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    time.sleep(1.1)
    again = ask(d, "nope.test.")
    assert again.rcode() == dns.rcode.NXDOMAIN
    assert relay.count("nope.test.") == 1
    soa = again.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    # min(SOA TTL 3600, SOA minimum 60), aged by the second that passed
    assert 57 <= soa.ttl <= 59

    nodata = ask(d, "nodata.test.", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    ask(d, "nodata.test.", "A")
    assert relay.count("nodata.test.") == 1


def test_stale_answer_when_upstream_dies(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, timeout=1500)

    assert ask(d, "ttl1.test.").answer[0].ttl == 1
    relay.close()
    time.sleep(1.3)
    t0 = time.monotonic()
    stale = ask(d, "ttl1.test.")
    assert time.monotonic() - t0 < 1.6
    assert stale.rcode() == dns.rcode.NOERROR
    assert stale.answer[0][0].address == "192.0.2.41"
    assert stale.answer[0].ttl == 30  # RFC 8767
    stats, _ = d.stats()
    assert stats["stale"] >= 1


def test_stale_answer_when_upstream_is_slow(relay_factory, dnsveil, tmp_path):
    """An upstream slower than stale_answer_client_timeout_ms: the client gets
    the stale answer at that timeout, long before the deadline."""
    relay = relay_factory()
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cache]\nstale_answer_client_timeout_ms = 300\n")
    cfg.chmod(0o644)
    tmp_path.chmod(0o755)
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, timeout=2500, extra=["-c", str(cfg)])
    ask(d, "ttl1.test.")
    relay.delay = 1.0
    time.sleep(1.3)
    t0 = time.monotonic()
    stale = ask(d, "ttl1.test.")
    elapsed = time.monotonic() - t0
    assert stale.answer[0].ttl == 30
    assert 0.25 <= elapsed < 0.9, elapsed


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sanitized():
    """ASan keeps freed memory in quarantine and maps shadow memory, so RSS
    says nothing about our bound under it."""
    out = subprocess.run(["ldd", helpers.dnsveil_bin()], capture_output=True, text=True).stdout
    return "libasan" in out


@pytest.mark.skipif(shutil.which("dnsperf") is None, reason="dnsperf not installed")
@pytest.mark.skipif(sanitized(), reason="RSS is meaningless under AddressSanitizer")
def test_memory_bound_under_unique_names(knot, dnsveil, tmp_path):
    """400,000 unique names (several times what 8 MiB holds) through a cache
    bounded at 8 MiB: RSS stays within the bound plus a fixed overhead."""
    d = dnsveil("udp://127.0.0.1:%d" % knot.port)
    ask(d, "www.test.")
    base = vm_rss_kib(d.proc.pid)
    names = tmp_path / "names"
    with open(names, "w") as f:
        for i in range(400_000):
            f.write("n%d.test A\n" % i)
    r = subprocess.run(["dnsperf", "-s", d.host, "-p", str(d.port), "-d", str(names), "-n", "1",
                        "-c", "4", "-q", "500", "-t", "5", "-l", "240"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stats, _ = d.stats()
    peak = vm_rss_kib(d.proc.pid)
    assert stats["queries"] >= 360_000, r.stdout
    # 8 MiB of cache, plus allocator slack and the daemon's fixed buffers
    slack = 6 * 1024
    print("rss: base %d KiB, after %d queries %d KiB" % (base, stats["queries"], peak))
    assert peak - base <= 8 * 1024 + slack, (base, peak)


def test_flush_through_control_socket(relay_factory, dnsveil, tmp_path):
    relay = relay_factory()
    sock = str(tmp_path / "ctl.sock")
    d = dnsveil("udp://127.0.0.1:%d" % relay.port, extra=["--control", sock])

    def control(*args):
        return subprocess.run([helpers.dnsveil_bin(), "--control", sock, *args],
                              capture_output=True, text=True, timeout=10)

    for name in ("www.test.", "sub.multi.test.", "multi.test.", "mail.test."):
        ask(d, name)
    r = control("flush", "MULTI.test")
    assert r.returncode == 0 and r.stdout.startswith("ok flushed 2 entries"), r.stdout
    for name in ("www.test.", "multi.test.", "mail.test."):
        ask(d, name)
    assert relay.count("multi.test.") == 2  # flushed: asked again
    assert relay.count("www.test.") == 1 and relay.count("mail.test.") == 1

    r = control("flush")
    assert r.returncode == 0 and r.stdout.startswith("ok flushed"), r.stdout
    ask(d, "www.test.")
    assert relay.count("www.test.") == 2

    r = control("stats")
    assert r.returncode == 0 and "cache_entries=" in r.stdout
    r = control("nonsense")
    assert r.returncode == 1 and r.stdout.startswith("error:")
