"""Command-line details: an upstream URL whose host is a name takes its
addresses after '#', and is never looked up through the system resolver."""

import subprocess

import dns.rcode

import helpers


def test_upstream_name_with_bootstrap_address(knot, dnsveil):
    d = dnsveil("udp://ns.test:%d#127.0.0.1" % knot.port)
    wire = helpers.udp_exchange(helpers.make_query("www.test.").to_wire(), d.host, d.port)
    assert wire is not None and helpers.wire_rcode(wire) == dns.rcode.NOERROR


def test_upstream_name_without_address_is_refused():
    r = subprocess.run([helpers.dnsveil_bin(), "-l", "127.0.0.1:%d" % helpers.free_port(),
                        "-u", "tls://dns.example"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "is a name; give its IP addresses" in r.stderr and "URL#IP" in r.stderr


def test_bad_bootstrap_address():
    r = subprocess.run([helpers.dnsveil_bin(), "--check", "-u", "tls://dns.example#nope"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "expected URL or URL#IP" in r.stderr
